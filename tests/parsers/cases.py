"""What the parser tier checks: each rank's engine argv from every golden plan and from a matrix
of layouts rendered by slurmserve, plus known-bad argvs each parser must reject.

A plan names its argvs per rank in `nodes[i].argv_checks` ([{"parser", "argv"}]); where that is
missing or empty (older goldens) they are read from `nodes[i].command` and the argv lists and
scripts in `nodes[i].files`, the same words the node runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slurmserve import api, load_spec
from slurmserve.plan import Allocation, NodeInfo

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "unit" / "golden"
IMAGE = "registry.example/engine:1.0"
KEY_VAR = "SLURMSERVE_PARSERS_TEST_KEY"
PARSERS = ("vllm", "sglang", "trtllm", "ray")


@dataclass(frozen=True)
class PlanFile:
    """A file the node finds under /slurmserve/ (plain text in the plan, or a secret's text)."""

    name: str
    text: str


@dataclass(frozen=True)
class Check:
    """One argv for one engine parser, and whether that parser must accept it."""

    id: str  # e.g. golden/vllm-2node-mp-tp16/r1
    parser: str
    argv: tuple[str, ...]
    accept: bool = True
    files: tuple[PlanFile, ...] = ()  # what /slurmserve/... words in argv point at
    why: str = ""  # for a known-bad argv: what the parser must object to


@dataclass(frozen=True)
class Layout:
    id: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    ipv6: bool = False  # nodes with IPv6 addresses


def allocation(nodes: int, ipv6: bool = False) -> Allocation:
    """Documentation addresses (RFC 5737, RFC 3849): plain data, never contacted."""
    return Allocation(job_id="4242", nodes=tuple(
        NodeInfo(name=f"gpu-{i + 1}", address=f"2001:db8::{i + 1}" if ipv6 else f"192.0.2.{i + 1}",
                 ifname="ens5")
        for i in range(nodes)))


# ---------------------------------------------------------------- argv out of a plan

_PREFIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("vllm", "serve"), "vllm"),
    (("python3", "-m", "sglang.launch_server"), "sglang"),
    (("python", "-m", "sglang.launch_server"), "sglang"),
    (("ray", "start"), "ray"),
    (("trtllm-serve", "serve"), "trtllm"),
    (("trtllm-serve",), "trtllm"),
)


def engine_argv(words: Sequence[str]) -> tuple[str, list[str]] | None:
    """(parser, argv after the engine's command) for a command line that starts an engine, also
    behind launchers such as `mpirun ... trtllm-llmapi-launch trtllm-serve ...`."""
    for start in range(len(words)):
        for prefix, parser in _PREFIXES:
            if tuple(words[start:start + len(prefix)]) == prefix:
                return parser, list(words[start + len(prefix):])
    return None


def _script_argvs(text: str) -> Iterator[tuple[str, list[str]]]:
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        found = engine_argv(words)
        if found:
            yield found


