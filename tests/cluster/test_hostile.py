"""Hostile values, API keys and load, for real on the sandbox through the stand-in engine.

Shell metacharacters, quotes, `$()`, backticks and unicode in every user value that reaches a
shell or a container must arrive literally (the stand-in reports its argv and environment);
an API key must protect the endpoint yet appear in no `ps`, script, log or state; and the
printed endpoint must carry hundreds of concurrent streams, with a clean teardown after.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from deploy import Deployment, our_containers

STANDIN = ("--gpus", "none", "--gpus-per-node", "1", "--health-timeout", "120")
PWNED = f"/tmp/slurmserve-pwned-{uuid.uuid4().hex[:8]}"  # exists only if something ran a value
# Reaches argv and env: every shell hazard (a newline is refused as bad input instead).
HOSTILE = (f"$(touch {PWNED}) `touch {PWNED}` 'sq' \"dq\" ;|&<>*?~#!%^ \\ $HOME ${{IFS}} "
           "é漢字🙂")
# A path component: the same without '/' (and without ':' ',', which docker's -v refuses).
HOSTILE_NAME = "h $(id) `id` 'sq' \"dq\" ;|&<>*?#!% é漢🙂"
# An API key: printable ASCII without spaces, with every quoting hazard that leaves.
KEY = f"sk-$(touch${{IFS}}{PWNED})`id`'\"\\;|&#:{{x}}<>{uuid.uuid4().hex[:6]}"
LOAD_STREAMS = 200
LOAD_SECONDS = 12.0
LOAD_TOKENS = 16


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


@pytest.fixture(scope="module")
def hostile(sandbox, standin_tarball, tmp_path_factory):
    """One vLLM stand-in serving with hostile values everywhere, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("hostile") / f"run {HOSTILE_NAME}"  # the log dir, too
    mount_src = tmp / f"mnt {HOSTILE_NAME}"
    mount_src.mkdir(parents=True)
    env_file = tmp / "user.env"
    env_file.write_text(f"SLURMSERVE_HOSTILE_FILE={HOSTILE}\u2028\tend\n")
    env_file.chmod(0o600)
    d = Deployment(
        tmp, 1, "vllm", f"/models/{HOSTILE_NAME}", "--image", str(standin_tarball), *STANDIN,
        "--served-model-name", HOSTILE, "--env", f"SLURMSERVE_HOSTILE_ENV= {HOSTILE} ",
        "--env", "SLURMSERVE_STANDIN_TOKEN_LATENCY=0.02", "--env-file", str(env_file),
        "--mount", f"{mount_src}:/data/{HOSTILE_NAME}:ro",
        "--", "--zz-hostile", HOSTILE, f"--zz-inline={HOSTILE}", "", "plain")
    d.mount_src = mount_src
    try:
        d.wait_ready()
        yield d
    finally:
        d.close()
        assert not Path(PWNED).exists(), "a user value was executed by a shell"


def test_hostile_values_arrive_literally(hostile, sandbox):
    d = hostile
    info = d.info()
    argv = info["argv"]
    assert argv[-5:] == ["--zz-hostile", HOSTILE, f"--zz-inline={HOSTILE}", "", "plain"], argv
    assert argv[argv.index("serve") + 1] == f"/models/{HOSTILE_NAME}"
    assert info["served_model_name"] == [HOSTILE]
    assert info["env"]["SLURMSERVE_HOSTILE_ENV"] == f" {HOSTILE} "
    assert info["env"]["SLURMSERVE_HOSTILE_FILE"] == f"{HOSTILE}\u2028\tend"
    assert [m["id"] for m in _session().get(f"{d.endpoint}/v1/models", timeout=5).json()["data"]
            ] == [HOSTILE]
    node = d.state()["nodes"][0]
    inspect = json.loads(sandbox.docker(node["host"], "inspect", node["container"]).stdout)[0]
    assert {(m["Source"], m["Destination"]) for m in inspect["Mounts"]} >= {
        (str(d.mount_src), f"/data/{HOSTILE_NAME}")}
    assert Path(node["log"]).parent.parent == d.log_dir  # the hostile log dir holds the run
    # The curl example printed with READY runs as printed, and sends the model name intact.
    curl = next(line.strip() for line in d.out.splitlines() if line.strip().startswith("curl "))
    answer = subprocess.run(["bash", "-c", curl + " --silent --show-error"], capture_output=True,
                            text=True, timeout=30, env={**os.environ, "no_proxy": "*"})
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["model"] == HOSTILE
    assert not Path(PWNED).exists()


