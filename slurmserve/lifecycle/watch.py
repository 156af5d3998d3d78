"""The serving step and what watches it: node facts, node logs, readiness, the serve loop."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from dataclasses import dataclass

from ..errors import LaunchError, Stopped
from ..plan import ClusterPlan
from ..runner import Process
from ..runtimes import _common as common
from ..slurm.steps import HeldStep, parse_fact
from ..state import Phase
from .context import RunContext
from .launch import Launch
from .logwatch import LogWatch

SERVE_STEP = "slurmserve-serve"
# srun's own word when a task ends with an error: a node script that died without saying why.
TASK_EXITED = re.compile(r"^srun: error: (\S+): task (\d+): Exited with exit code (\d+)")
GENERATE_TIMEOUT_S = 10.0
POLL_S = 0.25
READY_POLL_S = 0.05  # a refused connection costs ~1 ms: notice the first 200 at once


class Serving:
    """The running serving step: one task per node, each running its node's container."""

    def __init__(self, ctx: RunContext, plan: ClusterPlan, bundle: Launch,
                 rdma_expected: dict[int, bool], step: str = SERVE_STEP,
                 held: HeldStep | None = None) -> None:
        self.ctx = ctx
        self.plan = plan
        self.bundle = bundle
        self.done = threading.Event()  # set at teardown: the log followers end
        ctx.ranks = len(plan.nodes)
        if held is not None and held.fits(len(plan.nodes), plan.step_tasks, bundle.step_options):
            self.step = held.name  # the preflight step's tasks run the node script now
            self.proc: Process = held.launch(bundle.script_path)
        else:
            if held is not None:
                held.release()
            self.step = step  # the step's name: a replica's own
            self.proc = ctx.steps.start(
                step, bundle.script_path, nodes=len(plan.nodes), label=step,
                options=bundle.step_options, tasks=plan.step_tasks,
                tasks_per_node=plan.tasks_per_node)
        threading.Thread(target=self._read_step, daemon=True).start()
        for node in bundle.nodes:  # printed only when following; always watched
            watch = LogWatch(node.host, rdma_expected.get(node.rank, False))
            threading.Thread(target=self._follow, args=(node.log, node.host, watch),
                             daemon=True).start()

    def _read_step(self) -> None:
        assert self.proc.stdout is not None
        ctx = self.ctx
        for line in self.proc.stdout:
            fact = parse_fact(line)
            if fact is None:
                ctx.console.line(line.rstrip("\n"))
                exited = TASK_EXITED.match(line)
                rank = int(exited[2]) // self.plan.tasks_per_node if exited else -1
                if exited and rank < len(self.plan.nodes) and \
                        not any(f.rank == rank for f in ctx.failed):
                    ctx.add_failure(rank, f"its task exited with code {exited[3]} without "
                                    f"saying why (see {self.bundle.nodes[rank].log})")
                continue
            who = f"slurmserve[{fact.rank}@{self.plan.nodes[fact.rank].host}]"
            if fact.key == "started":  # counted before it is shown: stop messages say it
                ctx.running.add(fact.rank)
                if len(ctx.running) == ctx.ranks:
                    ctx.mark("containers started")
                ctx.console.line(f"{who}: container {fact.value} started")
            elif fact.key == "stopped":
                ctx.console.line(f"{who}: container {fact.value} stopped on request")
            elif fact.key == "failed":
                ctx.console.line(f"{who}: FAILED: {fact.value}")
                ctx.add_failure(fact.rank, fact.value)

    def _follow(self, path: str, host: str, watch: LogWatch) -> None:
        position = 0
        while not self.ctx.stop.is_set() and not self.done.is_set():
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    fh.seek(position)
                    for line in fh:
                        if self.ctx.follow_logs:
                            self.ctx.console.line(f"[{host}] {line.rstrip()}")
                        for note in watch.feed(line):
                            self.ctx.console.phase("logs", note)
                    position = fh.tell()
            except FileNotFoundError:
                pass
            time.sleep(0.2)

    def check(self) -> None:
        """Stop requested, a rank failed, or the step ended: raise."""
        self.ctx.check()
        code = self.proc.poll()
        if code is not None:
            if self.ctx.job_ended():
                raise Stopped
            raise LaunchError(f"the serving step ended unexpectedly (srun exit {code})")


def rdma_expected(ctx: RunContext, facts_devices: dict[int, str]) -> dict[int, bool]:
    """Per rank: should NCCL use RDMA there (asked for, or the node has the devices)?"""
    _, required = common.device_globs(ctx.spec)
    return {rank: required or common.has_rdma(devices) for rank, devices in facts_devices.items()}


@dataclass(frozen=True)
class Ready:
    plan: ClusterPlan  # with the model name the server lists
    model: str


def wait_ready(ctx: RunContext, serving: Serving) -> Ready:
    """Health, then the model listed, then a one-token completion: only then READY."""
    ctx.enter(Phase.WAITING_FOR_READY)  # first: a stop names the containers started so far
    from .health import Prober  # imported here: http.client while the containers start

    plan = serving.plan
    prober = Prober(plan.endpoint, plan.readiness, api_key=serving.bundle.api_key)
    deadline = time.monotonic() + ctx.spec.health_timeout
    last = "no answer yet"
    ctx.console.phase("ready?", f"polling {plan.endpoint}{plan.readiness.health_path}")
    while True:
        serving.check()
        if time.monotonic() > deadline:
            raise LaunchError(f"not ready after {ctx.spec.health_timeout:g}s: {last}")
        check = prober.health(timeout=1.0)
        if check.ok:
            ctx.mark("health")
            models, ids = prober.models()
            if models.ok and plan.model_name not in ids and not plan.readiness.exact_model_name:
                plan = dataclasses.replace(plan, model_name=ids[0])
            if models.ok and plan.model_name not in ids:
                # Not ours: e.g. another job's server on this port.
                last = (f"{plan.endpoint} serves {', '.join(ids)}, not {plan.model_name}: "
                        "is another server on this port?")
            elif models.ok:
                generated = prober.generate(plan.model_name, timeout=GENERATE_TIMEOUT_S)
                if generated.ok:
                    return Ready(plan, plan.model_name)
                last = (f"{plan.readiness.health_path} answers and the model is listed, but "
                        f"a 1-token completion failed: {generated.detail}")
            else:
                last = f"/health answers but {models.detail}"
        else:
            last = f"{plan.readiness.health_path}: {check.detail}"
        ctx.console.status(f"waiting for ready: {last}")
        ctx.stop.wait(READY_POLL_S)


def serve(ctx: RunContext, serving: Serving) -> None:
    """Until a stop, a failed rank or the end of the step."""
    ctx.enter(Phase.SERVING)
    ctx.console.phase("serving", "Ctrl+C or scancel to stop; logs in " + ctx.run_dir)
    while True:
        serving.check()
        ctx.stop.wait(POLL_S)
