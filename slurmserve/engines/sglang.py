"""SGLang: `python3 -m sglang.launch_server` on every node with --nnodes/--node-rank/--dist-init-addr.

Rules (SGLang's check_server_args): EP is carved out of TP (ep divides tp); TP x PP must be
divisible by the node count; DP across nodes needs DP attention, and with DP attention the DP
ranks live inside the TP group (GPUs = TP x PP, dp divides tp). DP attention is spelt
`--attn-dp-size N` (SGLang >= 0.5.23) or, deprecated until 2026-12-31, `--enable-dp-attention`
with `--dp-size N`; `--dp-size` together with `--attn-dp-size` is refused by SGLang. Without it,
DP replicas each take TP x PP GPUs on one node. Only node rank 0 serves the API: ranks >= 1
answer /health with a dummy 200 on the same HTTP host:port, so that port must be free on every
rank, and readiness is polled on rank 0 only.

SGLang's parser is argparse: abbreviations are on (`--tp 16`), underscores are not folded,
`--config FILE` passes a YAML file's keys verbatim as `--KEY` (the command line wins) and
`--config=FILE` is ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SpecError
from ..plan import Allocation, ArgvCheck, ClusterPlan, NodePlan, PortBlock, host_port
from ._common import (
    ApiCheck,
    ApiCheckFailed,
    ApiTraits,
    Call,
    LoadMetrics,
    NativeFlags,
    Parallel,
    Profile,
    Resolution,
    default_layout,
    fit,
    frozen,
    http_port,
    merge,
    model_name,
    no_argcheck_data,
    no_job_secrets,
    one_mode,
    refuse_key_flags,
    renamed,
    scan,
    serving_port,
    shipped_config,
    with_config,
)

if TYPE_CHECKING:
    from ..spec import ServeSpec

NAME = "sglang"
DEFAULT_PORT = 30000
MODES = ("auto",)
#: SGLang takes its API key only as `--api-key` (no environment variable); `--config FILE` reads
#: options from a YAML file inside the process, so the key stays out of every argv.
API_KEY_FILE = "api-key.yaml"
API_KEY_PATH = f"/slurmserve/secrets/{API_KEY_FILE}"

FLAGS = NativeFlags(
    values={
        "tp": ("--tp", "--tp-size", "--tensor-parallel-size"),
        "pp": ("--pp", "--pp-size", "--pipeline-parallel-size"),
        "dp": ("--dp", "--dp-size", "--data-parallel-size"),
        "ep": ("--ep", "--ep-size", "--expert-parallel-size"),
        "port": ("--port",),
        "host": ("--host",),
        "served_model_name": ("--served-model-name",),
        "model": ("--model-path", "--model"),
        "attn_dp": ("--attn-dp-size",),
    },
    switches={"dp_attention": ("--enable-dp-attention",), "metrics": ("--enable-metrics",)},
    owned=("--nnodes", "--node-rank", "--dist-init-addr", "--nccl-init-addr"),
    abbreviations=True,
    others=("--api-key", "--admin-api-key", "--enable-dp-lm-head"),
    config="--config",
)


def validate(spec: ServeSpec) -> None:
    one_mode(spec, "SGLang", MODES)
    refuse_key_flags(spec, ("--api-key", "--admin-api-key"), FLAGS)
    if spec.api_key and any(a.startswith("-") and FLAGS.canonical(a.partition("=")[0]) == "--config"
                            for a in spec.engine_args):
        raise SpecError("--config (after --)", "SGLang reads one --config file, and slurmserve "
                        "passes the API key in it", "give those options after -- as flags, or "
                        "drop --api-key")
    resolve(spec)


def api_key_files(key: str) -> dict[str, str]:
    """SGLang's `--config` YAML holding only the key (a JSON string is a YAML scalar)."""
    return {API_KEY_FILE: f"api-key: {json.dumps(key)}\n"}


job_secrets = no_job_secrets
argcheck_data = no_argcheck_data