def node_argvs(node: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """Every engine argv one node of a plan runs, in the order it runs them."""
    if node.get("argv_checks"):  # an empty list is checked by test_plan_names_every_command_it_runs
        return [(c["parser"], list(c["argv"])) for c in node["argv_checks"]]
    found: list[tuple[str, list[str]]] = []
    for _, spec in sorted(node.get("files", {}).items()):
        if isinstance(spec, str):
            found += _script_argvs(spec)
        elif isinstance(spec, Mapping):
            for value in spec.get("context", {}).values():
                if isinstance(value, list) and value and all(isinstance(w, str) for w in value):
                    hit = engine_argv(value)
                    if hit:
                        found.append(hit)
    hit = engine_argv(node["command"])
    if hit:
        found.append(hit)
    return found


def _plan_files(plan: Mapping[str, Any], node: Mapping[str, Any]) -> tuple[PlanFile, ...]:
    """Plain-text files of the node and the secrets it names, with test contents for secrets."""
    from slurmserve import engines

    files = [PlanFile(name, text) for name, text in node.get("files", {}).items()
             if isinstance(text, str)]
    names = frozenset(node.get("secrets", ()))
    if names:
        adapter = engines.get(plan["engine"])
        texts = {**adapter.job_secrets(names), **adapter.api_key_files(os.environ.get(
            KEY_VAR, "parsers-test-key"))}
        files += [PlanFile(f"secrets/{name}", texts[name]) for name in sorted(names) if name in texts]
    return tuple(files)


def plan_checks(prefix: str, plan: Mapping[str, Any]) -> list[Check]:
    checks = []
    for node in plan["nodes"]:
        files = _plan_files(plan, node)
        for i, (parser, argv) in enumerate(node_argvs(node)):
            suffix = f"/{i}" if i else ""
            checks.append(Check(f"{prefix}/r{node['rank']}{suffix}", parser, tuple(argv), files=files))
    return checks


def golden_checks() -> list[Check]:
    checks = []
    for path in sorted(GOLDEN.glob("*.plan.json")):
        checks += plan_checks(f"golden/{path.name.removesuffix('.plan.json')}",
                              json.loads(path.read_text()))
    return checks


# ---------------------------------------------------------------- the matrix

def _vllm_layouts() -> list[Layout]:
    rows: list[tuple[str, dict[str, Any]]] = [
        ("single-tp8", dict(nodes=1, tp=8)),
        ("single-tp4-pp2", dict(nodes=1, tp=4, pp=2)),
        ("single-tp2-dp4", dict(nodes=1, tp=2, dp=4)),
        ("single-tp8-ep8", dict(nodes=1, tp=8, ep=8)),
        ("single-tp1-dp8-ep8", dict(nodes=1, tp=1, dp=8, ep=8)),
        ("ray-tp16", dict(nodes=2, tp=16, launch_mode="ray")),
        ("ray-tp8-pp2", dict(nodes=2, tp=8, pp=2, launch_mode="ray")),
        ("ray-tp8-dp2", dict(nodes=2, tp=8, dp=2, launch_mode="ray")),
        ("ray-tp8-pp3", dict(nodes=3, tp=8, pp=3, launch_mode="ray")),
        ("ray-tp8-pp4", dict(nodes=4, tp=8, pp=4, launch_mode="ray")),
        ("ray-tp16-dp2-ep32", dict(nodes=4, tp=16, dp=2, ep=32, launch_mode="ray")),
        ("mp-tp16", dict(nodes=2, tp=16, launch_mode="mp")),
        ("mp-tp8-pp2", dict(nodes=2, tp=8, pp=2, launch_mode="mp")),
        ("mp-tp8-pp3", dict(nodes=3, tp=8, pp=3, launch_mode="mp")),
        ("mp-tp16-pp2", dict(nodes=4, tp=16, pp=2, launch_mode="mp")),
        ("mp-tp32-ep32", dict(nodes=4, tp=32, ep=32, launch_mode="mp")),
        ("dp-tp8-dp2", dict(nodes=2, tp=8, dp=2, launch_mode="dp")),
        ("dp-tp4-dp4", dict(nodes=2, tp=4, dp=4, launch_mode="dp")),
        ("dp-tp2-dp12", dict(nodes=3, tp=2, dp=12, launch_mode="dp")),
        ("dp-tp4-pp2-dp4", dict(nodes=4, tp=4, pp=2, dp=4, launch_mode="dp")),
        ("dp-tp1-dp16-ep16", dict(nodes=2, tp=1, dp=16, ep=16, launch_mode="dp")),
        ("dp-tp8-dp4-ep32", dict(nodes=4, tp=8, dp=4, ep=32, launch_mode="dp")),
        ("auto-tp8-dp2", dict(nodes=2, tp=8, dp=2)),
        ("auto-tp16", dict(nodes=2, tp=16)),
    ]
    return [Layout(f"vllm-{name}", dict(engine="vllm", **fields)) for name, fields in rows]


def _sglang_layouts() -> list[Layout]:
    attn = ["--enable-dp-attention"]
    rows: list[tuple[str, dict[str, Any]]] = [
        ("tp8", dict(nodes=1, tp=8)),
        ("tp8-ep8", dict(nodes=1, tp=8, ep=8)),
        ("tp8-dp8-attn", dict(nodes=1, tp=8, dp=8, engine_args=attn)),
        ("tp2-dp4", dict(nodes=1, tp=2, dp=4)),
        ("tp4-pp2", dict(nodes=1, tp=4, pp=2)),
        ("tp16", dict(nodes=2, tp=16)),
        ("tp16-ep16", dict(nodes=2, tp=16, ep=16)),
        ("tp16-ep4", dict(nodes=2, tp=16, ep=4)),
        ("tp16-dp2-attn", dict(nodes=2, tp=16, dp=2, engine_args=attn)),
        ("tp16-dp16-attn-ep16", dict(nodes=2, tp=16, dp=16, ep=16, engine_args=attn)),
        ("tp8-pp2", dict(nodes=2, tp=8, pp=2)),
        ("tp8-pp3", dict(nodes=3, tp=8, pp=3)),
        ("tp32", dict(nodes=4, tp=32)),
        ("tp8-pp4", dict(nodes=4, tp=8, pp=4)),
        ("tp32-dp4-attn", dict(nodes=4, tp=32, dp=4, engine_args=attn)),
        # --attn-dp-size: what SGLang has instead of --enable-dp-attention (deprecated)
        ("tp16-attn-dp16", dict(nodes=2, tp=16, engine_args=["--attn-dp-size", "16"])),
        ("tp16-dp16-attn-dp16", dict(nodes=2, tp=16, dp=16, engine_args=["--attn-dp-size", "16"])),
        ("tp8-attn-dp8", dict(nodes=1, tp=8, engine_args=["--attn-dp-size", "8"])),
    ]
    return [Layout(f"sglang-{name}", dict(engine="sglang", **fields)) for name, fields in rows]


def _trtllm_layouts() -> list[Layout]:
    rows: list[tuple[str, dict[str, Any]]] = [
        ("tp8", dict(nodes=1, tp=8)),
        ("tp4-pp2", dict(nodes=1, tp=4, pp=2)),
        ("tp8-ep8", dict(nodes=1, tp=8, ep=8)),
        ("tp8-dp8", dict(nodes=1, tp=8, dp=8)),
        ("tp16", dict(nodes=2, tp=16)),
        ("tp8-pp2", dict(nodes=2, tp=8, pp=2)),
        ("tp16-ep4", dict(nodes=2, tp=16, ep=4)),
        ("args-tp8", dict(nodes=1, engine_args=["--tp_size", "8", "--max_seq_len", "4096",
                                                 "--backend", "pytorch", "--trust_remote_code"])),
        ("args-tp8-pp2-ep4", dict(nodes=2, engine_args=["--tp_size", "8", "--pp_size", "2",
                                                         "--ep_size", "4"])),
    ]
    return [Layout(f"trtllm-{name}", dict(engine="trtllm", **fields)) for name, fields in rows]


def layouts() -> list[Layout]:
    """Every layout on 1-4 nodes of 8 GPUs, each also with --api-key env:VAR where the engine
    takes a key (vLLM, SGLang) and --served-model-name for one layout of each."""
    out: list[Layout] = []
    for layout in _vllm_layouts() + _sglang_layouts() + _trtllm_layouts():
        out.append(layout)
        if layout.fields["engine"] != "trtllm":
            out.append(Layout(f"{layout.id}-apikey", {**layout.fields, "api_key": f"env:{KEY_VAR}"}))
    out += [Layout(f"{e}-tp8-served-name", dict(engine=e, nodes=1, tp=8, served_model_name="tiny-chat"))
            for e in ("vllm", "sglang")]
    ipv6 = ("vllm-ray-tp8-pp2", "vllm-mp-tp16", "vllm-dp-tp8-dp2", "sglang-tp16", "sglang-tp16-dp2-attn",
            "trtllm-tp16")
    out += [Layout(f"{la.id}-ipv6", la.fields, ipv6=True) for la in list(out) if la.id in ipv6]
    return out


@contextlib.contextmanager
def _test_key() -> Iterator[None]:
    old = os.environ.get(KEY_VAR)
    os.environ[KEY_VAR] = old or "parsers-test-key-0123456789"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(KEY_VAR, None)


def render(layout: Layout, model: str = "/models/tiny") -> dict[str, Any]:
    """The plan slurmserve makes for a layout (what `render --json` prints as plan)."""
    with _test_key():
        spec = load_spec(model=model, image=IMAGE, gpus_per_node=8, log_dir="/shared/logs",
                         **layout.fields)
        plan = api.plan_cluster(spec, allocation(spec.nodes, layout.ipv6))
        return json.loads(json.dumps(plan.to_dict()))


def matrix_checks() -> tuple[list[Check], dict[str, str]]:
    """Checks of every layout that renders, and the render errors of those that do not."""
    checks: list[Check] = []
    errors: dict[str, str] = {}
    for layout in layouts():
        try:
            plan = render(layout)
        except Exception as exc:  # a layout slurmserve refuses is reported by its own test
            errors[layout.id] = f"{type(exc).__name__}: {exc}"
            continue
        with _test_key():
            checks += plan_checks(f"matrix/{layout.id}", plan)
    return checks, errors


# ---------------------------------------------------------------- known-bad argvs

def bad_checks() -> list[Check]:
    """Argvs each real parser must reject: without them a parser that accepts anything passes."""
    bad = [
        ("vllm", ["/models/tiny", "--tensor-parallel-sise", "8"], "unknown flag (typo)"),
        ("vllm", ["/models/tiny", "--tp_size", "8"], "TRT-LLM spelling"),
        ("vllm", ["/models/tiny", "--tensor-parallel-size", "eight"], "not an int"),
        ("vllm", ["/models/tiny", "--nnodes", "2", "--node-rank", "1", "--bogus-headless"],
         "unknown flag"),
        ("sglang", ["--model-path", "/models/tiny", "--tp-sise", "8"], "unknown flag (typo)"),
        ("sglang", ["--model-path", "/models/tiny", "--tp", "eight"], "not an int"),
        ("sglang", ["--model-path", "/models/tiny", "--tp_size", "8"], "no '_' folding in SGLang"),
        ("sglang", ["--model-path", "/models/tiny", "--nnodes", "2", "--node-rank", "1", "--headless"],
         "vLLM's --headless"),
        ("sglang", ["--model-path", "/models/tiny", "--nnodes", "2", "--node-rank", "1",
                    "--dist-init-addr", "192.0.2.1"], "address without a port"),
        ("trtllm", ["/models/tiny", "--tensor-parallel-size", "8"], "vLLM spelling"),
        ("trtllm", ["/models/tiny", "--tp_size", "eight"], "not an int"),
        ("trtllm", ["/models/tiny", "--tp-size", "8"], "click does not fold '-' into '_'"),
        ("ray", ["--head", "--port", "not-a-port"], "not an int"),
        ("ray", ["--head", "--num-gpu", "8"], "unknown option (typo)"),
        ("ray", ["--adress", "192.0.2.1:6379"], "unknown option (typo)"),
    ]
    return [Check(f"bad/{parser}/{i}", parser, tuple(argv), accept=False, why=why)
            for i, (parser, argv, why) in enumerate(bad)]


def bad_layout_checks() -> list[Check]:
    """SGLang argvs that parse but that SGLang's own resolution refuses when it starts."""
    addr = ["--nnodes", "2", "--node-rank", "0", "--dist-init-addr", "192.0.2.1:24200"]
    bad = [
        (["--tp-size", "16", "--dp-size", "16", "--attn-dp-size", "16", *addr],
         "DP replicas combined with attention DP"),
        (["--tp-size", "16", "--dp-size", "2", *addr], "multi-node DP without attention DP"),
        (["--tp-size", "16", "--nnodes", "3", "--node-rank", "0", "--dist-init-addr", "192.0.2.1:24200"],
         "TP not divisible by the node count"),
    ]
    return [Check(f"bad/sglang-resolve/{i}", "sglang", ("--model-path", "/models/tiny", *argv),
                  accept=False, why=why) for i, (argv, why) in enumerate(bad)]
