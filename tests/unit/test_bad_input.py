"""Bad-input catalogue: every case exits 2 with ONE line naming the field, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

IMG = "registry.example/vllm:1"
BASE = ["vllm", "Qwen/Qwen2.5-7B-Instruct", "--image", IMG]


def _files(tmp: Path) -> dict[str, Path]:
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("engine: vllm\nmodel: [unclosed\n")
    unknown_key = tmp / "unknown.yaml"
    unknown_key.write_text(f"engine: vllm\nmodel: m\nimage: {IMG}\ntpp: 2\n")
    dashed_key = tmp / "dashed.yaml"
    dashed_key.write_text(f"engine: vllm\nmodel: m\nimage: {IMG}\ngpus-per-node: 4\n")
    bad_slurm_key = tmp / "slurmkey.yaml"
    bad_slurm_key.write_text(f"engine: vllm\nmodel: m\nimage: {IMG}\nslurm:\n  partiton: gpu\n")
    not_mapping = tmp / "list.yaml"
    not_mapping.write_text("- engine\n- vllm\n")
    bad_type = tmp / "type.yaml"
    bad_type.write_text(f"engine: vllm\nmodel: m\nimage: {IMG}\nnodes: two\n")
    not_tar = tmp / "model.tar"
    not_tar.write_text("this is not a tar archive\n")
    plain_tar = tmp / "plain.tar"
    import tarfile

    with tarfile.open(plain_tar, "w") as tar:
        tar.add(bad_yaml, arcname="hello.txt")
    env_file = tmp / "bad.env"
    env_file.write_text("GOOD=1\nthis line is wrong\n")
    trt_cfg = tmp / "trt.yaml"
    trt_cfg.write_text("tensor_parallel_size: 4\n")
    return dict(bad_yaml=bad_yaml, unknown_key=unknown_key, dashed_key=dashed_key,
                bad_slurm_key=bad_slurm_key, not_mapping=not_mapping, bad_type=bad_type,
                not_tar=not_tar, plain_tar=plain_tar, env_file=env_file, trt_cfg=trt_cfg)


# (case id, argv builder, words the one-line message must contain)
CASES = [
    ("unknown-engine", lambda f: ["vlm", "m", "--image", IMG], ["engine", "vllm, sglang, trtllm"]),
    ("missing-image", lambda f: ["vllm", "m"], ["image", "is required"]),
    ("missing-model", lambda f: ["vllm", "--image", IMG], ["model", "is required"]),
    ("missing-engine", lambda f: [], ["engine", "is required"]),
    ("tarball-not-found", lambda f: ["vllm", "m", "--image", "/nonexistent/x.tar"],
     ["image", "not found"]),
    ("not-a-tar", lambda f: ["vllm", "m", "--image", str(f["not_tar"])], ["image", "docker save"]),
    ("tar-not-docker-save", lambda f: ["vllm", "m", "--image", str(f["plain_tar"])],
     ["image", "manifest.json"]),
    ("bad-image-ref", lambda f: ["vllm", "m", "--image", "Bad Image!"], ["image", "reference"]),
    ("world-mismatch", lambda f: BASE + ["--nodes", "2", "--tp", "8"], ["--tp/--pp/--dp", "--nodes 1"]),
    ("world-too-big", lambda f: BASE + ["--tp", "16"], ["--tp/--pp/--dp", "--nodes 2"]),
    ("partial-nodes", lambda f: BASE + ["--nodes", "2", "--tp", "12"],
     ["--tp/--pp/--dp", "whole nodes"]),
    ("zero-tp", lambda f: BASE + ["--tp", "0"], ["--tp", "at least 1"]),
    ("negative-nodes", lambda f: BASE + ["--nodes", "-2"], ["--nodes", "at least 1"]),
    ("zero-gpus-per-node", lambda f: BASE + ["--gpus-per-node", "0"], ["--gpus-per-node"]),
    ("port-range", lambda f: BASE + ["--port", "70000"], ["--port", "65535"]),
    ("port-zero", lambda f: BASE + ["--port", "0"], ["--port"]),
    ("sglang-ep-not-dividing", lambda f: ["sglang", "m", "--image", IMG, "--tp", "8", "--ep", "3"],
     ["--ep", "divide"]),
    ("trtllm-ep-not-dividing", lambda f: ["trtllm", "m", "--image", IMG, "--", "--tp_size", "8",
                                          "--ep_size", "3"], ["--ep", "divide"]),
    ("vllm-ep-wrong", lambda f: BASE + ["--tp", "8", "--ep", "2"], ["--ep", "TP x DP = 8"]),
    ("sglang-multinode-dp", lambda f: ["sglang", "m", "--image", IMG, "--nodes", "2", "--tp", "8",
                                       "--dp", "2"], ["--dp", "--enable-dp-attention"]),
    ("trtllm-dp", lambda f: ["trtllm", "m", "--image", IMG, "--tp", "8", "--dp", "2"],
     ["--dp", "attention DP"]),
    ("contradiction-vllm", lambda f: BASE + ["--tp", "4", "--", "--tensor-parallel-size", "8"],
     ["--tp", "contradicts"]),
    ("contradiction-sglang", lambda f: ["sglang", "m", "--image", IMG, "--tp", "4", "--", "--tp",
                                        "8"], ["--tp", "contradicts"]),
    ("contradiction-port", lambda f: BASE + ["--port", "9000", "--", "--port", "9001"],
     ["--port", "contradicts"]),
    ("contradiction-trtllm-yaml", lambda f: ["trtllm", "m", "--image", IMG, "--",
                                             "--tp_size", "8", "--config", str(f["trt_cfg"])],
     ["tensor_parallel_size", "contradicts"]),
    ("owned-flag", lambda f: BASE + ["--", "--node-rank", "1"], ["--node-rank", "remove"]),
    ("owned-flag-sglang", lambda f: ["sglang", "m", "--image", IMG, "--", "--dist-init-addr",
                                     "1.2.3.4:5"], ["--dist-init-addr"]),
    ("native-not-int", lambda f: BASE + ["--", "--tensor-parallel-size", "eight"],
     ["tp", "whole number"]),
    ("native-missing-value", lambda f: BASE + ["--", "--tensor-parallel-size"],
     ["--tensor-parallel-size", "missing its value"]),
    ("bad-fabric", lambda f: BASE + ["--fabric", "roce"], ["fabric", "auto, efa, ib, tcp"]),
    ("bad-gpus", lambda f: BASE + ["--gpus", "first"], ["--gpus", "all, none"]),
    ("bad-mount", lambda f: BASE + ["--mount", "relative:/data"], ["--mount", "absolute"]),
    ("bad-mount-shape", lambda f: BASE + ["--mount", "/a:/b:rx"], ["--mount", "SRC:DST"]),
    ("bad-env", lambda f: BASE + ["--env", "NOVALUE"], ["--env", "KEY=VALUE"]),
    ("bad-env-name", lambda f: BASE + ["--env", "1BAD=x"], ["--env", "variable name"]),
    ("env-file-missing", lambda f: BASE + ["--env-file", "/nonexistent/.env"], ["--env-file"]),
    ("env-file-bad-line", lambda f: BASE + ["--env-file", str(f["env_file"])],
     ["--env-file", "line 2"]),
    ("bad-time", lambda f: BASE + ["--time", "4 hours"], ["--time", "SLURM time"]),
    ("bad-partition", lambda f: BASE + ["--partition", "gpu;rm -rf /"], ["--partition"]),
    ("protected-sbatch", lambda f: BASE + ["--sbatch-arg=--nodes=4"], ["--sbatch-arg", "--nodes"]),
    ("sbatch-not-option", lambda f: BASE + ["--sbatch-arg", "constraint"], ["--sbatch-arg"]),
    ("bad-job-name", lambda f: BASE + ["--job-name", "my job"], ["job_name"]),
    ("bad-launch-mode", lambda f: BASE + ["--launch-mode", "slurm"], ["--launch-mode", "vLLM"]),
    ("sglang-launch-mode", lambda f: ["sglang", "m", "--image", IMG, "--launch-mode", "ray"],
     ["--launch-mode"]),
    ("single-on-two-nodes", lambda f: BASE + ["--nodes", "2", "--launch-mode", "single"],
     ["--launch-mode", "single"]),
    ("trtllm-served-name", lambda f: ["trtllm", "m", "--image", IMG, "--served-model-name", "x"],
     ["--served-model-name"]),
    ("bad-health-timeout", lambda f: BASE + ["--health-timeout", "-5"], ["health_timeout"]),
    ("config-missing", lambda f: ["--config", "/nonexistent/spec.yaml"], ["--config", "not found"]),
    ("config-malformed", lambda f: ["--config", str(f["bad_yaml"])], ["--config", "malformed YAML"]),
    ("config-unknown-key", lambda f: ["--config", str(f["unknown_key"])], ["tpp", "unknown key"]),
    ("config-dashed-key", lambda f: ["--config", str(f["dashed_key"])],
     ["gpus-per-node", "gpus_per_node"]),
    ("config-slurm-key", lambda f: ["--config", str(f["bad_slurm_key"])],
     ["slurm.partiton", "slurm.partition"]),
    ("config-not-mapping", lambda f: ["--config", str(f["not_mapping"])], ["--config", "mapping"]),
    ("config-bad-type", lambda f: ["--config", str(f["bad_type"])], ["--nodes", "whole number"]),
    ("newline-in-model", lambda f: ["vllm", "m\nrm -rf /", "--image", IMG], ["model", "newline"]),
    ("newline-in-env", lambda f: BASE + ["--env", "A=1\nB=2"], ["--env", "newline"]),
]


@pytest.mark.parametrize("case,argv,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(case, argv, words, run_cli, tmp_path):
    args = argv(_files(tmp_path))
    out_file = tmp_path / "job.sbatch"
    cut = args.index("--") if "--" in args else len(args)
    code, out, err = run_cli("render", *args[:cut], "-o", str(out_file), *args[cut:])
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert not out_file.exists(), "a script was written despite bad input"
    assert out == ""


def test_catalogue_is_large_enough():
    assert len(CASES) >= 40
