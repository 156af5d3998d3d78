"""`--replicas N`: N copies of one layout behind one router, each watched and restarted.

Each replica is the launch of a single deployment, unchanged: its own serving step on its own
nodes, its own readiness. vllm-router runs as one more step on the job's first node.
Membership is by readiness: a replica joins the router once it is ready, and leaves it the
moment a rank fails or it stops answering. Its watchdog then removes its containers and starts
it again on the same nodes, after a doubling backoff, until its restart budget is spent; the
other replicas serve all the while.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import metrics, runner, slurm
from .. import router as routers
from ..console import Console
from ..errors import LaunchError, Stopped
from ..plan import ClusterPlan
from ..render import render_template
from ..runner import Process
from ..runtimes import _common as common
from ..slurm import Job
from ..slurm.steps import terminate
from ..state import Phase, ReplicaRecord
from . import launch, teardown, watch
from .context import RunContext
from .health import Prober
from .launch import Launch
from .watch import SERVE_STEP, Serving

ROUTER_STEP = "slurmserve-router"
ROUTER_START_S = 60.0
HEALTH_PROBE_S = 1.0
HEALTH_MISSES = 2  # consecutive failed health probes that take a serving replica out
BACKOFF_S = 2.0  # the first restart waits 2 s, then 4, 8, ... up to BACKOFF_MAX_S
BACKOFF_MAX_S = 60.0
ADMIN_TIMEOUT_S = 2.0
STOP_JOIN_S = 40.0  # a replica's step gets STEP_STOP_GRACE_S; more than that is a hang


class RouterAdmin:
    """A running router's admin API: membership is ours (the watchdog's), by readiness.

    `endpoint` is the router's URL, or a function giving the current one (a chain's router
    changes when its router job is renewed)."""

    def __init__(self, endpoint: str | Callable[[], str | None]) -> None:
        import requests

        self._endpoint = endpoint
        self.session = requests.Session()
        self.session.trust_env = False  # cluster-internal: never through a proxy

    @property
    def endpoint(self) -> str | None:
        return self._endpoint() if callable(self._endpoint) else self._endpoint

    def _call(self, method: str, path: str, url: str | None = None) -> tuple[bool, str]:
        import requests

        endpoint = self.endpoint
        if not endpoint:
            return False, "no router yet"
        try:
            response = self.session.request(method, endpoint + path,
                                            params={"url": url} if url else None,
                                            timeout=ADMIN_TIMEOUT_S)
        except requests.RequestException as exc:
            return False, type(exc).__name__
        return response.ok, response.text.strip()

    def up(self) -> bool:
        return self._call("GET", "/list_workers")[0]

    def workers(self) -> list[str]:
        import json

        ok, text = self._call("GET", "/list_workers")
        try:
            return list(json.loads(text).get("urls", [])) if ok else []
        except (ValueError, AttributeError):
            return []

    def add(self, endpoint: str) -> tuple[bool, str]:
        return self._call("POST", "/add_worker", endpoint)

    def remove(self, endpoint: str) -> tuple[bool, str]:
        return self._call("POST", "/remove_worker", endpoint)


class ReplicaConsole(Console):
    """The job's console, every line naming the replica it is about."""

    def __init__(self, parent: Console, prefix: str) -> None:  # writes through `parent` only
        self.parent = parent
        self.prefix = prefix
        self.quiet = parent.quiet
        self.tty = parent.tty

    def line(self, text: str) -> None:
        self.parent.line(f"{self.prefix} {text}")

    def phase(self, name: str, text: str) -> None:
        self.parent.phase(name, f"{self.prefix} {text}")

    def status(self, text: str) -> None:
        pass  # the fleet's one status line speaks for every replica

    def result(self, lines: list[str]) -> None:
        self.parent.result(lines)

    def error(self, text: str) -> None:
        self.parent.error(f"{self.prefix} {text}")


@dataclass
class Replica:
    """One copy: fixed nodes and launch; the watchdog's view of how it is doing."""

    index: int
    plan: ClusterPlan
    bundle: Launch
    rdma: dict[int, bool]
    status: str = "starting"
    restarts: int = 0
    last_error: str | None = None
    joined: bool = False
    ctx: RunContext | None = None  # the current attempt's
    serving: Serving | None = None

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(n.host for n in self.plan.nodes)

    @property
    def endpoint(self) -> str:
        return self.plan.endpoint

    @property
    def step(self) -> str:
        return f"{SERVE_STEP}-r{self.index}"

    def record(self) -> ReplicaRecord:
        return ReplicaRecord(index=self.index, nodes=self.nodes, endpoint=self.endpoint,
                             status=self.status, restarts=self.restarts,
                             last_error=self.last_error, run_dir=self.bundle.run_dir)

    def last_lines(self, count: int = 20) -> list[str]:
        """The tail of its first node's log (where the engine's server runs)."""
        try:
            with open(self.bundle.nodes[0].log, encoding="utf-8", errors="replace") as fh:
                return [line.rstrip() for line in deque(fh, maxlen=count)]
        except OSError:
            return []


