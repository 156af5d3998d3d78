"""`submit --serve-for`: one named deployment served by a chain of jobs, behind a router job.

The deployment's state lives in its record (deployments/NAME.json), never only in a process:
whichever job of it is alive reads the record and carries on. Each serving job hands over
before its --time ends (lifecycle/handover.py); the router job (lifecycle/router_job.py) runs
vllm-router for the whole chain, replaces a serving job that ended early (preempted,
cancelled, a node lost) and renews itself the same way. A serving job replaces a lost router.

Jobs are submitted under the deployment's lock and only while no other job of that role is
active, so two jobs that decide at once submit one successor between them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runner, slurm, state
from .errors import LaunchError, SpecError
from .render import render_template
from .spec import ServeSpec, slurm_seconds
from .state import JobRecord, Status

SERVE = "serve"
ROUTER = "router"
HOLD_S = 60.0  # the router holds a request this long while no replica is in (a replacement)
HANDOVER_MAX_S = 600.0  # default lead: a third of --time, at most this
ROUTER_CPUS = 1


@dataclass(frozen=True)
class Chain:
    """A deployment that outlives its jobs: what any job of it needs to continue it."""

    name: str
    serve_until: float  # wall clock: no job is started to serve past it
    job_s: float  # each serving job's --time
    handover_s: float  # the --signal lead: a successor is submitted this long before the end
    drain_grace_s: float
    max_replacements: int  # serving jobs in a row that may end before ready, then it stops
    script: str  # the serving jobs' sbatch script
    router_script: str
    log_dir: str
    router_job: str | None = None  # the router job whose router serves now
    router_endpoint: str | None = None
    stopping: str | None = None  # why the deployment is ending; None while it serves
    replacements: int = 0  # serving jobs submitted since one was last ready
    handovers: tuple[dict[str, Any], ...] = ()  # each serving job's handover, wall clock

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"handovers": list(self.handovers)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Chain:
        known = {f.name for f in dataclasses.fields(cls)}
        fields_ = {k: v for k, v in data.items() if k in known}
        fields_["handovers"] = tuple(fields_.get("handovers") or ())
        return cls(**fields_)


def record_path(name: str) -> Path:
    return state.deployments_dir() / f"{name}.json"


def load(name: str) -> Chain | None:
    """The chain's record, or None when `name` is not a chain known here."""
    try:
        return Chain.from_dict(json.loads(record_path(name).read_text()))
    except FileNotFoundError:
        return None


@contextmanager
def locked(name: str) -> Iterator[None]:
    """The deployment's lock (a file lock on the shared state directory)."""
    directory = state.deployments_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{name}.lock", "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _save(chain: Chain) -> Chain:
    path = record_path(chain.name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(chain.to_dict(), indent=2, sort_keys=True))
    os.replace(tmp, path)
    return chain


def update(name: str, **changes: Any) -> Chain | None:
    """Change fields of the record under the lock; None when there is no chain `name`."""
    with locked(name):
        chain = load(name)
        return None if chain is None else _save(dataclasses.replace(chain, **changes))


def add_handover(name: str, event: dict[str, Any]) -> None:
    with locked(name):
        chain = load(name)
        if chain is not None:
            _save(dataclasses.replace(chain, handovers=(*chain.handovers, event)))


def end(name: str, reason: str) -> None:
    """Mark the deployment ending: nothing replaces or succeeds its jobs from now on."""
    with locked(name):
        chain = load(name)
        if chain is not None and not chain.stopping:
            _save(dataclasses.replace(chain, stopping=reason))


def jobs(name: str, role: str) -> list[str]:
    """The deployment's jobs of one role, oldest first."""
    return [j for j in state.deployment_jobs(name)
            if (record := state.read(j)) is not None and (record.role or SERVE) == role]


def active_jobs(name: str, role: str) -> list[str]:
    """Its jobs of `role` that SLURM still runs or queues (a LaunchError if squeue fails)."""
    ids = jobs(name, role)
    states = slurm.job_states(ids, strict=True)
    return [j for j in ids if states[j] in slurm.ACTIVE_STATES]


