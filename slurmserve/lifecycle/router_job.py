"""A chain's router job (`submit --serve-for`): vllm-router for every serving job of it.

It runs in a small CPU job of its own so the endpoint outlives the serving jobs, which join it
when ready and leave it when they hand over (lifecycle/handover.py). Besides routing it keeps
the deployment served: a serving job that ended early (preempted, cancelled, a node lost) is
replaced at once, and before its own --time ends (USR1) it submits its successor, which takes
the members over and becomes the deployment's router; this one then serves the clients that
still use its address for the drain grace, and ends.

    python -m slurmserve.lifecycle.router_job SPEC.json     (what router_job.sh.j2 runs)
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from .. import chain, router, runner, slurm, state
from ..console import Console
from ..errors import LaunchError
from ..render import render_template
from ..runtimes import _common as common
from ..spec import ServeSpec, load_spec
from ..state import STOP_MARKER, JobRecord, Status
from .replicas import ROUTER_START_S, RouterAdmin

CHECK_S = 1.0  # between looks at the deployment


class RouterJob:
    """One router job of a chain: start, take the members over, route and supervise, end."""

    def __init__(self, spec: ServeSpec, job: slurm.Job, console: Console) -> None:
        assert spec.name
        self.spec, self.job, self.console = spec, job, console
        self.name = spec.name
        self.run_dir = os.path.join(os.path.abspath(spec.log_dir), job.job_id)
        self.plan = router.RouterPlan.for_job(job.job_id, slurm.node_address(job.nodes[0]),
                                              spec.route, spec.host, hold_s=chain.HOLD_S)
        self.admin = RouterAdmin(self.plan.endpoint)
        self.log = os.path.join(self.run_dir, "router.log")
        self.stop = threading.Event()
        self.stop_reason = ""
        self.renew = threading.Event()  # USR1: the time limit is near
        self.successor: str | None = None
        self.status = Status.STARTING
        self.proc: runner.Process | None = None

    def record(self) -> JobRecord:
        return JobRecord(job=self.job.job_id, status=self.status, name=self.name,
                         role=chain.ROUTER, engine=self.spec.engine, model=self.spec.model_name,
                         run_dir=self.run_dir, driver_pid=os.getpid(),
                         driver_host=socket.gethostname(), api_key=self.spec.api_key,
                         endpoint=self.plan.endpoint, head=self.plan.host, port=self.plan.port,
                         nodes=(state.NodeRecord(rank=0, host=self.job.nodes[0],
                                                 address=self.plan.host, role="router",
                                                 log=self.log),),
                         router=dict(endpoint=self.plan.endpoint, metrics=self.plan.metrics,
                                     policy=self.plan.policy, route=self.spec.route,
                                     log=self.log))

    def write(self) -> None:
        state.write(self.run_dir, self.record())

    def request_stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            self.console.line(f"slurmserve: {reason}, stopping")
        self.stop.set()

    def run(self) -> int:
        os.makedirs(self.run_dir, exist_ok=True)
        self.write()
        try:
            self._start()
            self._take_over()
            self.status = Status.READY
            self.write()
            self.console.line(f"READY {self.plan.endpoint} router of deployment {self.name} "
                              f"(job {self.job.job_id})")
            self._supervise()
            self.status = Status.STOPPING
            return 0
        except LaunchError as exc:
            self.status = Status.FAILED
            self.console.error(str(exc))
            return 1
        finally:
            self._end()

    def _start(self) -> None:
        script = render_template("router.sh.j2", argv=self.plan.argv(), log=self.log,
                                 job_id=self.job.job_id, mark_var=router.MARK_VAR,
                                 node_var=common.NODE_VAR)
        self.proc = runner.start(["bash", "-c", script])  # it writes its own log
        deadline = time.monotonic() + ROUTER_START_S
        while not self.admin.up():
            if self.proc.poll() is not None:
                raise LaunchError(f"the router exited ({self.proc.returncode}) before it "
                                  f"answered; see {self.log}")
            if time.monotonic() > deadline or self.stop.wait(0.1):
                raise LaunchError(f"the router did not answer in {ROUTER_START_S:g}s")

    def _take_over(self) -> None:
        """Copy the current router's members, then become the deployment's router."""
        current = chain.load(self.name)
        if current and current.router_endpoint and current.router_endpoint != self.plan.endpoint:
            for url in RouterAdmin(current.router_endpoint).workers():
                self.admin.add(url)
        chain.update(self.name, router_job=self.job.job_id, router_endpoint=self.plan.endpoint)

    def _supervise(self) -> None:
        handed_over_at: float | None = None
        while not self.stop.wait(CHECK_S):
            if os.path.exists(os.path.join(self.run_dir, STOP_MARKER)):
                self.request_stop("slurmserve stop")
                break
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise LaunchError(f"the router exited ({self.proc.returncode}); see {self.log}")
            now = chain.load(self.name)
            if now is None:
                raise LaunchError(f"the record of deployment {self.name} is gone")
            if now.router_job != self.job.job_id:  # a successor took over: drain, then end
                handed_over_at = handed_over_at or time.monotonic()
                if time.monotonic() - handed_over_at >= now.drain_grace_s:
                    self.request_stop(f"handed over to router job {now.router_job}")
                continue
            try:
                self._look(now)
            except LaunchError as exc:  # squeue or sbatch failing: decide again next time
                self.console.line(f"slurmserve: {exc}")

    def _look(self, now: chain.Chain) -> None:
        """Renew this router, prune members, end with the deployment or replace its job."""
        if self.renew.is_set() and self.successor is None:
            self.successor = chain.submit_job(self.name, chain.ROUTER, besides={self.job.job_id})
            if self.successor:
                self.console.line(f"slurmserve: time limit near: submitted router job "
                                  f"{self.successor} to take over")
        serving = chain.active_jobs(self.name, chain.SERVE)
        self._prune(serving)
        over = now.stopping or (time.time() >= now.serve_until and "--serve-for is over")
        if over:
            if not serving:
                self.request_stop(f"deployment {self.name} ended: {over}")
        elif not serving:
            replacement = chain.submit_job(self.name, chain.SERVE, replacing=True)
            if replacement:
                self.console.line(f"slurmserve: no serving job left: submitted job "
                                  f"{replacement} to replace it")

    def _prune(self, serving: list[str]) -> None:
        """Members whose job is over leave (a job SIGKILLed or cut off could not say so)."""
        alive = {r.endpoint for j in serving if (record := state.read(j))
                 for r in record.replicas}
        for url in self.admin.workers():
            if url not in alive:
                ok, _ = self.admin.remove(url)
                self.console.line(f"slurmserve: removed {url} from the router: its job ended"
                                  + ("" if ok else " (the router refused)"))

    def _end(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except runner.TimeoutExpired:
                proc.kill()
        if self.status is not Status.FAILED:
            self.status = Status.STOPPED
        self.write()
        self.console.line(f"slurmserve: router job {self.job.job_id} ended"
                          + (f" ({self.stop_reason})" if self.stop_reason else ""))


def main(argv: list[str]) -> int:
    spec = load_spec(argv[0])
    job = slurm.current_job()
    console = Console()
    job_run = RouterJob(spec, job, console)

    def on_stop(signum: int, _frame: Any) -> None:
        job_run.request_stop(f"{signal.Signals(signum).name} (scancel or the time limit)")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_stop)
    signal.signal(signal.SIGUSR1, lambda *_: job_run.renew.set())
    return job_run.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
