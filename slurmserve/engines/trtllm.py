"""TensorRT-LLM: one MPI world of TP x PP ranks across the node containers.

The head container runs `mpirun -np WORLD -H ip:G,... trtllm-llmapi-launch trtllm-serve ...`;
rank 0 serves HTTP, the other ranks are TRT-LLM workers. Worker containers run only sshd on this
job's port with a per-job key (mpirun reaches them over ssh), so ntasks always equals the world
size and no MPI spawning happens inside the SLURM step (field failure 15). Parallel settings go
through TRT-LLM's YAML config (`--config`): a user config given after `--` is merged with them.
EP subdivides TP (moe_tp x ep = tp); DP means attention DP over the TP ranks (dp = tp).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import SpecError
from ..plan import Allocation, ClusterPlan, ImageCheck, NodePlan, Readiness
from ..render import render_template
from ..spec import ServeSpec
from . import NativeFlags, Parallel, bench_save_args, default_layout, fit, merge, renamed, scan

NAME = "trtllm"
DEFAULT_PORT = 8000
MODES = ("auto",)
CONFIG_PATH = "/slurmserve/trtllm-config.yaml"

FLAGS = NativeFlags(
    values={
        "tp": ("--tp_size", "--tensor_parallel_size"),
        "pp": ("--pp_size", "--pipeline_parallel_size"),
        "ep": ("--ep_size", "--moe_expert_parallel_size"),
        "port": ("--port",),
        "host": ("--host",),
        "config": ("--config", "--extra_llm_api_options"),
    },
    switches={},
    owned=(),
)
_YAML_KEYS = {"tp": "tensor_parallel_size", "pp": "pipeline_parallel_size",
              "ep": "moe_expert_parallel_size"}


def validate(spec: ServeSpec) -> None:
    if spec.launch_mode not in MODES:
        raise SpecError("--launch-mode", f"TRT-LLM has one launch mode, not '{spec.launch_mode}'",
                        "leave --launch-mode at auto")
    if spec.served_model_name:
        raise SpecError("--served-model-name", "trtllm-serve serves the model under MODEL",
                        "drop --served-model-name for TRT-LLM")
    if spec.api_key:
        raise SpecError("--api-key", "trtllm-serve has no API key option, so its endpoint "
                        "cannot require one", "drop --api-key for TRT-LLM, or put an "
                        "authenticating proxy in front of the endpoint")
    resolve(spec)


def api_key_files(key: str) -> dict[str, str]:
    """None: validate() refuses an API key for TRT-LLM."""
    return {}


def _user_config(native: dict[str, str]) -> dict[str, Any]:
    path = native.get("config")
    if path is None:
        return {}
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise SpecError("--config (after --)", f"cannot read {path}: {exc.strerror}",
                        "give a TRT-LLM YAML config readable from here") from None
    except yaml.YAMLError:
        raise SpecError("--config (after --)", f"{path} is not valid YAML", "fix it") from None
    if not isinstance(data, dict):
        raise SpecError("--config (after --)", f"{path} must hold a mapping", "fix it")
    return data


def resolve(spec: ServeSpec) -> Parallel:
    native, _ = scan(spec.engine_args, FLAGS)
    config = _user_config(native)
    for key, yaml_key in _YAML_KEYS.items():
        if yaml_key in config:
            value = str(config[yaml_key])
            if key in native and native[key] != value:
                raise SpecError(f"{yaml_key} (in --config)", f"{value} contradicts "
                                f"--{key}_size {native[key]}", "give it once")
            native[key] = value
    merged = merge(spec, native, ("tp", "pp", "ep", "port", "host"))
    tp, pp, _ = default_layout(spec, merged["tp"], merged["pp"], 1)
    ep = merged["ep"] or 1
    if tp % ep:
        raise SpecError("--ep", f"TRT-LLM's EP subdivides TP (moe_tp x ep = tp): ep {ep} does not "
                        f"divide tp {tp}", "choose an --ep that divides --tp")
    dp_attention = bool(config.get("enable_attention_dp"))
    dp = spec.dp or (tp if dp_attention else 1)
    if dp > 1 and dp != tp:
        raise SpecError("--dp", f"TRT-LLM's DP is attention DP across the TP ranks, so dp must be "
                        f"1 or tp ({tp}), not {dp}", f"use --dp {tp} or leave --dp out")
    if dp_attention and dp == 1 and tp > 1:
        raise SpecError("--dp", "enable_attention_dp in --config contradicts --dp 1",
                        "give it once")
    world = tp * pp
    return Parallel(tp=tp, pp=pp, dp=dp, ep=ep, world=world,
                    nodes=fit(spec, world, "TP x PP"), expert_parallel=ep > 1,
                    dp_attention=dp > 1)


def port(spec: ServeSpec) -> int:
    native, _ = scan(spec.engine_args, FLAGS)
    return int(merge(spec, native, ("port",))["port"] or DEFAULT_PORT)


def _config_yaml(spec: ServeSpec, par: Parallel, user: dict[str, Any]) -> str:
    import yaml

    config = dict(user)
    config.update(tensor_parallel_size=par.tp, pipeline_parallel_size=par.pp)
    if par.ep > 1:
        config.update(moe_expert_parallel_size=par.ep, moe_tensor_parallel_size=par.tp // par.ep)
    if par.dp_attention:
        config["enable_attention_dp"] = True
    return yaml.safe_dump(config, sort_keys=True)


def _serve_args(spec: ServeSpec) -> list[str]:
    """Engine args with a user's --config swapped for the merged config file."""
    args = list(spec.engine_args)
    out: list[str] = []
    i = 0
    while i < len(args):
        name, has_eq, _ = args[i].partition("=")
        if name in FLAGS.values["config"]:
            i += 1 if has_eq else 2
            continue
        out.append(args[i])
        i += 1
    return out


