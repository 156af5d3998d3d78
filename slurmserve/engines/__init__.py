"""Engine adapters: each answers "what runs on which node with which flags" as plain data.

Every engine module (vllm.py, sglang.py, trtllm.py) implements the typed contract `Engine`,
made of one Protocol per facet; `get(name)` returns it. Nothing outside `engines/` branches on
the engine name.

- `Launcher` (the lifecycle): `validate`, then once per run `resolve(spec) -> Resolution`
  (layout, mode, HTTP port, scanned flags, parsed user config); `listen_ports` (ports each rank
  must find free, before any address is known); `plan(spec, alloc, res, port)` with the HTTP
  port preflight chose; `api_key_files` and `job_secrets` (the per-job secret files it needs).
- `Sizing` (tools/configurator.py): `PROFILE` and the sizing advice functions.
- `BenchClient` (tools/bench.py): the engine's own benchmark client.
- `API` (tools/apicheck.py): an `ApiTraits` of what its OpenAI-compatible API does, plus the
  checks of endpoints only it serves.
- `LOAD` (metrics.py, `slurmserve status`): a `LoadMetrics` naming where and under which names
  it reports running and waiting requests, KV cache use and generated tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import SpecError
from ._common import (
    ApiCheck,
    ApiCheckFailed,
    ApiTraits,
    LoadMetrics,
    NativeFlags,
    Parallel,
    Profile,
    Resolution,
)

if TYPE_CHECKING:
    from ..plan import Allocation, ClusterPlan, PortBlock
    from ..spec import ServeSpec

__all__ = ["ENGINES", "ApiCheck", "ApiCheckFailed", "ApiTraits", "BenchClient", "Engine",
           "Launcher", "LoadMetrics", "NativeFlags", "Parallel", "Profile", "Resolution", "Sizing",
           "get", "plan_for", "resolve"]


class Launcher(Protocol):
    """What the lifecycle asks: validate, decide once, then plan with the chosen HTTP port."""

    NAME: str
    DEFAULT_PORT: int
    MODES: tuple[str, ...]

    def validate(self, spec: ServeSpec) -> None:
        """Engine rules (parallel sizes, modes, flags slurmserve owns); raises SpecError."""

    def resolve(self, spec: ServeSpec) -> Resolution:
        """Every decision taken from the spec alone, with all the scanning and file reading."""

    def listen_ports(self, spec: ServeSpec, res: Resolution, block: PortBlock, nodes: int
                     ) -> dict[int, tuple[int, ...]]:
        """Rank -> ports it must find free (the HTTP port `res.port` on the serving rank)."""

    def plan(self, spec: ServeSpec, alloc: Allocation, res: Resolution, port: int) -> ClusterPlan:
        """Per-node roles, commands and environment; pure (no scans, no file I/O)."""

    def api_key_files(self, key: str) -> dict[str, str]:
        """Secret files (name -> text) carrying the endpoint's API key as the engine reads it."""

    def job_secrets(self, names: frozenset[str]) -> dict[str, str]:
        """Texts of the secrets among `names` (those the plan names) the engine makes per job."""

    def argcheck_data(self) -> dict[str, Any]:
        """Extra fields of the argument check's request (node/argcheck.py), e.g. option sets
        recorded per release for a parser that cannot be imported without a GPU."""


class Sizing(Protocol):
    """What `slurmserve plan` asks."""

    NAME: str
    PROFILE: Profile

    def tuning_args(self, context: int, max_batch: int | None, quantize: str | None,
                    kv_fp8: bool) -> tuple[list[str], list[str]]:
        """Engine args and notes for context length, batch cap, weight quantization, KV dtype."""

    def parallel_advice(self, tp: int, dp: int, gpus_per_node: int, moe: bool, experts: int,
                        mla: bool) -> tuple[int, list[str], list[str]]:
        """EP size, engine args and notes for DP replicas of TP GPUs."""

    def spec_data_parallel(self, dp: int, replicas_per_node: int) -> int:
        """DP replicas one deployment holds."""

    def data_parallel_notes(self, dp: int, moe: bool) -> list[str]:
        """Closing notes on how DP runs in this engine."""


class BenchClient(Protocol):
    """What `slurmserve bench` asks: the engine's own benchmark client."""

    BENCH_CLIENT: tuple[str, ...]  # the command up to its backend
    BENCH_JSONL: bool  # appends JSON lines (`.jsonl`) instead of writing one JSON file

    def bench_random_args(self, input_len: int | None, output_len: int | None) -> list[str]:
        """The fixed-length random dataset, without downloads."""

    def bench_output_args(self, name: str, out: Path, metrics: Sequence[str],
                          percentiles: Sequence[int], goodput: Sequence[str]) -> list[str]:
        """Where and what the client saves."""

    def bench_unify(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The client's result JSON under the unified (vLLM) key names."""


class Engine(Launcher, Sizing, BenchClient, Protocol):
    """The whole contract of an engine module."""

    API: ApiTraits
    LOAD: LoadMetrics


def _registry() -> Mapping[str, Engine]:
    from . import sglang, trtllm, vllm

    modules: tuple[Engine, ...] = (vllm, sglang, trtllm)
    return {m.NAME: m for m in modules}


ENGINES = ("vllm", "sglang", "trtllm")
_ENGINES: dict[str, Engine] = {}


def get(name: str) -> Engine:
    """The engine called `name`; an unknown name is a SpecError naming the choices."""
    if not _ENGINES:
        _ENGINES.update(_registry())
    if name not in _ENGINES:
        raise SpecError("engine", f"unknown engine '{name}'", "choose one of: " + ", ".join(ENGINES))
    return _ENGINES[name]


def resolve(spec: ServeSpec) -> Resolution:
    """The spec's engine decisions, once (see Launcher.resolve)."""
    return get(spec.engine).resolve(spec)


def plan_for(spec: ServeSpec, alloc: Allocation, res: Resolution | None = None,
             port: int | None = None) -> ClusterPlan:
    """Resolve (unless given) and plan, on the engine's HTTP port unless another is chosen."""
    res = res or resolve(spec)
    return get(spec.engine).plan(spec, alloc, res, res.port if port is None else port)
