"""`--replicas N` on the sandbox: every engine's stand-in behind the real vllm-router, the
watchdog taking out and restarting a killed replica while a client loop keeps sending, the
restart budget, and teardown. The stand-ins are test engines, not the engines; the router is
the real one (PyPI vllm-router)."""

from __future__ import annotations

import re
import signal
import threading
import time

import pytest
import requests
from deploy import RUNTIME, Deployment, kill_rank, marked_processes, our_containers
from sandboxlib import tarball_image

SUCCESS = re.compile(r"^\S*request_success_total\{[^}]*\} (\S+)$", re.MULTILINE)


def served(endpoint: str) -> int:
    """Requests a stand-in replica says it finished, from its own /metrics."""
    text = requests.get(f"{endpoint}/metrics", timeout=5).text
    return int(sum(float(v) for v in SUCCESS.findall(text)))


def replicas(d: Deployment) -> list[dict]:
    return d.state()["replicas"]


def wait_for(predicate, timeout: float, what: str, d: Deployment) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert d.proc.poll() is None, f"run exited {d.proc.returncode}\n{d.err[-5000:]}"
        time.sleep(0.1)
    raise AssertionError(f"not {what} within {timeout}s\n{d.err[-5000:]}")


def all_ready(d: Deployment, count: int) -> bool:
    rows = replicas(d)
    return len(rows) == count and all(r["status"] == "ready" for r in rows)


def router_processes(job: str) -> list[str]:
    return [pid for pid, env in marked_processes() if env.get("SLURMSERVE_ROUTER") == job]


