"""Named deployments on the sandbox: two batch jobs under one `--name`, `url NAME` following
the newest serving one, `status`/`logs`/`stop NAME` on the whole deployment. Stand-in engine."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
from deploy import RUNTIME, STANDIN, our_containers


def cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["slurmserve", *argv], capture_output=True, text=True,
                          timeout=timeout)


def test_a_named_deployment_across_two_jobs(sandbox, standin_tarball, tmp_path):
    name = f"chat-{uuid.uuid4().hex[:8]}"  # the deployment index outlives test sessions
    submit = ["submit", "sglang", "org/tiny-model", "--image", str(standin_tarball), *STANDIN,
              "--runtime", RUNTIME, "--name", name, "--log-dir", str(tmp_path / "logs"),
              "--json"]
    jobs: list[str] = []
    try:
        first = cli(*submit)
        assert first.returncode == 0, first.stderr
        jobs.append(json.loads(first.stdout.strip().splitlines()[-1])["job"])
        url = cli("url", name)
        assert url.returncode == 0, url.stderr
        first_endpoint = url.stdout.strip()
        assert first_endpoint.startswith("http://10.77.0.")
        second = cli(*submit)
        assert second.returncode == 0, second.stderr
        info = json.loads(second.stdout.strip().splitlines()[-1])
        jobs.append(info["job"])
        assert cli("url", name).stdout.strip() == info["endpoint"]  # the newest serving job
        rows = json.loads(cli("status", name, "--json").stdout)
        assert [r["job"] for r in rows] == jobs and {r["status"] for r in rows} == {"ready"}
        logs = cli("logs", name)
        assert logs.returncode == 0 and "stand-in" in logs.stdout.lower(), logs.stdout[-2000:]
        stop = cli("stop", name, "--json", timeout=240)
        assert stop.returncode == 0, stop.stderr
        assert json.loads(stop.stdout)["job"] == jobs[-1]
        rows = json.loads(cli("status", name, "--json", "--no-health").stdout)
        assert {r["status"] for r in rows} == {"stopped"}, rows
        gone = cli("url", name)
        assert gone.returncode == 1 and f"{name} is not serving now" in gone.stderr
    finally:
        if jobs:
            subprocess.run(["scancel", *jobs], check=False)
    for job in jobs:
        assert not our_containers(sandbox, job)
    unknown = cli("stop", "no-such-deployment")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("nodes,extra", [(1, ()), (2, ("--replicas", "2", "--ready-replicas",
                                                        "2"))])
def test_idle_timeout_ends_a_deployment_nobody_uses(deploy, sandbox, nodes, extra):
    d = deploy(nodes, "sglang", "org/tiny-model", "--nodes", str(nodes), "--idle-timeout", "8s",
               *extra)
    d.wait_ready()
    busy_until = time.monotonic() + 14  # longer than the timeout: requests keep it up
    while time.monotonic() < busy_until:
        assert d.chat()
        time.sleep(1)
    assert d.proc.poll() is None, d.err[-3000:]
    assert d.wait(60) == 0, d.err[-3000:]  # then nobody asks: it ends itself
    assert "idle for 8s (--idle-timeout)" in d.err
    assert not our_containers(sandbox, d.job_id)
