"""Golden plans and renders for each engine on 1 and 2+ nodes, plus `bash -n` on every render.

A failing golden test shows the diff. If the change is intended, regenerate with
`SLURMSERVE_UPDATE_GOLDEN=1 pytest tests/unit/test_golden.py` and review the diff in git.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import subprocess
from pathlib import Path

import pytest

from slurmserve import api, load_spec, runtimes
from slurmserve.lifecycle import launch
from tests.unit.helpers import (
    GOLDEN,  # noqa: E402
    allocation,
)

IMAGE = "registry.example/engine:1.0"

CASES = {
    "vllm-1node-tp8": dict(engine="vllm", model="Qwen/Qwen2.5-14B-Instruct", nodes=1, tp=8),
    "vllm-2node-ray-tp8-pp2": dict(engine="vllm", model="deepseek-ai/DeepSeek-V2-Lite", nodes=2,
                                   engine_args=["--tensor-parallel-size", "8",
                                                "--pipeline-parallel-size", "2"]),
    "vllm-2node-mp-tp16": dict(engine="vllm", model="meta-llama/Llama-3.1-70B-Instruct", nodes=2,
                               tp=16, launch_mode="mp"),
    "vllm-2node-dp4-tp4": dict(engine="vllm", model="Qwen/Qwen3-30B-A3B", nodes=2, tp=4, dp=4,
                               engine_args=["--enable-expert-parallel"]),
    "vllm-1node-ep": dict(engine="vllm", model="Qwen/Qwen3-30B-A3B-FP8", nodes=1,
                          engine_args=["--tensor-parallel-size", "8", "--enable-expert-parallel",
                                       "--max-model-len", "8192"]),
    "sglang-1node-tp8": dict(engine="sglang", model="Qwen/Qwen2.5-72B-Instruct", nodes=1, tp=8),
    "sglang-2node-tp8-ep2": dict(engine="sglang", model="Qwen/Qwen1.5-MoE-A2.7B", nodes=2,
                                 gpus_per_node=4, engine_args=["--tp", "8", "--ep", "2"]),
    "sglang-2node-dpattn": dict(engine="sglang", model="deepseek-ai/DeepSeek-V3", nodes=2,
                                tp=16, dp=2, engine_args=["--enable-dp-attention"]),
    "trtllm-1node-tp8": dict(engine="trtllm", model="Qwen/Qwen2.5-14B-Instruct", nodes=1,
                             engine_args=["--tp_size", "8"]),
    "trtllm-2node-tp16-ep4": dict(engine="trtllm", model="deepseek-ai/DeepSeek-V3", nodes=2,
                                  engine_args=["--tp_size", "16", "--ep_size", "4"]),
    "trtllm-2node-tp8-pp2": dict(engine="trtllm", model="/fsx/models/Qwen2.5-72B", nodes=2, tp=8,
                                 pp=2, mounts=["/fsx:/fsx:ro"], env=["NCCL_DEBUG=INFO"]),
    # pyxis: the serving step's tasks are the MPI ranks (srun --mpi=pmix), no mpirun or sshd
    "trtllm-2node-tp16-pyxis": dict(engine="trtllm", model="Qwen/Qwen2.5-72B-Instruct", nodes=2,
                                    engine_args=["--tp_size", "16"], runtime="pyxis"),
}


def _spec(case: str):
    fields = dict(CASES[case])
    fields.setdefault("gpus_per_node", 8)
    return load_spec(image=IMAGE, log_dir="/shared/logs", **fields)


def _renders(case: str) -> dict[str, str]:
    spec = _spec(case)
    runtime = "docker" if spec.runtime == "auto" else spec.runtime
    alloc = dataclasses.replace(allocation(spec.nodes),
                                mpi_launch=runtimes.get(runtime).MPI_LAUNCH)
    plan = api.plan_cluster(spec, alloc)
    bundle = launch.build(spec, plan, f"/shared/logs/{alloc.job_id}", IMAGE, runtime)
    files = {
        "plan.json": json.dumps(plan.to_dict(), indent=2, sort_keys=True) + "\n",
        "node.sh": bundle.script,
        "sbatch.sh": api.render_sbatch(spec, python="/shared/venv/bin/python"),
    }
    for node in bundle.nodes:
        files[f"node-{node.rank}.env"] = launch.env_file_text(node.env)
        # Scripts the plan names as templates: rendered at launch, reviewed here.
        for name, text in node.files:
            if name.endswith(".sh") and not isinstance(dict(plan.nodes[node.rank].files)[name], str):
                files[f"node-{node.rank}.{name}"] = text
    return files


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    for suffix, text in _renders(case).items():
        path = GOLDEN / f"{case}.{suffix}"
        if os.environ.get("SLURMSERVE_UPDATE_GOLDEN"):
            path.write_text(text)
            continue
        assert path.exists(), f"missing {path}; create it with SLURMSERVE_UPDATE_GOLDEN=1"
        expected = path.read_text()
        if text != expected:
            diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                                str(path), "rendered"))
            pytest.fail(f"{path.name} changed (if intended: SLURMSERVE_UPDATE_GOLDEN=1):\n{diff}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_render_is_valid_bash(case: str, tmp_path: Path) -> None:
    spec = _spec(case)
    plan = api.plan_cluster(spec, allocation(spec.nodes))
    bundle = launch.build(spec, plan, str(tmp_path / "run"), IMAGE)
    scripts = {"node.sh": bundle.script, "sbatch.sh": api.render_sbatch(spec)}
    for node in bundle.nodes:
        scripts.update({f"{node.rank}-{k}": v for k, v in node.files if k.endswith(".sh")})
    for name, text in scripts.items():
        path = tmp_path / name
        path.write_text(text)
        result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: {result.stderr}"


def test_sbatch_header_carries_slurm_options() -> None:
    spec = load_spec(engine="vllm", model="m", image=IMAGE, nodes=2, tp=16, partition="gpu",
                     account="proj1", qos="high", time="04:00:00", exclusive=True,
                     sbatch_args=["--constraint=h100"])
    header = [line for line in api.render_sbatch(spec).splitlines() if line.startswith("#SBATCH")]
    assert header == [
        "#SBATCH --job-name=slurmserve", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8", "#SBATCH --partition=gpu", "#SBATCH --account=proj1",
        "#SBATCH --qos=high", "#SBATCH --time=04:00:00", "#SBATCH --exclusive",
        f"#SBATCH --output={os.path.abspath('slurmserve-logs')}/slurmserve-%j.out",
        "#SBATCH --constraint=h100",
    ]


def test_sbatch_embeds_a_spec_that_loads_back(tmp_path: Path) -> None:
    spec = _spec("trtllm-2node-tp8-pp2")
    script = api.render_sbatch(spec, python="/shared/venv/bin/python")
    # Execute only the printf that writes the spec, exactly as the job would.
    line = next(x for x in script.splitlines() if x.startswith("printf"))
    out = tmp_path / "spec.json"
    subprocess.run(["bash", "-c", line.replace('>"$spec_file"', f'>{out}')], check=True)
    assert load_spec(out) == spec
