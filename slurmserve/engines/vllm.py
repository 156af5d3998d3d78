"""vLLM: single node, Ray head/workers, vLLM's own multi-node (mp), or data-parallel RPC.

Modes (`--launch-mode`, default auto):
- single: one node, `vllm serve`.
- ray: TP x PP spans nodes. Ray head + workers, each `ray start` pinned to the node's IP and
  this job's ports; the head waits (node/ray_wait.py) until Ray lists every node and GPU, then
  `vllm serve --distributed-executor-backend ray`. With DP > 1 also `--data-parallel-backend
  ray` and, as vLLM's placement needs, `--data-parallel-size-local GPUS_PER_NODE / (TP x PP)`
  when a replica fits in a node, else `VLLM_RAY_DP_PACK_STRATEGY=span` (replicas span nodes).
- mp: vLLM's own multi-node executor: `--nnodes N --node-rank R --master-addr HEAD`, with
  `--headless` on every node but the head. No Ray involved.
- dp: data parallel over nodes with replicas inside a node (TP x PP <= GPUs per node):
  `--data-parallel-size-local`, `--data-parallel-address`, `--data-parallel-rpc-port`,
  secondaries `--headless --data-parallel-start-rank`.
auto picks single on one node, dp when DP > 1 and a replica fits in a node, ray otherwise.
Expert parallel: vLLM's EP size is TP x DP; `--ep` must equal that (or be left out).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import envfile
from ..errors import SpecError
from ..plan import (
    Allocation,
    ArgvCheck,
    ClusterPlan,
    ImageCheck,
    NodePlan,
    PortBlock,
    Program,
    Rendered,
    host_port,
)
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
    model_name,
    native_int,
    no_argcheck_data,
    no_job_secrets,
    no_key_files,
    refuse_key_flags,
    scan,
    serving_port,
    shipped_config,
    with_config,
)

if TYPE_CHECKING:
    from ..spec import ServeSpec

NAME = "vllm"
DEFAULT_PORT = 8000
MODES = ("auto", "single", "ray", "mp", "dp")
#: vLLM's API server requires `Authorization: Bearer KEY` on /v1/* when this variable is set
#: (vllm/entrypoints/openai/api_server.py: `envs.VLLM_API_KEY or args.api_key`).
API_KEY_ENV = "VLLM_API_KEY"
#: Ray's ports, as offsets into the job's PortBlock (a Ray client server only with ray[client]).
RAY_GCS = 1
RAY_CLIENT = 5
RAY_PORTS = {
    "node-manager-port": 3, "object-manager-port": 4, "dashboard-agent-listen-port": 6,
    "dashboard-agent-grpc-port": 7, "metrics-export-port": 8, "runtime-env-agent-port": 9,
    "min-worker-port": 50, "max-worker-port": 99,
}

#: vLLM's FlexibleArgumentParser: `--a_b` is `--a-b`, argparse abbreviations (`--tensor 4`),
#: the last of a repeated flag wins, `--config FILE` (its own token) merges a YAML file's keys
#: as flags right after the model (the command line wins); `--config=FILE` is ignored.
FLAGS = NativeFlags(
    values={
        "tp": ("--tensor-parallel-size", "-tp"),
        "pp": ("--pipeline-parallel-size", "-pp"),
        "dp": ("--data-parallel-size", "-dp"),
        "dp_local": ("--data-parallel-size-local", "-dpl"),
        "port": ("--port",),
        "host": ("--host",),
        "served_model_name": ("--served-model-name",),
        "executor": ("--distributed-executor-backend",),
        "dp_backend": ("--data-parallel-backend", "-dpb"),
    },
    switches={"expert_parallel": ("--enable-expert-parallel", "-ep")},
    owned=(
        "--nnodes", "-n", "--node-rank", "-r", "--master-addr", "--master-port", "--headless",
        "--data-parallel-address", "-dpa", "--data-parallel-rpc-port", "-dpp",
        "--data-parallel-start-rank", "-dpr", "--data-parallel-rank", "-dpn",
    ),
    fold_underscores=True,
    abbreviations=True,
    others=("--api-key", "--data-parallel-hybrid-lb", "--data-parallel-external-lb",
            "--enable-eplb", "--config-format"),
    config="--config",
)
#: vLLM's Ray DP placement packs replicas that span nodes only with this strategy.
RAY_DP_PACK = ("VLLM_RAY_DP_PACK_STRATEGY", "span")
# `ray start --block` drains for 30 s on SIGTERM (Ray 2.60, node.py): longer than docker stop
# waits, so a worker outlived every stop by 10 s. The job is ending: no drain.
RAY_NO_DRAIN = ("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")


def validate(spec: ServeSpec) -> None:
    refuse_key_flags(spec, ("--api-key",), FLAGS)
    if spec.api_key is None and spec.env_file and any(
            key == API_KEY_ENV for key, _ in envfile.pairs(spec.env_file)):
        raise SpecError("--env-file", f"{API_KEY_ENV} in it makes the endpoint require a key "
                        "that slurmserve's readiness probe and `test` would not know",
                        f"remove it and pass --api-key env:{API_KEY_ENV} or file:PATH")
    resolve(spec)


#: The key travels in VLLM_API_KEY (NodePlan.secret_env), so no files; no other secrets.
api_key_files = no_key_files
job_secrets = no_job_secrets
argcheck_data = no_argcheck_data


def resolve(spec: ServeSpec) -> Resolution:
    args, config = with_config(spec, FLAGS)
    native, switches = scan(args, FLAGS)
    merged = merge(spec, native, ("tp", "pp", "dp", "port", "host", "served_model_name"))
    tp, pp, dp = default_layout(spec, merged["tp"], merged["pp"], merged["dp"])
    expert = "expert_parallel" in switches
    ep = tp * dp
    if spec.ep is not None and spec.ep > 1:
        if spec.ep != ep:
            raise SpecError("--ep", f"vLLM's expert-parallel size is TP x DP = {ep}, not {spec.ep}",
                            f"leave --ep out (vLLM derives it) or use --ep {ep}")
        expert = True
    world = tp * pp * dp
    par = Parallel(tp=tp, pp=pp, dp=dp, ep=ep if expert else 1, world=world,
                   nodes=fit(spec, world, "TP x PP x DP"), expert_parallel=expert)
    port, explicit = http_port(merged, DEFAULT_PORT)
    mode = _mode(spec, par, native.get("executor"))
    _check_dp_local(spec, par, mode, native.get("dp_local"))
    return Resolution(parallel=par, mode=mode, port=port,
                      port_explicit=explicit, model_name=model_name(spec, native),
                      native=frozen(native), switches=frozenset(switches), config=config)


def dp_local(spec: ServeSpec, par: Parallel) -> int | None:
    """DP ranks per node: whole replicas inside a node; None when a replica spans nodes (Ray
    then places each one over nodes with VLLM_RAY_DP_PACK_STRATEGY=span)."""
    replica = par.tp * par.pp
    return spec.gpus_per_node // replica if replica <= spec.gpus_per_node else None


def _check_dp_local(spec: ServeSpec, par: Parallel, mode: str, given: str | None) -> None:
    """`--data-parallel-size-local` after `--` must be what slurmserve would give each node."""
    if given is None:
        return
    if mode == "mp" or par.dp == 1:
        raise SpecError("--data-parallel-size-local (after --)", f"means nothing without DP "
                        f"(mode {mode}, DP {par.dp})", "remove it")
    want = par.dp if mode == "single" else dp_local(spec, par) or 1
    if native_int("dp_local", given) != want:
        raise SpecError("--data-parallel-size-local (after --)",
                        f"{given} contradicts the layout: {want} DP rank(s) per node "
                        f"(TP x PP = {par.tp * par.pp} on {spec.gpus_per_node} GPUs per node)",
                        f"remove it (slurmserve gives {want}) or change --tp/--pp/--dp")


def _mode(spec: ServeSpec, par: Parallel, executor: str | None) -> str:
    if spec.launch_mode not in MODES:
        raise SpecError("--launch-mode", f"'{spec.launch_mode}' is not a vLLM mode",
                        "choose one of: " + ", ".join(MODES))
    replica = par.tp * par.pp
    chosen = spec.launch_mode
    if chosen == "auto":
        if par.nodes == 1:
            chosen = "single"
        elif executor == "mp":
            chosen = "mp"
        elif par.dp > 1 and replica <= spec.gpus_per_node and executor != "ray":
            chosen = "dp"
        else:
            chosen = "ray"
    if chosen == "single" and par.nodes > 1:
        raise SpecError("--launch-mode", f"single needs 1 node, the layout spans {par.nodes}",
                        "use --launch-mode auto, ray, mp or dp")
    if chosen != "single" and par.nodes == 1:
        chosen = "single"
    if chosen == "dp" and (replica > spec.gpus_per_node or spec.gpus_per_node % replica):
        raise SpecError("--launch-mode", f"dp needs whole replicas (TP x PP = {replica}) inside "
                        f"each node of {spec.gpus_per_node} GPUs",
                        "use --launch-mode ray, or make TP x PP divide --gpus-per-node")
    if chosen == "ray" and par.dp > 1 and (replica % spec.gpus_per_node if replica > spec.gpus_per_node
                                           else spec.gpus_per_node % replica):
        raise SpecError("--tp/--pp/--dp", f"vLLM's Ray DP places whole replicas (TP x PP = "
                        f"{replica}) in a node, or over whole nodes, of {spec.gpus_per_node} GPUs",
                        "make TP x PP divide --gpus-per-node, or a multiple of it")
    if chosen == "mp" and par.dp > 1:
        raise SpecError("--launch-mode", "mp (vLLM --nnodes) spans one replica over nodes, "
                        "not DP replicas", "use --launch-mode dp or ray for DP > 1")
    if executor and executor not in ("ray", "mp"):
        raise SpecError("--distributed-executor-backend (after --)", f"'{executor}' cannot span "
                        "nodes", "use ray or mp, or leave it out")
    if chosen == "ray" and executor == "mp" or chosen in ("mp", "dp") and executor == "ray":
        raise SpecError("--launch-mode", f"{chosen} contradicts --distributed-executor-backend "
                        f"{executor} after --", "give one of them")
    return chosen


def listen_ports(spec: ServeSpec, res: Resolution, block: PortBlock, nodes: int
                 ) -> dict[int, tuple[int, ...]]:
    return _ports(res, block, res.port)


def _ports(res: Resolution, block: PortBlock, http: int) -> dict[int, tuple[int, ...]]:
    ranks = range(res.parallel.nodes)
    if res.mode == "single":
        return {0: (http,)}
    if res.mode == "ray":
        ray = tuple(block.at(o) for o in RAY_PORTS.values())
        return {r: (http, block.at(RAY_GCS), *ray) if r == 0 else ray for r in ranks}
    return {r: (http, block.rendezvous) if r == 0 else () for r in ranks}  # mp, dp


def plan(spec: ServeSpec, alloc: Allocation, res: Resolution, port: int) -> ClusterPlan:
    par, chosen, native = res.parallel, res.mode, res.native
    port = serving_port(res, port)
    head = alloc.head.address
    block = alloc.ports
    ports = _ports(res, block, port)
    base = _serve_argv(spec, res, port)
    shipped = shipped_config(spec.engine_args, FLAGS, res.config)[1]  # the user's --config file
    nodes = alloc.nodes[: par.nodes]
    plans: list[NodePlan] = []
    for rank, node in enumerate(nodes):
        env = [("VLLM_HOST_IP", node.address)]
        common = dict(rank=rank, host=node.name, address=node.address, ifname=node.ifname,
                      ports=ports[rank])
        serving = dict(common, files=shipped)
        if chosen == "single":
            plans.append(NodePlan(**serving, role="server", command=tuple(base), env=tuple(env),
                                  serves_http=True, argv_checks=_vllm_check(base)))
        elif chosen == "ray":
            # Only --node-ip-address pins Ray's address (Ray 2.60 reads no variable for it).
            ray_start = _ray_start(spec, node.address, head, block, rank == 0)
            if RAY_NO_DRAIN[0] not in spec.env_dict:
                env.append(RAY_NO_DRAIN)
            if rank == 0:
                serve = base + _missing(native, "executor", ["--distributed-executor-backend", "ray"])
                head_env = list(env)
                if par.dp > 1:
                    serve += _missing(native, "dp_backend", ["--data-parallel-backend", "ray"])
                    local = dp_local(spec, par)
                    if local is not None:
                        serve += _missing(native, "dp_local",
                                          ["--data-parallel-size-local", str(local)])
                    elif RAY_DP_PACK[0] not in spec.env_dict:
                        head_env.append(RAY_DP_PACK)
                script = Rendered("ray_head.sh.j2", (
                    ("ray_start", tuple(ray_start)), ("serve", tuple(serve)),
                    ("nodes", len(nodes)), ("client_port", block.at(RAY_CLIENT)),
                    ("gpus", par.nodes * spec.gpus_per_node),
                    ("addresses", tuple(n.address for n in nodes)),
                    ("timeout", int(spec.health_timeout))))
                plans.append(NodePlan(
                    **common, role="ray-head", command=("bash", "/slurmserve/ray-head.sh"),
                    env=tuple(head_env),
                    files=(("ray-head.sh", script), ("ray_wait.py", Program("ray_wait.py")),
                           *shipped),
                    serves_http=True,
                    argv_checks=(ArgvCheck("ray", tuple(ray_start[2:])),
                                 ArgvCheck("vllm", tuple(serve[2:])))))
            else:
                argv = ray_start + ["--block"]
                plans.append(NodePlan(
                    **common, role="ray-worker", command=tuple(argv), env=tuple(env),
                    wait_for=(host_port(head, block.at(RAY_GCS)),),
                    argv_checks=(ArgvCheck("ray", tuple(argv[2:])),)))
        elif chosen == "mp":
            argv = base + ["--nnodes", str(len(nodes)), "--node-rank", str(rank),
                           "--master-addr", head, "--master-port", str(block.rendezvous)]
            if rank:
                argv.append("--headless")
            plans.append(NodePlan(
                **serving, role="head" if rank == 0 else "headless", command=tuple(argv),
                env=tuple(env), serves_http=rank == 0, argv_checks=_vllm_check(argv)))
        else:  # dp
            local = dp_local(spec, par) or 1
            argv = base + _missing(native, "dp_local", ["--data-parallel-size-local", str(local)])
            argv += ["--data-parallel-address", head,
                           "--data-parallel-rpc-port", str(block.rendezvous)]
            if rank:
                argv += ["--headless", "--data-parallel-start-rank", str(rank * local)]
            plans.append(NodePlan(
                **serving, role="dp-head" if rank == 0 else "dp-headless", command=tuple(argv),
                env=tuple(env), serves_http=rank == 0, argv_checks=_vllm_check(argv)))
    if spec.api_key:
        plans = [dataclasses.replace(p, secret_env=((API_KEY_ENV, "api_key"),))
                 if p.serves_http else p for p in plans]
    return ClusterPlan(
        engine=NAME, mode=chosen, job_id=alloc.job_id, model_name=res.model_name,
        head_address=head, port=port, world_size=par.world, parallel=par.as_dict(),
        nodes=tuple(plans), image_checks=RAY_CHECKS if chosen == "ray" else ())


# Ray missing from, or differing between, the nodes' images (field failure 14) fails before launch.
RAY_CHECKS = (
    ImageCheck("ray", "ray --version", "use an image with Ray installed (vLLM's own images have "
               "it) or --launch-mode mp, which needs no Ray"),
)


def _serve_argv(spec: ServeSpec, res: Resolution, port: int) -> list[str]:
    par, native = res.parallel, res.native
    argv = ["vllm", "serve", spec.model]
    argv += _missing(native, "tp", ["--tensor-parallel-size", str(par.tp)])
    if par.pp > 1:
        argv += _missing(native, "pp", ["--pipeline-parallel-size", str(par.pp)])
    if par.dp > 1:
        argv += _missing(native, "dp", ["--data-parallel-size", str(par.dp)])
    if par.expert_parallel and "expert_parallel" not in res.switches:
        argv.append("--enable-expert-parallel")
    argv += _missing(native, "host", ["--host", spec.host])
    argv += _missing(native, "port", ["--port", str(port)])
    if spec.served_model_name:
        argv += _missing(native, "served_model_name",
                         ["--served-model-name", spec.served_model_name])
    return argv + shipped_config(spec.engine_args, FLAGS, res.config)[0]


def _vllm_check(argv: Sequence[str]) -> tuple[ArgvCheck, ...]:
    """The words after `vllm serve`, for vLLM's own parser."""
    return (ArgvCheck("vllm", tuple(argv[2:])),)


