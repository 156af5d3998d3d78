"""`slurmserve run`: the lifecycle over the phases, and `doctor` from the same phases.

preflight -> plan -> image -> launch -> ready -> serve, then teardown whatever happened.
Runs inside an allocation. Every cluster-side action is one srun step over all nodes at once
(slurm/steps.py); every step is interruptible; teardown always runs and removes only
containers with our label.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import apikey, chain, engines, router, runtimes, state
from ..console import Console
from ..errors import EXIT_FAILURE, EXIT_OK, LaunchError, Stopped
from ..plan import ClusterPlan
from ..slurm import Job
from ..slurm.steps import HeldStep
from ..spec import ServeSpec
from ..state import STOP_MARKER, JobRecord, NodeRecord, Phase, Status
from . import argcheck, distribute, idle, launch, preflight, teardown, watch
from .context import RunContext
from .distribute import Distribution
from .teardown import Cleanup
from .watch import Ready, Serving

if TYPE_CHECKING:  # imported where a fleet starts: a one-replica run does without them
    from . import replicas

Emit = Callable[[dict[str, Any]], None]


def run(spec: ServeSpec, job: Job, console: Console | None = None, follow_logs: bool = True,
        emit: Emit | None = None) -> int:
    """Serve `spec` in this allocation until stopped; returns the exit code."""
    if len(job.nodes) < spec.nodes:
        raise LaunchError(f"the spec needs {spec.nodes} nodes but job {job.job_id} "
                          f"has {len(job.nodes)}; allocate more with salloc -N")
    ctx = RunContext(spec, job, console or Console(), follow_logs, emit or (lambda event: None))
    os.makedirs(ctx.run_dir, exist_ok=True)
    marker = os.path.join(ctx.run_dir, STOP_MARKER)
    if os.path.exists(marker):
        os.remove(marker)  # from an earlier attempt of this job (requeue)

    def on_signal(signum: int, _frame: Any) -> None:
        ctx.request_stop(f"{signal.Signals(signum).name} during {ctx.phase_now()}",
                         announce=True)

    previous = {sig: signal.signal(sig, on_signal)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    if spec.serve_for:  # a chain's serving job: SLURM's time-limit warning (--signal=B:USR1)
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1,
                                                 lambda *_: ctx.handover.set())
    lifecycle = Lifecycle(ctx)
    code = EXIT_FAILURE
    try:
        lifecycle.start()
        code = EXIT_OK if not ctx.failed else EXIT_FAILURE
    except Stopped:
        code = EXIT_OK
    except LaunchError as exc:
        lifecycle.status = Status.FAILED
        ctx.console.error(str(exc))
        lifecycle.show_failed_logs()
        code = EXIT_FAILURE
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        lifecycle.finish()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


class Lifecycle:
    """The phases in order, and what each returned (for the record and for teardown)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.status = Status.STARTING
        self.plan: ClusterPlan | None = None
        self.image = ""
        self.runtime = ""  # chosen in preflight
        self.bundle: launch.Launch | None = None
        self.distribution = Distribution("")
        self.args = argcheck.ArgsVerdict()
        self.serving: Serving | None = None
        self.ready: Ready | None = None
        self.fleet: replicas.Fleet | None = None  # with --replicas N > 1
        self.held: HeldStep | None = None  # the preflight step, waiting to run the launch
        self._record_lock = threading.Lock()  # replica watchdogs write the record too

    def start(self) -> None:
        ctx, spec = self.ctx, self.ctx.spec
        self.write_record()  # starting: `status` (and a chain's predecessor) sees it at once
        if spec.replicas > 1 and not spec.serve_for:  # a chain's router is a job of its own
            router.require_installed()
        engine = engines.get(spec.engine)
        one = spec.replica_spec  # what each replica runs (the whole spec without replicas)
        resolution = engine.resolve(one)
        # Held: with one serving step on the preflight's nodes, it runs in the same tasks.
        pre = preflight.check(ctx, resolution, hold=spec.replicas == 1 and not spec.serve_for)
        self.held = pre.held
        self.runtime = pre.runtime or pre.verdict.closest  # what teardown cleans with
        preflight.require(ctx, pre)
        teardown.remove_leftovers(ctx, preflight.leftover_jobs(pre.facts, ctx.job.job_id,
                                                               pre.runtime), pre.runtime)
        plans = [engine.plan(one, part, resolution, pre.port)
                 for part in pre.allocation(ctx.job.job_id).split(spec.replicas)]
        self.plan = plan = plans[0]
        refused = runtimes.refusal(plan.needs, pre.runtime)
        if refused:
            raise LaunchError(f"{refused}; nothing was started")
        self.distribution = distribute.distribute(ctx, pre, plan)
        self.image = image = self.distribution.image
        if spec.check_args:
            self.args = argcheck.check_args(ctx, plan, image, pre.runtime)
            argcheck.require(ctx, self.args)
        if spec.replicas > 1 or spec.serve_for:
            self._start_fleet(pre, plans)
            return
        self.bundle = bundle = launch.build(spec, plan, ctx.run_dir, image, pre.runtime,
                                            untouched=pre.untouched())
        launch.write(bundle)  # env files and secrets 0600; removed at teardown
        self._prefetch(bundle)
        roles = ", ".join(f"{n.host}:{n.role}" for n in plan.nodes)
        ctx.console.phase("launch", f"{plan.engine} ({plan.mode}) world={plan.world_size} "
                          f"on {roles}, runtime {pre.runtime}")
        self._enter_launch()
        self.serving = Serving(ctx, plan, bundle, watch.rdma_expected(ctx, devices(pre, plan)),
                               held=self.held)
        self.ready = watch.wait_ready(ctx, self.serving)
        self.plan = self.ready.plan
        self._announce_ready()
        self._watch_idle(lambda: [plan.endpoint], bundle.api_key)
        watch.serve(ctx, self.serving)

    def _start_fleet(self, pre: preflight.Preflight, plans: list[ClusterPlan]) -> None:
        """--replicas N: the router on the first node, then every replica on its own nodes."""
        from . import handover, replicas

        ctx, spec = self.ctx, self.ctx.spec
        one = spec.replica_spec
        bundles = [launch.build(one, p, replicas.replica_dir(ctx.run_dir, k), self.image,
                                pre.runtime) for k, p in enumerate(plans)]
        for bundle in bundles:
            launch.write(bundle)  # again at each start of a replica: teardown removes secrets
        self._prefetch(bundles[0])
        ctx.console.phase("launch", f"{len(plans)} replicas of {plans[0].engine} "
                          f"({plans[0].mode}) world={plans[0].world_size}, runtime "
                          f"{pre.runtime}: " + "; ".join(
                              f"replica {k} on {','.join(n.host for n in p.nodes)}"
                              for k, p in enumerate(plans)))
        members = [replicas.Replica(k, p, b, watch.rdma_expected(ctx, devices(pre, p, k)))
                   for k, (p, b) in enumerate(zip(plans, bundles, strict=True))]
        name = spec.name
        if spec.serve_for and name:  # the router is the chain's, in its router job
            self.fleet = fleet = replicas.Fleet(
                ctx, members, None, pre.runtime, on_change=self.write_record,
                endpoint=lambda: (c.router_endpoint if (c := chain.load(name)) else None))
        else:
            router_plan = router.RouterPlan.for_job(ctx.job.job_id, plans[0].head_address,
                                                    spec.route, spec.host)
            self.fleet = fleet = replicas.Fleet(ctx, members, router_plan, pre.runtime,
                                                on_change=self.write_record)
        self._enter_launch()
        fleet.start()
        fleet.wait_ready()
        self._announce_ready()
        self._watch_idle(lambda: [r.endpoint for r in members if r.status == "ready"],
                         bundles[0].api_key)
        if spec.serve_for and name:
            chain.update(name, replacements=0)
            handover.ChainWatch(ctx, fleet, name).start()
        fleet.serve()

    def _watch_idle(self, endpoints: Callable[[], list[str]], api_key: str | None) -> None:
        spec = self.ctx.spec
        if not spec.idle_timeout:
            return
        watcher = idle.IdleWatch(spec.idle_timeout, endpoints, spec.engine, api_key)
        name = spec.name
        if spec.serve_for and name:  # idle ends the whole chain, not only this job
            watcher.start(self.ctx, on_idle=lambda reason: chain.end(name, reason))
        else:
            watcher.start(self.ctx)

    def _prefetch(self, bundle: launch.Launch) -> None:
        spec = self.ctx.spec
        if spec.hf_cache and not spec.model_is_local:
            distribute.prefetch(self.ctx, bundle.nodes[0].env_file, self.image, self.runtime)

    def _enter_launch(self) -> None:
        self.write_record()
        self.ctx.enter(Phase.LAUNCH)
        if self.ctx.stop.is_set():
            raise Stopped  # no container may start after a stop was asked for

    def _announce_ready(self) -> None:
        ctx = self.ctx
        self.status = Status.READY
        ctx.mark("ready")
        path = self.write_record()
        ctx.console.result(ready_lines(self.record(), ctx.spec,
                                       time.monotonic() - ctx.started, path))
        ctx.emit({"event": "ready", **self.record().to_dict()})

    def finish(self) -> None:
        ctx = self.ctx
        t0 = time.monotonic()
        if self.held is not None:
            self.held.release()  # no-op once the launch runs in it
        if self.status != Status.FAILED:
            self.status = Status.STOPPING
        if self.fleet is not None:
            ctx.console.phase("teardown", "stopping every replica and the router")
            self.fleet.stop()
        down = teardown.teardown(ctx, self.serving, self.bundle,
                                 touched_nodes=ctx.phase != Phase.START, runtime=self.runtime)
        self.status = Status.FAILED if self.status == Status.FAILED or ctx.failed \
            else Status.STOPPED
        if self.plan is not None:
            self.write_record(down.cleanup or Cleanup(0, ()))
        ctx.console.phase("teardown", teardown.summary(
            ctx, down, self.serving is not None or self.fleet is not None,
            time.monotonic() - t0))
        ctx.emit({"event": "stopped", **self.record().to_dict()})

    def record(self, cleanup: Cleanup | None = None) -> JobRecord:
        ctx, plan, bundle, fleet = self.ctx, self.plan, self.bundle, self.fleet
        model = self.ready.model if self.ready else fleet.model if fleet else \
            plan.model_name if plan else ctx.spec.model_name
        nodes: tuple[NodeRecord, ...] = ()
        placed: dict[str, Any] = {}
        if plan is not None and bundle is not None:
            nodes = node_records(plan, bundle)
            placed = dict(image=self.image, endpoint=plan.endpoint, head=plan.head_address,
                          port=plan.port, mode=plan.mode, runtime=self.runtime)
        if fleet is not None:
            nodes = tuple(dataclasses.replace(n, rank=r.index * len(r.plan.nodes) + n.rank,
                                              role=f"replica {r.index} {n.role}")
                          for r in fleet.replicas for n in node_records(r.plan, r.bundle))
            placed = dict(image=self.image, mode=fleet.replicas[0].plan.mode,
                          runtime=self.runtime,
                          replicas=tuple(r.record() for r in fleet.replicas),
                          **fleet.placed())
        return JobRecord(
            job=ctx.job.job_id, status=self.status, name=ctx.spec.name, engine=ctx.spec.engine,
            model=model,
            run_dir=ctx.run_dir, driver_pid=os.getpid(), driver_host=socket.gethostname(),
            api_key=ctx.spec.api_key,  # where the key comes from (env:VAR, file:PATH), never it
            engine_version=self.args.summary or None, nodes=nodes, **placed,
            cleanup_removed=cleanup.removed if cleanup else None,
            cleanup_unchecked=tuple(cleanup.unchecked) if cleanup else (),
            distribution=dict(self.distribution.details), timeline=ctx.timeline())

    def write_record(self, cleanup: Cleanup | None = None) -> str:
        with self._record_lock:
            return state.write(self.ctx.run_dir, self.record(cleanup))

    def show_failed_logs(self) -> None:
        """The last 50 lines of each failed node's log (the first to fail comes first)."""
        if self.fleet is not None:
            self.fleet.show_failed_logs()
        if self.bundle is None:
            return
        for failure in self.ctx.failed[:2]:
            node = self.bundle.nodes[failure.rank]
            try:
                with open(node.log, encoding="utf-8", errors="replace") as fh:
                    tail = deque(fh, maxlen=50)
            except OSError:
                continue
            self.ctx.console.line(f"--- last {len(tail)} lines of {node.log} ---")
            for line in tail:
                self.ctx.console.line(line.rstrip())