def plan(spec: ServeSpec, alloc: Allocation) -> ClusterPlan:
    par = resolve(spec)
    native, _ = scan(spec.engine_args, FLAGS)
    http_port = port(spec)
    head = alloc.head
    ssh_port = alloc.ports.ssh
    nodes = alloc.nodes[: par.nodes]
    serve = ["trtllm-serve", spec.model]
    if "host" not in native:
        serve += ["--host", spec.host]
    if "port" not in native:
        serve += ["--port", str(http_port)]
    serve += ["--config", CONFIG_PATH, *_serve_args(spec)]
    per_node = min(spec.gpus_per_node, par.world)
    launcher = render_template(
        "trtllm_launch.sh.j2", world=par.world, serve=serve,
        hosts=",".join(f"{n.address}:{per_node}" for n in nodes),
        multi_node=len(nodes) > 1, ssh_port=ssh_port, ifname=head.ifname)
    config = _config_yaml(spec, par, _user_config(native))
    worker = render_template("mpi_worker.sh.j2", ssh_port=ssh_port)
    secrets = ("ssh_key", "ssh_key.pub") if len(nodes) > 1 else ()
    plans = [NodePlan(
        rank=0, host=head.name, address=head.address, ifname=head.ifname, role="mpi-launcher",
        command=("bash", "/slurmserve/trtllm-launch.sh"),
        files=(("trtllm-launch.sh", launcher), ("trtllm-config.yaml", config)),
        secrets=secrets, wait_for=tuple(f"{n.address}:{ssh_port}" for n in nodes[1:]),
        ports=(http_port,), serves_http=True)]
    for rank, node in enumerate(nodes[1:], start=1):
        plans.append(NodePlan(
            rank=rank, host=node.name, address=node.address, ifname=node.ifname,
            role="mpi-worker", command=("bash", "/slurmserve/mpi-worker.sh"),
            # Ranks on this node run the same command line, config path included.
            files=(("mpi-worker.sh", worker), ("trtllm-config.yaml", config)), secrets=secrets,
            ports=(ssh_port,)))
    return ClusterPlan(
        engine=NAME, mode="mpi", job_id=alloc.job_id, model_name=spec.model,
        head_address=head.address, port=http_port,
        # trtllm-serve may list a local checkpoint under another name: take what it lists.
        readiness=Readiness(exact_model_name=False),
        world_size=par.world, parallel=par.as_dict(), nodes=tuple(plans),
        image_checks=MPI_CHECKS if len(nodes) > 1 else MPI_CHECKS[:1])


