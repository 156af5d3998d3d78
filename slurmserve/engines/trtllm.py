"""TensorRT-LLM: one MPI world of TP x PP ranks across the node containers.

The head container runs `mpirun -np WORLD -H ip:G,... trtllm-llmapi-launch trtllm-serve ...`;
rank 0 serves HTTP, the other ranks are TRT-LLM workers. Worker containers run only sshd on this
job's port with a per-job key (mpirun reaches them over ssh), so ntasks always equals the world
size and no MPI spawning happens inside the SLURM step (field failure 15). Where the runtime's
containers cannot run sshd (pyxis, Apptainer: `Allocation.mpi_launch == "pmix"`), the serving
step's own tasks are the ranks instead, one per GPU, joined by srun's PMIx plugin. Parallel settings go
through TRT-LLM's YAML of LLM API fields: a user file given after `--` is merged with them.
EP subdivides TP (moe_tp x ep = tp); DP means attention DP over the TP ranks (dp = tp).

Versions: trtllm-serve 1.1.0 has only `--tp_size/--pp_size/--ep_size` and
`--extra_llm_api_options`; 1.2.0 adds `--config` (an alias of it) and the long spellings
(`--tensor_parallel_size`, ...). Its parser is click: no abbreviations, no dash/underscore
folding. slurmserve generates only what both accept (`--extra_llm_api_options`), takes both
spellings from users, and moves the parallel flags and the user's file into the merged YAML, so
either spelling runs on either version. The YAML overrides the command line in TRT-LLM, so its
parallel keys count as native values like the flags.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SpecError
from ..plan import (
    Allocation,
    ArgvCheck,
    ClusterPlan,
    ImageCheck,
    NodeInfo,
    NodePlan,
    PortBlock,
    Readiness,
    Rendered,
    host_port,
)
from ..render import render_template
from ._common import (
    ApiTraits,
    LoadMetrics,
    NativeFlags,
    Parallel,
    Profile,
    Resolution,
    bench_save_args,
    default_layout,
    fit,
    frozen,
    http_port,
    merge,
    native_int,
    no_key_files,
    one_mode,
    read_config,
    renamed,
    scan,
    serving_port,
    ssh_keypair,
    user_config,
)

if TYPE_CHECKING:
    from ..spec import ServeSpec

NAME = "trtllm"
DEFAULT_PORT = 8000
MODES = ("auto",)
CONFIG_PATH = "/slurmserve/trtllm-config.yaml"
#: mpirun reaches the worker containers over ssh with this per-job key pair.
SSH_KEY = ("ssh_key", "ssh_key.pub")

#: The options file flag both 1.1.0 and 1.2.0 accept (1.2.0's `--config` is an alias of it).
CONFIG_FLAG = "--extra_llm_api_options"
FLAGS = NativeFlags(
    values={
        "tp": ("--tp_size", "--tensor_parallel_size"),
        "pp": ("--pp_size", "--pipeline_parallel_size"),
        "ep": ("--ep_size", "--moe_expert_parallel_size"),
        "cp": ("--cp_size", "--context_parallel_size"),
        "gpus_per_node": ("--gpus_per_node",),
        "port": ("--port",),
        "host": ("--host",),
        "config": ("--config", CONFIG_FLAG),
    },
    switches={},
    owned=(),
)
#: LLM API fields of the YAML that are slurmserve's layout (the YAML wins over the CLI).
_YAML_KEYS = {"tp": "tensor_parallel_size", "pp": "pipeline_parallel_size",
              "ep": "moe_expert_parallel_size", "cp": "context_parallel_size",
              "gpus_per_node": "gpus_per_node"}
#: Flags whose values move into the merged YAML (so the 1.2.0-only spellings work on 1.1.0).
_TO_YAML = ("tp", "pp", "ep", "cp", "config")


def validate(spec: ServeSpec) -> None:
    one_mode(spec, "TRT-LLM", MODES)
    if spec.served_model_name:
        raise SpecError("--served-model-name", "trtllm-serve serves the model under MODEL",
                        "drop --served-model-name for TRT-LLM")
    if spec.api_key:
        raise SpecError("--api-key", "trtllm-serve has no API key option, so its endpoint "
                        "cannot require one", "drop --api-key for TRT-LLM, or put an "
                        "authenticating proxy in front of the endpoint")
    resolve(spec)


#: validate() refuses an API key for TRT-LLM.
api_key_files = no_key_files

#: trtllm-serve's option names per release, recorded from its sources (see the file): the
#: argument check uses them when tensorrt_llm cannot be imported in a container without a GPU.
RECORDED_OPTIONS = "trtllm-serve-options.json"


def argcheck_data() -> dict[str, Any]:
    options = json.loads(resources.files(__package__).joinpath(RECORDED_OPTIONS)
                         .read_text(encoding="utf-8"))
    return {"trtllm_options": options["options"]}


def job_secrets(names: frozenset[str]) -> dict[str, str]:
    """A fresh ssh key pair when the plan names it (multi-node MPI)."""
    return dict(zip(SSH_KEY, ssh_keypair(), strict=True)) if names & set(SSH_KEY) else {}


_read_config = read_config  # one cache for every engine's options files


def resolve(spec: ServeSpec) -> Resolution:
    native, _ = scan(spec.engine_args, FLAGS)
    path = native.get("config")
    config = frozen({}) if path is None else user_config(spec, path, "--config")
    for key, yaml_key in _YAML_KEYS.items():
        if yaml_key in config:
            value = str(config[yaml_key])
            if key in native and native[key] != value:
                raise SpecError(f"{yaml_key} (in --config)", f"{value} contradicts "
                                f"{FLAGS.values[key][0]} {native[key]}", "give it once")
            native[key] = value
    if "model" in config:
        raise SpecError("model (in --config)", "overrides MODEL in trtllm-serve (the YAML wins "
                        "over the command line)", "remove it; give the model as MODEL")
    if native.get("cp", "1") != "1":
        raise SpecError("--cp_size (after --)", "slurmserve does not plan TRT-LLM context "
                        "parallelism (its GPUs are not counted)", "remove it")
    gpn = native.get("gpus_per_node")
    if gpn is not None and native_int("gpus_per_node", gpn) != spec.gpus_per_node:
        raise SpecError("--gpus_per_node (after --)", f"{gpn} contradicts --gpus-per-node "
                        f"{spec.gpus_per_node}", "give it once, as --gpus-per-node")
    merged = merge(spec, native, ("tp", "pp", "ep", "port", "host"))
    tp, pp, _ = default_layout(spec, merged["tp"], merged["pp"], 1)
    ep = merged["ep"] or 1
    if tp % ep:
        raise SpecError("--ep", f"TRT-LLM's EP subdivides TP (moe_tp x ep = tp): ep {ep} does not "
                        f"divide tp {tp}", "choose an --ep that divides --tp")
    moe_tp = config.get("moe_tensor_parallel_size")
    if moe_tp is not None and ep > 1 and moe_tp != tp // ep:
        raise SpecError("moe_tensor_parallel_size (in --config)", f"{moe_tp} contradicts tp {tp} "
                        f"/ ep {ep} = {tp // ep}", "remove it (slurmserve derives it)")
    dp_attention = bool(config.get("enable_attention_dp"))
    dp = spec.dp or (tp if dp_attention else 1)
    if dp > 1 and dp != tp:
        raise SpecError("--dp", f"TRT-LLM's DP is attention DP across the TP ranks, so dp must be "
                        f"1 or tp ({tp}), not {dp}", f"use --dp {tp} or leave --dp out")
    if dp_attention and dp == 1 and tp > 1:
        raise SpecError("--dp", "enable_attention_dp in --config contradicts --dp 1",
                        "give it once")
    world = tp * pp
    par = Parallel(tp=tp, pp=pp, dp=dp, ep=ep, world=world, nodes=fit(spec, world, "TP x PP"),
                   expert_parallel=ep > 1, dp_attention=dp > 1)
    port, explicit = http_port(merged, DEFAULT_PORT)
    # trtllm-serve serves the model under MODEL (validate refuses a served name).
    return Resolution(parallel=par, mode="mpi", port=port, port_explicit=explicit,
                      model_name=spec.model, native=frozen(native), config=config)


def listen_ports(spec: ServeSpec, res: Resolution, block: PortBlock, nodes: int
                 ) -> dict[int, tuple[int, ...]]:
    return _ports(res, block, res.port)


def _ports(res: Resolution, block: PortBlock, http: int) -> dict[int, tuple[int, ...]]:
    """The launcher serves HTTP; each worker container runs sshd on the job's ssh port."""
    return {r: (http,) if r == 0 else (block.ssh,) for r in range(res.parallel.nodes)}


