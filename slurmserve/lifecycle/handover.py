"""A serving job of a chain (`submit --serve-for`): hand over before --time ends.

In the background of the job once it serves:
- on SLURM's time-limit warning (USR1, --handover before the end) it submits its successor,
  waits until that job is READY (its replicas in the deployment's router), drains its own
  replicas (out of the router; requests in flight finish within --drain-grace) and ends;
- it ends the job when --serve-for is over and when the deployment ends (stop NAME, idle);
- it puts its replicas into a new router (a renewed or replaced router job) and replaces a
  router job that is gone (the router job replaces serving jobs: lifecycle/router_job.py).
"""

from __future__ import annotations

import threading
import time

from .. import chain, slurm, state
from ..errors import LaunchError
from ..state import Status
from .context import RunContext
from .replicas import Fleet

CHECK_S = 1.0
ROUTER_CHECK_S = 5.0  # squeue is asked this often whether the router job is still there
SUCCESSOR_ATTEMPTS = 3  # successors that may end before they are ready, then it serves on


class ChainWatch:
    """The chain's side of one serving job."""

    def __init__(self, ctx: RunContext, fleet: Fleet, name: str) -> None:
        self.ctx, self.fleet, self.name = ctx, fleet, name
        self.successor: str | None = None

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, daemon=True, name="chain-watch")
        thread.start()
        return thread

    def _loop(self) -> None:
        ctx = self.ctx
        router_checked = time.monotonic()
        while not ctx.stop.wait(CHECK_S):
            now = chain.load(self.name)
            if now is None:
                continue
            if now.stopping:
                ctx.request_stop(f"deployment {self.name} is ending: {now.stopping}",
                                 announce=True)
                return
            if time.time() >= now.serve_until:
                chain.end(self.name, "--serve-for is over")
                ctx.request_stop("--serve-for is over", announce=True)
                return
            if ctx.handover.is_set():
                self._hand_over(now)
                return
            if self.fleet.rejoin():
                ctx.console.phase("router", "replicas joined the deployment's new router")
            if time.monotonic() - router_checked >= ROUTER_CHECK_S:
                router_checked = time.monotonic()
                try:
                    replaced = chain.submit_job(self.name, chain.ROUTER)  # if none is active
                except LaunchError as exc:  # squeue or sbatch failing: again next time
                    ctx.console.phase("router", str(exc))
                    continue
                if replaced:
                    ctx.console.phase("router", f"the router job is gone: submitted router "
                                      f"job {replaced}")

    def _hand_over(self, now: chain.Chain) -> None:
        ctx, say = self.ctx, self.ctx.console.phase
        if now.serve_until - time.time() < 2 * now.handover_s:
            chain.end(self.name, "--serve-for ends with this job")
            say("handover", "--serve-for ends with this job: no successor")
            return
        me = ctx.job.job_id
        event: dict[str, object] = {"from": me, "warned": time.time()}
        for _attempt in range(SUCCESSOR_ATTEMPTS):
            try:
                successor = chain.submit_job(self.name, chain.SERVE, besides={me}) or next(
                    (j for j in reversed(chain.active_jobs(self.name, chain.SERVE)) if j != me),
                    None)
            except LaunchError as exc:  # squeue or sbatch failing: try again shortly
                say("handover", str(exc))
                if ctx.stop.wait(5 * CHECK_S):
                    return
                continue
            if successor is None:
                return  # the deployment is ending
            self.successor = successor
            event.update(to=successor, submitted=time.time())
            say("handover", f"time limit in about {now.handover_s:g}s: successor job "
                            f"{successor} submitted, serving until it is ready")
            ready = self._wait_ready(successor, event)
            if ready is None:
                return  # this job was stopped meanwhile
            if ready:
                break
            say("handover", f"successor job {successor} ended before it was ready")
        else:
            say("handover", f"no successor got ready in {SUCCESSOR_ATTEMPTS} attempts: "
                            "serving until the time limit")
            return
        event["ready"] = time.time()
        busy, took = self.fleet.drain(now.drain_grace_s)
        chain.add_handover(self.name, {**event, "drained": time.time(), "drain_s": took,
                                       "still_running": busy})
        say("handover", f"job {self.successor} serves; drained in {took:.1f}s"
                        + (f", {busy} request(s) still running at --drain-grace" if busy else ""))
        ctx.request_stop(f"handed over to job {self.successor}", announce=True)

    def _wait_ready(self, job_id: str, event: dict[str, object]) -> bool | None:
        """True once `job_id` serves, False if it ended first, None if this job stopped.
        `event` gets the time the successor's driver started ("started")."""
        asked = time.monotonic()
        while not self.ctx.stop.wait(CHECK_S / 4):  # the record is a file: read it often
            record = state.read(job_id)
            if record is not None and record.status is not Status.PENDING:
                event.setdefault("started", time.time())
            if record is not None and record.status is Status.READY:
                return True
            if record is not None and record.status in state.TERMINAL:
                return False
            if time.monotonic() - asked >= CHECK_S * 2:  # squeue: less often
                asked = time.monotonic()
                if slurm.job_states([job_id])[job_id] not in slurm.ACTIVE_STATES:
                    return False
        return None