def submit_job(name: str, role: str, besides: Collection[str] = (), replacing: bool = False
               ) -> str | None:
    """Submit a job of `role` unless one is active besides `besides` or the deployment is
    ending; returns its ID, else None. `replacing` counts it against max_replacements."""
    with locked(name):
        chain = load(name)
        if chain is None or chain.stopping or time.time() >= chain.serve_until:
            return None
        if [j for j in active_jobs(name, role) if j not in besides]:
            return None
        if replacing and chain.replacements >= chain.max_replacements:
            _save(dataclasses.replace(chain, stopping=(
                f"{chain.replacements} serving jobs in a row ended before they were ready")))
            return None
        job_id = sbatch(chain.script if role == SERVE else chain.router_script)
        run_dir = os.path.join(chain.log_dir, job_id)
        os.makedirs(run_dir, exist_ok=True)
        state.write(run_dir, JobRecord(job=job_id, status=Status.PENDING, name=name,
                                       role=None if role == SERVE else role, run_dir=run_dir,
                                       script=chain.script if role == SERVE
                                       else chain.router_script))
        if replacing:
            _save(dataclasses.replace(chain, replacements=chain.replacements + 1))
        return job_id


def sbatch(script: str) -> str:
    result = runner.run(slurm.sbatch_argv(script), timeout=120)
    if not result.ok:
        raise LaunchError(f"sbatch refused the job: {(result.err or result.out).strip()}")
    return result.out.strip().split(";")[0]


def lead_s(spec: ServeSpec) -> float:
    """How long before a job's end its successor is submitted (--handover); the default is
    spec.py's too (a third of --time, at most HANDOVER_MAX_S)."""
    job_s = slurm_seconds(spec.slurm.time or "") or 0.0
    return spec.handover if spec.handover is not None else min(HANDOVER_MAX_S, job_s / 3)


def create(spec: ServeSpec, script: str, python: str, spec_json: str) -> tuple[Chain, str]:
    """The deployment's record and its router job's script; a SpecError when `spec.name`
    still has an active job."""
    assert spec.name and spec.serve_for and spec.slurm.time
    active = [j for j in state.deployment_jobs(spec.name)
              if slurm.job_states([j])[j] in slurm.ACTIVE_STATES]
    if active:
        raise SpecError("--name", f"deployment {spec.name} is still serving (jobs "
                        f"{', '.join(active)})", f"stop it first (`slurmserve stop {spec.name}`) "
                        "or choose another name")
    log_dir = os.path.abspath(spec.log_dir)
    router_script = os.path.join(log_dir, f"{spec.name}-router.sbatch")
    with open(router_script, "w", encoding="utf-8") as fh:
        fh.write(render_template(
            "router_job.sh.j2", job_name=f"{spec.job_name}-router", cpus=ROUTER_CPUS,
            partition=spec.router_partition or spec.slurm.partition,
            account=spec.slurm.account, qos=spec.slurm.qos,
            time=spec.router_time or spec.slurm.time,
            lead=int(lead_s(spec)), output=os.path.join(log_dir, "slurmserve-%j.out"),
            python=python, spec_json=spec_json))
    chain = Chain(name=spec.name, serve_until=time.time() + spec.serve_for,
                  job_s=slurm_seconds(spec.slurm.time) or 0.0, handover_s=lead_s(spec),
                  drain_grace_s=spec.drain_grace, max_replacements=spec.max_restarts,
                  script=script, router_script=router_script, log_dir=log_dir)
    with locked(spec.name):
        _save(chain)
    return chain, router_script


def start(spec: ServeSpec, script: str, python: str, spec_json: str) -> JobRecord:
    """A new chain: its router job, then its first serving job; returns the latter's record."""
    assert spec.name
    create(spec, script, python, spec_json)
    router_job = submit_job(spec.name, ROUTER)
    serving = submit_job(spec.name, SERVE)
    if router_job is None or serving is None:
        raise LaunchError(f"deployment {spec.name} could not submit its jobs")
    record = state.read(serving)
    assert record is not None
    state.write(record.run_dir or "", dataclasses.replace(
        record, engine=spec.engine, model=spec.model_name, router={"job": router_job}))
    return state.read(serving) or record