class ClientLoop:
    """Requests through the router, one after another, for at most `seconds` (it stops
    itself); counts answers and failures."""

    def __init__(self, endpoint: str, model: str, seconds: float = 60) -> None:
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + seconds
        self._body = {"model": model, "prompt": "count", "max_tokens": 4}
        self._url = f"{endpoint}/v1/completions"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        session = requests.Session()
        session.trust_env = False
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                response = session.post(self._url, json=self._body, timeout=30)
                if response.status_code == 200:
                    self.ok += 1
                else:
                    self.failed.append(f"HTTP {response.status_code}: {response.text[:200]}")
            except requests.RequestException as exc:
                self.failed.append(type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(40)


@pytest.mark.parametrize("engine,replicas_,per_replica,args", [
    ("vllm", 2, 1, ["--tp", "1"]),
    ("vllm", 3, 1, ["--tp", "1"]),
    ("vllm", 2, 2, ["--tp", "1", "--pp", "2"]),  # each replica: Ray head + worker
    ("sglang", 2, 1, []),
    ("sglang", 3, 1, []),
    ("sglang", 2, 2, ["--tp", "2"]),
    ("trtllm", 2, 1, []),
    ("trtllm", 3, 1, []),
    ("trtllm", 2, 2, ["--tp", "2"]),  # each replica: its own MPI world (ssh, or pmix: pyxis)
    ("vllm", 3, 2, ["--tp", "1", "--pp", "2"]),
])
def test_replicas_behind_the_router_share_the_requests(deploy, sandbox, engine, replicas_,
                                                       per_replica, args):
    nodes = replicas_ * per_replica
    if nodes > len(sandbox.nodes):
        pytest.skip(f"needs {nodes} nodes (SLURMSERVE_SANDBOX_NODES={nodes})")
    d = deploy(nodes, engine, "org/tiny-model", "--nodes", str(nodes), "--replicas",
               str(replicas_), "--ready-replicas", str(replicas_), "--route", "round-robin",
               *args)
    endpoint = d.wait_ready()
    state = d.state()
    head = sandbox.addr(state["nodes"][0]["host"])
    assert endpoint == state["router"]["endpoint"] and endpoint.startswith(f"http://{head}:")
    rows = state["replicas"]
    assert [len(r["nodes"]) for r in rows] == [per_replica] * replicas_
    assert len({n for r in rows for n in r["nodes"]}) == nodes  # each on its own nodes
    assert all(r["status"] == "ready" for r in rows)
    for row in rows:  # every replica's own group spans its own nodes, and only those
        info = requests.get(f"{row['endpoint']}/standin/info", timeout=5).json()
        assert {m["ip"] for m in info["group"]["members"]} == \
            {sandbox.addr(n) for n in row["nodes"]}
    before = [served(r["endpoint"]) for r in rows]
    for _ in range(6 * replicas_):
        assert d.chat()
    after = [served(r["endpoint"]) for r in rows]
    spread = [b - a for a, b in zip(before, after, strict=True)]
    assert all(n >= 3 for n in spread), f"round-robin left a replica idle: {spread}"
    assert sum(spread) >= 6 * replicas_
    d.signal_driver(signal.SIGINT)
    assert d.wait(90) == 0, d.err
    assert not our_containers(sandbox, d.job_id)
    assert not router_processes(d.job_id)
    for row in rows:  # every replica's logs kept
        assert list(sandbox_logs(d, row["index"])), row


def sandbox_logs(d: Deployment, index: int) -> list:
    return [p for p in d.log_dir.glob(f"{d.job_id}/replica-{index}/node-*.log")
            if p.stat().st_size > 0]


def test_killed_replica_is_replaced_while_the_endpoint_keeps_answering(deploy, sandbox):
    d = deploy(2, "sglang", "org/tiny-model", "--nodes", "2", "--replicas", "2",
               "--ready-replicas", "2", "--route", "round-robin", "--max-restarts", "1")
    endpoint = d.wait_ready()
    victim = replicas(d)[1]
    node = next(n for n in d.state()["nodes"] if n["host"] == victim["nodes"][0])
    loop = ClientLoop(endpoint, d.model, seconds=60)
    time.sleep(2)
    kill_rank(sandbox, d.job_id, node)
    killed = time.monotonic()
    d.wait_err(r"replica 1 \(\S+\) left", timeout=10)
    removed_after = time.monotonic() - killed
    wait_for(lambda: replicas(d)[1]["restarts"] == 1 and replicas(d)[1]["status"] == "ready",
             60, "restarted and ready again", d)
    returned_after = time.monotonic() - killed
    time.sleep(2)  # requests reach the restarted replica too
    count = served(victim["endpoint"])
    loop.stop()
    print(f"failover: out of the router after {removed_after:.2f}s, back after "
          f"{returned_after:.1f}s; {loop.ok} requests answered, {len(loop.failed)} failed")
    assert not loop.failed, loop.failed[:5]
    assert loop.ok > 20
    assert count > 0, "the restarted replica got no request"
    # Out of restarts: the second kill leaves it failed, and the other replica serves on.
    node = next(n for n in d.state()["nodes"] if n["host"] == victim["nodes"][0])
    kill_rank(sandbox, d.job_id, node)
    d.wait_err(r"replica 1: no restart left", timeout=30)
    assert replicas(d)[1]["status"] == "failed"
    assert d.chat() and d.proc.poll() is None
    assert not our_containers(sandbox, d.job_id).get(node["host"])  # its containers removed
    assert d.state()["status"] == "ready"
    d.signal_driver(signal.SIGINT)
    assert d.wait(90) == 0, d.err
    assert not our_containers(sandbox, d.job_id)
    assert not router_processes(d.job_id)


def test_restart_never_and_last_replica_failing_ends_the_run(deploy, sandbox):
    d = deploy(2, "vllm", "org/tiny-model", "--nodes", "2", "--tp", "1", "--replicas", "2",
               "--ready-replicas", "2", "--restart", "never")
    d.wait_ready()
    state = d.state()
    for node in state["nodes"]:
        kill_rank(sandbox, d.job_id, node)
    code = d.wait(60)
    assert code != 0
    assert "0 replica(s) left" in d.err and "last" in d.err
    assert not our_containers(sandbox, d.job_id)
    assert not router_processes(d.job_id)
    assert d.state()["status"] == "failed"


def test_scancel_with_replicas_leaves_nothing_of_the_job(deploy, sandbox, containers,
                                                         standin_tarball):
    d = deploy(2, "sglang", "org/tiny-model", "--nodes", "2", "--replicas", "2",
               "--ready-replicas", "2", nodelist="n1,n2")  # both serving: both have logged
    d.wait_ready()
    foreign = None
    if RUNTIME == "docker":
        foreign = containers.run("n1", "foreign", tarball_image(standin_tarball)[1], "sleep",
                                 "600", docker_args=["--entrypoint", ""])
    sandbox.host("scancel", d.job_id)
    d.wait(60)
    deadline = time.monotonic() + 30
    while (our_containers(sandbox, d.job_id) or router_processes(d.job_id)) and \
            time.monotonic() < deadline:
        time.sleep(0.5)
    assert not our_containers(sandbox, d.job_id)
    assert not router_processes(d.job_id)
    assert sandbox_logs(d, 0) and sandbox_logs(d, 1)
    assert foreign is None or containers.running("n1", foreign)
