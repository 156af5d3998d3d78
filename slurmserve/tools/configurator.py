"""The `slurmserve plan` configurator: model, context, SLOs and GPU in; a parallel layout out.

Pure Python, no I/O, no heavy imports. The model, stated once here and used throughout:

Memory (per GPU, decimal GB)
    usable   = memory x USABLE_MEMORY_FRACTION - RUNTIME_RESERVE_GB
    weights  = linear params x weight bytes + embeddings/lm_head x 2 (they stay 16-bit)
    KV/token = 2 (K,V) x layers x kv_heads x head_dim x kv bytes; MLA: layers x (latent + rope)
    TP shards weights by 1/TP and GQA KV by 1/min(TP, kv_heads); MLA KV is not sharded.
    PP shards both by the largest stage's share of the layers.
    TP = smallest valid power of two <= gpus_per_node with
         weights/TP + KV(working set)/shard <= usable, working set = concurrency x sequence tokens
         (at least one full context). If none fits, TP = the node's maximum and PP grows.

Decode (bandwidth bound, one step advances every running sequence by one token)
    step = max(bytes read / (HBM x HBM_EFFICIENCY), FLOPs / (TFLOPs x DECODE_MFU))
           + per-layer all-reduces (latency + ring traffic over the intra-node link)
    bytes read = weight shard + KV shard of the batch; MoE reads the experts the batch touches,
    1 - (1 - k/E)^batch of them under uniform routing (so ACTIVE params at batch 1, most of the
    TOTAL at large batch). TPOT = PP x step + STEP_OVERHEAD_MS; replica tok/s = batch / TPOT.
Prefill
    TTFT = max(2 x active params x input + causal attention FLOPs) / (TP x TFLOPs x PREFILL_MFU),
               weight read) + all-reduces of the prompt activations + overheads.
Capacity
    a request costs its prefill (/PP: stages pipeline) plus output x TPOT / batch of replica time;
    replicas = ceil(qps / (capacity x TARGET_UTILIZATION)).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .. import engines
from ..engines import ENGINES
from ..errors import SpecError

# --- constants (named so the table can be reasoned about and tuned) -----------------------

#: Share of HBM the engine may take: vLLM --gpu-memory-utilization and TRT-LLM's
#: free_gpu_memory_fraction both default to 0.9.
USABLE_MEMORY_FRACTION = 0.90
#: Per GPU, inside that share: CUDA context, activations, CUDA graphs, NCCL buffers.
RUNTIME_RESERVE_GB = 3.0
#: Fraction of peak HBM bandwidth decode kernels reach (GEMV + paged attention).
HBM_EFFICIENCY = 0.75
#: Model-FLOPs utilisation of prefill (large GEMMs) and of compute-bound decode.
PREFILL_MFU = 0.60
DECODE_MFU = 0.50
#: Fraction of link bandwidth an all-reduce reaches.
LINK_EFFICIENCY = 0.70
#: Scheduler, sampling and launch cost per decode step.
STEP_OVERHEAD_MS = 0.5
#: Activation send/recv between pipeline stages on different nodes.
PP_HOP_MS = 0.3
#: Engines' default cap on running sequences (vLLM --max-num-seqs).
MAX_NUM_SEQS = 256
#: Replicas are sized to run at this load so queues stay short.
TARGET_UTILIZATION = 0.80
#: Batch is the smallest that reaches this share of the best throughput (the knee).
THROUGHPUT_KNEE = 0.95
#: Default sequences per replica the KV cache must hold (a serving batch, not a latency test).
DEFAULT_CONCURRENCY = 16
#: Default generated tokens per request (the seed's 200).
DEFAULT_OUTPUT_TOKENS = 200
#: Disaggregate prefill/decode when prompts are at least this long and TTFT is this tight.
DISAGG_MIN_INPUT_TOKENS = 8000
DISAGG_MAX_TTFT_MS = 500.0
#: Prompts at least this long usually carry shareable prefixes (system prompt, documents).
PREFIX_CACHE_MIN_INPUT_TOKENS = 2000
#: Largest pipeline depth considered.
MAX_PP = 32

DTYPE_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int4": 0.5}
KV_DTYPE_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0}

# --- tables ------------------------------------------------------------------------------
# Architectures as in each model's config.json. head_dim for DeepSeek-V3 is the q/k head
# (nope 128 + rope 64); v_head_dim is separate. max_context is max_position_embeddings.
_PRESETS: dict[str, dict[str, Any]] = {
    "Qwen2.5-7B-Instruct": dict(
        hf_id="Qwen/Qwen2.5-7B-Instruct", params_b=7.61, active_params_b=7.61, layers=28,
        hidden=3584, heads=28, kv_heads=4, head_dim=128, vocab=152064, max_context=32768,
        moe=False, experts=0, experts_per_token=0, dtype="bf16"),
    "Qwen2.5-14B-Instruct": dict(
        hf_id="Qwen/Qwen2.5-14B-Instruct", params_b=14.7, active_params_b=14.7, layers=48,
        hidden=5120, heads=40, kv_heads=8, head_dim=128, vocab=152064, max_context=32768,
        moe=False, experts=0, experts_per_token=0, dtype="bf16"),
    "Qwen2.5-72B-Instruct": dict(
        hf_id="Qwen/Qwen2.5-72B-Instruct", params_b=72.7, active_params_b=72.7, layers=80,
        hidden=8192, heads=64, kv_heads=8, head_dim=128, vocab=152064, max_context=32768,
        moe=False, experts=0, experts_per_token=0, dtype="bf16"),
    "Llama-3.1-8B-Instruct": dict(
        hf_id="meta-llama/Llama-3.1-8B-Instruct", params_b=8.03, active_params_b=8.03,
        layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, vocab=128256,
        max_context=131072, moe=False, experts=0, experts_per_token=0, dtype="bf16"),
    "Llama-3.1-70B-Instruct": dict(
        hf_id="meta-llama/Llama-3.1-70B-Instruct", params_b=70.6, active_params_b=70.6,
        layers=80, hidden=8192, heads=64, kv_heads=8, head_dim=128, vocab=128256,
        max_context=131072, moe=False, experts=0, experts_per_token=0, dtype="bf16"),
    "Llama-3.1-405B-Instruct": dict(
        hf_id="meta-llama/Llama-3.1-405B-Instruct", params_b=405.9, active_params_b=405.9,
        layers=126, hidden=16384, heads=128, kv_heads=8, head_dim=128, vocab=128256,
        max_context=131072, moe=False, experts=0, experts_per_token=0, dtype="bf16"),
    "Qwen3-30B-A3B": dict(
        hf_id="Qwen/Qwen3-30B-A3B", params_b=30.5, active_params_b=3.3, layers=48,
        hidden=2048, heads=32, kv_heads=4, head_dim=128, vocab=151936, max_context=40960,
        moe=True, experts=128, experts_per_token=8, dtype="bf16"),
    # MLA: the cache holds one compressed latent per token and layer (kv_lora_rank) plus the
    # decoupled RoPE key (qk_rope_head_dim), shared by all 128 heads: 1 "head" of 576.
    "DeepSeek-V3": dict(
        hf_id="deepseek-ai/DeepSeek-V3", params_b=671.0, active_params_b=37.0, layers=61,
        hidden=7168, heads=128, kv_heads=128, head_dim=192, v_head_dim=128, vocab=129280,
        max_context=163840, moe=True, experts=256, experts_per_token=8, dtype="fp8",
        kv_lora_rank=512, qk_rope_head_dim=64),
}
# Context the model reaches with rope scaling beyond max_position_embeddings.
_EXTENDED_CONTEXT = {"Qwen2.5-7B-Instruct": 131072, "Qwen2.5-14B-Instruct": 131072,
                     "Qwen2.5-72B-Instruct": 131072, "Qwen3-30B-A3B": 131072}

# memory_gb as marketed (nvidia-smi shows about that many GiB); dense TFLOPs without sparsity;
# link_gbps: one direction per GPU on the intra-node fabric.
_GPUS: dict[str, dict[str, Any]] = {
    "A100-40GB": dict(memory_gb=40, bf16_tflops=312, fp8_tflops=None, hbm_gbps=1555,
                      gpus_per_node=8, interconnect="nvlink", link_gbps=300,
                      allreduce_us=8.0, vendor="nvidia", note="NVLink 3 (600 GB/s), no FP8"),
    "A100-80GB": dict(memory_gb=80, bf16_tflops=312, fp8_tflops=None, hbm_gbps=2039,
                      gpus_per_node=8, interconnect="nvlink", link_gbps=300,
                      allreduce_us=8.0, vendor="nvidia", note="SXM, NVLink 3 (600 GB/s), no FP8"),
    "H100-80GB": dict(memory_gb=80, bf16_tflops=989, fp8_tflops=1979, hbm_gbps=3350,
                      gpus_per_node=8, interconnect="nvlink", link_gbps=450,
                      allreduce_us=8.0, vendor="nvidia", note="SXM, NVLink 4 (900 GB/s)"),
    "H200-141GB": dict(memory_gb=141, bf16_tflops=989, fp8_tflops=1979, hbm_gbps=4800,
                       gpus_per_node=8, interconnect="nvlink", link_gbps=450,
                       allreduce_us=8.0, vendor="nvidia", note="SXM, NVLink 4 (900 GB/s)"),
    "B200-180GB": dict(memory_gb=180, bf16_tflops=2250, fp8_tflops=4500, hbm_gbps=8000,
                       gpus_per_node=8, interconnect="nvlink", link_gbps=900,
                       allreduce_us=8.0, vendor="nvidia",
                       note="HGX B200: 192 GB HBM3e on package, 180 GB usable; NVLink 5"),
    "L40S-48GB": dict(memory_gb=48, bf16_tflops=362, fp8_tflops=733, hbm_gbps=864,
                      gpus_per_node=8, interconnect="pcie", link_gbps=32,
                      allreduce_us=25.0, vendor="nvidia",
                      note="GDDR6, PCIe Gen4 x16 only: no NVLink, TP all-reduces cross PCIe"),
    "MI300X-192GB": dict(memory_gb=192, bf16_tflops=1307, fp8_tflops=2615, hbm_gbps=5300,
                         gpus_per_node=8, interconnect="xgmi", link_gbps=448,
                         allreduce_us=10.0, vendor="amd", note="Infinity Fabric (xGMI) mesh"),
}


def _norm(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum() or ch == ".")


def _gpu_aliases() -> dict[str, str]:
    aliases = {_norm(name): name for name in _GPUS}
    for name in _GPUS:
        short, mem = name.lower().split("-")
        aliases[_norm(short)] = name
        aliases[_norm(short + mem.removesuffix("gb"))] = name
    aliases.update({_norm("a100"): "A100-80GB", _norm("h100-sxm"): "H100-80GB",
                    _norm("b200-192gb"): "B200-180GB", _norm("b200-192"): "B200-180GB"})
    return aliases


def _model_aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for name, p in _PRESETS.items():
        for text in (name, p["hf_id"], p["hf_id"].split("/")[-1], name.removesuffix("-Instruct")):
            aliases[_norm(text)] = name
        if name.startswith("Llama-"):
            aliases[_norm("Meta-" + name)] = name
            aliases[_norm("meta-llama/Meta-" + name)] = name
    return aliases


_GPU_ALIASES = _gpu_aliases()
_MODEL_ALIASES = _model_aliases()


def presets() -> dict[str, dict[str, Any]]:
    """Model presets by canonical name (copies)."""
    return {name: dict(p) for name, p in _PRESETS.items()}


def gpus() -> dict[str, dict[str, Any]]:
    """GPU table by canonical name (copies)."""
    return {name: dict(g) for name, g in _GPUS.items()}


# --- errors and request -----------------------------------------------------------------


class PlanError(SpecError):
    """A bad plan request: `field` is the CLI flag, `message` what is wrong, `fix` what to do."""

    def __init__(self, field: str, message: str, fix: str) -> None:
        super().__init__(field, message, fix)
        self.message = message


@dataclass(frozen=True)
class PlanRequest:
    """A workload to size. Field errors name the flag `--` + field with `-` for `_`."""

    model: str | None = None  # preset name or HF id, case-insensitive
    params_b: float | None = None  # total params (billions) when there is no preset
    context: int = 8192  # max tokens per sequence (prompt + output): the engine's max-model-len
    gpu: str = "H100-80GB"
    gpus_per_node: int | None = None
    qps: float = 1.0
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    weight_dtype: str | None = None  # default: the preset's native dtype, else bf16
    engine: str = "vllm"
    kv_dtype: str | None = None  # bf16 (default) or fp8
    concurrency: int = DEFAULT_CONCURRENCY  # sequences per replica the KV cache must hold
    avg_input_tokens: int | None = None  # default: context - avg_output_tokens
    avg_output_tokens: int = DEFAULT_OUTPUT_TOKENS
    active_params_b: float | None = None  # MoE without preset: params used per token
    kv_bytes_per_token: int | None = None  # override the architecture-derived value


@dataclass(frozen=True)
class _Model:
    name: str
    hf_id: str | None
    params_b: float
    active_params_b: float
    layers: int
    hidden: int
    heads: int
    kv_heads: int | None  # None: unknown (KV assumed to shard fully over TP)
    head_dim: int
    v_head_dim: int
    vocab: int
    max_context: int | None
    moe: bool
    experts: int
    experts_per_token: int
    dtype: str
    mla: tuple[int, int] | None  # (kv_lora_rank, qk_rope_head_dim)
    estimated: bool  # architecture guessed from params_b


@dataclass(frozen=True)
class Plan:
    """A sized deployment: fused replicas of TP x PP GPUs, DP of them (total = TP*PP*DP)."""

    request: PlanRequest
    model: str
    hf_id: str | None
    gpu: str
    engine: str
    weight_dtype: str
    kv_dtype: str
    moe: bool
    tp: int
    pp: int
    dp: int
    ep: int
    replicas: int
    deployments: int  # copies of to_spec() to run behind a router (1: the spec is everything)
    spec_dp: int
    spec_nodes: int
    nodes: int
    gpus_per_node: int
    total_gpus: int
    weights_gb: float
    kv_bytes_per_token: int
    kv_gb_per_seq: float  # one sequence at full context
    per_gpu_gb: float  # weight shard + working-set KV shard
    usable_gb_per_gpu: float
    gpu_memory_gb: float
    concurrency: int  # sequences the memory sizing holds per replica
    batch: int  # operating batch per replica
    kv_capacity_seqs: int  # average-length sequences that fit per replica
    tpot_ms: float  # at the operating batch
    tpot_ms_batch1: float
    ttft_ms: float
    tokens_per_s_replica: float
    requests_per_s_replica: float
    ttft_ok: bool | None
    tpot_ok: bool | None
    disaggregate: bool
    prefill_replicas: int
    decode_replicas: int
    disagg_gpus: int
    prefix_cache: bool
    engine_args: tuple[str, ...]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data."""
        data = dataclasses.asdict(self)
        for key in ("engine_args", "warnings", "notes"):
            data[key] = list(data[key])
        for key, value in data.items():
            if isinstance(value, float):
                data[key] = round(value, 3)
        return data

    def table(self) -> str:
        """Aligned plain-text summary."""
        req = self.request
        ep = f" EP={self.ep}" if self.moe else ""
        rows = [
            ("model", f"{self.model}" + (f" ({self.hf_id})" if self.hf_id else "")),
            ("gpu", f"{self.gpu}, {self.gpus_per_node} per node"),
            ("engine", f"{self.engine}, weights {self.weight_dtype}, KV {self.kv_dtype}"),
            ("parallelism", f"TP={self.tp} PP={self.pp} DP={self.dp}{ep}"),
            ("gpus", f"{self.total_gpus} on {self.nodes} node(s)"),
            ("weights", f"{self.weights_gb:.1f} GB total"),
            ("kv cache", f"{self.kv_bytes_per_token:,} B/token, "
                         f"{self.kv_gb_per_seq:.2f} GB per {req.context:,}-token sequence"),
            ("memory/gpu", f"{self.per_gpu_gb:.1f} GB of {self.usable_gb_per_gpu:.1f} GB usable "
                           f"({self.gpu_memory_gb:g} GB)"),
            ("batch", f"{self.batch} per replica (KV room for {self.kv_capacity_seqs}, "
                      f"sized for {self.concurrency} at full context)"),
            ("tpot", f"{self.tpot_ms:.1f} ms{_slo(self.tpot_ok, req.tpot_ms)} "
                     f"(batch 1: {self.tpot_ms_batch1:.1f} ms)"),
            ("ttft", f"{self.ttft_ms:.0f} ms{_slo(self.ttft_ok, req.ttft_ms)}"),
            ("throughput", f"{self.tokens_per_s_replica:,.0f} tok/s, "
                           f"{self.requests_per_s_replica:.2f} req/s per replica"),
            ("replicas", f"{self.replicas} for {req.qps:g} req/s" + (
                f", as {self.deployments} deployments of DP={self.spec_dp}"
                + (" (--replicas)" if self.replicated else "") if self.deployments > 1 else "")),
            ("disaggregate", f"yes: {self.prefill_replicas} prefill + {self.decode_replicas} "
                             f"decode instances, {self.disagg_gpus} GPUs"
                             if self.disaggregate else "no"),
            ("prefix cache", "yes" if self.prefix_cache else "no (short prompts)"),
            ("engine args", " ".join(self.engine_args) or "-"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
        for title, items in (("warnings", self.warnings), ("notes", self.notes)):
            if items:
                lines.append(f"{title}:")
                lines.extend(f"  - {item}" for item in items)
        return "\n".join(lines)

    def to_spec(self, model_id: str | None = None) -> dict[str, Any]:
        """A serving-spec dict for `slurmserve render/run --config` (image not included).

        It describes the whole deployment: when `replicated`, `deployments` identical copies as
        `replicas` behind slurmserve's router (deployments x spec_nodes nodes); else one copy.
        A plan sized by --params-b has
        no model id: then the spec has no model (nor served name), and render/run take MODEL.
        """
        model = model_id or self.hf_id
        spec: dict[str, Any] = {"engine": self.engine}
        if model:
            spec["model"] = model
            spec["served_model_name"] = model.rstrip("/").split("/")[-1] \
                if engines.get(self.engine).PROFILE.served_name else None
        spec.update(nodes=self.spec_nodes, gpus_per_node=self.gpus_per_node, tp=self.tp,
                    pp=self.pp, dp=self.spec_dp, ep=self.ep if self.ep > 1 else None,
                    engine_args=list(self.engine_args))
        if self.replicated:
            spec.update(nodes=self.spec_nodes * self.deployments, replicas=self.deployments)
        return spec

    @property
    def replicated(self) -> bool:
        """The copies run as `--replicas` (each on whole nodes of its own); smaller copies
        share nodes, each with its own --gpus and --port, outside one spec."""
        return self.deployments > 1 and self.tp * self.pp * self.spec_dp % self.gpus_per_node == 0


def _slo(ok: bool | None, target: float | None) -> str:
    if ok is None or target is None:
        return ""
    return f" (target {target:g} ms: {'ok' if ok else 'MISS'})"


# --- lookups and validation -------------------------------------------------------------


def _lookup_gpu(name: str) -> str:
    found = _GPU_ALIASES.get(_norm(name))
    if found is None:
        raise PlanError("--gpu", f"unknown GPU '{name}'", "choose one of: " + ", ".join(_GPUS))
    return found


def _resolve_model(req: PlanRequest) -> _Model:
    if req.model is not None:
        if req.params_b is not None or req.active_params_b is not None:
            raise PlanError("--params-b", "given together with a preset --model",
                            "drop --params-b/--active-params-b, or --model to size by params")
        name = _MODEL_ALIASES.get(_norm(req.model))
        if name is None:
            raise PlanError("--model", f"unknown preset '{req.model}'",
                            "choose one of: " + ", ".join(_PRESETS)
                            + "; or give --params-b for any other model")
        p = _PRESETS[name]
        mla = (p["kv_lora_rank"], p["qk_rope_head_dim"]) if "kv_lora_rank" in p else None
        return _Model(name, p["hf_id"], p["params_b"], p["active_params_b"], p["layers"],
                      p["hidden"], p["heads"], p["kv_heads"], p["head_dim"],
                      p.get("v_head_dim", p["head_dim"]), p["vocab"], p["max_context"],
                      p["moe"], p["experts"], p["experts_per_token"], p["dtype"], mla, False)
    if req.params_b is None:
        raise PlanError("--model", "neither a preset nor --params-b given",
                        "pass --model NAME (" + ", ".join(_PRESETS) + ") or --params-b N")
    total = _positive_float("--params-b", req.params_b)
    active = total
    if req.active_params_b is not None:
        active = _positive_float("--active-params-b", req.active_params_b)
        if active > total:
            raise PlanError("--active-params-b", f"{active:g}B exceeds --params-b {total:g}B",
                            "active params are a subset of the total")
    # Dense transformer: params ~ 12 L h^2 with h ~ 128 L (Llama 2/3 shapes): h = (P*128/12)^(1/3).
    hidden = max(128, round((total * 1e9 * 128 / 12) ** (1 / 3) / 128) * 128)
    layers = max(1, round(hidden / 128))
    return _Model(f"{total:g}B", None, total, active, layers, hidden, hidden // 128, None, 128,
                  128, 0, None, active < total, 0, 0, "bf16", None, True)


def _positive_float(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or math.isinf(value):
        raise PlanError(field, f"must be a positive number, got {value!r}", "give e.g. 70")
    return float(value)


def _positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanError(field, f"must be a positive whole number, got {value!r}", "give e.g. 8")
    return value


def _choice(field: str, value: str, choices: Any) -> str:
    text = str(value).lower()
    if text not in choices:
        raise PlanError(field, f"unknown value '{value}'", "choose one of: " + ", ".join(choices))
    return text


# --- the model ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    m: _Model
    g: dict[str, Any]
    wbytes: float
    kv_per_token: int
    weights_gb: float
    usable_gb: float
    in_tokens: int
    out_tokens: int
    tflops: float


def _kv_per_token(m: _Model, kv_bytes: float) -> int:
    if m.mla:
        return int(m.layers * (m.mla[0] + m.mla[1]) * kv_bytes)
    kv_heads = m.kv_heads if m.kv_heads is not None else 8  # unknown: typical GQA
    return int(2 * m.layers * kv_heads * m.head_dim * kv_bytes)


def kv_bytes_per_token(model: str, kv_dtype: str = "bf16") -> int:
    """KV-cache bytes per token of a preset."""
    kv = _choice("--kv-dtype", kv_dtype, KV_DTYPE_BYTES)
    return _kv_per_token(_resolve_model(PlanRequest(model=model)), KV_DTYPE_BYTES[kv])


def _embed_b(m: _Model) -> float:
    return m.vocab * m.hidden / 1e9  # one of embed_tokens / lm_head (all presets untied)


def _weights_gb(m: _Model, wbytes: float) -> float:
    emb = 2 * _embed_b(m)
    return (m.params_b - emb) * wbytes + emb * 2


def _stage_share(m: _Model, pp: int) -> float:
    return math.ceil(m.layers / pp) / m.layers


def _kv_shard(m: _Model, tp: int) -> int:
    if m.mla:
        return 1  # the latent is shared by all heads: every TP rank keeps the whole of it
    return tp if m.kv_heads is None else min(tp, m.kv_heads)


def _per_gpu_gb(c: _Ctx, tp: int, pp: int, tokens: float) -> float:
    share = _stage_share(c.m, pp)
    return c.weights_gb * share / tp + tokens * c.kv_per_token * share / _kv_shard(c.m, tp) / 1e9


def _allreduce_s(c: _Ctx, tp: int, layers: float, tokens: float) -> float:
    if tp == 1:
        return 0.0
    ring = 2 * (tp - 1) / tp * tokens * c.m.hidden * 2  # bytes each GPU sends per all-reduce
    per_call = c.g["allreduce_us"] * 1e-6 + ring / (c.g["link_gbps"] * 1e9 * LINK_EFFICIENCY)
    calls = 3 if c.m.moe else 2  # after attention and after the MLP; MoE: dispatch + combine
    return calls * layers * per_call


def _decode_read_b(c: _Ctx, batch: float) -> float:
    """Billions of bytes of weights one decode step reads (whole model)."""
    m = c.m
    lm_head = _embed_b(m) * 2
    linear_active = m.active_params_b - 2 * _embed_b(m)
    if not (m.moe and m.experts):
        return linear_active * c.wbytes + lm_head
    k_over_e = m.experts_per_token / m.experts
    routed = (m.params_b - m.active_params_b) / (1 - k_over_e)
    touched = 1 - (1 - k_over_e) ** batch
    return (linear_active - routed * k_over_e + routed * touched) * c.wbytes + lm_head


def _tpot_s(c: _Ctx, tp: int, pp: int, batch: int) -> float:
    m, g = c.m, c.g
    share = _stage_share(m, pp)
    micro = batch / pp  # PP keeps one micro-batch per stage in flight
    ctx = c.in_tokens + c.out_tokens / 2
    weight = _decode_read_b(c, micro) * 1e9 * share / tp
    kv = micro * ctx * c.kv_per_token * share / _kv_shard(m, tp)
    mem_s = (weight + kv) / (g["hbm_gbps"] * 1e9 * HBM_EFFICIENCY)
    comp_s = 2 * m.active_params_b * 1e9 * micro * share / tp / (c.tflops * 1e12 * DECODE_MFU)
    stage_s = max(mem_s, comp_s) + _allreduce_s(c, tp, m.layers * share, micro)
    return pp * stage_s + STEP_OVERHEAD_MS / 1e3 + (pp - 1) * PP_HOP_MS / 1e3


def _ttft_s(c: _Ctx, tp: int, pp: int) -> float:
    m, n = c.m, c.in_tokens
    flops = 2 * m.active_params_b * 1e9 * n + m.layers * m.heads * n * n * (m.head_dim
                                                                             + m.v_head_dim)
    comp_s = flops / (tp * c.tflops * 1e12 * PREFILL_MFU)
    read_s = c.weights_gb * 1e9 / tp / (c.g["hbm_gbps"] * 1e9 * HBM_EFFICIENCY)
    return (max(comp_s, read_s) + _allreduce_s(c, tp, m.layers, n)
            + (pp - 1) * PP_HOP_MS / 1e3 + STEP_OVERHEAD_MS / 1e3)


@dataclass(frozen=True)
class _Eval:
    tp: int
    pp: int
    batch: int
    cap_seqs: int
    tpot_s: float
    tpot1_s: float
    ttft_s: float
    tpot_ok: bool | None
    ttft_ok: bool | None
    slo_limited: bool  # the TPOT target, not KV room, caps the batch


def _evaluate(c: _Ctx, req: PlanRequest, tp: int, pp: int) -> _Eval:
    share = _stage_share(c.m, pp)
    kv_seq = (c.in_tokens + c.out_tokens) * c.kv_per_token * share / _kv_shard(c.m, tp) / 1e9
    budget = c.usable_gb - c.weights_gb * share / tp
    cap = max(1, int(budget / kv_seq))
    room = top = min(MAX_NUM_SEQS, cap)
    tpot1 = _tpot_s(c, tp, pp, 1)
    if req.tpot_ms is not None:
        target = req.tpot_ms / 1e3
        lo, hi = 1, top  # largest batch meeting the target (TPOT grows with batch)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if _tpot_s(c, tp, pp, mid) <= target else (lo, mid - 1)
        top = lo if tpot1 <= target else min(req.concurrency, top)
    best = top / _tpot_s(c, tp, pp, top)
    batch = top
    for b in (1, 2, 4, 8, 16, 32, 64, 128):
        if b < top and b / _tpot_s(c, tp, pp, b) >= THROUGHPUT_KNEE * best:
            batch = b
            break
    tpot = _tpot_s(c, tp, pp, batch)
    ttft = _ttft_s(c, tp, pp)
    return _Eval(tp, pp, batch, cap, tpot, tpot1, ttft,
                 None if req.tpot_ms is None else tpot <= req.tpot_ms / 1e3 + 1e-12,
                 None if req.ttft_ms is None else ttft <= req.ttft_ms / 1e3 + 1e-12,
                 top < room)


def _tp_choices(m: _Model, gpn: int) -> list[int]:
    out, tp = [], 1
    while tp <= gpn:
        heads_ok = m.estimated or m.heads % tp == 0
        kv_ok = m.kv_heads is None or m.mla or m.kv_heads % tp == 0 or tp % m.kv_heads == 0
        if heads_ok and kv_ok:
            out.append(tp)
        tp *= 2
    return out


def _nodes(tp: int, pp: int, dp: int, gpn: int) -> int:
    """Nodes for DP replicas of TP x PP GPUs; a TP group never spans nodes."""
    if tp * pp <= gpn:
        return math.ceil(dp / (gpn // (tp * pp)))  # whole replicas packed per node
    return math.ceil(pp / (gpn // tp)) * dp  # stages of one replica per node, replicas apart


def plan(req: PlanRequest) -> Plan:
    """Size a deployment for `req`; raises PlanError naming the bad field."""
    engine = _choice("--engine", req.engine, ENGINES)
    eng = engines.get(engine)  # every engine-specific answer below comes from its module
    gpu = _lookup_gpu(req.gpu)
    g = _GPUS[gpu]
    m = _resolve_model(req)
    context = _positive_int("--context", req.context)
    gpn = g["gpus_per_node"] if req.gpus_per_node is None else _positive_int(
        "--gpus-per-node", req.gpus_per_node)
    qps = _positive_float("--qps", req.qps)
    for name in ("ttft_ms", "tpot_ms"):
        if getattr(req, name) is not None:
            _positive_float("--" + name.replace("_", "-"), getattr(req, name))
    concurrency = _positive_int("--concurrency", req.concurrency)
    out_tokens = _positive_int("--avg-output-tokens", req.avg_output_tokens)
    if out_tokens >= context:
        raise PlanError("--avg-output-tokens", f"{out_tokens} leaves no room for a prompt in "
                        f"--context {context}", "raise --context or lower --avg-output-tokens")
    in_tokens = context - out_tokens if req.avg_input_tokens is None else _positive_int(
        "--avg-input-tokens", req.avg_input_tokens)
    if in_tokens + out_tokens > context:
        raise PlanError("--avg-input-tokens", f"{in_tokens} + {out_tokens} output tokens exceed "
                        f"--context {context}", "raise --context or lower the averages")
    wdtype = _choice("--weight-dtype", req.weight_dtype or m.dtype, DTYPE_BYTES)
    kvdtype = _choice("--kv-dtype", req.kv_dtype or "bf16", KV_DTYPE_BYTES)
    if req.kv_bytes_per_token is not None:
        kv_per_token = _positive_int("--kv-bytes-per-token", req.kv_bytes_per_token)
    else:
        kv_per_token = _kv_per_token(m, KV_DTYPE_BYTES[kvdtype])
    if g["vendor"] not in eng.PROFILE.vendors:
        vendors = " or ".join(v.upper() for v in eng.PROFILE.vendors)
        others = [e for e in ENGINES if g["vendor"] in engines.get(e).PROFILE.vendors]
        raise PlanError("--engine", f"{eng.PROFILE.label} runs on {vendors} GPUs only, not {gpu}",
                        "use --engine " + " or ".join(others))
    fp8_compute = wdtype == "fp8" and g["fp8_tflops"] is not None
    usable = g["memory_gb"] * USABLE_MEMORY_FRACTION - RUNTIME_RESERVE_GB
    c = _Ctx(m, g, DTYPE_BYTES[wdtype], kv_per_token, _weights_gb(m, DTYPE_BYTES[wdtype]),
             usable, in_tokens, out_tokens, g["fp8_tflops"] if fp8_compute else g["bf16_tflops"])
    warnings: list[str] = []
    notes: list[str] = []

    # Memory decides the smallest layout; SLOs may then raise TP inside the node.
    working = max(float(context), concurrency * float(in_tokens + out_tokens))
    choices = _tp_choices(m, gpn)
    fits = [tp for tp in choices if _per_gpu_gb(c, tp, 1, working) <= usable]
    if fits:
        tp, pp = fits[0], 1
    else:
        tp = choices[-1]
        # Stages that span nodes fill them: engines take whole nodes of GPUs.
        pps = [p for p in range(2, min(MAX_PP, m.layers) + 1)
               if (tp * p <= gpn or tp * p % gpn == 0)
               and _per_gpu_gb(c, tp, p, working) <= usable]
        if not pps:
            raise PlanError("--model", f"{m.name} at {wdtype} with {concurrency} x {context}-token "
                            f"sequences needs more than {MAX_PP} nodes of {gpu}",
                            "use fp8/int4 weights, a larger GPU, or lower --context/--concurrency")
        pp = pps[0]
    ev = _evaluate(c, req, tp, pp)
    memory_tp = tp
    for bigger in (t for t in choices if t > tp) if pp == 1 else ():
        if ev.ttft_ok is not False and ev.tpot_ok is not False:
            break
        trial = _evaluate(c, req, bigger, 1)
        helps = (ev.ttft_ok is False and trial.ttft_s < ev.ttft_s) or (
            ev.tpot_ok is False and trial.tpot1_s < ev.tpot1_s)
        if not helps:
            break  # e.g. all-reduce bound: more TP no longer buys latency
        ev = trial
    if ev.tp != memory_tp:
        notes.append(f"TP raised from {memory_tp} (enough for memory) to {ev.tp} for the "
                     "latency targets")
    tp = ev.tp

    # Capacity: replica time per request = its prefill (pipelined over stages) + decode share.
    prefill_s = ev.ttft_s / pp
    decode_s = out_tokens * ev.tpot_s / ev.batch
    rps = 1 / (prefill_s + decode_s)
    dp = max(1, math.ceil(qps / (rps * TARGET_UTILIZATION) - 1e-9))
    nodes = _nodes(tp, pp, dp, gpn)
    per_node = gpn // (tp * pp) if tp * pp <= gpn else 0
    if nodes > 1 and per_node and nodes * per_node > dp:
        notes.append(f"DP rounded up from {dp} to {nodes * per_node} to fill {nodes} whole "
                     "nodes (spare capacity at no extra node cost)")
        dp = nodes * per_node
    total = tp * pp * dp
    # One spec = one engine deployment; replicas it cannot hold are copies behind a router.
    spec_dp = eng.spec_data_parallel(dp, per_node)
    copies = math.ceil(dp / spec_dp)
    spec_nodes = _nodes(tp, pp, spec_dp, gpn)
    if copies > 1:
        share = (f", up to {gpn // (tp * pp * spec_dp)} per node, each with its own --gpus "
                 "and --port" if tp * pp * spec_dp < gpn else "")
        notes.append(f"{engine}: {copies} identical deployments ({spec_dp} replica(s) each"
                     + (f"{share}); the emitted spec is one of them: run the others beside it"
                        if share else f"): the emitted spec runs them as replicas: {copies} "
                        "behind slurmserve's router"))

    # Prefill/decode disaggregation.
    disagg = (req.ttft_ms is not None and in_tokens >= DISAGG_MIN_INPUT_TOKENS
              and req.ttft_ms <= DISAGG_MAX_TTFT_MS)
    p_inst = max(1, math.ceil(qps * prefill_s / TARGET_UTILIZATION - 1e-9))
    d_inst = max(1, math.ceil(qps * decode_s / TARGET_UTILIZATION - 1e-9))
    share = prefill_s / (prefill_s + decode_s)
    if disagg:
        notes.append(
            f"disaggregate: each {in_tokens:,}-token prefill takes ~{ev.ttft_s * 1e3:.0f} ms, "
            f"{share:.0%} of a replica's time per request. In a fused replica every prefill "
            f"stalls the running decode batch (TPOT spikes) and queued prompts wait behind "
            f"decode steps (TTFT grows past {req.ttft_ms:g} ms); separate prefill "
            f"({p_inst} x TP{tp}) and decode ({d_inst} x TP{tp}) pools, with the KV cache moved "
            "over RDMA, keep both targets independent. The emitted spec runs fused replicas; "
            f"a P/D split needs {eng.PROFILE.disaggregation}")
    elif in_tokens >= DISAGG_MIN_INPUT_TOKENS and share > 0.5:
        notes.append(f"prefill is {share:.0%} of replica time; under a TTFT target of "
                     f"<= {DISAGG_MAX_TTFT_MS:g} ms disaggregation would pay off")

    prefix = in_tokens >= PREFIX_CACHE_MIN_INPUT_TOKENS
    if prefix:
        notes.append(f"prefix cache: {eng.PROFILE.prefix_cache} is on by default; with {in_tokens:,}-token "
                     "prompts shared system prompts, documents and multi-turn history skip prefill"
                     + (f"; route by prefix/session so hits land on the replica holding it "
                        f"({dp} replicas)" if dp > 1 else ""))

    # Engine arguments beyond the spec's tp/pp/dp/ep.
    quantize = wdtype if wdtype != m.dtype and wdtype in ("fp8", "int4") else None
    args, engine_notes = eng.tuning_args(context, ev.batch if req.tpot_ms is not None else None,
                                         quantize, kvdtype == "fp8")
    notes += engine_notes
    ep, ep_args, ep_notes = eng.parallel_advice(tp, dp, gpn, m.moe, m.experts, bool(m.mla))
    args += ep_args
    notes += ep_notes
    if m.moe and tp == 1:
        notes.append("MoE fits one GPU: every replica holds all experts, no EP needed")
    if m.mla and tp > 1:
        notes.append("MLA's latent KV is replicated on every TP rank, so KV room does not grow "
                     f"with TP; DP attention ({eng.PROFILE.mla_dp_attention}) gives each rank "
                     "its own sequences instead")

    # Warnings and the rest of the notes.
    if m.max_context is not None and context > m.max_context:
        ext = _EXTENDED_CONTEXT.get(m.name)
        hint = f"; up to {ext:,} with YaRN rope_scaling" if ext and context <= ext else ""
        warnings.append(f"context {context:,} exceeds {m.name}'s max {m.max_context:,}{hint}")
    if g["interconnect"] == "pcie" and tp > 1:
        warnings.append(f"TP={tp} across PCIe on {gpu}: every layer all-reduces over PCIe "
                        f"(~{_allreduce_s(c, tp, m.layers, ev.batch / pp) * 1e3:.1f} ms per "
                        "decode step); prefer fp8 to lower TP, or PP inside the node")
    if ev.tpot_ok is False:
        fixes = [f for f, ok in (("fp8 weights", wdtype in ("bf16", "fp16")),
                                 ("higher TP", tp < choices[-1]),
                                 ("a faster GPU", True)) if ok]
        warnings.append(f"MISS: TPOT {ev.tpot_s * 1e3:.1f} ms > {req.tpot_ms:g} ms target; "
                        f"consider {' or '.join(fixes)}")
    if ev.ttft_ok is False:
        fixes = ["disaggregated prefill" if not disagg else "a larger prefill pool TP",
                 "prefix caching of shared prompt parts", "shorter prompts"]
        if wdtype in ("bf16", "fp16") and g["fp8_tflops"]:
            fixes.insert(0, "fp8 (2x prefill FLOPs)")
        warnings.append(f"MISS: TTFT {ev.ttft_s * 1e3:.0f} ms > {req.ttft_ms:g} ms target "
                        f"for {in_tokens:,}-token prompts; consider {', '.join(fixes)}")
    if ev.slo_limited and ev.batch < concurrency:
        warnings.append(f"the TPOT target limits the batch to {ev.batch} (< {concurrency}): "
                        "throughput per GPU drops")
    if wdtype == "fp8" and g["fp8_tflops"] is None:
        warnings.append(f"{gpu} has no FP8 tensor cores: fp8 runs weight-only (memory and "
                        "bandwidth savings, bf16 compute)")
    if m.dtype == "fp8" and wdtype in ("bf16", "fp16"):
        warnings.append(f"{m.name} ships FP8 weights; {wdtype} doubles memory and needs a "
                        "converted checkpoint")
    if wdtype == "int4":
        notes.append("int4 needs a pre-quantized AWQ/GPTQ checkpoint as the model")
    if m.estimated:
        notes.append(f"no preset: architecture estimated from {m.params_b:g}B params "
                     f"({m.layers} layers, hidden {m.hidden})"
                     + ("" if req.kv_bytes_per_token else ", KV assumes 8 KV heads of 128"))
    if m.moe and not m.experts:
        notes.append("expert count unknown: decode reads modelled as active params only "
                     "(optimistic at large batch)")
    if pp > 1 and tp * pp > gpn:
        notes.append(f"PP={pp} crosses nodes: stages pass activations over the inter-node "
                     "fabric (InfiniBand/EFA); TP stays inside each node on "
                     f"{g['interconnect']}")
    notes += eng.data_parallel_notes(dp, m.moe)

    kv_gpu = working * kv_per_token * _stage_share(m, pp) / _kv_shard(m, tp) / 1e9
    return Plan(
        request=req, model=m.name, hf_id=m.hf_id, gpu=gpu, engine=engine, weight_dtype=wdtype,
        kv_dtype=kvdtype, moe=m.moe, tp=tp, pp=pp, dp=dp, ep=ep, replicas=dp, nodes=nodes,
        deployments=copies, spec_dp=spec_dp, spec_nodes=spec_nodes,
        gpus_per_node=gpn, total_gpus=total, weights_gb=c.weights_gb,
        kv_bytes_per_token=kv_per_token, kv_gb_per_seq=context * kv_per_token / 1e9,
        per_gpu_gb=c.weights_gb * _stage_share(m, pp) / tp + kv_gpu, usable_gb_per_gpu=usable,
        gpu_memory_gb=float(g["memory_gb"]), concurrency=concurrency, batch=ev.batch,
        kv_capacity_seqs=ev.cap_seqs, tpot_ms=ev.tpot_s * 1e3, tpot_ms_batch1=ev.tpot1_s * 1e3,
        ttft_ms=ev.ttft_s * 1e3, tokens_per_s_replica=ev.batch / ev.tpot_s,
        requests_per_s_replica=rps, ttft_ok=ev.ttft_ok, tpot_ok=ev.tpot_ok,
        disaggregate=disagg, prefill_replicas=p_inst if disagg else 0,
        decode_replicas=d_inst if disagg else 0,
        disagg_gpus=(p_inst + d_inst) * tp * pp if disagg else 0, prefix_cache=prefix,
        engine_args=tuple(args), warnings=tuple(warnings), notes=tuple(notes),
    )