def _stream(session: requests.Session, url: str) -> None:
    body = {"model": HOSTILE, "messages": [{"role": "user", "content": HOSTILE}],
            "max_tokens": LOAD_TOKENS, "stream": True}
    with session.post(url, json=body, stream=True, timeout=60) as response:
        response.raise_for_status()
        events = [line[6:] for line in response.iter_lines() if line]
    assert events and events[-1] == b"[DONE]", events[-2:]
    chunks = [json.loads(e) for e in events[:-1]]
    tokens = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(tokens) == LOAD_TOKENS, len(tokens)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_load_concurrent_streams_through_the_printed_endpoint(hostile):
    url = f"{hostile.endpoint}/v1/chat/completions"
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(LOAD_STREAMS + 1)
    stop_at: list[float] = []

    def client() -> None:
        session = _session()
        start.wait()
        while time.monotonic() < stop_at[0]:
            t0 = time.monotonic()
            try:
                _stream(session, url)
            except Exception as exc:  # every failure is counted and shown
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            with lock:
                latencies.append(time.monotonic() - t0)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(LOAD_STREAMS)]
    for t in threads:
        t.start()
    stop_at.append(time.monotonic() + LOAD_SECONDS)
    began = time.monotonic()
    start.wait()
    for t in threads:
        t.join(LOAD_SECONDS + 90)
    elapsed = time.monotonic() - began
    assert not any(t.is_alive() for t in threads), "a stream hung"
    assert not errors, f"{len(errors)} failed streams, e.g. {errors[:3]}"
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"\nload: {LOAD_STREAMS} concurrent streams for {LOAD_SECONDS:g}s: {len(latencies)} "
          f"complete, 0 errors, {len(latencies) / elapsed:.1f} req/s, p50 {p50 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms ({LOAD_TOKENS} tokens each)")
    assert len(latencies) >= LOAD_STREAMS  # every client finished at least one stream


def test_teardown_after_load_is_clean(hostile, sandbox):
    job = hostile.job_id
    hostile.signal_driver()
    assert hostile.wait(90) == 0, hostile.err[-3000:]
    assert not our_containers(sandbox, job), "containers left after the load"
    run_dir = hostile.log_dir / job
    assert not list(run_dir.glob("node-*.env")), "env files must be gone after teardown"
    assert hostile.state()["status"] == "stopped"


# ---- API keys ------------------------------------------------------------------------------------


def _key_file(tmp: Path) -> Path:
    path = tmp / f"key {HOSTILE_NAME}"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("engine,nodes,source", [
    ("vllm", 1, "env"),  # VLLM_API_KEY in the 0600 env file
    ("sglang", 2, "file"),  # SGLang's --config file in the 0600 secrets dir; rank 0 only
])
def test_api_key_protects_the_endpoint_and_stays_secret(engine, nodes, source, sandbox,
                                                        standin_tarball, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("SS_TEST_API_KEY", KEY)
    spec = "env:SS_TEST_API_KEY" if source == "env" else f"file:{_key_file(tmp_path)}"
    d = Deployment(tmp_path / "d", nodes, engine, "org/tiny-model", "--image", str(standin_tarball),
                   *STANDIN, "--nodes", str(nodes), "--tp", str(nodes), "--api-key", spec)
    try:
        endpoint = d.wait_ready()
        session = _session()
        assert session.get(f"{endpoint}/v1/models", timeout=5).status_code == 401
        assert session.post(f"{endpoint}/v1/completions", json={"prompt": "x"},
                            timeout=5).status_code == 401
        auth = {"Authorization": f"Bearer {KEY}"}
        assert session.get(f"{endpoint}/v1/models", headers=auth, timeout=5).status_code == 200
        assert session.get(f"{endpoint}/health", timeout=5).status_code == 200
        job = d.job_id
        state = d.state()
        assert state["api_key"] == spec  # the source, never the key
        # `test` and `status` find the key through the job's recorded source.
        checks = subprocess.run(["slurmserve", "test", "--job", job], capture_output=True,
                                text=True, timeout=180)
        assert checks.returncode == 0, checks.stdout + checks.stderr
        assert any(line.split()[:2] == ["auth", "PASS"] for line in checks.stdout.splitlines())
        status = subprocess.run(["slurmserve", "status", job, "--json"], capture_output=True,
                                text=True, timeout=60)
        assert json.loads(status.stdout)[0]["healthy"] is True, status.stdout + status.stderr
        # No process on any node (the namespaces share this host's process table) shows it.
        processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert KEY not in processes
        assert any("standin" in p or "vllm serve" in p or "sglang" in p
                   for p in processes.splitlines()), "the engine must be running while we look"
        run_dir = d.log_dir / job
        secret_files = [*run_dir.glob("node-*.env"), *run_dir.glob("node-*.redact"),
                        *run_dir.glob("node-*/secrets/*")]
        assert len(secret_files) >= nodes + 1
        for path in secret_files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        head = state["nodes"][0]
        shown = sandbox.docker(head["host"], "exec", head["container"], "sh", "-c",
                               "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '; true").stdout
        assert "standin" in shown or "sglang" in shown or "vllm" in shown
        assert KEY not in shown, "the key is on a command line inside the container"
    finally:
        d.close()
    assert d.proc.returncode == 0, d.err[-3000:]
    assert not our_containers(sandbox, job)
    assert not [*run_dir.glob("node-*.env"), *run_dir.glob("node-*.redact"),
                *run_dir.glob("node-*/secrets")], "secrets must be gone after teardown"
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), path
    assert KEY not in d.out + d.err
    assert shlex.quote(KEY) not in d.out + d.err
    assert not Path(PWNED).exists()