def _missing(native: Mapping[str, str], key: str, flag: list[str]) -> list[str]:
    """Our flag, unless the user already gave the engine's own after `--` (kept verbatim)."""
    return [] if key in native else flag


def _ray_start(spec: ServeSpec, address: str, head: str, block: PortBlock, is_head: bool
               ) -> list[str]:
    argv = ["ray", "start", "--node-ip-address", address, "--num-gpus", str(spec.gpus_per_node),
            "--disable-usage-stats"]
    if is_head:
        argv += ["--head", "--port", str(block.at(RAY_GCS)), "--include-dashboard", "false"]
    else:
        argv += ["--address", host_port(head, block.at(RAY_GCS))]
    for name, offset in RAY_PORTS.items():
        argv += [f"--{name}", str(block.at(offset))]
    return argv


# --- `slurmserve plan` advice (the configurator asks these; see engines/__init__.py) -------

PROFILE = Profile(
    label="vLLM", vendors=("nvidia", "amd"), served_name=True,
    prefix_cache="vLLM V1 automatic prefix caching", router="a router",
    disaggregation="vLLM's KV connector (--kv-transfer-config)",
    mla_dp_attention="vLLM DP + EP (--data-parallel-size with --enable-expert-parallel)")


def tuning_args(context: int, max_batch: int | None, quantize: str | None, kv_fp8: bool
                ) -> tuple[list[str], list[str]]:
    """Engine args (and notes) for the context length, batch cap, weight quantization and KV dtype."""
    args = ["--max-model-len", str(context)]
    if max_batch is not None:
        args += ["--max-num-seqs", str(max_batch)]
    if quantize == "fp8":
        args += ["--quantization", "fp8"]
    if kv_fp8:
        args += ["--kv-cache-dtype", "fp8"]
    return args, []


