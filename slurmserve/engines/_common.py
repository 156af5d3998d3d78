"""What the engines share: their data types and the helpers each would otherwise copy."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..errors import SpecError

if TYPE_CHECKING:
    from ..spec import ServeSpec

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
class Resolution:
    """What an engine decides from a spec, once per run; `plan` reads it and scans nothing.

    `port` is the HTTP port the engine serves on unless preflight picks the job's fallback
    (only when `port_explicit` is false: the user chose none).
    """

    parallel: Parallel
    mode: str  # ClusterPlan.mode
    port: int
    port_explicit: bool
    model_name: str  # the name clients use in requests
    native: Mapping[str, str] = field(default_factory=dict)  # unified field -> value after `--`
    switches: frozenset[str] = frozenset()  # native boolean flags given after `--`
    config: Mapping[str, Any] = field(default_factory=dict)  # a parsed user config (TRT-LLM's)


@dataclass(frozen=True)
class NativeFlags:
    """An engine's own spelling of slurmserve's unified fields, as pasted after `--`, and the
    rules its parser applies to what users write (so `scan` reads flags as the engine will)."""

    values: Mapping[str, Sequence[str]]  # unified field -> engine flag aliases taking a value
    switches: Mapping[str, Sequence[str]]  # name -> boolean flag aliases
    owned: Sequence[str]  # flags slurmserve sets per node: refused after `--`
    fold_underscores: bool = False  # vLLM: `--a_b` is `--a-b` (up to the first `.`)
    abbreviations: bool = False  # argparse: an unambiguous prefix of an option means that option
    others: Sequence[str] = ()  # more real options sharing our flags' prefixes (ambiguity)
    config: str | None = None  # an options file the engine merges as flags (`--config FILE`)

    def names(self) -> tuple[str, ...]:
        """Every option string this table knows (all are the engine's real options)."""
        return (*(a for v in self.values.values() for a in v),
                *(a for v in self.switches.values() for a in v), *self.owned, *self.others,
                *((self.config,) if self.config else ()))

    def canonical(self, written: str) -> str | None:
        """The option `written` (before any `=`) means by the engine's own rules, if known."""
        name = written
        if self.fold_underscores and name.startswith("--"):
            head, dot, tail = name[2:].partition(".")
            name = "--" + head.replace("_", "-") + dot + tail
        known = self.names()
        if name in known:
            return name
        if self.abbreviations and name.startswith("-") and len(name) > 2:
            matches = {k for k in known if k.startswith(name)}
            if len(matches) == 1:  # argparse refuses an ambiguous prefix itself
                return matches.pop()
        return None


@dataclass(frozen=True)
class Profile:
    """How `slurmserve plan` (tools/configurator.py) names and describes an engine."""

    label: str  # display name
    vendors: tuple[str, ...]  # GPU vendors it runs on
    served_name: bool  # takes a served model name
    prefix_cache: str  # its prefix-cache mechanism
    router: str  # what fronts copies of a deployment
    disaggregation: str  # how it splits prefill and decode (a P/D KV connector)
    mla_dp_attention: str  # how each rank gets its own sequences for an MLA model


class ApiCheckFailed(Exception):
    """An engine's own API check ran and the server got it wrong."""


#: `call(path, body)` POSTs JSON and returns the JSON answer (anything else fails the check).
Call = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class ApiCheck:
    """A check of an endpoint only this engine serves: `run(call, prompt, tokens)` returns what
    it saw, or raises ApiCheckFailed."""

    name: str
    run: Callable[[Call, str, int], str]


@dataclass(frozen=True)
class ApiTraits:
    """What `slurmserve test` (tools/apicheck.py) expects of an engine's API."""

    owned_by: str  # /v1/models `owned_by`
    metrics_prefix: str
    detect_paths: tuple[str, ...] = ()  # endpoints only this engine answers
    metrics_json: bool = False  # /metrics may be JSON iteration stats
    metrics_hint: str = ""  # appended when /metrics fails
    fixed_length_fields: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({"ignore_eos": True}))  # force max_tokens
    seed_reproducible: bool = False  # a per-request `seed` reproduces a sampled output
    extra_checks: tuple[ApiCheck, ...] = ()


@dataclass(frozen=True)
class LoadMetrics:
    """Where an engine reports its load (`slurmserve status`, metrics.py) and under which names.

    Each field lists Prometheus names, the first one present counts; `paths` are tried in order.
    `from_json` reads a JSON answer instead (running, waiting, kv_cache), for an engine whose
    /metrics may not be Prometheus text.
    """

    running: tuple[str, ...]
    waiting: tuple[str, ...]
    kv_cache: tuple[str, ...]  # a fraction 0..1
    generation_tokens: tuple[str, ...]  # a counter
    gen_throughput: tuple[str, ...] = ()  # the engine's own tokens/s gauge, when it has one
    paths: tuple[str, ...] = ("/metrics",)
    from_json: Callable[[Any], Mapping[str, float | None]] | None = None

    @property
    def names(self) -> frozenset[str]:
        return frozenset((*self.running, *self.waiting, *self.kv_cache, *self.generation_tokens,
                          *self.gen_throughput))


