"""The engines' typed contract (engines.Engine), and "decide once": resolve, then plan.

A module satisfies a Protocol structurally: every attribute the Protocol annotates exists with
that type, and every method exists with the same parameter names.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import typing
from pathlib import Path

import pytest

import slurmserve
from slurmserve import engines, load_spec
from slurmserve.engines import ENGINES, Engine
from slurmserve.engines import _common as common
from slurmserve.plan import PortBlock
from tests.unit.helpers import allocation

IMG = "registry.example/engine:1"
PACKAGE = Path(slurmserve.__file__).parent


def _members(protocol: type) -> tuple[dict[str, type], dict[str, inspect.Signature]]:
    hints = typing.get_type_hints(protocol, vars(engines))
    methods = {name: inspect.signature(value) for klass in protocol.__mro__
               if klass.__module__ == engines.__name__
               for name, value in vars(klass).items()
               if inspect.isfunction(value) and not name.startswith("_")}
    return hints, methods


@pytest.mark.parametrize("name", ENGINES)
def test_every_engine_implements_the_contract(name: str) -> None:
    module = engines.get(name)
    hints, methods = _members(Engine)
    assert set(hints) >= {"NAME", "DEFAULT_PORT", "MODES", "PROFILE", "API", "BENCH_CLIENT"}
    for attr, kind in hints.items():
        assert isinstance(getattr(module, attr), typing.get_origin(kind) or kind), attr
    for method, signature in methods.items():
        own = inspect.signature(getattr(module, method))
        assert list(own.parameters) == list(signature.parameters)[1:], f"{name}.{method}"


def test_the_registry_is_the_engine_list() -> None:
    assert [engines.get(name).NAME for name in ENGINES] == list(ENGINES)
    with pytest.raises(slurmserve.SpecError, match="unknown engine"):
        engines.get("tgi")


@pytest.mark.parametrize("name", ENGINES)
def test_sizing_and_bench_answers_have_their_shapes(name: str) -> None:
    module = engines.get(name)
    args, notes = module.tuning_args(4096, 32, None, False)
    assert str(4096) in args and str(32) in args and isinstance(notes, list)
    ep, _, _ = module.parallel_advice(1, 1, 8, False, 0, False)
    assert ep == 1
    assert 1 <= module.spec_data_parallel(4, 2) <= 4
    dataset = module.bench_random_args(64, 16)
    assert dataset[0] == "--dataset-name" and "64" in dataset and "16" in dataset
    raw = {"completed": 1, "ttfts": [0.1], "latencies": [0.2]}
    assert module.bench_unify(dict(raw)) == raw  # the unified names pass through
    assert module.API.metrics_prefix and dict(module.API.fixed_length_fields)
    assert module.PROFILE.disaggregation and module.PROFILE.mla_dp_attention


def test_engines_import_spec_only_for_type_checking() -> None:
    """spec -> engines is a one-way, top-level import: no engine module imports spec back."""
    for path in sorted((PACKAGE / "engines").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only; `if TYPE_CHECKING:` blocks are ast.If
            if isinstance(node, ast.ImportFrom):
                assert node.module not in ("spec", "slurmserve.spec"), path.name
    spec_tree = ast.parse((PACKAGE / "spec.py").read_text(encoding="utf-8"))
    top = [n for n in spec_tree.body if isinstance(n, ast.ImportFrom) and n.level == 1]
    assert any("engines" in [a.name for a in n.names] for n in top)


def _spec(engine: str, **kw):
    kw.setdefault("gpus_per_node", 8)
    return load_spec(engine=engine, model="org/model", image=IMG, **kw)


CASES = [
    ("vllm", dict(nodes=2, tp=8, pp=2)),
    ("vllm", dict(nodes=2, tp=4, dp=4)),
    ("vllm", dict(nodes=2, tp=16, launch_mode="mp")),
    ("vllm", dict()),
    ("sglang", dict(nodes=2, tp=16)),
    ("trtllm", dict(nodes=2, tp=16)),
    ("trtllm", dict(tp=8)),
]


@pytest.mark.parametrize("engine,kw", CASES)
def test_listen_ports_are_the_plans_ports_without_addresses(engine: str, kw: dict) -> None:
    spec = _spec(engine, **kw)
    res = engines.resolve(spec)
    alloc = allocation(spec.nodes)
    ports = engines.get(engine).listen_ports(spec, res, alloc.ports, spec.nodes)
    plan = engines.plan_for(spec, alloc, res)
    assert ports == {n.rank: n.ports for n in plan.nodes}
    assert res.port in ports[0] and plan.port == res.port


@pytest.mark.parametrize("engine,kw", CASES)
def test_plan_takes_the_chosen_port_and_the_spec_stays(engine: str, kw: dict) -> None:
    spec = _spec(engine, **kw)
    res = engines.resolve(spec)
    assert not res.port_explicit and res.port == engines.get(engine).DEFAULT_PORT
    fallback = PortBlock.for_job("4242").http_fallback
    plan = engines.plan_for(spec, allocation(spec.nodes), res, fallback)
    assert plan.port == fallback and plan.nodes[0].ports[0] == fallback
    assert plan.endpoint.endswith(f":{fallback}")
    assert spec.port is None  # nothing rewrites the validated spec


def test_a_port_given_after_dashes_is_explicit() -> None:
    res = engines.resolve(_spec("vllm", engine_args=["--port=9000"]))
    assert (res.port, res.port_explicit) == (9000, True)
    assert engines.resolve(_spec("sglang", port=31000)).port_explicit


@pytest.mark.parametrize("engine,kw", CASES)
def test_plan_scans_nothing_and_resolve_scans_once(engine: str, kw: dict, monkeypatch) -> None:
    spec = _spec(engine, **kw)
    module = engines.get(engine)
    calls = []

    def counting(args, flags):
        calls.append(1)
        return common.scan(args, flags)

    monkeypatch.setattr(module, "scan", counting)
    res = module.resolve(spec)
    assert len(calls) == 1
    module.plan(spec, allocation(spec.nodes), res, res.port)
    assert len(calls) == 1


def test_trtllm_user_config_is_read_once_per_run(tmp_path, monkeypatch) -> None:
    from slurmserve.engines import trtllm

    user = tmp_path / "cfg.yaml"
    user.write_text("enable_attention_dp: true\n")
    trtllm._read_config.cache_clear()
    opened = []
    real_open = builtins.open

    def counting_open(file, *args, **kw):
        if str(file) == str(user):
            opened.append(file)
        return real_open(file, *args, **kw)

    monkeypatch.setattr(builtins, "open", counting_open)
    spec = _spec("trtllm", tp=8, engine_args=["--config", str(user)])  # validate resolves
    res = engines.resolve(spec)  # the run resolves
    plan = engines.plan_for(spec, allocation(1), res)
    assert len(opened) == 1
    assert res.config["enable_attention_dp"] is True and plan.parallel["dp"] == 8
    user.write_text("enable_attention_dp: false\n")  # a changed file is read again
    assert engines.resolve(spec).parallel.dp == 1 and len(opened) == 2


def test_plan_reads_no_file(tmp_path, monkeypatch) -> None:
    user = tmp_path / "cfg.yaml"
    user.write_text("kv_cache_config:\n  free_gpu_memory_fraction: 0.9\n")
    spec = _spec("trtllm", nodes=2, tp=16, engine_args=["--config", str(user)])
    res = engines.resolve(spec)

    def no_open(*args, **kw):
        raise AssertionError("plan opened a file")

    monkeypatch.setattr(builtins, "open", no_open)
    plan = engines.get("trtllm").plan(spec, allocation(2), res, res.port)
    assert "free_gpu_memory_fraction: 0.9" in dict(plan.nodes[0].files)["trtllm-config.yaml"]


def test_only_trtllm_makes_job_secrets() -> None:
    names = frozenset({"ssh_key", "ssh_key.pub", "api_key"})
    assert engines.get("vllm").job_secrets(names) == {}
    assert engines.get("sglang").job_secrets(names) == {}
    made = engines.get("trtllm").job_secrets(names)
    assert set(made) == {"ssh_key", "ssh_key.pub"}
    assert made["ssh_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert made["ssh_key.pub"].startswith("ssh-ed25519 ")
    assert engines.get("trtllm").job_secrets(frozenset({"api_key"})) == {}


def test_port_block_names_only_generic_ports() -> None:
    block = PortBlock.for_job("7")
    assert (block.rendezvous, block.ssh, block.http_fallback) == (block.base, block.base + 2,
                                                                 block.base + 11)
    assert block.at(99) == block.base + 99
    with pytest.raises(ValueError):
        block.at(PortBlock.SIZE)
    assert not [n for n in vars(PortBlock) if n.startswith("ray")]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_port_the_user_chose_is_never_replaced(engine: str) -> None:
    spec = _spec(engine, port=9000)
    res = engines.resolve(spec)
    with pytest.raises(ValueError, match="chose HTTP port 9000"):
        engines.plan_for(spec, allocation(1), res, 20011)
    assert engines.plan_for(spec, allocation(1), res, 9000).port == 9000
