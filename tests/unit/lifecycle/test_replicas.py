"""`--replicas N` without a cluster: the router as data, the real vllm-router's membership API
and header forwarding on this machine, and the watchdog's restart decisions over a faked
attempt. The sandbox runs the whole thing for real (tests/cluster/test_replicas.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from slurmserve import load_spec, router
from slurmserve.console import Console
from slurmserve.lifecycle import driver, preflight, replicas, teardown
from slurmserve.lifecycle.context import RunContext
from slurmserve.plan import PortBlock
from slurmserve.slurm import Job
from slurmserve.state import JobRecord, ReplicaRecord, Status

IMG = "registry.example/engine:1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the router as data -----------------------------------------------------------------------


def test_routes_map_to_the_routers_policies_and_its_own_names_pass() -> None:
    assert router.policy("round-robin") == ("round_robin", ())
    assert router.policy("least-load") == ("cache_aware", ("--balance-abs-threshold", "0",
                                                           "--balance-rel-threshold", "1.0"))
    assert "power_of_two" not in router.ROUTE_CHOICES  # it will not start with no worker
    assert router.policy("prefix") == ("cache_aware", ())
    assert router.policy("cache_aware") == ("cache_aware", ())
    assert len(router.ROUTE_CHOICES) == len(set(router.ROUTE_CHOICES))


def test_router_plan_listens_in_the_jobs_block_on_the_first_node() -> None:
    plan = router.RouterPlan.for_job("4242", "10.0.0.1", "least-load")
    block = PortBlock.for_job("4242")
    assert plan.endpoint == f"http://10.0.0.1:{block.at(router.PORT_OFFSET)}"
    assert plan.metrics == f"http://10.0.0.1:{block.at(router.METRICS_OFFSET)}/metrics"
    argv = plan.argv()
    assert argv[:3] == [sys.executable, "-m", "vllm_router.launch_router"]
    assert argv[argv.index("--policy") + 1] == "cache_aware"
    assert argv[argv.index("--balance-abs-threshold") + 1] == "0"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert "--worker-urls" not in argv  # replicas join when ready, never at start


def test_preflight_checks_every_replicas_ports_and_the_routers_on_the_head() -> None:
    spec = load_spec(engine="vllm", model="m", image=IMG, nodes=4, gpus_per_node=1, pp=2,
                     tp=1, replicas=2)
    block = PortBlock.for_job("4242")
    ports = preflight.listen_ports(spec, _resolution(spec), block, 4)
    assert ports[2] == [p for p in ports[0] if p not in (block.at(20), block.at(21))]
    assert ports[1] == ports[3]  # each replica's Ray worker
    assert block.at(router.PORT_OFFSET) in ports[0] and block.at(router.PORT_OFFSET) not in ports[2]


def _resolution(spec):  # type: ignore[no-untyped-def]
    from slurmserve import engines

    return engines.get(spec.engine).resolve(spec.replica_spec)


def test_ready_lines_name_the_router_then_every_replica() -> None:
    spec = load_spec(engine="sglang", model="m", image=IMG, nodes=2, gpus_per_node=1,
                     replicas=2)
    record = JobRecord(job="7", status=Status.READY, engine="sglang", model="m",
                       endpoint="http://10.0.0.1:21120",
                       replicas=(ReplicaRecord(0, ("n1",), "http://10.0.0.1:30000", "ready"),
                                 ReplicaRecord(1, ("n2",), "http://10.0.0.2:30000")))
    lines = driver.ready_lines(record, spec, 3.21, "/x/state.json")
    assert lines[0].startswith("READY http://10.0.0.1:21120 model=m ")
    assert lines[0].endswith("in 3.2s replicas=1/2")
    assert lines[1:3] == ["  replica 0: http://10.0.0.1:30000 on n1 (ready)",
                          "  replica 1: http://10.0.0.2:30000 on n2 (starting)"]


# ---- the real router on this machine -----------------------------------------------------------


class Worker:
    """An OpenAI-ish server that says who answered; requires `key` on /v1/* when given."""

    def __init__(self, name: str, key: str | None = None, delay: float = 0.0) -> None:
        self.name = name
        self.served = 0
        worker = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _allowed(self) -> bool:
                return key is None or self.headers.get("Authorization") == f"Bearer {key}"

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/health":
                    self._send(200, {})
                elif not self._allowed():
                    self._send(401, {"error": "no key"})
                else:
                    self._send(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not self._allowed():
                    self._send(401, {"error": "no key"})
                    return
                worker.served += 1
                time.sleep(delay)
                self._send(200, {"object": "text_completion", "model": "m",
                                 "choices": [{"index": 0, "text": worker.name,
                                              "finish_reason": "length"}]})

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_router(tmp_path: Path, route: str = "round-robin"
                 ) -> tuple[subprocess.Popen, replicas.RouterAdmin]:
    """vllm-router as the fleet starts it: with no worker."""
    pytest.importorskip("vllm_router")
    plan = router.RouterPlan("127.0.0.1", free_port(), free_port(), *router.policy(route),
                             bind="127.0.0.1")
    log = (tmp_path / "router.log").open("w")
    proc = subprocess.Popen(plan.argv(), stdout=log, stderr=subprocess.STDOUT)
    admin = replicas.RouterAdmin(plan.endpoint)
    deadline = time.monotonic() + 30
    while not admin.up():
        assert proc.poll() is None, (tmp_path / "router.log").read_text()
        assert time.monotonic() < deadline, "vllm-router did not answer in 30 s"
        time.sleep(0.1)
    return proc, admin


@pytest.fixture
def live_router(tmp_path: Path) -> Iterator[replicas.RouterAdmin]:
    proc, admin = start_router(tmp_path)
    yield admin
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize("route", router.ROUTE_CHOICES)
def test_every_route_starts_the_router_with_no_replica_yet(tmp_path, route) -> None:
    proc, admin = start_router(tmp_path, route)
    try:
        assert admin.workers() == []
    finally:
        proc.terminate()
        proc.wait(10)


def complete(admin: replicas.RouterAdmin, key: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(f"{admin.endpoint}/v1/completions", headers=headers,
                         json={"model": "m", "prompt": "p", "max_tokens": 1}, timeout=10)


def test_membership_is_ours_and_requests_spread_over_members(live_router) -> None:
    a, b = Worker("a"), Worker("b")
    try:
        assert live_router.workers() == []
        assert live_router.add(a.url)[0] and live_router.add(b.url)[0]
        assert sorted(live_router.workers()) == sorted([a.url, b.url])
        answers = {complete(live_router).json()["choices"][0]["text"] for _ in range(6)}
        assert answers == {"a", "b"} and a.served == b.served == 3
        assert live_router.remove(b.url)[0]
        assert live_router.workers() == [a.url]
        assert {complete(live_router).json()["choices"][0]["text"] for _ in range(4)} == {"a"}
    finally:
        a.close()
        b.close()


def test_least_load_spreads_identical_concurrent_requests(tmp_path) -> None:
    """The same prompt from many clients at once: each goes where fewest are in flight (a
    cache-aware or sticky policy would send them all to one replica)."""
    proc, admin = start_router(tmp_path, "least-load")
    a, b = Worker("a", delay=0.3), Worker("b", delay=0.3)
    try:
        admin.add(a.url)
        admin.add(b.url)
        threads = [threading.Thread(target=complete, args=(admin,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert a.served >= 3 and b.served >= 3, (a.served, b.served)
    finally:
        a.close()
        b.close()
        proc.terminate()
        proc.wait(10)


def test_the_clients_key_reaches_the_replicas_and_they_enforce_it(live_router) -> None:
    keyed = Worker("k", key="sekret")
    try:
        assert live_router.add(keyed.url)[0]
        assert complete(live_router).status_code == 401
        assert complete(live_router, "wrong").status_code == 401
        assert complete(live_router, "sekret").status_code == 200
    finally:
        keyed.close()


def test_a_dead_member_is_retried_on_another(live_router) -> None:
    a, b = Worker("a"), Worker("b")
    try:
        live_router.add(a.url)
        live_router.add(b.url)
        b.close()  # dead, still a member: the router's retries hide it
        assert all(complete(live_router).status_code == 200 for _ in range(6))
    finally:
        a.close()


# ---- the watchdog's decisions ------------------------------------------------------------------


class FakeRouter:
    def __init__(self) -> None:
        self.members: list[str] = []
        self.calls: list[tuple[str, str]] = []

    def add(self, url: str) -> tuple[bool, str]:
        self.calls.append(("add", url))
        self.members.append(url)
        return True, ""

    def remove(self, url: str) -> tuple[bool, str]:
        self.calls.append(("remove", url))
        self.members.remove(url)
        return True, ""

    def workers(self) -> list[str]:
        return list(self.members)


def _fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outcomes: list[str | None],
           **spec_fields) -> tuple[replicas.Fleet, replicas.Replica, list[str]]:
    """A fleet of one replica whose attempts end as `outcomes` say (an error, or None for a
    stop), with no steps: cleanup and step stops are recorded instead."""
    spec = load_spec(engine="sglang", model="m", image=IMG, nodes=2, gpus_per_node=1,
                     replicas=2, log_dir=str(tmp_path), **spec_fields)
    ctx = RunContext(spec, Job("4242", ("n1", "n2")), Console(quiet=True), follow_logs=False)
    plan = type("Plan", (), {"nodes": (type("N", (), {"host": "n2"})(),),
                             "endpoint": "http://10.0.0.2:30000", "model_name": "m"})()
    bundle = type("Bundle", (), {"run_dir": str(tmp_path / "replica-1"), "nodes": ()})()
    replica = replicas.Replica(1, plan, bundle, {})  # type: ignore[arg-type]
    changes: list[str] = []
    fleet = replicas.Fleet.__new__(replicas.Fleet)
    fleet.ctx, fleet.replicas, fleet.runtime = ctx, [replica], "docker"
    fleet.on_change = lambda: changes.append(replica.status)
    fleet.router = FakeRouter()  # type: ignore[assignment]
    fleet.plan = router.RouterPlan.for_job("4242", "10.0.0.1", "prefix")  # the job's own
    fleet.stopping = threading.Event()
    fleet._lock = threading.Lock()
    left = iter(outcomes)

    def attempt(r: replicas.Replica, rctx: RunContext) -> str | None:
        fleet._join(r, rctx)
        return next(left)

    monkeypatch.setattr(fleet, "_attempt", attempt)
    monkeypatch.setattr(replicas, "BACKOFF_S", 0.01)
    monkeypatch.setattr(teardown, "cleanup",
                        lambda rctx, jobs, runtime, keep_staged=False:
                        changes.append(f"cleanup {rctx.nodes} keep={keep_staged}")
                        or teardown.Cleanup(1, ()))
    monkeypatch.setattr(teardown, "remove_secrets", lambda bundle: None)
    monkeypatch.setattr(RunContext, "job_ended", lambda self: False)
    return fleet, replica, changes


def test_a_failed_replica_leaves_is_cleaned_on_its_nodes_and_restarts_until_the_budget(
        tmp_path, monkeypatch) -> None:
    fleet, replica, changes = _fleet(tmp_path, monkeypatch, ["rank died", "rank died again",
                                                             "and again"], max_restarts=2)
    fleet._supervise(replica)
    assert replica.status == "failed" and replica.restarts == 2
    assert replica.last_error == "and again"
    assert fleet.router.calls == [("add", replica.endpoint), ("remove", replica.endpoint)] * 3
    assert changes.count("cleanup ('n2',) keep=True") == 3  # its nodes only; staged image kept
    statuses = [c for c in changes if not c.startswith("cleanup")]
    assert statuses == ["ready", "restarting", "starting"] * 2 + ["ready", "failed"]


def test_restart_never_fails_at_the_first_failure(tmp_path, monkeypatch) -> None:
    fleet, replica, _ = _fleet(tmp_path, monkeypatch, ["boom"], restart="never")
    fleet._supervise(replica)
    assert (replica.status, replica.restarts) == ("failed", 0)


def test_a_stop_ends_the_watchdog_without_restart(tmp_path, monkeypatch) -> None:
    fleet, replica, changes = _fleet(tmp_path, monkeypatch, [None])
    fleet._supervise(replica)
    assert (replica.status, replica.restarts) == ("stopped", 0)
    assert not any(c.startswith("cleanup") for c in changes)  # the job's teardown cleans


def test_backoff_doubles_and_is_capped() -> None:
    delays = [min(replicas.BACKOFF_S * 2 ** n, replicas.BACKOFF_MAX_S) for n in range(8)]
    assert delays[:3] == [2.0, 4.0, 8.0] and delays[-1] == replicas.BACKOFF_MAX_S


def test_the_fleet_fails_when_fewer_replicas_are_left_than_needed(tmp_path) -> None:
    spec = load_spec(engine="sglang", model="m", image=IMG, nodes=2, gpus_per_node=1,
                     replicas=2, log_dir=str(tmp_path))
    ctx = RunContext(spec, Job("4242", ("n1", "n2")), Console(quiet=True), follow_logs=False)
    fleet = replicas.Fleet.__new__(replicas.Fleet)
    fleet.ctx = ctx
    fleet.router_proc = type("P", (), {"poll": lambda self: None})()  # type: ignore[assignment]
    fleet.replicas = [type("R", (), {"status": s, "index": i, "nodes": (f"n{i + 1}",),
                                     "last_error": "exit 137"})()
                      for i, s in enumerate(("failed", "ready"))]  # type: ignore[misc]
    fleet.check(1)  # one left is enough to serve
    with pytest.raises(Exception, match=r"1 replica\(s\) left, 2 needed: replica 0 on n1: exit"):
        fleet.check(2)