def scan(args: Sequence[str], flags: NativeFlags) -> tuple[dict[str, str], set[str]]:
    """Find native values and switches in engine args, read by the engine's own spelling rules
    (a repeated flag: the last one wins, as in argparse and click); refuse flags slurmserve owns."""
    values: dict[str, str] = {}
    switches: set[str] = set()
    by_alias = {alias: key for key, aliases in flags.values.items() for alias in aliases}
    switch_alias = {alias: key for key, aliases in flags.switches.items() for alias in aliases}
    i = 0
    while i < len(args):
        written, has_eq, inline = args[i].partition("=")
        name = flags.canonical(written) if written.startswith("-") else None
        if name is not None and name in flags.owned:
            raise owned_error(written, name, "after --")
        if name is not None and name == flags.config and (has_eq or written != name):
            raise SpecError(f"{written} (after --)", f"the engine reads its options file only from "
                            f"a separate `{name} FILE` and ignores `{args[i]}` silently",
                            f"write {name} FILE")
        if name in by_alias:
            if has_eq:
                value = inline
            elif i + 1 < len(args):
                value = args[i + 1]
                i += 1
            else:
                raise SpecError(f"{written} (after --)", "is missing its value",
                                f"write {written} VALUE")
            values[by_alias[name]] = value
        elif name in switch_alias and (not has_eq or inline.lower() in ("1", "true", "yes")):
            switches.add(switch_alias[name])
        i += 1
    return values, switches


def owned_error(written: str, name: str, where: str) -> SpecError:
    shown = written if written == name else f"{written} ({name})"
    return SpecError(f"{shown} ({where})", "slurmserve sets this on each node itself",
                     f"remove {written}; give --nodes to spread the engine over nodes")


def config_path(spec: ServeSpec, path: str) -> str:
    """Where slurmserve reads an engine options file: the path, else its source through a mount."""
    if os.path.exists(path):
        return path
    for mount in spec.mounts:
        if path == mount.target or path.startswith(mount.target.rstrip("/") + "/"):
            local = mount.source + path[len(mount.target):]
            if os.path.exists(local):
                return local
    return path


def user_config(spec: ServeSpec, path: str, flag: str) -> Mapping[str, Any]:
    """The parsed YAML mapping of an engine options file the user gave after `--`."""
    local = config_path(spec, path)
    try:
        stat = os.stat(local)
    except OSError as exc:
        raise SpecError(f"{flag} (after --)", f"cannot read {path}: {exc.strerror}",
                        "give a YAML file readable from here (slurmserve reads it to plan the "
                        "layout), or mounted from one with --mount") from None
    return read_config(local, stat.st_mtime_ns, stat.st_size, flag)


