"""The Python API: everything the CLI does, usable from a notebook.

    >>> import slurmserve
    >>> spec = slurmserve.load_spec(engine="vllm", model="Qwen/Qwen2.5-7B-Instruct",
    ...                             image="vllm.tar", nodes=2, gpus_per_node=8, tp=8, pp=2)
    >>> print(slurmserve.render_sbatch(spec))
    >>> record = slurmserve.submit(spec)            # sbatch; state in record.run_dir
    >>> slurmserve.wait_ready(record.job, timeout=3600).endpoint

Three groups: the spec and its plan (load_spec, plan_cluster, render_sbatch, describe), serving
in this allocation (run, doctor), and batch jobs read from their state records (submit,
wait_ready, status, logs, stop, bench).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import apikey, chain, engines, metrics, runner, runtimes, slurm, state
from .errors import LaunchError, SpecError
from .metrics import LiveLoad
from .plan import Allocation, ClusterPlan, NodeInfo
from .render import render_template
from .spec import ServeSpec, load_spec, spec_data
from .state import SCHEMA, STOP_MARKER, JobRecord, RecordError, ReplicaRecord, Status

if TYPE_CHECKING:
    from .tools.apicheck import Report
    from .tools.bench import BenchRun
    from .tools.bench import Progress as BenchProgress
    from .tools.configurator import Plan as Sizing

__all__ = [
    "BenchOptions",
    "EngineFacts",
    "JobStatus",
    "LiveLoad",
    "ReplicaStatus",
    "allocation_defaults",
    "bench",
    "check_endpoint",
    "client_key",
    "compare_bench",
    "current_job",
    "describe",
    "doctor",
    "engine_facts",
    "ensure_allocation",
    "job_record",
    "load_spec",
    "log_paths",
    "logs",
    "plan_cluster",
    "preview_allocation",
    "render_sbatch",
    "run",
    "size",
    "sizing_catalogue",
    "spec_data",
    "status",
    "stop",
    "submit",
    "url",
    "wait_ready",
]

PREVIEW_NET = "192.0.2"  # RFC 5737 documentation addresses: a preview never points anywhere real
Progress = Callable[[str], None]


# ---- the spec and its plan ---------------------------------------------------------------------

@dataclass(frozen=True)
class EngineFacts:
    """What a user may choose per engine (for help texts and notebooks)."""

    name: str
    modes: tuple[str, ...]
    default_port: int


def engine_facts() -> tuple[EngineFacts, ...]:
    """Every engine's name, launch modes and default HTTP port, from the engines themselves."""
    return tuple(EngineFacts(e.NAME, tuple(e.MODES), e.DEFAULT_PORT)
                 for e in map(engines.get, engines.ENGINES))


def plan_cluster(spec: ServeSpec, allocation: Allocation) -> ClusterPlan:
    """What runs on which node, for a real allocation."""
    return engines.plan_for(spec, allocation)


def preview_allocation(spec: ServeSpec, job_id: str = "JOBID") -> Allocation:
    """A stand-in allocation for showing a plan before SLURM has given us nodes (with
    `--runtime auto`, as for docker: the site decides at run time)."""
    return Allocation(job_id=job_id, nodes=tuple(
        NodeInfo(name=f"node{i + 1}", address=f"{PREVIEW_NET}.{i + 1}")
        for i in range(spec.nodes)), mpi_launch=runtimes.mpi_launch(spec.runtime))


def render_sbatch(spec: ServeSpec, python: str | None = None, run_args: list[str] | None = None
                  ) -> str:
    """A complete sbatch script that runs the job: header, embedded spec, the driver."""
    return render_template(
        "sbatch.sh.j2",
        job_name=spec.job_name,
        nodes=spec.nodes,
        gpus_per_node=0 if spec.gpus == "none" else spec.gpus_per_node,
        slurm=spec.slurm,
        output=os.path.join(os.path.abspath(spec.log_dir), "slurmserve-%j.out"),
        python=python or sys.executable,
        spec_json=json.dumps(_spec_for_job(spec), sort_keys=True),
        run_args=run_args or [],
        lead=int(chain.lead_s(spec)) if spec.serve_for else 0,
        all_runtimes=runtimes.RUNTIMES, **runtimes.shell_context("", ""),
    )


