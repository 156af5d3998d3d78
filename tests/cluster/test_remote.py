"""From a workstation: remote mode over real OpenSSH to the sandbox's login host.

The workstation side runs with its own HOME, state dir, SSH config and known_hosts (never
root's ~/.ssh), no SSH agent unless a test starts one, and a SLURM_CONF that does not exist:
everything cluster-side must go through the login host.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from deploy import RUNTIME, our_containers
from sandboxlib import SANDBOX, run, sandbox_status

LOGIN_NS = "ss-login"
UNREACHABLE = "10.77.0.249"  # on ssbr0, nobody answers there
SECRET = "sk-remote-test-5f1c0de"


class Workstation:
    """A laptop's view: HOME, SSH config, known_hosts and slurmserve's user config."""

    def __init__(self, root: Path, login: dict) -> None:
        self.root = root
        self.home = root / "home"
        (self.home / ".ssh").mkdir(parents=True, exist_ok=True)
        self.key = Path(login["user_key"])
        self.known_hosts = root / "known_hosts"
        host_key = Path(login["host_key"]).read_text().split()[:2]
        self.known_hosts.write_text(f"{login['addr']} {' '.join(host_key)}\n")
        self.ssh_config = root / "ssh_config"
        entry = (f"    HostName {login['addr']}\n    User {login['user']}\n"
                 f"    IdentityFile {self.key}\n    IdentitiesOnly yes\n")
        self.ssh_config.write_text(
            f"Host login\n{entry}    UserKnownHostsFile {self.known_hosts}\n"
            f"Host viajump\n{entry}    UserKnownHostsFile {self.known_hosts}\n"
            "    ProxyJump login\n"
            f"Host agentonly\n    HostName {login['addr']}\n    User {login['user']}\n"
            f"    UserKnownHostsFile {self.known_hosts}\n"
            f"Host fresh\n{entry}    UserKnownHostsFile {root / 'fresh_known_hosts'}\n"
            f"Host changed\n{entry}    UserKnownHostsFile {root / 'changed_known_hosts'}\n"
            f"Host wrongkey\n    HostName {login['addr']}\n    User {login['user']}\n"
            f"    IdentityFile {root / 'wrong_key'}\n    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {self.known_hosts}\n")
        self.user_config = root / "config.yaml"
        self.user_config.write_text(
            f"remotes:\n  sandbox: {{host: login, python: {json.dumps(sys.executable)}}}\n")
        self.env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        self.env.update(HOME=str(self.home), XDG_STATE_HOME=str(self.home / "state"),
                        SLURMSERVE_SSH_CONFIG=str(self.ssh_config),
                        SLURMSERVE_CONFIG=str(self.user_config),
                        SLURM_CONF=str(root / "no-slurm-here.conf"), OPENAI_API_KEY=SECRET,
                        SERVE_KEY=SECRET)
        self.outputs: list[str] = []

    def cli(self, *args: str, timeout: float = 120, env: dict | None = None
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "slurmserve", *args], capture_output=True,
                              text=True, timeout=timeout, env={**self.env, **(env or {})},
                              cwd=self.root)
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def popen(self, *args: str, out: Path, err: Path) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "slurmserve", *args], env=self.env,
                                stdout=out.open("w"), stderr=err.open("w"), text=True,
                                cwd=self.root, start_new_session=True)


@pytest.fixture(scope="module")
def station(sandbox, tmp_path_factory) -> Workstation:
    login = sandbox_status().get("login") or {}
    assert login.get("sshd"), f"the sandbox's login host is not up: {login}"
    return Workstation(tmp_path_factory.mktemp("workstation"), login)


def _chat(base_url: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=SECRET, max_retries=0, timeout=20)
    reply = client.chat.completions.create(
        model="org/tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=8)
    return reply.choices[0].message.content


def _wait_for(path: Path, pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, path.read_text(), re.M)
        if match:
            return match
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in {path} within {timeout}s:\n{path.read_text()}")


def _restart_login_sshd() -> float:
    """Kill every sshd of the login host (listener and sessions), start it again with
    `sandbox up`; returns when it is back (seconds it was down)."""
    pids = run(["ip", "netns", "pids", LOGIN_NS]).stdout.split()
    down = time.monotonic()
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                os.kill(int(pid), signal.SIGTERM)
        except (FileNotFoundError, ProcessLookupError):
            pass
    time.sleep(1.0)  # a real outage, not a blip
    run([str(SANDBOX), "up", "--nodes", str(sandbox_status()["node_count"])], timeout=300)
    return time.monotonic() - down


def test_submit_tunnel_chat_status_stop(sandbox, standin_tarball, station, tmp_path):
    logs = tmp_path / "cluster-logs"  # a path on the cluster (the sandbox shares its disk)
    start = time.monotonic()
    submit = station.cli("submit", "sglang", "org/tiny", "--image", str(standin_tarball),
                         "--runtime", RUNTIME,
                         "--nodes", "2", "--tp", "2", "--gpus", "none", "--gpus-per-node", "1",
                         "--health-timeout", "120", "--log-dir", str(logs),
                         # a variable of the laptop: it reaches the job over the SSH channel
                         "--api-key", "env:SERVE_KEY", "--remote", "sandbox", "--json",
                         timeout=300)
    assert submit.returncode == 0, submit.stderr
    ready_s = time.monotonic() - start
    info = json.loads(submit.stdout.strip().splitlines()[-1])
    job = info["job"]
    assert info["status"] == "ready" and info["endpoint"].startswith("http://10.77.0.")
    tunnel = None
    try:
        tun_out, tun_err = tmp_path / "tunnel.out", tmp_path / "tunnel.err"
        tunnel = station.popen("tunnel", job, "--remote", "sandbox", out=tun_out, err=tun_err)
        base_url = _wait_for(tun_out, r"^OPENAI_BASE_URL=(http://127\.0\.0\.1:\d+/v1)$", 30)[1]
        assert _chat(base_url)

        status = station.cli("status", job, "--json", "--remote", "sandbox")
        row = json.loads(status.stdout)[0]
        assert (row["slurm_state"], row["status"], row["healthy"]) == ("RUNNING", "ready", True)
        assert row["endpoint"] == info["endpoint"] and len(row["nodes"]) == 2
        check = station.cli("test", "--job", job, "--remote", "sandbox", "--only",
                            "models,auth,chat", "--json")
        assert check.returncode == 0, check.stdout + check.stderr
        assert [c["status"] for c in json.loads(check.stdout)["checks"]] == ["PASS"] * 3
        assert json.loads(check.stdout)["base_url"].startswith("http://127.0.0.1:")
        node_log = station.cli("logs", job, "--node", "0", "--remote", "sandbox")
        assert "STAND-IN" in node_log.stdout, node_log.stderr
        # bench runs on the cluster (the stand-in has no benchmark client: the point fails)
        # and its folder comes back here.
        out = tmp_path / "bench"
        bench = station.cli("bench", "--job", job, "--remote", "sandbox", "--type", "latency",
                            "--tiny", "--out", str(out), "--json")
        assert bench.returncode == 1, bench.stderr
        results = json.loads((out / "results.json").read_text())
        assert [r["completed"] for r in results["results"]] == [0]
        assert "No module named sglang.bench_serving" in results["results"][0]["error"]

        down_s = _restart_login_sshd()
        back = time.monotonic()
        while True:  # the same local port, through a new SSH connection
            try:
                assert _chat(base_url)
                break
            except Exception:
                if time.monotonic() - back > 30:
                    raise
                time.sleep(0.2)
        reconnect_s = time.monotonic() - back
        _wait_for(tun_err, r"reconnected to sandbox after", 15)
        print(f"\nsubmit->READY {ready_s:.1f}s; sshd down {down_s:.1f}s; tunnel served again "
              f"{reconnect_s:.1f}s after sshd was back")

        stop = station.cli("stop", job, "--json", "--remote", "sandbox", timeout=200)
        assert stop.returncode == 0, stop.stderr
        assert json.loads(stop.stdout)["status"] == "stopped"
        assert tunnel.wait(30) == 1
        assert f"job {job} ended" in tun_err.read_text()
        station.outputs += [tun_out.read_text(), tun_err.read_text()]
    finally:
        if tunnel and tunnel.poll() is None:
            tunnel.kill()
        subprocess.run(["scancel", job], check=False)
    assert not our_containers(sandbox, job)
    # Nothing secret anywhere: not the private key, not the API key.
    key_body = "".join(station.key.read_text().splitlines()[1:-1])
    texts = station.outputs + [p.read_text(errors="replace") for p in logs.rglob("*")
                               if p.is_file()]
    texts.append(Path("/var/lib/slurmserve-sandbox/log/sshd-login.log").read_text())
    for text in texts:
        assert SECRET not in text
        assert key_body[20:60] not in text


def test_tunnel_follows_a_named_deployment_to_its_next_job(sandbox, standin_tarball, station,
                                                           tmp_path):
    """`tunnel NAME` keeps one local URL while the job serving NAME changes underneath."""
    name = f"follow-{uuid.uuid4().hex[:8]}"  # the deployment index outlives test sessions
    submit = ("submit", "sglang", "org/tiny", "--image", str(standin_tarball), "--runtime",
              RUNTIME, "--gpus", "none", "--gpus-per-node", "1", "--health-timeout", "120",
              "--log-dir", str(tmp_path / "cluster-logs"), "--name", name, "--api-key",
              "env:SERVE_KEY", "--remote", "sandbox", "--json")
    jobs: list[str] = []
    tunnel = None
    try:
        first = station.cli(*submit, timeout=300)
        assert first.returncode == 0, first.stderr
        jobs.append(json.loads(first.stdout.strip().splitlines()[-1])["job"])
        tun_out, tun_err = tmp_path / "tunnel.out", tmp_path / "tunnel.err"
        tunnel = station.popen("tunnel", name, "--remote", "sandbox", out=tun_out, err=tun_err)
        base_url = _wait_for(tun_out, r"^OPENAI_BASE_URL=(http://127\.0\.0\.1:\d+/v1)$", 30)[1]
        assert _chat(base_url)
        second = station.cli(*submit, timeout=300)
        assert second.returncode == 0, second.stderr
        info = json.loads(second.stdout.strip().splitlines()[-1])
        jobs.append(info["job"])
        _wait_for(tun_err, rf"{name} is served by {re.escape(info['endpoint'])} now", 30)
        stop = station.cli("stop", jobs[0], "--remote", "sandbox", timeout=200)
        assert stop.returncode == 0, stop.stderr
        assert _chat(base_url)  # the same local URL, answered by the second job
        assert tunnel.poll() is None  # one job of it still serves: the tunnel stays
        assert station.cli("stop", name, "--remote", "sandbox", timeout=200).returncode == 0
        assert tunnel.wait(30) == 1
        assert f"deployment {name} ended" in tun_err.read_text()
    finally:
        if tunnel and tunnel.poll() is None:
            tunnel.kill()
        subprocess.run(["scancel", *jobs], check=False)
    for job in jobs:
        assert not our_containers(sandbox, job)


def test_unknown_job_is_the_login_hosts_error(station, tmp_path):
    out = tmp_path / "bench"
    proc = station.cli("bench", "--job", "999999", "--remote", "sandbox", "--out", str(out))
    assert proc.returncode == 2
    assert "sandbox: --job: no slurmserve job 999999" in proc.stderr, proc.stderr
    assert not out.exists()


def test_unknown_host_key_refused_until_accepted(station):
    fresh = station.root / "fresh_known_hosts"
    refused = station.cli("status", "--remote", "fresh", "--no-health")
    assert refused.returncode == 1
    assert "host key of fresh (10.77.0.250) is not in" in refused.stderr
    assert "SHA256:" in refused.stderr and "--accept-new-host-key" in refused.stderr
    assert not fresh.exists()
    accepted = station.cli("status", "--remote", "fresh", "--no-health", "--accept-new-host-key")
    assert accepted.returncode == 0, accepted.stderr
    assert "added the host key of fresh" in accepted.stderr
    assert fresh.read_text().startswith("10.77.0.250 ssh-ed25519 ")
    assert oct(fresh.stat().st_mode & 0o777) == "0o600"
    again = station.cli("status", "--remote", "fresh", "--no-health")
    assert again.returncode == 0 and "added" not in again.stderr


def test_changed_host_key_refused_even_with_accept_new(station):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    other = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    path = station.root / "changed_known_hosts"
    path.write_text(f"10.77.0.250 {other}\n")
    for extra in ((), ("--accept-new-host-key",)):
        proc = station.cli("status", "--remote", "changed", "--no-health", *extra)
        assert proc.returncode == 1
        assert "has CHANGED" in proc.stderr and "ssh-keygen -R" in proc.stderr, proc.stderr
    assert path.read_text() == f"10.77.0.250 {other}\n"


def test_wrong_user_key_refused(station):
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(station.root / "wrong_key")])
    proc = station.cli("status", "--remote", "wrongkey", "--no-health")
    assert proc.returncode == 1
    assert "refused the login" in proc.stderr and "authorized_keys" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreachable_login_host_fails_fast(station):
    start = time.monotonic()
    proc = station.cli("status", "--remote", f"root@{UNREACHABLE}", "--connect-timeout", "3")
    took = time.monotonic() - start
    assert proc.returncode == 1
    assert f"cannot reach {UNREACHABLE}:22" in proc.stderr, proc.stderr
    assert took < 6, f"took {took:.1f}s"
    print(f"\nunreachable login host reported in {took:.1f}s")


def test_missing_slurmserve_on_login_host(station, tmp_path):
    nowhere = station.cli("status", "--remote", "login", "--remote-python", "/opt/no/python3")
    assert nowhere.returncode == 1
    assert "slurmserve is not installed on login: there is no `/opt/no/python3`" in nowhere.stderr
    # A real Python without site-packages: no slurmserve importable.
    bare = tmp_path / "bare-python"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    bare.chmod(0o755)
    missing = station.cli("status", "--remote", "login", "--remote-python", str(bare))
    assert missing.returncode == 1
    assert f"slurmserve is not installed on login for `{bare}`" in missing.stderr
    assert "--remote-python" in missing.stderr and "pip install slurmserve" in missing.stderr


def test_proxyjump_and_agent(station, tmp_path):
    jumped = station.cli("status", "--remote", "viajump", "--remote-python", sys.executable,
                         "--no-health", "--json")
    assert jumped.returncode == 0, jumped.stderr
    assert isinstance(json.loads(jumped.stdout), list)
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        run(["ssh-add", str(station.key)], env={"SSH_AUTH_SOCK": str(sock)})
        no_agent = station.cli("status", "--remote", "agentonly", "--remote-python",
                               sys.executable, "--no-health")
        assert no_agent.returncode == 1 and "refused the login" in no_agent.stderr
        with_agent = station.cli("status", "--remote", "agentonly", "--remote-python",
                                 sys.executable, "--no-health", env={"SSH_AUTH_SOCK": str(sock)})
        assert with_agent.returncode == 0, with_agent.stderr
    finally:
        agent.terminate()
        agent.wait(10)


def test_python_client_from_a_notebook(sandbox, standin_tarball, station, tmp_path, monkeypatch):
    from slurmserve import Cluster

    monkeypatch.setenv("SLURMSERVE_CONFIG", str(station.user_config))
    monkeypatch.setenv("SLURMSERVE_SSH_CONFIG", str(station.ssh_config))
    progress: list[str] = []
    with Cluster.connect("sandbox") as cluster:
        job = cluster.submit(engine="sglang", model="org/tiny", image=str(standin_tarball),
                             gpus="none", gpus_per_node=1, health_timeout=120,
                             log_dir=str(tmp_path / "logs"), on_progress=progress.append)
        try:
            assert progress[-1] == f"job {job.id}: running, ready"
            assert job.base_url.startswith("http://127.0.0.1:")  # a tunnel via the login host
            assert _chat(job.base_url)
            assert job.status().healthy is True
            assert any("STAND-IN" in line for line in job.logs(node="0"))
            assert job.stop()["status"] == "stopped"
        finally:
            subprocess.run(["scancel", job.id], check=False)
    assert not our_containers(sandbox, job.id)