def _config_yaml(par: Parallel, user: Mapping[str, Any]) -> str:
    import yaml

    config = dict(user)
    config.update(tensor_parallel_size=par.tp, pipeline_parallel_size=par.pp)
    if par.ep > 1:
        config.update(moe_expert_parallel_size=par.ep, moe_tensor_parallel_size=par.tp // par.ep)
    if par.dp_attention:
        config["enable_attention_dp"] = True
    return yaml.safe_dump(config, sort_keys=True)


def _serve_args(spec: ServeSpec) -> list[str]:
    """Engine args without the flags the merged YAML carries (the user's file, the layout)."""
    moved = {alias for key in _TO_YAML for alias in FLAGS.values[key]}
    args = list(spec.engine_args)
    out: list[str] = []
    i = 0
    while i < len(args):
        name, has_eq, _ = args[i].partition("=")
        if name in moved:
            i += 1 if has_eq else 2
            continue
        out.append(args[i])
        i += 1
    return out


def plan(spec: ServeSpec, alloc: Allocation, res: Resolution, port: int) -> ClusterPlan:
    par, native = res.parallel, res.native
    port = serving_port(res, port)
    head = alloc.head
    ssh_port = alloc.ports.ssh
    ports = _ports(res, alloc.ports, port)
    nodes = alloc.nodes[: par.nodes]
    serve = ["trtllm-serve", spec.model]
    if "host" not in native:
        serve += ["--host", spec.host]
    if "port" not in native:
        serve += ["--port", str(port)]
    serve += [CONFIG_FLAG, CONFIG_PATH, *_serve_args(spec)]
    checks = (ArgvCheck("trtllm", tuple(serve[1:])),)  # MPI ranks on every node run it
    per_node = min(spec.gpus_per_node, par.world)
    config = _config_yaml(par, res.config)
    if len(nodes) > 1 and alloc.mpi_launch == "pmix":
        return _pmix_plan(alloc, res, nodes, port, serve, config, per_node, checks)
    launcher = render_template(
        "trtllm_launch.sh.j2", world=par.world, serve=serve,
        hosts=",".join(host_port(n.address, per_node) for n in nodes),
        multi_node=len(nodes) > 1, ssh_port=ssh_port, ifname=head.ifname)
    worker = Rendered("mpi_worker.sh.j2", (("ssh_port", ssh_port),))
    secrets = SSH_KEY if len(nodes) > 1 else ()
    plans = [NodePlan(
        rank=0, host=head.name, address=head.address, ifname=head.ifname, role="mpi-launcher",
        command=("bash", "/slurmserve/trtllm-launch.sh"),
        files=(("trtllm-launch.sh", launcher), ("trtllm-config.yaml", config)),
        secrets=secrets, wait_for=tuple(host_port(n.address, ssh_port) for n in nodes[1:]),
        ports=ports[0], serves_http=True, argv_checks=checks)]
    for rank, node in enumerate(nodes[1:], start=1):
        plans.append(NodePlan(
            rank=rank, host=node.name, address=node.address, ifname=node.ifname,
            role="mpi-worker", command=("bash", "/slurmserve/mpi-worker.sh"),
            # Ranks on this node run the same command line, config path included.
            files=(("mpi-worker.sh", worker), ("trtllm-config.yaml", config)), secrets=secrets,
            ports=ports[rank], argv_checks=checks))
    return ClusterPlan(
        engine=NAME, mode=res.mode, job_id=alloc.job_id, model_name=res.model_name,
        head_address=head.address, port=port,
        # trtllm-serve may list a local checkpoint under another name: take what it lists.
        readiness=Readiness(exact_model_name=False),
        world_size=par.world, parallel=par.as_dict(), nodes=tuple(plans),
        image_checks=MPI_CHECKS if len(nodes) > 1 else MPI_CHECKS[:1],
        needs=("sshd",) if len(nodes) > 1 else ())  # mpirun reaches the other nodes' sshd


def _pmix_plan(alloc: Allocation, res: Resolution, nodes: Sequence[NodeInfo], port: int,
               serve: list[str], config: str, per_node: int,
               checks: tuple[ArgvCheck, ...]) -> ClusterPlan:
    """The world as NVIDIA runs it under pyxis: the serving step's tasks are the MPI ranks
    (`srun --mpi=pmix --ntasks-per-node=G ... trtllm-llmapi-launch trtllm-serve ...`), one
    per GPU; task 0, on the head, serves HTTP. No mpirun, no sshd."""
    par = res.parallel
    command = ("trtllm-llmapi-launch", *serve)
    files = (("trtllm-config.yaml", config),)
    plans = tuple(NodePlan(
        rank=rank, host=node.name, address=node.address, ifname=node.ifname,
        role="mpi-head" if rank == 0 else "mpi-ranks", command=command, files=files,
        # OMPI_MCA_*_if_include: the ranks talk on the interface on the route to the head.
        env=(("OMPI_MCA_btl_tcp_if_include", node.ifname),
             ("OMPI_MCA_oob_tcp_if_include", node.ifname)),
        ports=(port,) if rank == 0 else (), serves_http=rank == 0, argv_checks=checks)
        for rank, node in enumerate(nodes))
    return ClusterPlan(
        engine=NAME, mode=res.mode, job_id=alloc.job_id, model_name=res.model_name,
        head_address=alloc.head.address, port=port,
        readiness=Readiness(exact_model_name=False),
        world_size=par.world, parallel=par.as_dict(), nodes=plans,
        image_checks=MPI_CHECKS[:1], tasks_per_node=per_node, mpi="pmix")


# What the MPI launch needs inside the image, checked on every node before launch (failure 15).
MPI_CHECKS = (
    ImageCheck("mpirun", "mpirun --version", "use a TensorRT-LLM image with Open MPI (NVIDIA's "
               "release images have it)"),
    ImageCheck("sshd", "test -x /usr/sbin/sshd && echo /usr/sbin/sshd",
               "multi-node TRT-LLM starts MPI ranks over ssh between the containers: install "
               "openssh-server in the image"),
)


# --- `slurmserve plan` advice (the configurator asks these; see engines/__init__.py) -------

#: trtllm-serve serves the model under its path: it has no served-name option.
PROFILE = Profile(
    label="TensorRT-LLM", vendors=("nvidia",), served_name=False,
    prefix_cache="TRT-LLM KV block reuse", router="a router",
    disaggregation="TRT-LLM disaggregated serving (trtllm-serve disaggregated)",
    mla_dp_attention="TRT-LLM attention DP (--dp equal to --tp, enable_attention_dp)")


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


#: trtllm-serve's /metrics answers JSON iteration stats (a list), not Prometheus text.
API = ApiTraits(owned_by="tensorrt_llm", metrics_prefix="trtllm_", metrics_json=True)


def iteration_load(stats: Any) -> dict[str, float | None]:
    """Running and queued requests and KV use from /metrics' iteration stats (a JSON list, the
    newest last; empty when no iteration ran since the last read, which drains them)."""
    last = stats[-1] if isinstance(stats, list) and stats and isinstance(stats[-1], dict) else {}
    kv = last.get("kvCacheStats") or {}
    used, total = kv.get("usedNumBlocks"), kv.get("maxNumBlocks")
    return {"running": last.get("numActiveRequests"), "waiting": last.get("numQueuedRequests"),
            "kv_cache": used / total if isinstance(used, int | float) and total else None}


#: tensorrt_llm/metrics/collector.py (MetricsCollector, served at /prometheus/metrics with
#: `return_perf_metrics`); without it only /metrics' JSON iteration stats (serve/openai_server.py
#: get_iteration_stats: numActiveRequests, numQueuedRequests, kvCacheStats), no token counter.
LOAD = LoadMetrics(running=("trtllm_num_requests_running",),
                   waiting=("trtllm_num_requests_waiting",),
                   kv_cache=("trtllm_kv_cache_utilization",),
                   generation_tokens=("trtllm_generation_tokens_total",),
                   paths=("/prometheus/metrics", "/metrics"), from_json=iteration_load)