def resolve(spec: ServeSpec) -> Resolution:
    args, config = with_config(spec, FLAGS)
    native, switches = scan(args, FLAGS)
    if "model" in native and native["model"] != spec.model:
        raise SpecError("--model-path (after --)", f"'{native['model']}' contradicts MODEL "
                        f"'{spec.model}'", "give the model once, as MODEL")
    attn_dp = native.get("attn_dp")
    if attn_dp is not None:
        if "dp" in native:
            raise SpecError("--attn-dp-size (after --)", f"SGLang refuses --dp-size "
                            f"{native['dp']} with --attn-dp-size {attn_dp} (DP replicas with "
                            "attention DP)", "give the attention-DP size once: --dp N or "
                            "--attn-dp-size N")
        native["dp"] = attn_dp  # slurmserve's --dp is SGLang's attention-DP size then
    merged = merge(spec, native, ("tp", "pp", "dp", "ep", "port", "host", "served_model_name"))
    dp_attention = "dp_attention" in switches or attn_dp is not None
    tp, pp, dp = default_layout(spec, merged["tp"], merged["pp"], merged["dp"])
    ep = merged["ep"] or 1
    if tp % ep:
        raise SpecError("--ep", f"SGLang's EP subdivides TP: ep {ep} does not divide tp {tp}",
                        "choose an --ep that divides --tp (e.g. --tp 8 --ep 2)")
    if dp_attention:
        if tp % dp:
            raise SpecError("--dp", f"with DP attention, dp {dp} must divide tp {tp}",
                            "choose a --dp that divides --tp")
        world, what = tp * pp, "TP x PP (DP attention inside TP)"
    else:
        world, what = tp * pp * dp, "TP x PP x DP"
    nodes = fit(spec, world, what)
    if nodes > 1 and dp > 1 and not dp_attention:
        raise SpecError("--dp", "SGLang runs DP across nodes only with DP attention",
                        "add -- --attn-dp-size N (or --enable-dp-attention), or use one node "
                        "per replica")
    if nodes > 1 and (tp * pp) % nodes:
        raise SpecError("--tp", f"SGLang needs TP x PP ({tp * pp}) divisible by the node count "
                        f"({nodes})", "change --tp/--pp or --nodes")
    par = Parallel(tp=tp, pp=pp, dp=dp, ep=ep, world=world, nodes=nodes,
                   expert_parallel=ep > 1, dp_attention=dp_attention)
    port, explicit = http_port(merged, DEFAULT_PORT)
    return Resolution(parallel=par, mode="nnodes" if nodes > 1 else "single", port=port,
                      port_explicit=explicit, model_name=model_name(spec, native),
                      native=frozen(native), switches=frozenset(switches), config=config)


def listen_ports(spec: ServeSpec, res: Resolution, block: PortBlock, nodes: int
                 ) -> dict[int, tuple[int, ...]]:
    return _ports(res, block, res.port)


def _ports(res: Resolution, block: PortBlock, http: int) -> dict[int, tuple[int, ...]]:
    """Rank 0 serves HTTP and holds the dist-init rendezvous; ranks >= 1 run SGLang's dummy
    health server on the same HTTP port (engine.py launch_dummy_health_check_server)."""
    return {r: (http, block.rendezvous) if r == 0 else (http,) for r in range(res.parallel.nodes)}


def plan(spec: ServeSpec, alloc: Allocation, res: Resolution, port: int) -> ClusterPlan:
    par, native = res.parallel, res.native
    port = serving_port(res, port)
    head = alloc.head.address
    rendezvous = alloc.ports.rendezvous
    ports = _ports(res, alloc.ports, port)
    argv = ["python3", "-m", "sglang.launch_server"]
    if "model" not in native:
        argv += ["--model-path", spec.model]
    attn_dp = "attn_dp" in native  # then --dp is the attention-DP size the user gave there
    for key, flag, value, needed in (
        ("tp", "--tp-size", par.tp, True),
        ("pp", "--pp-size", par.pp, par.pp > 1),
        ("dp", "--dp-size", par.dp, par.dp > 1 and not attn_dp),
        ("ep", "--ep-size", par.ep, par.ep > 1),
        ("host", "--host", spec.host, True),
        ("port", "--port", port, True),
        ("served_model_name", "--served-model-name", spec.served_model_name,
         spec.served_model_name is not None),
    ):
        if needed and key not in native:
            argv += [flag, str(value)]
    if "metrics" not in res.switches:
        argv.append("--enable-metrics")  # SGLang serves /metrics only when asked
    user_args, shipped = shipped_config(spec.engine_args, FLAGS, res.config)
    argv += user_args
    nodes = alloc.nodes[: par.nodes]
    plans = []
    for rank, node in enumerate(nodes):
        command = list(argv)
        if par.nodes > 1:
            command += ["--nnodes", str(par.nodes), "--node-rank", str(rank),
                        "--dist-init-addr", host_port(head, rendezvous)]
        keyed = bool(spec.api_key) and rank == 0  # only rank 0 serves HTTP
        if keyed:
            command += ["--config", API_KEY_PATH]
        plans.append(NodePlan(
            rank=rank, host=node.name, address=node.address, ifname=node.ifname,
            role="head" if rank == 0 else "worker", command=tuple(command),
            files=shipped, secrets=(API_KEY_FILE,) if keyed else (), ports=ports[rank],
            serves_http=rank == 0, argv_checks=(ArgvCheck("sglang", tuple(command[3:])),)))
    return ClusterPlan(
        engine=NAME, mode=res.mode, job_id=alloc.job_id, model_name=res.model_name,
        head_address=head, port=port, world_size=par.world, parallel=par.as_dict(),
        nodes=tuple(plans))


# --- `slurmserve plan` advice (the configurator asks these; see engines/__init__.py) -------

PROFILE = Profile(
    label="SGLang", vendors=("nvidia", "amd"), served_name=True,
    prefix_cache="SGLang RadixAttention", router="sgl-router",
    disaggregation="SGLang's --disaggregation-mode prefill/decode with a transfer backend",
    mla_dp_attention="SGLang --enable-dp-attention")