def node_records(plan: ClusterPlan, bundle: launch.Launch) -> tuple[NodeRecord, ...]:
    return tuple(NodeRecord(rank=n.rank, host=n.host, address=p.address, ifname=p.ifname,
                            role=p.role, container=n.container, log=n.log)
                 for n, p in zip(bundle.nodes, plan.nodes, strict=True))


def devices(pre: preflight.Preflight, plan: ClusterPlan, replica: int = 0) -> dict[int, str]:
    """Per rank of the plan: the RDMA devices its node reported in preflight."""
    first = replica * len(plan.nodes)
    return {r: pre.facts.of(first + r).get("devices", "") for r in range(len(plan.nodes))}


def ready_lines(record: JobRecord, spec: ServeSpec, elapsed: float, path: str) -> list[str]:
    """The READY block on stdout: endpoint, a curl to paste, the OpenAI base URL."""
    body = json.dumps({"model": record.model, "messages": [{"role": "user", "content": "Hello"}],
                       "max_tokens": 32})
    auth = (f' -H "Authorization: Bearer {apikey.shell_ref(spec.api_key)}"'
            if spec.api_key else "")
    replicas = [f"  replica {r.index}: {r.endpoint} on {','.join(r.nodes)} ({r.status})"
                for r in record.replicas]
    ready = sum(r.status == "ready" for r in record.replicas)
    count = f" replicas={ready}/{len(record.replicas)}" if record.replicas else ""
    return [f"READY {record.endpoint} model={record.model} nodes={len(record.nodes)} "
            f"engine={record.engine} in {elapsed:.1f}s{count}", *replicas,
            f"  curl {record.endpoint}/v1/chat/completions -H 'Content-Type: application/json'"
            f"{auth} -d {shlex.quote(body)}",
            f"  OPENAI_BASE_URL={record.endpoint}/v1",
            f"  state: {path}"]