@lru_cache(maxsize=8)
def read_config(path: str, mtime_ns: int, size: int, flag: str = "--config") -> Mapping[str, Any]:
    """The parsed file, read once while it stays the same (validate and the run both ask)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise SpecError(f"{flag} (after --)", f"cannot read {path}: {exc.strerror}",
                        "give a YAML file readable from here") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise SpecError(f"{flag} (after --)", f"{path} is not valid YAML", "fix it") from None
    if not isinstance(data, dict):
        raise SpecError(f"{flag} (after --)", f"{path} must hold a mapping", "fix it")
    return frozen(data)


def config_args(config: Mapping[str, Any]) -> list[str]:
    """A vLLM/SGLang options file as the flags the engine makes of it (`key: v` -> `--key v`)."""
    args: list[str] = []
    for key, value in config.items():
        if isinstance(value, bool):
            args += [f"--{key}"] if value else []
        elif isinstance(value, list):
            args += [f"--{key}", *map(str, value)] if value else []
        else:
            args += [f"--{key}", str(value)]
    return args


def with_config(spec: ServeSpec, flags: NativeFlags) -> tuple[list[str], Mapping[str, Any]]:
    """The engine args as the engine parses them: a `--config FILE`'s keys first (the command
    line wins), refusing the keys slurmserve owns as on the command line; and the parsed file."""
    args = list(spec.engine_args)
    if not flags.config or flags.config not in args:
        return args, frozen({})
    if args.count(flags.config) > 1:
        raise SpecError(f"{flags.config} (after --)", "is given twice", "give one options file")
    at = args.index(flags.config)
    if at + 1 >= len(args):
        raise SpecError(f"{flags.config} (after --)", "is missing its value",
                        f"write {flags.config} FILE")
    path = args[at + 1]
    config = user_config(spec, path, flags.config)
    extra = config_args(config)
    for token in extra:
        written = token.partition("=")[0]
        name = flags.canonical(written) if token.startswith("--") else None
        if name is not None and name in flags.owned:
            raise owned_error(written.removeprefix("--"), name, f"in {flags.config} {path}")
    return extra + args, config


#: A user's `--config FILE` travels with the plan: the engine reads the copy slurmserve read.
ENGINE_CONFIG = "engine-config.yaml"


def shipped_config(args: Sequence[str], flags: NativeFlags, config: Mapping[str, Any]
                   ) -> tuple[list[str], tuple[tuple[str, str], ...]]:
    """Engine args whose `--config FILE` names the copy mounted in /slurmserve/, and that file
    (nothing to ship without one); `with_config` checked the flag and read the file."""
    out = list(args)
    if not flags.config or flags.config not in out:
        return out, ()
    import yaml

    at = out.index(flags.config) + 1
    out[at] = f"/slurmserve/{ENGINE_CONFIG}"
    return out, ((ENGINE_CONFIG, yaml.safe_dump(dict(config), sort_keys=False)),)


def refuse_key_flags(spec: ServeSpec, flags: Sequence[str], table: NativeFlags) -> None:
    """A key given to the engine after `--` would sit on every command line: refuse it (in any
    spelling the engine's parser reads as that flag)."""
    for arg in spec.engine_args:
        name = arg.partition("=")[0]
        if name in flags or arg.startswith("-") and table.canonical(name) in flags:
            raise SpecError(f"{name} (after --)", "puts the key on the engine's command line "
                            "(visible in `ps`, rendered scripts and state)",
                            "give slurmserve --api-key env:VAR or file:PATH instead")


def one_mode(spec: ServeSpec, label: str, modes: Sequence[str]) -> None:
    """Engines with a single launch mode refuse any other `--launch-mode`."""
    if spec.launch_mode not in modes:
        raise SpecError("--launch-mode", f"{label} has one launch mode, not '{spec.launch_mode}'",
                        "leave --launch-mode at auto")


_INT_KEYS = ("tp", "pp", "dp", "ep", "port")


def merge(spec: ServeSpec, native: Mapping[str, str], keys: Iterable[str]) -> dict[str, Any]:
    """Unified value, else native value; both given and different is an error (exit 2)."""
    merged: dict[str, Any] = {}
    for key in keys:
        unified = getattr(spec, key)
        raw = native.get(key)
        value: Any = native_int(key, raw) if raw is not None and key in _INT_KEYS else raw
        if unified is not None and value is not None and unified != value:
            raise SpecError(f"--{key.replace('_', '-')}",
                            f"{unified} contradicts {value} given to the engine after --",
                            "give it once, either as a slurmserve flag or after --")
        merged[key] = unified if unified is not None else value
    return merged


def native_int(key: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SpecError(f"{key} (after --)", f"'{raw}' is not a whole number",
                        "give a positive integer") from None
    if value < 1:
        raise SpecError(f"{key} (after --)", f"must be at least 1, got {value}",
                        "give a positive integer")
    return value


def http_port(merged: Mapping[str, Any], default: int) -> tuple[int, bool]:
    """The HTTP port from merged flags (`--port` or the engine's own), else the engine's
    default; and whether the user chose it."""
    chosen = merged.get("port")
    return (int(chosen), True) if chosen is not None else (default, False)


def serving_port(res: Resolution, port: int) -> int:
    """The HTTP port `plan` was given: the resolved one, or preflight's fallback for it."""
    if res.port_explicit and port != res.port:
        raise ValueError(f"the user chose HTTP port {res.port}: it cannot become {port}")
    return port


def model_name(spec: ServeSpec, native: Mapping[str, str]) -> str:
    """The served name: slurmserve's flag, else the engine's own after `--`, else MODEL."""
    return spec.served_model_name or native.get("served_model_name") or spec.model


def frozen(values: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(values))


def fit(spec: ServeSpec, world: int, what: str) -> int:
    """Nodes the engine needs for `world` ranks; must be exactly the nodes asked for."""
    gpn = spec.gpus_per_node
    needed = math.ceil(world / gpn)
    if needed != spec.nodes:
        error = SpecError(
            "--tp/--pp/--dp",
            f"{what} = {world} GPUs needs {needed} node(s) of {gpn} GPUs, but --nodes is "
            f"{spec.nodes}",
            f"use --nodes {needed}, or change the parallel sizes to fill "
            f"{spec.nodes * gpn} GPUs",
        )
        error.needed_nodes = needed  # type: ignore[attr-defined]  # --replicas restates it
        raise error
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


def no_key_files(key: str) -> dict[str, str]:
    """No secret files: the key travels in a variable (NodePlan.secret_env), or is refused."""
    return {}


def no_job_secrets(names: frozenset[str]) -> dict[str, str]:
    """No secrets made per job."""
    return {}


def no_argcheck_data() -> dict[str, Any]:
    """The engine's own parser imports in its image: the check needs nothing recorded."""
    return {}


def ssh_keypair() -> tuple[str, str]:
    """A per-job ed25519 key pair in OpenSSH format (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public + " slurmserve\n"


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
