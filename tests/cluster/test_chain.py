"""`submit --serve-for` on the sandbox: a deployment that outlives its jobs.

Jobs of 3 minutes with a 100 s lead hand over for real (SLURM's --signal warning, a successor
job, a health-gated join, a drain) while bounded client loops send requests through the
in-cluster URL and through `tunnel NAME` from a workstation; a scancelled serving job is
replaced while the router holds the requests; --idle-timeout ends the whole chain. Stand-in
engine (SGLang's command line), real SLURM, real vllm-router, real SSH.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field

import requests
from deploy import RUNTIME, STANDIN, our_containers
from test_remote import SECRET, _wait_for, station  # noqa: F401 - station is a fixture

CHAIN = ("--serve-for", "30m", "--time", "3", "--handover", "100s", "--drain-grace", "10s",
         "--router-time", "20")


def cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["slurmserve", *argv], capture_output=True, text=True,
                          timeout=timeout)


@dataclass
class Outcome:
    started: float
    ended: float
    error: str | None


@dataclass
class ClientLoop:
    """Chat requests back to back from `threads` threads until stopped (or `limit_s`)."""

    base_url: str
    threads: int = 2
    limit_s: float = 600.0
    api_key: str | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> ClientLoop:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._loop, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def _loop(self) -> None:
        session = requests.Session()
        session.trust_env = False
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": "org/tiny", "messages": [{"role": "user", "content": "Hello"}],
                "max_tokens": 8}
        deadline = time.monotonic() + self.limit_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            t0 = time.time()
            try:
                reply = session.post(f"{self.base_url}/chat/completions", json=body,
                                     headers=headers, timeout=90)
                error = None if reply.ok and reply.json()["choices"] else \
                    f"HTTP {reply.status_code}: {reply.text[:200]}"
            except (requests.RequestException, ValueError, KeyError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
            self.outcomes.append(Outcome(t0, time.time(), error))
            time.sleep(0.05)

    def stop(self) -> ClientLoop:
        self._stop.set()
        for worker in self._workers:
            worker.join(120)
        return self

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error]


def rows_of(name: str) -> list[dict]:
    proc = cli("status", name, "--json", "--no-health", timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def serving(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("role") != "router"]


def release(jobs: list[str], loops=(), tunnel=None) -> None:
    """What a test started, ended whatever happened: its client loops, tunnel and jobs."""
    for loop in loops:
        if loop:
            loop.stop()
    if tunnel and tunnel.poll() is None:
        tunnel.kill()
    if jobs:
        subprocess.run(["scancel", *jobs], check=False)


def nothing_left(sandbox, jobs: list[str]) -> None:
    for job in jobs:
        assert not our_containers(sandbox, job), f"a container of job {job} is left"


def wait_until(check, timeout: float, what: str, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout:g}s: {what}")


def test_two_handovers_under_load_lose_no_request(sandbox, standin_tarball, station,  # noqa: F811
                                                  tmp_path):
    name = f"chain-{uuid.uuid4().hex[:8]}"  # the deployment index outlives test sessions
    remote = ("--remote", "sandbox")
    submit = ("submit", "sglang", "org/tiny", "--image", str(standin_tarball), "--runtime",
              RUNTIME, *STANDIN, "--log-dir", str(tmp_path / "cluster-logs"), "--name", name,
              "--api-key", "env:SERVE_KEY", *CHAIN, *remote, "--json")

    def rows() -> list[dict]:
        proc = station.cli("status", name, "--json", "--no-health", *remote)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    jobs: list[str] = []
    tunnel = None
    loops: list[ClientLoop] = []
    try:
        first = station.cli(*submit, timeout=300)
        assert first.returncode == 0, first.stderr
        info = json.loads(first.stdout.strip().splitlines()[-1])
        jobs += [info["router_job"], info["job"]]
        url = station.cli("url", name, *remote)
        assert url.returncode == 0, url.stderr
        in_cluster = url.stdout.strip()
        assert in_cluster == info["endpoint"]  # the serving job answers at the router's URL
        tun_out, tun_err = tmp_path / "tunnel.out", tmp_path / "tunnel.err"
        tunnel = station.popen("tunnel", name, *remote, out=tun_out, err=tun_err)
        local = _wait_for(tun_out, r"^OPENAI_BASE_URL=(http://127\.0\.0\.1:\d+/v1)$", 30)[1]
        loops = [ClientLoop(f"{in_cluster}/v1", api_key=SECRET).start(),
                 ClientLoop(local, api_key=SECRET).start()]

        def handed_over_twice() -> list[dict] | None:
            now = serving(rows())
            jobs.extend(r["job"] for r in now if r["job"] not in jobs)
            ended = [r for r in now if r["status"] == "stopped"]
            return now if len(now) >= 3 and len(ended) >= 2 else None

        chain_rows = wait_until(handed_over_twice, 480, "two handovers")
        time.sleep(5)  # the third job serves alone for a while
        for loop in loops:
            loop.stop()
        answered = [len(loop.outcomes) for loop in loops]
        failed = [loop.failed for loop in loops]
        print(f"\nchain {name}: serving jobs {[r['job'] for r in chain_rows]}; requests "
              f"in-cluster {answered[0]} (failed {len(failed[0])}), through the tunnel "
              f"{answered[1]} (failed {len(failed[1])})")
        assert min(answered) > 20
        assert failed == [[], []], [[o.error for o in f[:3]] for f in failed]
        assert station.cli("url", name, *remote).stdout.strip() == in_cluster  # one router
        for done in chain_rows[:2]:  # each ended itself after its successor served
            log = (tmp_path / "cluster-logs" / f"slurmserve-{done['job']}.out").read_text()
            assert "handed over to job" in log, log[-3000:]
            assert "drained in" in log
        stop = station.cli("stop", name, *remote, "--json", timeout=300)
        assert stop.returncode == 0, stop.stderr
        final = rows()
        jobs.extend(r["job"] for r in final if r["job"] not in jobs)
        assert {r["status"] for r in final} == {"stopped"}, final
        assert tunnel.wait(30) == 1
        assert f"deployment {name} ended" in tun_err.read_text()
    finally:
        release(jobs, loops, tunnel)
    nothing_left(sandbox, jobs)


def test_a_cancelled_serving_job_is_replaced_while_the_router_holds_requests(
        sandbox, standin_tarball, tmp_path):
    name = f"replace-{uuid.uuid4().hex[:8]}"
    submit = ["submit", "sglang", "org/tiny", "--image", str(standin_tarball), "--runtime",
              RUNTIME, *STANDIN, "--log-dir", str(tmp_path / "logs"), "--name", name,
              "--serve-for", "30m", "--time", "10", "--json"]
    jobs: list[str] = []
    loop = None
    try:
        first = cli(*submit)
        assert first.returncode == 0, first.stderr
        info = json.loads(first.stdout.strip().splitlines()[-1])
        jobs += [info["router_job"], info["job"]]
        loop = ClientLoop(f"{info['endpoint']}/v1").start()
        time.sleep(5)
        cancelled_at = time.time()
        subprocess.run(["scancel", info["job"]], check=True)

        def replacement() -> str | None:
            now = serving(rows_of(name))
            jobs.extend(r["job"] for r in now if r["job"] not in jobs)
            ready = [r for r in now if r["job"] != info["job"] and r["status"] == "ready"]
            return ready[-1]["job"] if ready else None

        replaced_by = wait_until(replacement, 120, "a replacement job serving")
        replaced_at = time.time()
        time.sleep(5)
        loop.stop()
        in_flight = [o for o in loop.outcomes if o.started < cancelled_at < o.ended]
        late = [o for o in loop.failed if o.started >= cancelled_at]
        print(f"\nscancel of job {info['job']}: replaced by {replaced_by} in "
              f"{replaced_at - cancelled_at:.1f}s; {len(loop.outcomes)} requests, "
              f"{len(loop.failed)} failed, {len(in_flight)} were in flight at the cancel; "
              f"longest wait {max(o.ended - o.started for o in loop.outcomes):.1f}s")
        assert not late, [o.error for o in late[:3]]  # the router held them for the new job
        assert len(loop.failed) <= len(in_flight)
        assert cli("url", name).stdout.strip() == info["endpoint"]  # the same router
        stop = cli("stop", name, "--json")
        assert stop.returncode == 0, stop.stderr
        assert {r["status"] for r in rows_of(name)} <= {"stopped", "ended"}
    finally:
        release(jobs, [loop])
    nothing_left(sandbox, jobs)


def test_idle_timeout_ends_the_whole_chain(sandbox, standin_tarball, tmp_path):
    name = f"idle-{uuid.uuid4().hex[:8]}"
    submit = ["submit", "sglang", "org/tiny", "--image", str(standin_tarball), "--runtime",
              RUNTIME, *STANDIN, "--log-dir", str(tmp_path / "logs"), "--name", name,
              "--serve-for", "30m", "--time", "10", "--idle-timeout", "10s", "--json"]
    jobs: list[str] = []
    try:
        first = cli(*submit)
        assert first.returncode == 0, first.stderr
        info = json.loads(first.stdout.strip().splitlines()[-1])
        jobs += [info["router_job"], info["job"]]
        ended = wait_until(lambda: (rows := rows_of(name)) and all(
            r["slurm_state"] not in ("RUNNING", "PENDING", "COMPLETING") for r in rows)
            and rows, 120, "every job of the chain ended")
        assert {r["job"] for r in ended} == set(jobs)  # nothing was submitted to replace them
        assert {r["status"] for r in ended} == {"stopped"}, ended
        log = (tmp_path / "logs" / f"slurmserve-{info['router_job']}.out").read_text()
        assert "idle for 10s (--idle-timeout)" in log, log[-2000:]
    finally:
        release(jobs)
    nothing_left(sandbox, jobs)


def test_the_router_job_renews_itself_and_a_cancelled_one_is_replaced(
        sandbox, standin_tarball, station, tmp_path):  # noqa: F811
    """The router's own job hands over like a serving job (the tunnel follows, no request
    lost), and a router job cancelled outright is replaced by the serving job."""
    name = f"reroute-{uuid.uuid4().hex[:8]}"
    remote = ("--remote", "sandbox")
    submit = ("submit", "sglang", "org/tiny", "--image", str(standin_tarball), "--runtime",
              RUNTIME, *STANDIN, "--log-dir", str(tmp_path / "cluster-logs"), "--name", name,
              "--serve-for", "30m", "--time", "8", "--handover", "100s", "--drain-grace", "10s",
              "--router-time", "3", *remote, "--json")

    def url() -> str:
        proc = station.cli("url", name, *remote)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    jobs: list[str] = []
    tunnel = None
    loop = None
    try:
        first = station.cli(*submit, timeout=300)
        assert first.returncode == 0, first.stderr
        info = json.loads(first.stdout.strip().splitlines()[-1])
        jobs += [info["router_job"], info["job"]]
        first_router = url()
        tun_out, tun_err = tmp_path / "tunnel.out", tmp_path / "tunnel.err"
        tunnel = station.popen("tunnel", name, *remote, out=tun_out, err=tun_err)
        local = _wait_for(tun_out, r"^OPENAI_BASE_URL=(http://127\.0\.0\.1:\d+/v1)$", 30)[1]
        loop = ClientLoop(local).start()
        renewed = wait_until(lambda: (now := url()) and now != first_router and now, 200,
                             "the router job renewed itself")
        _wait_for(tun_err, rf"{name} is served by {renewed} now", 30)
        time.sleep(15)  # past the old router's drain grace: it has ended
        renewal_failed = list(loop.failed)
        assert not renewal_failed, [o.error for o in renewal_failed[:3]]
        rows = json.loads(station.cli("status", name, "--json", "--no-health", *remote).stdout)
        routers = [r for r in rows if r.get("role") == "router"]
        jobs.extend(r["job"] for r in rows if r["job"] not in jobs)
        assert routers[0]["status"] == "stopped" and routers[-1]["status"] == "ready", routers
        cancelled_at = time.time()
        subprocess.run(["scancel", routers[-1]["job"]], check=True)
        replaced = wait_until(lambda: (now := url()) and now not in (renewed, first_router)
                              and now, 120, "a replacement router job")
        _wait_for(tun_err, rf"{name} is served by {replaced} now", 30)
        recovered_at = time.time()
        time.sleep(5)
        loop.stop()
        late = [o for o in loop.outcomes if o.started > recovered_at + 1]
        lost = [o for o in loop.failed if o.started >= cancelled_at]
        print(f"\nrouter renewed {first_router} -> {renewed} with 0 failed requests; router "
              f"job cancelled: {replaced} serves after {recovered_at - cancelled_at:.1f}s, "
              f"{len(lost)} requests failed meanwhile")
        assert late and not [o for o in late if o.error], [o.error for o in late if o.error][:3]
        stop = station.cli("stop", name, *remote, "--json", timeout=300)
        assert stop.returncode == 0, stop.stderr
        rows = json.loads(station.cli("status", name, "--json", "--no-health", *remote).stdout)
        jobs.extend(r["job"] for r in rows if r["job"] not in jobs)
        assert {r["status"] for r in rows} <= {"stopped", "ended"}, rows
    finally:
        release(jobs, [loop], tunnel)
    nothing_left(sandbox, jobs)