def doctor(spec: ServeSpec, job: Job, console: Console | None = None
           ) -> tuple[preflight.Verdict, list[str]]:
    """Every preflight check of `run` on every node, and the in-image checks where the image
    is; starts nothing. Returns the verdict and the node names."""
    ctx = RunContext(spec, job, console or Console(quiet=True), follow_logs=False)
    os.makedirs(ctx.run_dir, exist_ok=True)
    engine = engines.get(spec.engine)
    runtime = ""
    try:
        one = spec.replica_spec  # what each replica runs
        resolution = engine.resolve(one)
        pre = preflight.check(ctx, resolution)
        runtime = pre.runtime or pre.verdict.closest
        verdict = pre.verdict
        if not verdict.failures:
            first = pre.allocation(job.job_id).split(spec.replicas)[0]
            plan = engine.plan(one, first, resolution, pre.port)
            verdict.findings += distribute.check_tools(ctx, plan, pre)
            if pre.image_fact(0) == "present":  # checked on one node: the head
                verdict.findings += argcheck.check_args(ctx, plan, pre.image, runtime).findings(
                    ctx.nodes[0])
            else:
                verdict.findings.append(preflight.Finding(
                    ctx.nodes[0], "args", "warn", "image not on this node yet: checked at launch"))
    finally:
        teardown.cleanup(ctx, [job.job_id], runtime)  # the staging-directory markers
    return verdict, list(ctx.nodes)