def _spec_for_job(spec: ServeSpec) -> dict[str, Any]:
    """The spec as the batch job reads it: paths absolute, since the job may start elsewhere."""
    data = spec.to_dict()
    data["log_dir"] = os.path.abspath(spec.log_dir)
    if spec.image_is_tarball:
        data["image"] = os.path.abspath(spec.image)
    return data


def describe(spec: ServeSpec, allocation: Allocation | None = None) -> dict[str, Any]:
    """Spec and plan as plain data (`render --json`). With replicas, `plan` is the first
    replica's and `replicas` every replica's, on its own nodes."""
    alloc = allocation or preview_allocation(spec)
    plans = replica_plans(spec, alloc)
    return {
        "spec": spec.to_dict(),
        "plan": plans[0].to_dict(),
        **({"replicas": [p.to_dict() for p in plans]} if spec.replicas > 1 else {}),
        "preview": allocation is None,
    }


def replica_plans(spec: ServeSpec, allocation: Allocation) -> list[ClusterPlan]:
    """One plan per replica, each on its own nodes/replicas nodes (one plan without)."""
    nodes = Allocation(allocation.job_id, allocation.nodes[:spec.nodes])
    return [plan_cluster(spec.replica_spec, part) for part in nodes.split(spec.replicas)]


def allocation_defaults(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Spec defaults the surrounding allocation implies: its node count and GPUs per node.

    A value SLURM set that is no count stays text naming its variable, so the spec check
    reports it (e.g. `--gpus-per-node: 'x (SLURM_GPUS_PER_NODE)' is not a whole number`) unless
    a flag or the config file sets the field.
    """
    env = dict(os.environ) if env is None else env
    defaults: dict[str, Any] = {}
    nodes = env.get("SLURM_JOB_NUM_NODES", "")
    if nodes:
        defaults["nodes"] = int(nodes) if nodes.isdigit() else f"{nodes} (SLURM_JOB_NUM_NODES)"
    gpus = env.get("SLURM_GPUS_PER_NODE", "")
    if gpus:
        # [type:]count, or a list of them (volta:2,kepler:1): the node's GPUs are the sum.
        counts = [part.rsplit(":", 1)[-1] for part in gpus.split(",")]
        defaults["gpus_per_node"] = (sum(map(int, counts)) if all(c.isdigit() for c in counts)
                                     else f"{gpus} (SLURM_GPUS_PER_NODE)")
    return defaults


# ---- serving in this allocation ----------------------------------------------------------------

def run(spec: ServeSpec, follow_logs: bool = True, quiet: bool = False,
        emit: Any = None) -> int:
    """Serve `spec` in the current allocation until stopped; returns the exit code."""
    granted = os.environ.get("SLURM_JOB_NUM_NODES", "")
    if granted.isdigit() and spec.nodes > int(granted):
        raise SpecError("--nodes", f"{spec.nodes} node(s) asked, but this allocation has {granted} "
                        "(SLURM_JOB_NUM_NODES)", f"use --nodes {granted}, or allocate more: "
                        f"salloc -N {spec.nodes}")
    if spec.serve_for and (not spec.name or chain.load(spec.name) is None):
        raise SpecError("serve_for", "a chain of jobs is started by `slurmserve submit`, not "
                        "inside one allocation", "use `slurmserve submit ... --serve-for`, or "
                        "drop serve_for to run here")
    from .console import Console
    from .lifecycle import driver

    return driver.run(spec, slurm.current_job(), console=Console(quiet=quiet),
                      follow_logs=follow_logs, emit=emit)


def ensure_allocation(nodes: int, argv: Sequence[str], env: Mapping[str, str] | None = None
                      ) -> None:
    """Return inside a SLURM allocation; elsewhere become `salloc --nodes=N slurmserve ARGV`."""
    env = os.environ if env is None else env
    if env.get("SLURM_JOB_ID"):
        return
    runner.replace_process(["salloc", f"--nodes={nodes}", "--quiet", sys.executable, "-m",
                            "slurmserve", *argv])


def doctor(spec: ServeSpec, quiet: bool = True) -> tuple[Any, list[str]]:
    """Every preflight check of `run` on every node of the current allocation; starts nothing.

    Returns the verdict (findings per node and check) and the node names.
    """
    from .console import Console
    from .lifecycle import driver

    return driver.doctor(spec, slurm.current_job(), console=Console(quiet=quiet))


# ---- batch jobs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReplicaStatus:
    """One replica of a `--replicas N` job in a `status` row: its record and, when probed, its
    live /health, load and the requests the router completed on it."""

    index: int
    nodes: tuple[str, ...]
    endpoint: str | None
    status: str  # one of state.REPLICA_STATES
    restarts: int = 0
    last_error: str | None = None
    healthy: bool | None = None
    load: LiveLoad | None = None
    requests: float | None = None  # vllm_router_processed_requests_total for it

    @classmethod
    def of(cls, record: ReplicaRecord) -> ReplicaStatus:
        return cls(index=record.index, nodes=record.nodes, endpoint=record.endpoint,
                   status=record.status, restarts=record.restarts, last_error=record.last_error)

    def to_dict(self) -> dict[str, Any]:
        """Flat: the load's fields (running, waiting, kv_cache, gen_tokens_per_s) beside the rest."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "load"}
        data["nodes"] = list(self.nodes)
        data.update((self.load or LiveLoad()).to_dict())
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReplicaStatus:
        known = {f.name for f in dataclasses.fields(cls)} - {"load"}
        fields_ = {k: v for k, v in data.items() if k in known}
        load = LiveLoad.from_dict(data)
        fields_.update(nodes=tuple(data.get("nodes") or ()),
                       load=None if load == LiveLoad() else load)
        return cls(**fields_)


@dataclass(frozen=True)
class JobStatus:
    """One row of `status`: SLURM's state beside ours, the endpoint and a live health check.

    A `--replicas N` job also has its replicas and its router (endpoint, metrics URL, policy);
    `load` is the endpoint's live load (a router's: its replicas' together).
    """

    job: str
    slurm_state: str
    status: Status
    endpoint: str | None
    model: str | None
    nodes: tuple[str, ...]
    healthy: bool | None  # live /health check; None when not applicable
    run_dir: str | None
    engine: str | None = None
    image: str | None = None
    api_key: str | None = None  # where the endpoint's key comes from (env:VAR, file:PATH)
    engine_version: str | None = None  # what the argument check found in the image
    replicas: tuple[ReplicaStatus, ...] = ()
    router: Mapping[str, Any] = field(default_factory=dict)
    load: LiveLoad | None = None
    role: str | None = None  # "router": a chain's router job (chain.py)
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.update(status=self.status.value, nodes=list(self.nodes),
                    replicas=[r.to_dict() for r in self.replicas], router=dict(self.router),
                    load=self.load.to_dict() if self.load else None)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobStatus:
        """Read a row of this schema or an older one (no "schema": 0); refuse a newer one."""
        schema = data.get("schema", 0)
        if not isinstance(schema, int) or schema > SCHEMA:
            raise RecordError(f"job {data.get('job', '?')}: its status has schema {schema!r}, "
                              f"this slurmserve reads up to {SCHEMA}; upgrade slurmserve here")
        known = {f.name for f in dataclasses.fields(cls)}
        fields_ = {k: v for k, v in data.items() if k in known}
        fields_.update(job=str(data["job"]), status=Status.of(data.get("status")),
                       nodes=tuple(data.get("nodes") or ()), schema=SCHEMA,
                       replicas=tuple(ReplicaStatus.from_dict(r) for r in data.get("replicas") or ()),
                       router=dict(data.get("router") or {}),
                       load=LiveLoad.from_dict(data["load"]) if data.get("load") else None)
        return cls(**fields_)


def submit(spec: ServeSpec, python: str | None = None) -> JobRecord:
    """Render the job script next to the logs, sbatch it; returns its (pending) record."""
    log_dir = os.path.abspath(spec.log_dir)
    os.makedirs(log_dir, exist_ok=True)
    script_path = os.path.join(log_dir, f"{spec.job_name}-{time.strftime('%Y%m%d-%H%M%S')}.sbatch")
    with open(script_path, "w", encoding="utf-8") as fh:
        fh.write(render_sbatch(spec, python=python))
    if spec.serve_for:
        return chain.start(spec, script_path, python or sys.executable,
                           json.dumps(_spec_for_job(spec), sort_keys=True))
    result = runner.run(slurm.sbatch_argv(script_path), timeout=120)
    if not result.ok:
        raise LaunchError(f"sbatch refused the job: {(result.err or result.out).strip()}")
    job_id = result.out.strip().split(";")[0]
    run_dir = os.path.join(log_dir, job_id)
    os.makedirs(run_dir, exist_ok=True)
    record = JobRecord(job=job_id, status=Status.PENDING, name=spec.name, engine=spec.engine,
                       model=spec.model_name, run_dir=run_dir, script=script_path)
    state.write(run_dir, record)
    return state.read(job_id) or record


def job_record(job_id: str, field: str = "JOB") -> JobRecord:
    """The record of a job, or of the job serving a deployment (its name); a SpecError naming
    `field` when this machine knows neither."""
    record = state.read(job_id) or (state.read(current_job(job_id, field))
                                    if state.deployment_jobs(job_id) else None)
    if record is None:
        raise SpecError(field, f"no slurmserve job {job_id} is known here",
                        "run `slurmserve status` to list known jobs")
    return record


def jobs_of(target: str, field: str = "JOB") -> list[str]:
    """A job ID known here as itself, or a deployment's jobs (--name), oldest first."""
    if state.find(target):
        return [target]
    jobs = state.deployment_jobs(target)
    if not jobs:
        what = f"job {target}" if target.isdigit() else f"deployment or job '{target}'"
        raise SpecError(field, f"no slurmserve {what} is known here",
                        "run `slurmserve status` to list them")
    return jobs


def current_job(target: str, field: str = "JOB") -> str:
    """The job that answers for `target` now: a job ID is itself; a deployment's is its newest
    job that serves (ready and running), else its newest one still active, else its newest."""
    jobs = jobs_of(target, field)
    if jobs == [target]:
        return target
    serving_jobs = [j for j in jobs if j not in chain.jobs(target, chain.ROUTER)]
    jobs = serving_jobs or jobs  # a chain's router job answers only when nothing else does
    states = slurm.job_states(jobs)
    active = [j for j in jobs if states[j] in slurm.ACTIVE_STATES]
    serving = [j for j in active if (record := state.read(j)) and record.status is Status.READY]
    return (serving or active or jobs)[-1]


def url(target: str) -> str:
    """The endpoint that serves a job or deployment right now; a LaunchError when none does."""
    return serving_endpoint(target, status([target], check_health=False))


def serving_row(rows: Sequence[JobStatus]) -> JobStatus | None:
    """Of a job's or deployment's `status` rows (oldest first): the newest one serving; in a
    chain (--serve-for), its router job's, whose endpoint is in front of every serving job."""
    serving = [r for r in rows if r.status is Status.READY and r.slurm_state == "RUNNING"
               and r.endpoint]
    routers = [r for r in serving if r.role == chain.ROUTER]
    return (routers or serving)[-1] if serving else None


def serving_endpoint(target: str, rows: Sequence[JobStatus]) -> str:
    """The endpoint of `serving_row`; a LaunchError naming the last job when none serves."""
    row = serving_row(rows)
    if row is not None and row.endpoint:
        return row.endpoint
    last = rows[-1] if rows else None
    raise LaunchError(f"{target} is not serving now" + (
        f" (job {last.job}: SLURM {last.slurm_state}, {last.status})" if last else "")
        + f"; `slurmserve status {target}` shows its jobs")


def wait_ready(job_id: str, timeout: float, on_progress: Progress | None = None) -> JobRecord:
    """Wait until the job's driver reports ready; a LaunchError when it fails or ends first."""
    job_id = current_job(job_id)
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        record = job_record(job_id)
        slurm_state = slurm.job_states([job_id])[job_id]
        text = f"job {job_id}: {slurm_state.value.lower()}, {record.status}"
        if on_progress and text != last:
            on_progress(text)
            last = text
        if record.status is Status.READY:
            return record
        if record.status in state.TERMINAL or slurm_state not in slurm.ACTIVE_STATES:
            batch_log = os.path.join(os.path.dirname(record.run_dir or ""),
                                     f"slurmserve-{job_id}.out")
            raise LaunchError(f"job {job_id} ended before it was ready ({slurm_state.value}, "
                              f"{record.status}); see `slurmserve logs {job_id}` and "
                              f"{batch_log}")
        if time.monotonic() > deadline:
            raise LaunchError(f"job {job_id} not ready after {timeout:g}s "
                              f"({slurm_state.value}); it keeps running: `slurmserve stop "
                              f"{job_id}` to end it")
        time.sleep(0.5)


ROUTER_KEYS = ("endpoint", "metrics", "policy")  # of JobRecord.router, in `status` rows


def status(job_ids: Sequence[str] | None = None, check_health: bool = True) -> list[JobStatus]:
    """The given jobs (default: every job known here).

    With `check_health`, every running job is probed live, all at once: /health of its endpoint
    and of each replica, their load from the engine's metrics (two readings metrics.INTERVAL
    apart, for tokens/s) and the router's requests per replica. Keys are read from the job's
    recorded source.
    """
    ids = list(dict.fromkeys(j for target in job_ids for j in jobs_of(target))) if job_ids \
        else [j for j in state.known_jobs() if state.find(j)]
    states = slurm.job_states(ids) if ids else {}
    rows, live = [], []
    for job_id in ids:
        record = job_record(job_id)
        slurm_state = states.get(job_id, slurm.JobState.UNKNOWN)
        ours = record.status
        if slurm_state not in slurm.ACTIVE_STATES and ours not in state.TERMINAL:
            ours = Status.ENDED  # the job is gone but its driver never wrote a final state
        row = JobStatus(
            job=job_id, slurm_state=slurm_state.value, status=ours, endpoint=record.endpoint,
            model=record.model, nodes=tuple(record.hosts), healthy=None,
            run_dir=record.run_dir, engine=record.engine, image=record.image,
            api_key=record.api_key, engine_version=record.engine_version,
            replicas=tuple(ReplicaStatus.of(r) for r in record.replicas),
            router={k: record.router[k] for k in ROUTER_KEYS if k in record.router},
            role=record.role)
        rows.append(row)
        if check_health and record.endpoint and slurm_state == slurm.JobState.RUNNING:
            live.append(row)
    probed = _probe(live)
    return [probed.get(row.job, row) for row in rows]


def _probe(rows: Sequence[JobStatus]) -> dict[str, JobStatus]:
    """The rows with their live health, load and router counts, probed concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    if not rows:
        return {}
    keys = {row.job: apikey.try_read(row.api_key) for row in rows}
    targets = [metrics.Target(endpoint, row.engine, keys[row.job]) for row in rows
               for endpoint in _load_endpoints(row)]
    with ThreadPoolExecutor(max_workers=metrics.MAX_THREADS) as pool:
        health = {(row.job, None): pool.submit(metrics.healthy, row.endpoint, keys[row.job])
                  for row in rows if row.endpoint}
        health.update({(row.job, r.index): pool.submit(metrics.healthy, r.endpoint, keys[row.job])
                       for row in rows for r in row.replicas if r.endpoint})
        routers = {row.job: pool.submit(metrics.fetch_router, row.router["metrics"])
                   for row in rows if row.router.get("metrics")}
        measured = iter(metrics.measure(targets))
        loads = {(row.job, endpoint): next(measured) for row in rows
                 for endpoint in _load_endpoints(row)}
    probed = {}
    for row in rows:
        router = routers[row.job].result() if row.job in routers else None
        replicas = tuple(dataclasses.replace(
            r, healthy=health[row.job, r.index].result() if r.endpoint else None,
            load=loads.get((row.job, r.endpoint)),
            requests=router.processed.get((r.endpoint or "").rstrip("/")) if router else None)
            for r in row.replicas)
        load = (metrics.aggregate(r.load for r in replicas) if replicas
                else loads.get((row.job, row.endpoint)))
        info = {**row.router, "active_workers": router.active_workers} if router else row.router
        probed[row.job] = dataclasses.replace(row, healthy=health[row.job, None].result(),
                                              replicas=replicas, load=load, router=info)
    return probed


def _load_endpoints(row: JobStatus) -> list[str]:
    """Where a job's load is read: each replica's endpoint, else its own."""
    if row.replicas:
        return list(dict.fromkeys(r.endpoint for r in row.replicas if r.endpoint))
    return [row.endpoint] if row.endpoint else []


def replica_record(record: JobRecord, index: int) -> ReplicaRecord:
    """Replica `index` of the job, serving; a SpecError naming --replica when it has none such."""
    if not record.replicas:
        raise SpecError("--replica", f"job {record.job} has no replicas (it was not started "
                        "with --replicas N)", f"drop --replica: --job {record.job} alone uses "
                        "its one endpoint")
    found = [r for r in record.replicas if r.index == index]
    if not found:
        indexes = ", ".join(str(r.index) for r in record.replicas)
        raise SpecError("--replica", f"job {record.job} has no replica {index}",
                        f"give one of {indexes} (see `slurmserve status {record.job}`)")
    if not found[0].endpoint:
        raise SpecError("--replica", f"replica {index} of job {record.job} has no endpoint yet "
                        f"({found[0].status})", f"wait until `slurmserve status {record.job}` "
                        "shows it ready")
    return found[0]


def log_paths(job_id: str, node: str | None = None) -> list[tuple[str, str]]:
    """(host, path) of the job's per-node logs; `node` is a rank or a host name."""
    job_id = current_job(job_id)
    nodes = job_record(job_id).nodes
    if not nodes:
        raise LaunchError(f"job {job_id} has not launched containers yet; no logs")
    if node is not None:
        nodes = tuple(n for n in nodes if str(n.rank) == node or n.host == node)
        if not nodes:
            raise SpecError("--node", f"job {job_id} has no node '{node}'",
                            "give a rank (0, 1, ...) or a host name from `slurmserve status`")
    return [(n.host, n.log or "") for n in nodes]


def logs(job_id: str, node: str | None = None, follow: bool = False) -> Iterator[str]:
    """The job's container log lines, prefixed by host when several; with `follow`, until the
    job ends. Bad input (an unknown job or node) is raised here, before the first line."""
    job_id = current_job(job_id)
    return _tail(log_paths(job_id, node), job_id, follow)


def _tail(paths: list[tuple[str, str]], job_id: str, follow: bool) -> Iterator[str]:
    prefix = len(paths) > 1
    positions = dict.fromkeys((p for _, p in paths), 0)
    while True:
        for host, path in paths:
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    fh.seek(positions[path])
                    for line in fh:
                        yield (f"[{host}] " if prefix else "") + line.rstrip("\n")
                    positions[path] = fh.tell()
            except FileNotFoundError:
                continue
        if not follow or slurm.job_states([job_id])[job_id] not in slurm.ACTIVE_STATES:
            return
        time.sleep(0.3)


def stop(job_id: str, timeout: float = 90.0) -> JobRecord:
    """Graceful stop, verified: ask the driver (a marker file it polls), else signal the job.
    A deployment's name stops every job of it; the record is then its serving job's.

    The driver then stops every container, runs its cleanup step and records how it ended.
    """
    jobs = jobs_of(job_id)
    if jobs != [job_id]:
        chain.end(job_id, "slurmserve stop")  # a chain: nothing succeeds or replaces its jobs
        current = current_job(job_id)
        routers = chain.jobs(job_id, chain.ROUTER)  # last: in front of the others until they end
        for other in [j for j in jobs if j != current and j not in routers]:
            _stop_job(other, timeout)
        record = _stop_job(current, timeout)
        for other in routers:
            if other != current:
                _stop_job(other, timeout)
        return record
    return _stop_job(job_id, timeout)


def _stop_job(job_id: str, timeout: float) -> JobRecord:
    record = job_record(job_id)
    if slurm.job_states([job_id])[job_id] not in slurm.ACTIVE_STATES:
        return record
    if record.run_dir:
        with open(os.path.join(record.run_dir, STOP_MARKER), "w", encoding="utf-8") as fh:
            fh.write(f"{time.time()}\n")
    if record.status is Status.PENDING or not _wait_terminal(job_id, min(30.0, timeout)):
        # No driver running yet (or it died): let SLURM signal every step, then cancel.
        runner.run(slurm.scancel_argv(job_id, signal="TERM"), timeout=30)
        if not _wait_terminal(job_id, timeout):
            runner.run(slurm.scancel_argv(job_id), timeout=30)
            raise LaunchError(f"job {job_id} did not stop within {timeout:g}s; cancelled it hard")
    return job_record(job_id)


def _wait_terminal(job_id: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job_record(job_id).status in state.TERMINAL:
            return True
        if slurm.job_states([job_id])[job_id] not in slurm.ACTIVE_STATES:
            return True
        time.sleep(0.3)
    return False


# ---- benchmarks --------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchOptions:
    """What `slurmserve bench` runs; `to_argv()` gives the same request as flags (remote mode)."""

    suites: str = "latency,concurrency"
    model: str | None = None
    engine: str | None = None
    image: str | None = None
    tokenizer: str | None = None
    dataset: str | None = None
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    tiny: bool = False
    as_json: bool = False  # print the results as JSON (remotely: the login host's bench does)
    replica: int | None = None  # a --replicas job's replica, by index, instead of its router

    def to_argv(self) -> list[str]:
        argv = [a for name, flag in _BENCH_FLAGS.items() if getattr(self, name) is not None
                for a in (flag, str(getattr(self, name)))]
        return argv + ["--tiny"] * self.tiny + ["--json"] * self.as_json


_BENCH_FLAGS = {"suites": "--type", "model": "--model", "engine": "--engine", "image": "--image",
                "tokenizer": "--tokenizer", "dataset": "--dataset",
                "slo_ttft_ms": "--slo-ttft-ms", "slo_tpot_ms": "--slo-tpot-ms",
                "replica": "--replica"}


def bench(options: BenchOptions, base_url: str, *, job: JobRecord | None = None,
          out: str | None = None, api_key: str | None = None,
          progress: BenchProgress | None = None) -> BenchRun:
    """Benchmark `base_url` with the engine's own client, in the engine image: on the job's
    head node beside the server when `job` is given, else on this machine's Docker.

    With `options.replica`, the job's replica of that index instead: its own endpoint, from its
    first node.
    """
    from .tools import apicheck, benchexec
    from .tools import bench as benchmod

    head = job.nodes[0].host if job and job.nodes else None
    name = job.job if job else "url"
    if options.replica is not None:
        if job is None:
            raise SpecError("--replica", "picks a replica of a job", "give --job JOB with it")
        replica = replica_record(job, options.replica)
        base_url, head = replica.endpoint or base_url, (replica.nodes or (head,))[0]
        name = f"{job.job}-replica{replica.index}"
    engine = options.engine or (job.engine if job else None)
    image = options.image or (job.image if job else None)
    if not engine or not image:
        raise SpecError("--engine/--image", "unknown for a bare --url",
                        "give --engine and --image (the engine image that has its client)")
    model = options.model or (job.model if job else None)
    if model is None:
        model = apicheck.run_checks(base_url, engine=engine, api_key=api_key,
                                    only=["models"]).model
    out_dir = os.path.abspath(out or f"bench-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    fields = dict(suites=tuple(s for s in options.suites.split(",") if s),
                  tokenizer=options.tokenizer, sharegpt_path=options.dataset,
                  slo_ttft_ms=options.slo_ttft_ms, slo_tpot_ms=options.slo_tpot_ms)
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        config = (benchmod.BenchConfig.tiny(**fields) if options.tiny
                  else benchmod.BenchConfig(**fields))
    except ValueError as exc:
        raise SpecError("--type", str(exc), "see `slurmserve bench --help`") from None
    execute = (benchexec.on_job_node(job.job, head, image, out_dir, api_key) if job and head
               else benchexec.local_docker(image, out_dir, api_key))
    return benchmod.run_suite(config, execute, engine=engine, base_url=base_url, model=model,
                              out_dir=out_dir, progress=progress)


def compare_bench(dir_a: str, dir_b: str) -> str:
    """Two benchmark result folders side by side (B/A ratios), as text."""
    from .tools import bench as benchmod

    return benchmod.compare(dir_a, dir_b)


# ---- endpoint checks and sizing ----------------------------------------------------------------

def client_key(given: str | None, job: JobRecord | None, fallback: str | None) -> str | None:
    """The key `test` and `bench` send: `given` (a key, env:VAR or file:PATH), else the job's
    own key source, else `fallback` (e.g. $OPENAI_API_KEY); SpecError when it cannot be read."""
    return apikey.for_client(given, job.api_key if job else None, fallback)


def check_endpoint(base_url: str, engine: str | None = None, model: str | None = None,
                  api_key: str | None = None, only: Sequence[str] | None = None) -> Report:
    """Check that `base_url` behaves like an OpenAI server (every check, or those in `only`)."""
    from .tools import apicheck

    try:
        return apicheck.run_checks(base_url, engine=engine, model=model, api_key=api_key,
                                   only=list(only) if only else None)
    except SpecError:
        raise
    except ValueError as exc:  # an engine name apicheck does not know
        names = list(engines.ENGINES)
        raise SpecError("--engine", str(exc),
                        f"use {', '.join(names[:-1])} or {names[-1]}") from None


def sizing_catalogue() -> dict[str, dict[str, dict[str, Any]]]:
    """The model presets and GPU types `size` knows, each with its figures."""
    from .tools import configurator

    return {"models": configurator.presets(), "gpus": configurator.gpus()}


def size(**request: Any) -> Sizing:
    """Size a deployment (TP/PP/DP/EP, nodes, predicted latency); unset fields are defaults.

    A bad request is a SpecError naming its flag.
    """
    from .tools import configurator

    return configurator.plan(configurator.PlanRequest(
        **{k: v for k, v in request.items() if v is not None}))
