"""Bad-input catalogue: every case exits 2 with ONE line naming the field, and writes nothing.

Three sources: command-line flags, the YAML config file, and the environment (SLURM's job
variables, OPENAI_API_KEY, `--api-key env:VAR`, `--env-file` contents, a job's recorded key).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from slurmserve import runner

IMG = "registry.example/vllm:1"
BASE = ["vllm", "Qwen/Qwen2.5-7B-Instruct", "--image", IMG]
#: Secret values used in the cases: no error message may repeat them.
SECRETS = ("hf_abc123secret", "sk-literal-123secret")


def _yaml(tmp: Path, name: str, body: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(f"engine: vllm\nmodel: m\nimage: {IMG}\n{body}")
    return path


def _key(tmp: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = tmp / name
    path.write_text(text)
    path.chmod(mode)
    return path


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
    # `docker save` layout: a layer, the config, manifest.json last (as docker writes it).
    import io

    manifest = json.dumps([{"Config": "c0ffee.json", "Layers": ["l1/layer.tar"]}]).encode()
    truncated, incomplete = tmp / "truncated.tar", tmp / "incomplete.tar"
    for path, members in ((truncated, [("l1/layer.tar", b"x" * 65536), ("c0ffee.json", b"{}"),
                                       ("manifest.json", manifest)]),
                          (incomplete, [("c0ffee.json", b"{}"), ("manifest.json", manifest)])):
        with tarfile.open(path, "w") as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    truncated.write_bytes(truncated.read_bytes()[:30000])  # cut inside the layer
    env_file = tmp / "bad.env"
    env_file.write_text("GOOD=1\nthis line is wrong\n")
    trt_cfg = tmp / "trt.yaml"
    trt_cfg.write_text("tensor_parallel_size: 4\n")
    vllm_owned_cfg = tmp / "vllm-engine.yaml"
    vllm_owned_cfg.write_text("max-model-len: 4096\nnode-rank: 1\n")
    not_utf8 = tmp / "latin1.yaml"
    not_utf8.write_bytes(b"engine: vllm\nmodel: caf\xe9\n")
    return dict(
        bad_yaml=bad_yaml, unknown_key=unknown_key, dashed_key=dashed_key,
        bad_slurm_key=bad_slurm_key, not_mapping=not_mapping, bad_type=bad_type,
        not_tar=not_tar, plain_tar=plain_tar, truncated=truncated, incomplete=incomplete,
        env_file=env_file, trt_cfg=trt_cfg, vllm_owned_cfg=vllm_owned_cfg,
        not_utf8=not_utf8,
        slurm_list=_yaml(tmp, "slurm-list", "slurm: [gpu]\n"),
        args_string=_yaml(tmp, "args-string", 'engine_args: "--max-model-len 8192"\n'),
        env_secret=_yaml(tmp, "env-secret", f"env: {{WANDB_API_KEY: {SECRETS[0]}}}\n"),
        key_literal=_yaml(tmp, "key-literal", f"api_key: {SECRETS[1]}\n"),
        tp_fraction=_yaml(tmp, "tp-fraction", "tp: 2.5\n"),
        check_args_text=_yaml(tmp, "check-args-text", 'check_args: "no"\n'),
        exclusive_text=_yaml(tmp, "exclusive-text", 'slurm: {exclusive: "yes"}\n'),
        timeout_inf=_yaml(tmp, "timeout-inf", "health_timeout: .inf\n"),
        env_item=_yaml(tmp, "env-item", "env: [NOVALUE]\n"),
        mounts_string=_yaml(tmp, "mounts-string", 'mounts: "/a:/b"\n'),
        log_dir_colon=_yaml(tmp, "log-dir-colon", 'log_dir: "/tmp/a:b"\n'),
        model_list=(tmp / "model-list.yaml"),
        good_key=_key(tmp, "good.key", "sk-good\n"),
        open_key=_key(tmp, "open.key", "sk-good\n", 0o644),
        empty_key=_key(tmp, "empty.key", ""),
        two_line_key=_key(tmp, "two.key", "sk-a\nsk-b\n"),
    )


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
    ("tar-truncated", lambda f: ["vllm", "m", "--image", str(f["truncated"])],
     ["image", "is truncated", "docker save"]),
    ("tar-incomplete", lambda f: ["vllm", "m", "--image", str(f["incomplete"])],
     ["image", "is incomplete", "l1/layer.tar"]),
    ("bad-image-ref", lambda f: ["vllm", "m", "--image", "Bad Image!"], ["image", "reference"]),
    ("world-mismatch", lambda f: BASE + ["--nodes", "2", "--tp", "8"], ["--tp/--pp/--dp", "--nodes 1"]),
    ("world-too-big", lambda f: BASE + ["--tp", "16"], ["--tp/--pp/--dp", "--nodes 2"]),
    ("replicas-zero", lambda f: BASE + ["--replicas", "0"], ["--replicas", "at least 1"]),
    ("replicas-not-dividing-nodes", lambda f: BASE + ["--nodes", "3", "--replicas", "2"],
     ["--replicas", "2 replicas do not divide --nodes 3"]),
    ("ready-replicas-above-replicas",
     lambda f: BASE + ["--nodes", "2", "--replicas", "2", "--ready-replicas", "3"],
     ["--ready-replicas", "3 is more than --replicas 2"]),
    ("route-unknown", lambda f: BASE + ["--route", "fastest"], ["route", "round-robin", "prefix"]),
    ("name-like-a-job-id", lambda f: BASE + ["--name", "123"], ["--name", "start with a letter"]),
    ("idle-timeout-not-a-duration", lambda f: BASE + ["--idle-timeout", "soon"],
     ["--idle-timeout", "not a duration", "30m"]),
    ("name-with-a-slash", lambda f: BASE + ["--name", "a/b"], ["--name", "not a deployment name"]),
    ("restart-unknown", lambda f: BASE + ["--restart", "always"], ["restart", "on-failure"]),
    ("max-restarts-negative", lambda f: BASE + ["--max-restarts", "-1"], ["--max-restarts", ">= 0"]),
    ("replica-world-mismatch", lambda f: BASE + ["--nodes", "4", "--replicas", "2", "--tp", "32"],
     ["--tp/--pp/--dp", "needs 4 node(s) of 8 GPUs per replica", "--nodes 4 / --replicas 2",
      "use --nodes 8 for 2 replicas"]),
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
    # -- engine args read by the engine's own spelling rules (issue 13) --
    ("owned-flag-underscore", lambda f: BASE + ["--", "--node_rank=1"], ["--node_rank", "remove"]),
    ("owned-flag-abbreviated", lambda f: ["sglang", "m", "--image", IMG, "--", "--node-r", "1"],
     ["--node-r", "--node-rank"]),
    ("engine-config-equals", lambda f: BASE + ["--", "--config=x.yaml"],
     ["--config", "write --config FILE"]),
    ("engine-config-equals-sglang", lambda f: ["sglang", "m", "--image", IMG, "--",
                                               "--config=x.yaml"], ["--config", "--config FILE"]),
    ("engine-config-owned-key", lambda f: BASE + ["--", "--config", str(f["vllm_owned_cfg"])],
     ["node-rank", "in --config"]),
    ("engine-config-missing", lambda f: BASE + ["--", "--config", "/nonexistent/engine.yaml"],
     ["--config (after --)", "cannot read"]),
    ("contradiction-vllm-underscore", lambda f: BASE + ["--nodes", "2", "--tp", "8", "--",
                                                        "--tensor_parallel_size", "16"],
     ["--tp", "contradicts"]),
    ("sglang-dp-with-attn-dp", lambda f: ["sglang", "m", "--image", IMG, "--nodes", "2", "--tp",
                                          "16", "--", "--dp-size", "16", "--attn-dp-size", "16"],
     ["--attn-dp-size", "refuses"]),
    ("vllm-ray-dp-local-contradiction", lambda f: BASE + ["--nodes", "2", "--tp", "8", "--dp", "2",
                                                          "--launch-mode", "ray", "--", "-dpl", "2"],
     ["--data-parallel-size-local", "contradicts"]),
    ("trtllm-context-parallel", lambda f: ["trtllm", "m", "--image", IMG, "--", "--cp_size", "2"],
     ["--cp_size", "context"]),
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
    # -- more flags --
    ("tp-not-a-number", lambda f: BASE + ["--tp", "two"], ["--tp", "integer", "--help"]),
    ("unknown-option", lambda f: BASE + ["--tpp", "2"], ["--tpp", "--tp"]),
    ("nodes-fraction", lambda f: BASE + ["--nodes", "1.5"], ["--nodes", "integer"]),
    ("port-not-a-number", lambda f: BASE + ["--port", "http"], ["--port", "integer"]),
    ("empty-image", lambda f: ["vllm", "m", "--image", ""], ["image", "is required"]),
    ("empty-served-name", lambda f: BASE + ["--served-model-name", ""],
     ["served_model_name", "empty"]),
    ("newline-in-served-name", lambda f: BASE + ["--served-model-name", "a\nb"],
     ["served_model_name", "newline"]),
    ("newline-in-engine-arg", lambda f: BASE + ["--", "--max-model-len", "8\n9"],
     ["engine_args", "newline"]),
    ("secret-in-env", lambda f: BASE + ["--env", f"HF_TOKEN={SECRETS[0]}"],
     ["--env", "HF_TOKEN", "--env-file"]),
    ("api-key-literal", lambda f: BASE + ["--api-key", SECRETS[1]],
     ["--api-key", "env:VAR or file:PATH"]),
    ("api-key-file-missing", lambda f: BASE + ["--api-key", "file:/nonexistent/key"],
     ["--api-key", "cannot read"]),
    ("api-key-file-open", lambda f: BASE + ["--api-key", f"file:{f['open_key']}"],
     ["--api-key", "chmod 600"]),
    ("api-key-file-empty", lambda f: BASE + ["--api-key", f"file:{f['empty_key']}"],
     ["--api-key", "empty key"]),
    ("api-key-file-two-lines", lambda f: BASE + ["--api-key", f"file:{f['two_line_key']}"],
     ["--api-key", "line breaks"]),
    ("api-key-trtllm", lambda f: ["trtllm", "m", "--image", IMG, "--api-key",
                                  f"file:{f['good_key']}"], ["--api-key", "trtllm-serve"]),
    ("api-key-after-dashes", lambda f: BASE + ["--", "--api-key", SECRETS[1]],
     ["--api-key (after --)", "env:VAR"]),
    ("sglang-api-key-and-config", lambda f: ["sglang", "m", "--image", IMG, "--api-key",
                                             f"file:{f['good_key']}", "--", "--config", "x.yaml"],
     ["--config (after --)", "--api-key"]),
    ("log-dir-colon", lambda f: BASE + ["--log-dir", "/tmp/a:b"], ["--log-dir", "':'"]),
    ("hf-cache-colon", lambda f: BASE + ["--hf-cache", "/tmp/a:b"], ["--hf-cache", "':'"]),
    ("hf-cache-relative", lambda f: BASE + ["--hf-cache", "cache"], ["--hf-cache", "absolute"]),
    ("health-timeout-inf", lambda f: BASE + ["--health-timeout", "inf"],
     ["health_timeout", "finite"]),
    ("mount-comma", lambda f: BASE + ["--mount", "/a,b:/c"], ["--mount", "comma"]),
    ("stage-dir-relative", lambda f: BASE + ["--stage-dir", "tmp"], ["--stage-dir", "absolute"]),
    ("bad-stage", lambda f: BASE + ["--stage", "rsync"], ["stage", "auto, direct, sbcast"]),
    ("gpus-duplicate", lambda f: BASE + ["--gpus", "0,0"], ["--gpus"]),
    ("sbatch-arg-output", lambda f: BASE + ["--sbatch-arg=--output=/tmp/x"],
     ["--sbatch-arg", "--log-dir"]),
    # -- more YAML --
    ("config-is-a-directory", lambda f: ["--config", str(f["good_key"].parent)],
     ["--config", "directory"]),
    ("config-not-utf8", lambda f: ["--config", str(f["not_utf8"])], ["--config", "UTF-8"]),
    ("config-slurm-not-mapping", lambda f: ["--config", str(f["slurm_list"])],
     ["slurm", "mapping"]),
    ("config-engine-args-string", lambda f: ["--config", str(f["args_string"])],
     ["engine_args", "list"]),
    ("config-env-secret", lambda f: ["--config", str(f["env_secret"])],
     ["--env", "WANDB_API_KEY", "--env-file"]),
    ("config-api-key-literal", lambda f: ["--config", str(f["key_literal"])],
     ["--api-key", "not the key itself"]),
    ("config-tp-fraction", lambda f: ["--config", str(f["tp_fraction"])], ["--tp", "whole number"]),
    ("config-check-args-text", lambda f: ["--config", str(f["check_args_text"])],
     ["check_args", "true or false"]),
    ("config-exclusive-text", lambda f: ["--config", str(f["exclusive_text"])],
     ["slurm.exclusive", "true or false"]),
    ("config-timeout-inf", lambda f: ["--config", str(f["timeout_inf"])], ["health_timeout"]),
    ("config-env-item", lambda f: ["--config", str(f["env_item"])], ["--env", "KEY=VALUE"]),
    ("config-mounts-string", lambda f: ["--config", str(f["mounts_string"])], ["mounts", "list"]),
    ("config-log-dir-colon", lambda f: ["--config", str(f["log_dir_colon"])], ["--log-dir"]),
    ("config-model-not-text", lambda f: ["--config", str(_model_list(f))],
     ["model", "expected text"]),
]


def _model_list(f: dict[str, Path]) -> Path:
    f["model_list"].write_text(f"engine: vllm\nmodel: [a, b]\nimage: {IMG}\n")
    return f["model_list"]


def _assert_one_line_exit_2(code: int, err: str, words) -> None:
    """Exit 2, one line naming every word, never repeating a secret."""
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert not any(secret in err for secret in SECRETS), "the message repeats a secret"


@pytest.mark.parametrize("case,argv,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(case, argv, words, run_cli, tmp_path):
    args = argv(_files(tmp_path))
    out_file = tmp_path / "job.sbatch"
    cut = args.index("--") if "--" in args else len(args)
    code, out, err = run_cli("render", *args[:cut], "-o", str(out_file), *args[cut:])
    _assert_one_line_exit_2(code, err, words)
    assert not out_file.exists(), "a script was written despite bad input"
    assert out == ""


# -- the environment: SLURM's job variables, keys from variables, env files, a job's state --------

JOB_ENV = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "n1", "SLURM_JOB_NUM_NODES": "1"}


def _env_file(tmp: Path, content: bytes | str) -> str:
    path = tmp / "case.env"
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    path.chmod(0o600)
    return str(path)


def _job_state(tmp: Path, key_source: str) -> None:
    run_dir = tmp / "logs" / "777"
    run_dir.mkdir(parents=True)
    (run_dir / "state.json").write_text(json.dumps({
        "job": "777", "status": "ready", "engine": "vllm", "model": "m", "run_dir": str(run_dir),
        "endpoint": "http://127.0.0.1:9", "api_key": key_source}))
    index = tmp / "state" / "slurmserve" / "jobs"
    index.mkdir(parents=True)
    (index / "777.path").write_text(f"{run_dir / 'state.json'}\n")


def _render(*args: str) -> list[str]:
    return ["render", *args]


# (case id, env to set (None: unset), argv builder taking tmp, words); env-file and --api-key env:
# cases go through `render`, job variables through `run`, client keys through `test`.
ENV_CASES = [
    ("no-allocation", {"SLURM_JOB_ID": None, "SLURM_JOB_NODELIST": None, "SLURM_NODELIST": None},
     lambda t: ["run", *BASE], ["allocation", "salloc"]),
    ("allocation-without-nodelist", {"SLURM_JOB_NODELIST": None, "SLURM_NODELIST": None},
     lambda t: ["run", *BASE], ["allocation", "not inside"]),
    ("nodes-beyond-allocation", {},
     lambda t: ["run", *BASE, "--nodes", "2", "--gpus-per-node", "4", "--tp", "8"],
     ["--nodes", "SLURM_JOB_NUM_NODES", "salloc -N 2"]),
    ("slurm-gpus-malformed", {"SLURM_GPUS_PER_NODE": "h100:lots"}, lambda t: ["run", *BASE],
     ["--gpus-per-node", "SLURM_GPUS_PER_NODE"]),
    ("slurm-num-nodes-malformed", {"SLURM_JOB_NUM_NODES": "two"}, lambda t: ["run", *BASE],
     ["--nodes", "SLURM_JOB_NUM_NODES"]),
    ("api-key-env-unset", {"SERVE_KEY": None},
     lambda t: _render(*BASE, "--api-key", "env:SERVE_KEY"), ["--api-key", "SERVE_KEY", "not set"]),
    ("api-key-env-empty", {"SERVE_KEY": ""},
     lambda t: _render(*BASE, "--api-key", "env:SERVE_KEY"), ["--api-key", "SERVE_KEY", "empty"]),
    ("api-key-env-line-break", {"SERVE_KEY": "sk-a\nsk-b"},
     lambda t: _render(*BASE, "--api-key", "env:SERVE_KEY"), ["--api-key", "line breaks"]),
    ("api-key-env-spaces", {"SERVE_KEY": f"{SECRETS[1]} x"},
     lambda t: _render(*BASE, "--api-key", "env:SERVE_KEY"), ["--api-key", "spaces"]),
    ("api-key-env-bad-name", {}, lambda t: _render(*BASE, "--api-key", "env:2KEY"),
     ["--api-key", "does not name"]),
    ("openai-key-line-break", {"OPENAI_API_KEY": "sk-a\nsk-b"},
     lambda t: ["test", "--url", "http://127.0.0.1:9"], ["--api-key", "OPENAI_API_KEY"]),
    ("job-key-variable-gone", {"SERVE_JOB_KEY": None},
     lambda t: (_job_state(t, "env:SERVE_JOB_KEY"), ["test", "--job", "777"])[1],
     ["--api-key", "SERVE_JOB_KEY", "not set"]),
    ("job-key-file-gone", {}, lambda t: (_job_state(t, "file:/nonexistent/k"),
                                         ["bench", "--job", "777"])[1],
     ["--api-key", "/nonexistent/k"]),
    ("env-file-export", {}, lambda t: _render(*BASE, "--env-file", _env_file(t, "export A=1\n")),
     ["--env-file", "line 1", "export"]),
    ("env-file-bad-name", {}, lambda t: _render(*BASE, "--env-file", _env_file(t, "A=1\n1B=2\n")),
     ["--env-file", "line 2", "KEY=VALUE"]),
    ("env-file-empty-name", {}, lambda t: _render(*BASE, "--env-file", _env_file(t, "=x\n")),
     ["--env-file", "line 1"]),
    ("env-file-space-in-name", {},
     lambda t: _render(*BASE, "--env-file", _env_file(t, f"HF TOKEN={SECRETS[0]}\n")),
     ["--env-file", "line 1"]),
    ("env-file-not-utf8", {}, lambda t: _render(*BASE, "--env-file", _env_file(t, b"A=caf\xe9\n")),
     ["--env-file", "UTF-8"]),
    ("env-file-nul", {}, lambda t: _render(*BASE, "--env-file", _env_file(t, b"A=x\x00y\n")),
     ["--env-file", "NUL"]),
    ("env-file-directory", {}, lambda t: _render(*BASE, "--env-file", str(t)),
     ["--env-file", "cannot read"]),
    ("env-file-sets-vllm-key", {},
     lambda t: _render(*BASE, "--env-file", _env_file(t, f"VLLM_API_KEY={SECRETS[1]}\n")),
     ["--env-file", "VLLM_API_KEY", "--api-key"]),
]


@pytest.mark.parametrize("case,env,argv,words", ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_bad_environment_exits_2_with_one_line(case, env, argv, words, run_cli, tmp_path,
                                               monkeypatch):
    for key, value in {**JOB_ENV, "XDG_STATE_HOME": str(tmp_path / "state"), **env}.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)

    def refuse(*args, **kwargs):
        raise AssertionError(f"bad input started {args[0] if args else 'something'}")

    monkeypatch.setattr(runner, "run", refuse)  # nothing may run: no srun, sbatch, docker
    monkeypatch.setattr(runner, "start", refuse)
    import requests

    monkeypatch.setattr(requests.Session, "request", refuse)  # and nothing is contacted
    args = argv(tmp_path)
    before = sorted(p for p in tmp_path.rglob("*"))
    logs = tmp_path / "out-logs"
    cut = args.index("--") if "--" in args else len(args)
    if args[0] in ("run", "render"):
        args = [*args[:cut], "--log-dir", str(logs), *args[cut:]]
    code, out, err = run_cli(*args)
    _assert_one_line_exit_2(code, err, words)
    assert out == ""
    assert sorted(p for p in tmp_path.rglob("*")) == before, "bad input wrote files"
    assert os.environ.get("SLURM_JOB_ID") in (None, "4242")


def _source(case: str, args: list[str]) -> str:
    if case.startswith(("env-file-", "api-key-env")):
        return "env"
    return "yaml" if args[:1] == ["--config"] else "cli"


def test_catalogue_is_large_enough(tmp_path):
    files = _files(tmp_path)
    sources = [_source(c[0], c[1](files)) for c in CASES] + ["env"] * len(ENV_CASES)
    counts = {s: sources.count(s) for s in ("cli", "yaml", "env")}
    assert len(sources) >= 40 and counts["yaml"] >= 15 and counts["env"] >= 15, counts