def parallel_advice(tp: int, dp: int, gpus_per_node: int, moe: bool, experts: int, mla: bool
                    ) -> tuple[int, list[str], list[str]]:
    """EP size, engine args and notes for DP replicas of TP GPUs: vLLM's EP spans TP x DP."""
    if not (moe and tp > 1):
        return 1, [], []
    ep = tp * dp
    notes = [f"vLLM EP = TP x DP = {ep}: experts spread over all {ep} GPUs of a stage, attention "
             "stays TP" + ("; DP ranks step together in the MoE layers" if dp > 1 else "")]
    if tp * dp > gpus_per_node:
        notes.append(f"the EP group of {ep} GPUs spans nodes: every MoE layer's all-to-all crosses "
                     "the inter-node fabric; for a model this size "
                     f"{dp} independent TP{tp} replicas behind a router avoid that")
    return ep, ["--enable-expert-parallel"], notes


def spec_data_parallel(dp: int, replicas_per_node: int) -> int:
    """DP replicas one deployment holds: vLLM runs every replica as engine-level DP."""
    return dp


def data_parallel_notes(dp: int, moe: bool) -> list[str]:
    """Closing notes on how DP runs in this engine."""
    if dp > 1 and not moe:
        return [f"DP={dp} runs as one vLLM data-parallel deployment; independent replicas behind "
                "a router scale out the same way and fail independently"]
    return []


