"""Engine adapters: each answers "what runs on which node with which flags" as plain data.

Every engine module exports the same three things, behind `get(name)`:
- `validate(spec)`: engine rules (parallel sizes, modes, flags slurmserve owns); raises SpecError.
- `resolve(spec) -> Parallel`: the parallel layout, unified flags merged with engine-native ones.
- `plan(spec, allocation) -> ClusterPlan`: per-node roles, container commands and environment.
- `api_key_files(key) -> {name: text}`: the per-job secret files (`NodePlan.secrets`) that carry
  the endpoint's API key in the form the engine reads it (`NodePlan.secret_env` carries it in a
  variable); `validate` refuses `--api-key` when the engine cannot require a key.

For `slurmserve plan` (configurator.py) each also exports the same sizing advice:
- `LABEL` (display name), `VENDORS` (GPU vendors it runs on), `SERVED_NAME` (takes a served model
  name), `PREFIX_CACHE` (its prefix-cache mechanism), `ROUTER` (what fronts copies of a deployment).
- `tuning_args(context, max_batch, quantize, kv_fp8) -> (engine args, notes)`.
- `parallel_advice(tp, dp, gpus_per_node, moe, experts, mla) -> (ep, engine args, notes)`.
- `spec_data_parallel(dp, replicas_per_node) -> int`: DP replicas one deployment holds.
- `data_parallel_notes(dp, moe) -> notes`: how DP runs in this engine.

For `slurmserve bench` (bench.py), the engine's own benchmark client:
- `BENCH_CLIENT` (the command up to its backend), `BENCH_JSONL` (appends JSON lines, `.jsonl`).
- `bench_random_args(input_len, output_len)`: the fixed-length random dataset, without downloads.
- `bench_output_args(name, out, metrics, percentiles, goodput)`: where and what the client saves.
- `bench_unify(raw) -> dict`: the client's result JSON under the unified (vLLM) key names.

For `slurmserve test` (apicheck.py), the engine's API:
- `OWNED_BY` (/v1/models `owned_by`), `DETECT_PATHS` (endpoints only this engine answers),
  `METRICS_PREFIX`, `METRICS_JSON` (/metrics may be JSON stats), `METRICS_HINT`,
  `FIXED_LENGTH_FIELDS` (request fields that force exactly max_tokens), `SEED_REPRODUCIBLE`,
  `NATIVE_GENERATE` (serves SGLang's native /generate).
Nothing outside `engines/` branches on the engine name.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import SpecError
from ..spec import ENGINES, ServeSpec


def get(name: str) -> ModuleType:
    if name not in ENGINES:
        raise SpecError("engine", f"unknown engine '{name}'", "choose one of: " + ", ".join(ENGINES))
    return importlib.import_module(f"{__name__}.{name}")


@dataclass(frozen=True)
class Parallel:
    """Resolved parallel layout. `world` = GPUs (ranks) the engine uses; `nodes` = nodes it spans."""

    tp: int
    pp: int
    dp: int
    ep: int
    world: int
    nodes: int
    expert_parallel: bool = False
    dp_attention: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(tp=self.tp, pp=self.pp, dp=self.dp, ep=self.ep, world=self.world,
                    nodes=self.nodes, expert_parallel=self.expert_parallel,
                    dp_attention=self.dp_attention)


@dataclass(frozen=True)
class NativeFlags:
    """An engine's own spelling of slurmserve's unified fields, as pasted after `--`."""

    values: Mapping[str, Sequence[str]]  # unified field -> engine flag aliases taking a value
    switches: Mapping[str, Sequence[str]]  # name -> boolean flag aliases
    owned: Sequence[str]  # flags slurmserve sets per node: refused after `--`


def scan(args: Sequence[str], flags: NativeFlags) -> tuple[dict[str, str], set[str]]:
    """Find native values and switches in engine args; refuse flags slurmserve owns."""
    values: dict[str, str] = {}
    switches: set[str] = set()
    by_alias = {alias: key for key, aliases in flags.values.items() for alias in aliases}
    switch_alias = {alias: key for key, aliases in flags.switches.items() for alias in aliases}
    i = 0
    while i < len(args):
        arg = args[i]
        name, has_eq, inline = arg.partition("=")
        if name in flags.owned:
            raise SpecError(f"{name} (after --)", "slurmserve sets this on each node itself",
                            f"remove {name}; give --nodes to spread the engine over nodes")
        if name in by_alias:
            if has_eq:
                value = inline
            elif i + 1 < len(args):
                value = args[i + 1]
                i += 1
            else:
                raise SpecError(f"{name} (after --)", "is missing its value", f"write {name} VALUE")
            key = by_alias[name]
            if key in values and values[key] != value:
                raise SpecError(f"{name} (after --)", f"is given twice ({values[key]}, {value})",
                                "give it once")
            values[key] = value
        elif name in switch_alias and (not has_eq or inline.lower() in ("1", "true", "yes")):
            switches.add(switch_alias[name])
        i += 1
    return values, switches


def refuse_key_flags(spec: ServeSpec, flags: Sequence[str]) -> None:
    """A key given to the engine after `--` would sit on every command line: refuse it."""
    for arg in spec.engine_args:
        name = arg.partition("=")[0]
        if name in flags:
            raise SpecError(f"{name} (after --)", "puts the key on the engine's command line "
                            "(visible in `ps`, rendered scripts and state)",
                            "give slurmserve --api-key env:VAR or file:PATH instead")


_INT_KEYS = ("tp", "pp", "dp", "ep", "port")


def merge(spec: ServeSpec, native: Mapping[str, str], keys: Iterable[str]) -> dict[str, Any]:
    """Unified value, else native value; both given and different is an error (exit 2)."""
    merged: dict[str, Any] = {}
    for key in keys:
        unified = getattr(spec, key)
        raw = native.get(key)
        value: Any = _native_int(key, raw) if raw is not None and key in _INT_KEYS else raw
        if unified is not None and value is not None and unified != value:
            raise SpecError(f"--{key.replace('_', '-')}",
                            f"{unified} contradicts {value} given to the engine after --",
                            "give it once, either as a slurmserve flag or after --")
        merged[key] = unified if unified is not None else value
    return merged


def _native_int(key: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SpecError(f"{key} (after --)", f"'{raw}' is not a whole number",
                        "give a positive integer") from None
    if value < 1:
        raise SpecError(f"{key} (after --)", f"must be at least 1, got {value}",
                        "give a positive integer")
    return value


def fit(spec: ServeSpec, world: int, what: str) -> int:
    """Nodes the engine needs for `world` ranks; must be exactly the nodes asked for."""
    gpn = spec.gpus_per_node
    needed = math.ceil(world / gpn)
    if needed != spec.nodes:
        raise SpecError(
            "--tp/--pp/--dp",
            f"{what} = {world} GPUs needs {needed} node(s) of {gpn} GPUs, but --nodes is "
            f"{spec.nodes}",
            f"use --nodes {needed}, or change the parallel sizes to fill "
            f"{spec.nodes * gpn} GPUs",
        )
    if needed > 1 and world % gpn:
        raise SpecError("--tp/--pp/--dp", f"{what} = {world} GPUs does not fill whole nodes of "
                        f"{gpn} GPUs", f"use a multiple of {gpn} across nodes")
    return needed


def default_layout(spec: ServeSpec, tp: int | None, pp: int | None, dp: int | None
                   ) -> tuple[int, int, int]:
    """Fill unset sizes: TP within a node, PP across nodes, DP 1 (README: defaults)."""
    if tp is None and pp is None and dp is None:
        return spec.gpus_per_node, spec.nodes, 1
    pp = pp or 1
    dp = dp or 1
    if tp is None:
        total = spec.nodes * spec.gpus_per_node
        tp = max(1, total // (pp * dp))
    return tp, pp, dp


def bench_save_args(out: Path, metrics: Sequence[str], percentiles: Sequence[int],
                    goodput: Sequence[str]) -> list[str]:
    """vLLM's benchmark_serving flags (TRT-LLM's is a fork): fixed lengths, the unified
    percentiles, goodput SLOs (`ttft:MS`), detailed JSON saved at `out`."""
    argv = ["--ignore-eos", "--percentile-metrics", ",".join(metrics),
            "--metric-percentiles", ",".join(map(str, percentiles))]
    if goodput:
        argv += ["--goodput", *goodput]
    return argv + ["--save-result", "--save-detailed", "--result-dir", str(out.parent),
                   "--result-filename", out.name]


def renamed(raw: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """`raw` with each `old` key also under its `new` name, unless `new` is already there."""
    out = dict(raw)
    for old, new in names.items():
        if old in raw and new not in raw:
            out[new] = raw[old]
    return out
