"""The real vLLM (CPU build, tiny random Qwen2) served end to end through slurmserve."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from deploy import RUNTIME, Deployment, our_containers

VLLM = ("--served-model-name", "tiny", "--gpus", "none", "--gpus-per-node", "1",
        "--health-timeout", "900")
ENGINE_ARGS = ("--", "--max-model-len", "512")


def _openai_chat(endpoint: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=f"{endpoint}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=8,
        extra_body={"ignore_eos": True, "min_tokens": 4})
    assert reply.usage.completion_tokens >= 4
    return reply.choices[0].message.content


def test_run_real_vllm(sandbox, vllm_tarball, tmp_path):
    d = Deployment(tmp_path, 1, "vllm", "/models/tiny", "--image", str(vllm_tarball), *VLLM,
                   *ENGINE_ARGS)
    try:
        d.wait_ready(timeout=900)
        assert d.model == "tiny"
        assert _openai_chat(d.endpoint)
        d.signal_driver(signal.SIGINT)
        assert d.wait(120) == 0
    finally:
        d.close()
    assert not our_containers(sandbox, d.job_id)


def _submit(tarball, tmp_path, *extra: str) -> tuple[str, str]:
    """`slurmserve submit` of the real vLLM, waited for: (job, endpoint)."""
    submit = subprocess.run(
        ["slurmserve", "submit", "vllm", "/models/tiny", "--image", str(tarball), *VLLM, *extra,
         "--runtime", RUNTIME, "--log-dir", str(tmp_path / "logs"), "--json", *ENGINE_ARGS],
        capture_output=True, text=True, timeout=1500)
    assert submit.returncode == 0, submit.stderr
    info = json.loads(submit.stdout.strip().splitlines()[-1])
    return info["job"], info["endpoint"]


def test_submit_status_stop_real_vllm(sandbox, vllm_tarball, tmp_path):
    job, endpoint = _submit(vllm_tarball, tmp_path)
    try:
        status = subprocess.run(["slurmserve", "status", job, "--json"], capture_output=True,
                                text=True, check=True)
        row = json.loads(status.stdout)[0]
        assert (row["slurm_state"], row["status"], row["healthy"]) == ("RUNNING", "ready", True)
        assert _openai_chat(endpoint)
        check = subprocess.run(["slurmserve", "test", "--job", job, "--json"],
                               capture_output=True, text=True, timeout=300)
        report = json.loads(check.stdout)
        assert check.returncode == 0, check.stdout
        results = {c["name"]: c["status"] for c in report["checks"]}
        assert results["streaming"] == results["logprobs"] == results["metrics"] == "PASS"
        assert results["sglang-generate"] == "SKIP"
        out = tmp_path / "bench"
        bench = subprocess.run(
            ["slurmserve", "bench", "--job", job, "--type", "latency,concurrency", "--tiny",
             "--tokenizer", "/models/tiny", "--out", str(out), "--json"],
            capture_output=True, text=True, timeout=900)
        assert bench.returncode == 0, bench.stderr[-3000:]
        data = json.loads(bench.stdout)
        assert data["results"] and all(r["completed"] > 0 and r["failed"] == 0
                                       for r in data["results"])
        assert (out / "results.json").exists()
        assert (out / "concurrency-throughput-latency.png").stat().st_size > 10_000
        stop = subprocess.run(["slurmserve", "stop", job, "--json"], capture_output=True,
                              text=True, timeout=180)
        assert stop.returncode == 0, stop.stderr
        assert json.loads(stop.stdout)["status"] == "stopped"
    finally:
        subprocess.run(["scancel", job], check=False)
    assert not our_containers(sandbox, job)
    logs = subprocess.run(["slurmserve", "logs", job], capture_output=True, text=True)
    assert "vllm" in logs.stdout.lower() or "uvicorn" in logs.stdout.lower(), logs.stdout[-2000:]


@pytest.mark.parametrize("fault", ["no-such-model"])
def test_real_vllm_bad_model_fails_fast_with_its_log(sandbox, vllm_tarball, tmp_path, fault):
    d = Deployment(tmp_path, 1, "vllm", "/models/does-not-exist", "--image", str(vllm_tarball),
                   *VLLM, *ENGINE_ARGS)
    code = d.wait(300)
    assert code == 1
    assert "FAILED" in d.err or "exited with code" in d.err
    assert "does-not-exist" in d.err  # the engine's own error, from the node's log tail
    assert not our_containers(sandbox, d.job_id)


def test_submit_two_real_vllm_replicas_behind_the_router(sandbox, vllm_tarball, tmp_path):
    """Batch mode: the router starts inside the batch job; both real vLLM servers answer
    through it (the openai client, `test --job`, `bench --job`), and `status` lists them."""
    job, endpoint = _submit(vllm_tarball, tmp_path, "--nodes", "2", "--replicas", "2",
                            "--ready-replicas", "2", "--route", "round-robin")
    try:
        status = subprocess.run(["slurmserve", "status", job, "--json"], capture_output=True,
                                text=True, check=True)
        row = json.loads(status.stdout)[0]
        assert row["endpoint"] == endpoint and row["status"] == "ready"
        replicas = row["replicas"]
        assert [r["status"] for r in replicas] == ["ready", "ready"]
        assert endpoint not in {r["endpoint"] for r in replicas}  # the router's own
        for _ in range(4):
            assert _openai_chat(endpoint)
        check = subprocess.run(["slurmserve", "test", "--job", job, "--json"],
                               capture_output=True, text=True, timeout=300)
        assert check.returncode == 0, check.stdout
        bench = subprocess.run(
            ["slurmserve", "bench", "--job", job, "--type", "latency", "--tiny",
             "--tokenizer", "/models/tiny", "--out", str(tmp_path / "bench"), "--json"],
            capture_output=True, text=True, timeout=900)
        assert bench.returncode == 0, bench.stderr[-3000:]
        assert all(r["failed"] == 0 for r in json.loads(bench.stdout)["results"])
        one = subprocess.run(
            ["slurmserve", "bench", "--job", job, "--replica", "1", "--type", "latency",
             "--tiny", "--tokenizer", "/models/tiny", "--out", str(tmp_path / "bench-1"),
             "--json"], capture_output=True, text=True, timeout=900)
        assert one.returncode == 0, one.stderr[-3000:]
        assert replicas[1]["endpoint"] in one.stdout  # it measured replica 1 itself
        live = json.loads(subprocess.run(["slurmserve", "status", job, "--json"],
                                         capture_output=True, text=True, check=True).stdout)[0]
        assert all(r["healthy"] and r["running"] is not None for r in live["replicas"])
        stop = subprocess.run(["slurmserve", "stop", job, "--json"], capture_output=True,
                              text=True, timeout=180)
        assert stop.returncode == 0, stop.stderr
    finally:
        subprocess.run(["scancel", job], check=False)
    assert not our_containers(sandbox, job)