# What the MPI launch needs inside the image, checked on every node before launch (failure 15).
MPI_CHECKS = (
    ImageCheck("mpirun", "mpirun --version", "use a TensorRT-LLM image with Open MPI (NVIDIA's "
               "release images have it)"),
    ImageCheck("sshd", "test -x /usr/sbin/sshd && echo /usr/sbin/sshd",
               "multi-node TRT-LLM starts MPI ranks over ssh between the containers: install "
               "openssh-server in the image"),
)


# --- `slurmserve plan` advice (the configurator asks these; see engines/__init__.py) -------

LABEL = "TensorRT-LLM"
VENDORS = ("nvidia",)
#: trtllm-serve serves the model under its path: it has no served-name option.
SERVED_NAME = False
PREFIX_CACHE = "TRT-LLM KV block reuse"
ROUTER = "a router"


def tuning_args(context: int, max_batch: int | None, quantize: str | None, kv_fp8: bool
                ) -> tuple[list[str], list[str]]:
    """Engine args (and notes) for the context length, batch cap, weight quantization and KV dtype."""
    args = ["--max_seq_len", str(context)]
    if max_batch is not None:
        args += ["--max_batch_size", str(max_batch)]
    notes: list[str] = []
    if quantize is not None:
        notes.append(f"TRT-LLM needs a pre-quantized {quantize} checkpoint (NVIDIA ModelOpt)")
    if kv_fp8:
        notes.append("TRT-LLM: set kv_cache_config.dtype: fp8 in --extra_llm_api_options")
    return args, notes


def parallel_advice(tp: int, dp: int, gpus_per_node: int, moe: bool, experts: int, mla: bool
                    ) -> tuple[int, list[str], list[str]]:
    """EP size, engine args and notes for DP replicas of TP GPUs: TRT-LLM's EP subdivides TP."""
    if not (moe and tp > 1):
        return 1, [], []
    ep = math.gcd(tp, experts) if experts else tp
    notes = [f"TRT-LLM: attention DP (--dp {tp}, enable_attention_dp) suits this MoE model on the "
             "same GPUs",
             f"{NAME} EP subdivides TP: ep {ep} divides tp {tp} (moe_tp {tp // ep} x ep {ep} "
             f"= tp {tp}); whole experts per GPU avoid thin per-expert GEMM slices"]
    return ep, [], notes


def spec_data_parallel(dp: int, replicas_per_node: int) -> int:
    """DP replicas one deployment holds: TRT-LLM's DP is attention DP over the TP ranks, so
    replicas are copies behind a router."""
    return 1


def data_parallel_notes(dp: int, moe: bool) -> list[str]:
    """Closing notes on how DP runs in this engine."""
    return []


# --- `slurmserve bench` and `slurmserve test` (bench.py and apicheck.py ask these) -----------

BENCH_CLIENT = ("python3", "-m", "tensorrt_llm.serve.scripts.benchmark_serving", "--backend", "openai")
BENCH_JSONL = False


def bench_random_args(input_len: int | None, output_len: int | None) -> list[str]:
    """--random-ids: token ids, instead of sampling (and downloading) ShareGPT text."""
    return ["--dataset-name", "random", "--random-ids", "--random-input-len", str(input_len),
            "--random-output-len", str(output_len), "--random-range-ratio", "0"]


def bench_output_args(name: str, out: Path, metrics: Sequence[str], percentiles: Sequence[int],
                      goodput: Sequence[str]) -> list[str]:
    """Percentiles, goodput SLOs and the detailed JSON at `out` (the script is vLLM's fork)."""
    return bench_save_args(out, metrics, percentiles, goodput)


#: Per-request latencies are `e2els`; the goodput key has a stray colon.
_BENCH_KEYS = {"e2els": "latencies", "request_goodput:": "request_goodput"}


def bench_unify(raw: dict[str, Any]) -> dict[str, Any]:
    """The client's result JSON under the unified (vLLM) names."""
    return renamed(raw, _BENCH_KEYS)


OWNED_BY = "tensorrt_llm"
DETECT_PATHS: tuple[str, ...] = ()
METRICS_PREFIX = "trtllm_"
#: trtllm-serve's /metrics answers JSON iteration stats (a list), not Prometheus text.
METRICS_JSON = True
METRICS_HINT = ""
FIXED_LENGTH_FIELDS: Mapping[str, Any] = MappingProxyType({"ignore_eos": True})
SEED_REPRODUCIBLE = False
NATIVE_GENERATE = False
