"""Container runtimes on the real sandbox: `auto` and doctor, pyxis's one-time conversion,
podman, GPUs exactly as SLURM allocated them, and what cannot run here (Apptainer).

The rest of the suite runs under SLURMSERVE_TEST_RUNTIME (docker by default; CI runs the
runtime-dependent part again under pyxis: see the README's Tests section)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from deploy import STANDIN, Deployment, marked_leftovers, marked_processes, our_containers

MODEL = "org/tiny-model"


def _doctor(tarball: Path, tmp_path: Path, *args: str) -> dict:
    proc = subprocess.run(["salloc", "-N2", "--oversubscribe", "slurmserve", "doctor", "sglang",
                           MODEL, "--image", str(tarball), *STANDIN, "--tp", "2", "--nodes", "2",
                           "--log-dir", str(tmp_path / "logs"), "--json", *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def test_auto_picks_pyxis_and_doctor_says_why_and_which_version(sandbox, standin_tarball,
                                                                  tmp_path):
    verdict = _doctor(standin_tarball, tmp_path)
    assert verdict["ok"], verdict
    assert verdict["runtime"] == "pyxis"
    rows = [f for f in verdict["findings"] if f["check"] == "runtime"]
    assert len(rows) == 2 and all(f["status"] == "ok" for f in rows)
    assert all(f["detail"].startswith("pyxis ok enroot 4.1.2") or "enroot 4.1.2" in f["detail"]
               for f in rows), rows
    assert all("auto: pyxis works on every node" in f["detail"] for f in rows), rows
    docker = _doctor(standin_tarball, tmp_path, "--runtime", "docker")
    assert docker["runtime"] == "docker"
    assert all("--runtime docker" in f["detail"] for f in docker["findings"]
               if f["check"] == "runtime")


def test_apptainer_is_refused_where_it_is_not_installed(sandbox, standin_tarball, tmp_path):
    verdict = _doctor(standin_tarball, tmp_path, "--runtime", "apptainer")
    assert not verdict["ok"]
    [line, *_] = [f for f in verdict["findings"] if f["check"] == "runtime"]
    assert "apptainer is not usable here (absent)" in line["detail"]
    assert "apptainer (or singularity) on every node" in line["fix"]


def test_pyxis_converts_a_tarball_once_then_never_again(sandbox, standin_tarball, tmp_path):
    cache = tmp_path / "images"
    seen = []
    for attempt in range(2):
        d = Deployment(tmp_path / f"d{attempt}", 1, "sglang", MODEL, "--image",
                       str(standin_tarball), *STANDIN, "--runtime", "pyxis",
                       "--image-cache", str(cache), nodelist="n1")
        try:
            d.wait_ready(timeout=300)
            assert d.chat()
            d.signal_driver(signal.SIGINT)
            assert d.wait(60) == 0, d.err
        finally:
            d.close()
        seen.append(d.err)
        assert not marked_leftovers(sandbox.nodes, d.job_id)
    assert "converting " in seen[0] and "converted in " in seen[0]
    assert [p.suffix for p in cache.iterdir()] == [".sqsh"]  # no partial file left
    assert "already converted (cached by image ID): skipped" in seen[1]
    assert "converting " not in seen[1]
    assert json.loads((next((tmp_path / "d0" / "logs").glob("*/state.json"))).read_text())[
        "distribution"]["converted_bytes"] > 0


@pytest.mark.parametrize("engine,nodes,args", [
    ("sglang", 2, ["--tp", "2"]),
    ("vllm", 1, ["--tp", "1"]),
])
def test_podman_serves_and_leaves_nothing(sandbox, standin_tarball, tmp_path, engine, nodes,
                                          args):
    d = Deployment(tmp_path, nodes, engine, MODEL, "--image", str(standin_tarball), *STANDIN,
                   "--nodes", str(nodes), *args, "--runtime", "podman")
    try:
        d.wait_ready(timeout=300)
        assert d.chat()
        assert our_containers(sandbox, d.job_id, runtime="podman")  # they ran under podman
        d.signal_driver(signal.SIGINT)
        assert d.wait(60) == 0, d.err
    finally:
        d.close()
    assert "no container of job" in d.err
    assert not our_containers(sandbox, d.job_id, runtime="podman")


def _engine_env(job: str, node: str) -> dict[str, str]:
    """The environment of the job's engine process on NODE (found by the job mark)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for _, env in marked_processes():
            if env["SLURMSERVE_JOB"] == job and env.get("SLURMSERVE_NODE") == node:
                return env
        time.sleep(0.5)
    raise AssertionError(f"no process of job {job} on {node}")


@pytest.mark.parametrize("runtime,visible", [
    ("docker", "NVIDIA_VISIBLE_DEVICES"),  # set by dockerd from --gpus device=...
    ("pyxis", "CUDA_VISIBLE_DEVICES"),  # the step's own GPUs, as SLURM set them
    # CDI, --device nvidia.com/gpu=ID per index: the sandbox's CDI spec marks each device
    # it hands a container with SLURMSERVE_SANDBOX_GPU_ID=1
    ("podman", None),
])
def test_two_jobs_on_one_node_each_get_exactly_their_own_gpus(sandbox, standin_tarball,
                                                              tmp_path, runtime, visible):
    """The sandbox declares 4 fake GRES GPUs per node: two jobs of 2 GPUs share n1."""
    jobs = []
    try:
        for i in range(2):
            d = Deployment(tmp_path / f"d{i}", 1, "sglang", MODEL, "--image",
                           str(standin_tarball), "--gpus", "all", "--gpus-per-node", "2",
                           "--tp", "2", "--health-timeout", "300", "--runtime", runtime,
                           nodelist="n1", salloc_args=("--gres=gpu:2",))
            d.wait_ready(timeout=300)
            jobs.append(d)
        seen = []
        for d in jobs:
            env = _engine_env(d.job_id, "n1")
            allocated = subprocess.run(
                ["srun", f"--jobid={d.job_id}", "--overlap", "-N1", "bash", "-c",
                 "echo $SLURM_STEP_GPUS"], capture_output=True, text=True, timeout=60
            ).stdout.strip()
            if visible:
                assert env[visible] == allocated, (runtime, env.get(visible), allocated)
            else:
                handed = sorted(k.rsplit("_", 1)[1] for k in env
                                if k.startswith("SLURMSERVE_SANDBOX_GPU_"))
                assert handed == sorted(allocated.split(",")), (runtime, handed, allocated)
            seen.append(set(allocated.split(",")))
        assert len(seen[0]) == len(seen[1]) == 2 and not seen[0] & seen[1], seen
    finally:
        for d in jobs:
            d.close()
    for d in jobs:
        assert not our_containers(sandbox, d.job_id, runtime=runtime)