# --- `slurmserve bench` and `slurmserve test` (bench.py and apicheck.py ask these) -----------

BENCH_CLIENT = ("vllm", "bench", "serve", "--backend", "openai")
#: `vllm bench serve` writes one JSON file per run.
BENCH_JSONL = False


def bench_random_args(input_len: int | None, output_len: int | None) -> list[str]:
    """The random dataset at fixed lengths (range ratio 0)."""
    return ["--dataset-name", "random", "--random-input-len", str(input_len),
            "--random-output-len", str(output_len), "--random-range-ratio", "0"]


def bench_output_args(name: str, out: Path, metrics: Sequence[str], percentiles: Sequence[int],
                      goodput: Sequence[str]) -> list[str]:
    """Percentiles, goodput SLOs, the detailed JSON at `out`, and a label naming the point."""
    return bench_save_args(out, metrics, percentiles, goodput) + ["--label", f"slurmserve-{name}"]


def bench_unify(raw: dict[str, Any]) -> dict[str, Any]:
    """The client's result JSON under the unified names: vLLM's own."""
    return raw


#: A per-request `seed` is documented to reproduce a sampled output.
API = ApiTraits(owned_by="vllm", metrics_prefix="vllm:", seed_reproducible=True)

#: vllm/v1/metrics/loggers.py (PrometheusStatLogger), labels model_name and engine (one series
#: per DP engine): kv_cache_usage_perc replaced gpu_cache_usage_perc in 0.9, which older
#: releases alone have; the counter `vllm:generation_tokens` is served with `_total`.
LOAD = LoadMetrics(running=("vllm:num_requests_running",),
                   waiting=("vllm:num_requests_waiting",),
                   kv_cache=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
                   generation_tokens=("vllm:generation_tokens_total",))