def replica_dir(run_dir: str, index: int) -> str:
    return os.path.join(run_dir, f"replica-{index}")


class Fleet:
    """The router and every replica's watchdog, for one job.

    `plan`: the job's own router, started here as a step; None in a chain (--serve-for), whose
    router runs in a job of its own at `endpoint()` (chain.py)."""

    def __init__(self, ctx: RunContext, replicas: list[Replica], plan: routers.RouterPlan | None,
                 runtime: str, on_change: Callable[[], None],
                 endpoint: Callable[[], str | None] | None = None) -> None:
        self.ctx = ctx
        self.replicas = replicas
        self.plan = plan
        self.runtime = runtime
        self.on_change = on_change
        assert plan is not None or endpoint is not None
        self.router = RouterAdmin(plan.endpoint if plan else endpoint)  # type: ignore[arg-type]
        self.router_proc: Process | None = None
        self.router_log = os.path.join(ctx.run_dir, "router.log")
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.model = replicas[0].plan.model_name
        self._lock = threading.Lock()

    # ---- the job's side ------------------------------------------------------------------

    def start(self) -> None:
        """The router first (its own step on the first node), then every replica's watchdog."""
        if self.plan is not None:
            self._start_router()
        for replica in self.replicas:
            thread = threading.Thread(target=self._supervise, args=(replica,), daemon=True,
                                      name=f"replica-{replica.index}")
            self.threads.append(thread)
            thread.start()

    def wait_ready(self) -> None:
        """Until --ready-replicas are in the router and a generation through it succeeds."""
        ctx = self.ctx
        ctx.enter(Phase.WAITING_FOR_READY)
        need = ctx.spec.ready_replicas
        readiness = self.replicas[0].plan.readiness
        ctx.console.phase("ready?", f"waiting for {need} of {len(self.replicas)} replica(s) "
                          f"to join the router at {self.router.endpoint}")
        while True:
            self.check(need)
            ready = [r for r in self.replicas if r.status == "ready"]
            last = f"{len(ready)} of {need} replica(s) in the router"
            if len(ready) >= need and self.router.endpoint:
                self.model = ready[0].plan.model_name
                prober = Prober(self.router.endpoint, readiness,
                                api_key=self.replicas[0].bundle.api_key)
                generated = prober.generate(self.model, timeout=watch.GENERATE_TIMEOUT_S)
                if generated.ok:
                    return
                last = f"the router does not answer a 1-token completion yet: {generated.detail}"
            ctx.console.status(f"waiting for ready: {last}")
            ctx.stop.wait(watch.POLL_S)

    def serve(self) -> None:
        """Until a stop, the router's end, or the last replica's failure."""
        ctx = self.ctx
        ctx.enter(Phase.SERVING)
        ctx.console.phase("serving", "Ctrl+C or scancel to stop; logs in " + ctx.run_dir)
        while True:
            self.check(1)
            ctx.stop.wait(watch.POLL_S)

    def check(self, need: int) -> None:
        """Raise on a stop, the router's exit, or fewer than `need` replicas left to serve."""
        self.ctx.check()
        code = self.router_proc.poll() if self.router_proc is not None else None
        if code is not None:
            if self.ctx.job_ended():
                raise Stopped
            raise LaunchError(f"the router exited (srun exit {code}); see {self.router_log}")
        alive = [r for r in self.replicas if r.status != "failed"]
        if len(alive) < need:
            raise LaunchError(f"{len(alive)} replica(s) left, {need} needed: " + "; ".join(
                f"replica {r.index} on {','.join(r.nodes)}: {r.last_error}"
                for r in self.replicas if r.status == "failed"))

    def stop(self) -> None:
        """Every replica's step, then the router's; the job's cleanup follows (teardown)."""
        self.stopping.set()
        reason = self.ctx.stop_reason or "the job is ending"
        if self.plan is None:  # a chain's router outlives this job: out of it first
            for replica in self.replicas:
                self._leave(replica)
        for replica in self.replicas:
            if replica.ctx is not None:
                replica.ctx.request_stop(reason)
        for thread in self.threads:
            thread.join(STOP_JOIN_S)
        self._stop_router()
        for replica in self.replicas:
            teardown.remove_secrets(replica.bundle)

    def placed(self) -> dict[str, Any]:
        """Where the job's record says it serves: its router (the job's own, or the chain's)."""
        plan = self.plan
        if plan is None:
            endpoint = self.router.endpoint
            return dict(endpoint=endpoint, router=dict(endpoint=endpoint, route=self.ctx.spec.route,
                                                       chain=self.ctx.spec.name))
        return dict(endpoint=plan.endpoint, head=plan.host, port=plan.port,
                    router=dict(endpoint=plan.endpoint, metrics=plan.metrics, policy=plan.policy,
                                route=self.ctx.spec.route, log=self.router_log))

    def show_failed_logs(self) -> None:
        for replica in self.replicas:
            if replica.status == "failed" or replica.last_error:
                lines = replica.last_lines()
                self.ctx.console.line(f"--- replica {replica.index}: {replica.last_error}; last "
                                      f"{len(lines)} lines of {replica.bundle.nodes[0].log} ---")
                for line in lines:
                    self.ctx.console.line(line)

    # ---- the router ----------------------------------------------------------------------

    def _start_router(self) -> None:
        ctx = self.ctx
        script = render_template("router.sh.j2", argv=self.plan.argv(), log=self.router_log,
                                 job_id=ctx.job.job_id, mark_var=routers.MARK_VAR,
                                 node_var=common.NODE_VAR)
        path = ctx.steps.write("router", script)
        self.router_proc = proc = ctx.steps.start(ROUTER_STEP, path, nodes=1, label=ROUTER_STEP)
        deadline = time.monotonic() + ROUTER_START_S
        while not self.router.up():
            ctx.check()
            if proc.poll() is not None:
                raise LaunchError(f"the router exited (srun exit {proc.poll()}) before it "
                                  f"answered; see {self.router_log}")
            if time.monotonic() > deadline:
                raise LaunchError(f"the router did not answer in {ROUTER_START_S:g}s; see "
                                  f"{self.router_log}")
            ctx.stop.wait(0.1)
        ctx.console.phase("router", f"vllm-router up at {self.plan.endpoint} (--route "
                          f"{ctx.spec.route}: {self.plan.policy}, metrics {self.plan.metrics})")

    def _stop_router(self) -> None:
        proc = self.router_proc
        if proc is None or proc.poll() is not None:
            return
        step = slurm.find_step(self.ctx.job.job_id, ROUTER_STEP)
        if step and slurm.signal_step(step, "TERM"):
            try:
                proc.wait(10)
                return
            except runner.TimeoutExpired:
                pass
        terminate(proc)

    # ---- one replica's watchdog ----------------------------------------------------------

    def _supervise(self, replica: Replica) -> None:
        spec = self.ctx.spec.replica_spec
        while True:
            rctx = RunContext(spec, Job(self.ctx.job.job_id, replica.nodes),
                              ReplicaConsole(self.ctx.console, f"[replica {replica.index}]"),
                              self.ctx.follow_logs, subdir=f"replica-{replica.index}")
            replica.ctx, replica.serving = rctx, None
            if self.stopping.is_set():  # stop() may have passed this replica already
                rctx.stop.set()
            error = self._attempt(replica, rctx)
            if error is None or self.stopping.is_set() or rctx.job_ended():
                if replica.serving is not None:  # the router goes with the job: no leave
                    teardown.stop_step(rctx, replica.serving)
                self._set(replica, "stopped")
                return
            self._leave(replica)
            if replica.serving is not None:
                teardown.stop_step(rctx, replica.serving)
            out_of_restarts = spec.restart == "never" or replica.restarts >= spec.max_restarts
            replica.last_error = error
            self._set(replica, "failed" if out_of_restarts else "restarting")
            say = self.ctx.console.phase
            say("watchdog", f"replica {replica.index} failed: {error}")
            removed = teardown.cleanup(rctx, [rctx.job.job_id], self.runtime,
                                       keep_staged=True).removed
            teardown.remove_secrets(replica.bundle)
            if out_of_restarts:
                say("watchdog", f"replica {replica.index}: no restart left "
                                   f"({replica.restarts} of {spec.max_restarts} used, "
                                   f"--restart {spec.restart}); removed {removed} container(s)")
                return
            delay = min(BACKOFF_S * 2 ** replica.restarts, BACKOFF_MAX_S)
            say("watchdog", f"removed {removed} container(s); restarting replica "
                               f"{replica.index} on {','.join(replica.nodes)} in {delay:g}s "
                               f"(restart {replica.restarts + 1} of {spec.max_restarts})")
            if self.stopping.wait(delay):
                self._set(replica, "stopped")
                return
            replica.restarts += 1
            self._set(replica, "starting")

    def _attempt(self, replica: Replica, rctx: RunContext) -> str | None:
        """Launch, get ready, join, serve: the reason it ended, None for a stop."""
        try:
            launch.write(replica.bundle)
            replica.serving = Serving(rctx, replica.plan, replica.bundle, replica.rdma,
                                      step=replica.step)
            ready = watch.wait_ready(rctx, replica.serving)
            replica.plan = ready.plan
            self._join(replica, rctx)
            self._watch(replica, rctx, replica.serving)
        except Stopped:
            return None
        except LaunchError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug must not leave a replica unmanaged
            return f"{type(exc).__name__}: {exc}"
        return None

    def _watch(self, replica: Replica, rctx: RunContext, serving: Serving) -> None:
        """Serving: out of the router on a failed rank at once, or after missed probes."""
        readiness = replica.plan.readiness
        prober = Prober(replica.endpoint, readiness, api_key=replica.bundle.api_key)
        misses = 0
        while True:
            if rctx.failed:
                self._leave(replica)  # first out of the router, then the details
            serving.check()
            health = prober.health(timeout=HEALTH_PROBE_S)
            misses = 0 if health.ok else misses + 1
            if misses >= HEALTH_MISSES:
                self._leave(replica)
                raise LaunchError(f"stopped answering {readiness.health_path} "
                                  f"({health.detail}, {misses} probes in a row)")
            rctx.stop.wait(watch.POLL_S)

    def _join(self, replica: Replica, rctx: RunContext) -> None:
        while True:
            ok, text = self.router.add(replica.endpoint)
            if not ok and replica.endpoint in self.router.workers():
                ok = True  # an earlier join the router finished after all
            if ok:
                break
            if self.plan is not None:
                raise LaunchError(f"the router did not take {replica.endpoint}: {text}")
            rctx.check()  # a chain's router job may still be starting (or being replaced)
            self.ctx.console.status(f"replica {replica.index} ready, waiting for the "
                                    f"deployment's router: {text}")
            rctx.stop.wait(1.0)
        replica.joined = True
        self._set(replica, "ready")
        ready = sum(r.status == "ready" for r in self.replicas)
        self.ctx.console.phase("router", f"replica {replica.index} ({replica.endpoint}) "
                               f"joined: {ready} of {len(self.replicas)} in")

    def rejoin(self) -> list[int]:
        """Joined replicas the router lost (a new or restarted router job) join again."""
        members = set(self.router.workers()) if self.router.up() else None
        if members is None:
            return []
        again = [r for r in self.replicas if r.joined and r.endpoint not in members]
        for replica in again:
            self.router.add(replica.endpoint)
        return [r.index for r in again]

    def drain(self, grace: float) -> tuple[int, float]:
        """Out of the router, then until nothing runs or waits on any replica, at most `grace`
        seconds: (requests still in flight at the end, seconds it took)."""
        t0 = time.monotonic()
        for replica in self.replicas:
            self._leave(replica)
            if replica.status == "ready":
                self._set(replica, "draining")
        busy = 0
        while time.monotonic() - t0 < grace:
            loads = [metrics.fetch(r.endpoint, self.ctx.spec.engine, r.bundle.api_key)
                     for r in self.replicas if r.status == "draining"]
            busy = sum(int((load.running or 0) + (load.waiting or 0)) if load else 0
                       for load in loads)
            if not busy:
                break
            self.ctx.stop.wait(0.2)
        return busy, time.monotonic() - t0

    def _leave(self, replica: Replica) -> None:
        with self._lock:
            if not replica.joined:
                return
            replica.joined = False
        ok, text = self.router.remove(replica.endpoint)
        self.ctx.console.phase("router", f"replica {replica.index} ({replica.endpoint}) "
                               + ("left" if ok else f"could not be removed: {text}"))

    def _set(self, replica: Replica, status: str) -> None:
        replica.status = status
        self.on_change()