def tuning_args(context: int, max_batch: int | None, quantize: str | None, kv_fp8: bool
                ) -> tuple[list[str], list[str]]:
    """Engine args (and notes) for the context length, batch cap, weight quantization and KV dtype."""
    args = ["--context-length", str(context)]
    if max_batch is not None:
        args += ["--max-running-requests", str(max_batch)]
    if quantize == "fp8":
        args += ["--quantization", "fp8"]
    if kv_fp8:
        args += ["--kv-cache-dtype", "fp8_e4m3"]
    return args, []


def parallel_advice(tp: int, dp: int, gpus_per_node: int, moe: bool, experts: int, mla: bool
                    ) -> tuple[int, list[str], list[str]]:
    """EP size, engine args and notes for DP replicas of TP GPUs: SGLang's EP subdivides TP."""
    notes: list[str] = []
    if mla and tp > 1:
        notes.append(f"SGLang: consider --enable-dp-attention --dp-size {tp} (DP attention inside "
                     "the TP group, same GPUs) for this MLA model")
    if not (moe and tp > 1):
        return 1, [], notes
    ep = math.gcd(tp, experts) if experts else tp
    notes.append(f"{NAME} EP subdivides TP: ep {ep} divides tp {tp} (moe_tp {tp // ep} x ep {ep} "
                 f"= tp {tp}); whole experts per GPU avoid thin per-expert GEMM slices")
    return ep, [], notes


def spec_data_parallel(dp: int, replicas_per_node: int) -> int:
    """DP replicas one deployment holds: SGLang's native DP stays inside a node (across nodes it
    means DP attention, a different layout); more replicas are copies behind a router."""
    return min(dp, replicas_per_node) if replicas_per_node else 1


def data_parallel_notes(dp: int, moe: bool) -> list[str]:
    """Closing notes on how DP runs in this engine."""
    return []


# --- `slurmserve bench` and `slurmserve test` (bench.py and apicheck.py ask these) -----------

BENCH_CLIENT = ("python3", "-m", "sglang.bench_serving", "--backend", "sglang")
#: sglang.bench_serving appends one JSON line per run to its output file.
BENCH_JSONL = True


def bench_random_args(input_len: int | None, output_len: int | None) -> list[str]:
    """`random-ids`: `random` would download ShareGPT for its text; a ratio of 1 fixes lengths."""
    return ["--dataset-name", "random-ids", "--random-input-len", str(input_len),
            "--random-output-len", str(output_len), "--random-range-ratio", "1"]


def bench_output_args(name: str, out: Path, metrics: Sequence[str], percentiles: Sequence[int],
                      goodput: Sequence[str]) -> list[str]:
    """The JSON line with per-request details at `out`. No percentile or goodput flags: p90 and
    goodput come from the details."""
    return ["--output-file", str(out), "--output-details"]


#: SGLang's result keys that have another name in vLLM's.
_BENCH_KEYS = {**{f"{s}_e2e_latency_ms": f"{s}_e2el_ms" for s in ("mean", "median", "p50", "p90", "p99")},
               "total_throughput": "total_token_throughput"}


def bench_unify(raw: dict[str, Any]) -> dict[str, Any]:
    """The client's result JSON under the unified (vLLM) names. It saves no per-request
    latency: bench.py adds TTFT and the ITLs up instead."""
    return renamed(raw, _BENCH_KEYS)


def check_generate(call: Call, prompt: str, tokens: int) -> str:
    """SGLang's native /generate: text plus meta_info, exactly `tokens` new tokens."""
    params = {"max_new_tokens": tokens, "ignore_eos": True, "temperature": 0}
    data = call("/generate", {"text": prompt, "sampling_params": params})
    meta = data.get("meta_info") or {}
    if not isinstance(data.get("text"), str):
        raise ApiCheckFailed(f"/generate: no text in {data!r:.160}")
    if meta.get("completion_tokens") != tokens:
        raise ApiCheckFailed(f"/generate: completion_tokens {meta.get('completion_tokens')!r}, "
                             f"asked {tokens}")
    return f"/generate {tokens} tokens"


API = ApiTraits(owned_by="sglang", metrics_prefix="sglang:", detect_paths=("/get_model_info",),
                metrics_hint=" (SGLang serves /metrics only with --enable-metrics)",
                extra_checks=(ApiCheck("sglang-generate", check_generate),))

#: python/sglang/srt/metrics/collector.py: SchedulerMetricsCollector (num_running_reqs,
#: num_queue_reqs, token_usage: the KV pool's used fraction, gen_throughput) and
#: TokenizerMetricsCollector (generation_tokens_total); served with --enable-metrics.
LOAD = LoadMetrics(running=("sglang:num_running_reqs",), waiting=("sglang:num_queue_reqs",),
                   kv_cache=("sglang:token_usage",),
                   generation_tokens=("sglang:generation_tokens_total",),
                   gen_throughput=("sglang:gen_throughput",))
