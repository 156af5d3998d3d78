"""Engine command lines the real engines accept (issue 13): each test here failed before the fix.

TRT-LLM's option sets per version are recorded data (tests/unit/engines/data/, sources named
inside): its wheel does not install without a GPU. The vLLM, SGLang and Ray rules tested here
are those their own parsers showed (vLLM 0.32.0, SGLang 0.5.23, Ray 2.60).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from slurmserve import SpecError, api, engines, load_spec
from slurmserve.engines import sglang, trtllm, vllm
from slurmserve.engines._common import scan
from slurmserve.node import ray_wait
from slurmserve.plan import Allocation, ArgvCheck, NodeInfo, host_port
from tests.unit.helpers import allocation

IMG = "registry.example/engine:1"
DATA = Path(__file__).resolve().parent / "data"


def spec(engine: str, nodes: int = 1, **kw):
    kw.setdefault("gpus_per_node", 8)
    return load_spec(engine=engine, model="org/model", image=IMG, nodes=nodes, **kw)


def plan(engine: str, nodes: int = 1, alloc: Allocation | None = None, **kw):
    return api.plan_cluster(spec(engine, nodes, **kw), alloc or allocation(nodes))


def checks(p, parser: str) -> list[tuple[str, ...]]:
    return [c.argv for n in p.nodes for c in n.argv_checks if c.parser == parser]


def as_vllm_parses(argv: tuple[str, ...]) -> dict[str, str]:
    """The parallel values vLLM takes from a `vllm serve` argv (its spelling rules, last wins)."""
    native, _ = scan(argv[1:], vllm.FLAGS)
    return native


# --- 1. TRT-LLM 1.1.0 and 1.2.0 ------------------------------------------------------------

def _trt_options(version: str) -> set[str]:
    data = json.loads((DATA / f"trtllm-options-{version}.json").read_text())
    names = set(data["options"])
    for option in data["options"].values():
        aliases = option.get("aliases")
        if isinstance(aliases, list):
            names.update(aliases)
    return names


TRT_CASES = [
    dict(nodes=1, engine_args=["--tp_size", "8"]),
    dict(nodes=2, engine_args=["--tp_size", "16", "--ep_size", "4"]),
    dict(nodes=2, tp=8, pp=2),
    dict(nodes=2, engine_args=["--tensor_parallel_size", "16", "--moe_expert_parallel_size", "4"]),
    dict(nodes=1, engine_args=["--pipeline_parallel_size", "2", "--tp_size", "4",
                               "--max_batch_size", "64"]),
]


@pytest.mark.parametrize("version", ["1.1.0", "1.2.0"])
@pytest.mark.parametrize("kw", TRT_CASES)
def test_trtllm_argv_uses_only_options_both_versions_have(version: str, kw: dict) -> None:
    known = _trt_options(version)
    p = plan("trtllm", **kw)
    for argv in checks(p, "trtllm"):
        assert argv[0] == "org/model"
        flags = [a.partition("=")[0] for a in argv[1:] if a.startswith("--")]
        assert set(flags) <= known, set(flags) - known
        assert "--config" not in argv and "--extra_llm_api_options" in argv


@pytest.mark.parametrize("flag", ["--config", "--extra_llm_api_options"])
def test_trtllm_takes_either_config_flag_and_either_spelling(flag: str, tmp_path) -> None:
    user = tmp_path / "llm.yaml"
    user.write_text("tensor_parallel_size: 8\nkv_cache_config:\n  free_gpu_memory_fraction: 0.8\n")
    p = plan("trtllm", engine_args=[flag, str(user), "--ep_size", "2"])
    assert p.parallel["tp"] == 8 and p.parallel["ep"] == 2
    merged = dict(p.nodes[0].files)["trtllm-config.yaml"]
    assert "free_gpu_memory_fraction: 0.8" in merged and "moe_expert_parallel_size: 2" in merged
    assert "--ep_size" not in checks(p, "trtllm")[0]  # carried by the YAML both versions read


def test_trtllm_yaml_layout_counts_and_contradictions_refuse(tmp_path) -> None:
    user = tmp_path / "llm.yaml"
    user.write_text("tensor_parallel_size: 16\n")
    assert plan("trtllm", 2, engine_args=["--config", str(user)]).world_size == 16
    with pytest.raises(SpecError, match="contradicts"):
        spec("trtllm", 2, engine_args=["--config", str(user), "--tensor_parallel_size", "8"])
    user.write_text("context_parallel_size: 2\n")
    with pytest.raises(SpecError, match="context"):
        spec("trtllm", engine_args=["--config", str(user)])
    with pytest.raises(SpecError, match="--gpus-per-node"):
        spec("trtllm", engine_args=["--gpus_per_node", "4"])


# --- 2. vLLM Ray mode with DP ----------------------------------------------------------------

def test_vllm_ray_dp_gives_the_local_dp_size_when_a_replica_fits_a_node() -> None:
    p = plan("vllm", 2, tp=8, dp=2, launch_mode="ray")
    serve = checks(p, "vllm")[0]
    assert serve[serve.index("--data-parallel-size-local") + 1] == "1"
    assert "VLLM_RAY_DP_PACK_STRATEGY" not in dict(p.nodes[0].env)
    p = plan("vllm", 2, tp=4, dp=4, launch_mode="ray")
    serve = checks(p, "vllm")[0]
    assert serve[serve.index("--data-parallel-size-local") + 1] == "2"


def test_vllm_ray_dp_spans_nodes_when_a_replica_is_larger_than_a_node() -> None:
    p = plan("vllm", 4, tp=8, pp=2, dp=2, launch_mode="ray")
    assert "--data-parallel-size-local" not in checks(p, "vllm")[0]
    assert dict(p.nodes[0].env)["VLLM_RAY_DP_PACK_STRATEGY"] == "span"


def test_vllm_ray_dp_local_size_after_dashes_merges() -> None:
    p = plan("vllm", 2, tp=8, dp=2, launch_mode="ray", engine_args=["-dpl", "1"])
    serve = checks(p, "vllm")[0]
    assert "--data-parallel-size-local" not in serve and serve.count("-dpl") == 1
    with pytest.raises(SpecError, match="data-parallel-size-local"):
        spec("vllm", 2, tp=8, dp=2, launch_mode="ray", engine_args=["--data-parallel-size-local", "2"])
    with pytest.raises(SpecError, match="data-parallel-size-local"):
        spec("vllm", 2, tp=16, launch_mode="mp", engine_args=["-dpl", "1"])


# --- 3. the Ray client-server port -------------------------------------------------------------

def _fake_ray(monkeypatch, **utils_attrs) -> None:
    ray = types.ModuleType("ray")
    private = types.ModuleType("ray._private")
    utils = types.ModuleType("ray._private.utils")
    for name, value in utils_attrs.items():
        setattr(utils, name, value)
    ray._private, private.utils = private, utils  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setitem(sys.modules, "ray._private", private)
    monkeypatch.setitem(sys.modules, "ray._private.utils", utils)


def test_has_client_asks_ray_260s_own_probe(monkeypatch) -> None:
    _fake_ray(monkeypatch, get_ray_client_dependency_error=lambda: None)
    assert ray_wait.has_client() is True
    _fake_ray(monkeypatch, get_ray_client_dependency_error=lambda: "Ray Client requires pip "
              "package `ray[client]`")
    assert ray_wait.has_client() is False


def test_has_client_falls_back_to_grpc(monkeypatch) -> None:
    _fake_ray(monkeypatch)  # neither probe of any Ray version
    monkeypatch.setitem(sys.modules, "grpc", types.ModuleType("grpc"))
    assert ray_wait.has_client() is True
    monkeypatch.setitem(sys.modules, "grpc", None)  # import grpc raises ImportError
    assert ray_wait.has_client() is False


# --- 4. no variables Ray does not read ---------------------------------------------------------

def test_ray_mode_sets_no_ray_ip_variables() -> None:
    p = plan("vllm", 2, tp=8, pp=2)
    assert p.mode == "ray"
    for node in p.nodes:
        # Only --node-ip-address pins the address (Ray 2.60 reads neither RAY_NODE_IP_ADDRESS
        # nor RAY_OVERRIDE_NODE_IP_ADDRESS); the one RAY_ variable turns off the SIGTERM drain.
        assert [k for k, _ in node.env if k.startswith("RAY_")] == [
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"]
        ray_start = next(c.argv for c in node.argv_checks if c.parser == "ray")
        assert ray_start[ray_start.index("--node-ip-address") + 1] == node.address


# --- 5. native flags by the engines' own spelling rules ----------------------------------------

def test_vllm_underscore_spelling_is_counted() -> None:
    p = plan("vllm", 2, engine_args=["--tensor_parallel_size", "16"])
    assert (p.parallel["tp"], p.parallel["pp"], p.world_size) == (16, 1, 16)
    for argv in checks(p, "vllm"):
        parsed = as_vllm_parses(argv)
        assert parsed["tp"] == "16" and "pp" not in parsed
    with pytest.raises(SpecError, match="--tp"):
        spec("vllm", 2, tp=8, engine_args=["--tensor_parallel_size=16"])


@pytest.mark.parametrize("args,tp,pp", [
    (["--tensor", "4", "--pipeline", "2"], 4, 2),
    (["--tensor-parallel", "4", "--pipeline_parallel=2"], 4, 2),
    (["-tp=4", "-pp", "2"], 4, 2),
    (["-tp", "2", "--tensor-parallel-size", "4", "--pipeline-parallel-size", "2"], 4, 2),  # last wins
])
def test_vllm_abbreviations_and_last_wins(args, tp, pp) -> None:
    p = plan("vllm", 1, engine_args=args)
    assert (p.parallel["tp"], p.parallel["pp"]) == (tp, pp)


@pytest.mark.parametrize("engine,args", [
    ("vllm", ["--node_rank=1"]), ("vllm", ["--node-r", "1"]), ("vllm", ["--headl"]),
    ("vllm", ["--master_addr", "10.0.0.9"]), ("sglang", ["--node-r", "1"]),
    ("sglang", ["--dist-init", "10.0.0.9:1"]),
])
def test_owned_flags_in_any_spelling_are_refused(engine, args) -> None:
    with pytest.raises(SpecError, match="sets this on each node"):
        spec(engine, 2, tp=16, launch_mode="mp" if engine == "vllm" else "auto", engine_args=args)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_config_equals_form_is_refused(engine) -> None:
    with pytest.raises(SpecError, match="write --config FILE"):
        spec(engine, engine_args=["--config=/tmp/x.yaml"])


@pytest.mark.parametrize("engine,body", [("vllm", "node-rank: 1\n"), ("vllm", "node_rank: 1\n"),
                                         ("vllm", "nnodes: 2\n"), ("sglang", "node-rank: 1\n"),
                                         ("sglang", "dist-init-addr: 10.0.0.9:5000\n")])
def test_owned_keys_in_a_config_file_are_refused(engine, body, tmp_path) -> None:
    cfg = tmp_path / "engine.yaml"
    cfg.write_text(body)
    with pytest.raises(SpecError, match="in --config") as err:
        spec(engine, 2, tp=16, engine_args=["--config", str(cfg)])
    assert "sets this on each node" in str(err.value)


def test_config_file_layout_counts_and_the_command_line_wins(tmp_path) -> None:
    cfg = tmp_path / "engine.yaml"
    cfg.write_text("tensor-parallel-size: 16\nmax-model-len: 4096\n")
    p = plan("vllm", 2, engine_args=["--config", str(cfg)])
    assert (p.parallel["tp"], p.world_size) == (16, 16)
    assert "--tensor-parallel-size" not in p.nodes[0].command  # the file gives it
    p = plan("vllm", 1, engine_args=["--config", str(cfg), "-tp", "8"])
    assert p.parallel["tp"] == 8
    cfg.write_text("tp: 16\n")
    assert plan("sglang", 2, engine_args=["--config", str(cfg)]).parallel["tp"] == 16


def test_config_file_is_read_through_a_mount(tmp_path) -> None:
    (tmp_path / "engine.yaml").write_text("tensor-parallel-size: 4\n")
    p = plan("vllm", 1, mounts=[f"{tmp_path}:/cfg:ro"], engine_args=["--config", "/cfg/engine.yaml"])
    assert p.parallel["tp"] == 4
    with pytest.raises(SpecError, match="cannot read"):
        spec("vllm", engine_args=["--config", "/nowhere/engine.yaml"])


def test_sglang_takes_no_underscore_folding() -> None:
    # SGLang rejects --tp_size itself; slurmserve does not read it as TP (nor plan with it).
    assert sglang.FLAGS.canonical("--tp_size") is None
    assert sglang.FLAGS.canonical("--tp-s") == "--tp-size"
    assert trtllm.FLAGS.canonical("--tp-size") is None  # click: exact spellings only


# --- 6. SGLang attention DP, both spellings ----------------------------------------------------

@pytest.mark.parametrize("kw", [dict(tp=16, dp=16, engine_args=["--attn-dp-size", "16"]),
                                dict(tp=16, engine_args=["--attn-dp-size", "16"]),
                                dict(tp=16, dp=16, engine_args=["--enable-dp-attention"])])
def test_sglang_attention_dp_lives_inside_tp_in_both_spellings(kw) -> None:
    p = plan("sglang", 2, **kw)
    assert (p.world_size, p.parallel["dp"], p.parallel["dp_attention"]) == (16, 16, True)
    for argv in checks(p, "sglang"):
        assert ("--dp-size" in argv) == ("--enable-dp-attention" in argv)


def test_sglang_dp_replicas_with_attention_dp_are_refused() -> None:
    with pytest.raises(SpecError, match="--attn-dp-size"):
        spec("sglang", 2, tp=16, engine_args=["--dp-size", "16", "--attn-dp-size", "16"])
    with pytest.raises(SpecError, match="contradicts"):
        spec("sglang", 2, tp=16, dp=8, engine_args=["--attn-dp-size", "16"])


# --- 7. IPv6 in brackets wherever it meets a port ----------------------------------------------

def v6(nodes: int) -> Allocation:
    return Allocation("4242", tuple(NodeInfo(f"gpu-{i + 1}", f"fd00::{i + 1}", "ens5")
                                    for i in range(nodes)))


def test_host_port_brackets_only_ipv6() -> None:
    assert host_port("fd00::1", 20000) == "[fd00::1]:20000"
    assert host_port("192.0.2.1", 20000) == "192.0.2.1:20000"


def test_ipv6_addresses_are_bracketed_where_they_meet_a_port() -> None:
    p = plan("sglang", 2, alloc=v6(2), tp=16)
    for node in p.nodes:
        assert node.command[node.command.index("--dist-init-addr") + 1].startswith("[fd00::1]:")
    assert p.endpoint == "http://[fd00::1]:30000"
    p = plan("vllm", 2, alloc=v6(2), tp=8, pp=2)
    worker = p.nodes[1]
    assert worker.command[worker.command.index("--address") + 1].startswith("[fd00::1]:")
    assert worker.wait_for[0].startswith("[fd00::1]:")
    assert worker.command[worker.command.index("--node-ip-address") + 1] == "fd00::2"
    p = plan("trtllm", 2, alloc=v6(2), tp=16)
    assert "-H '[fd00::1]:8,[fd00::2]:8'" in dict(p.nodes[0].files)["trtllm-launch.sh"]
    assert p.nodes[0].wait_for[0].startswith("[fd00::2]:")


# --- 8. SGLang ranks >= 1 bind the HTTP port ---------------------------------------------------

def test_sglang_every_rank_checks_the_http_port() -> None:
    s = spec("sglang", 2, tp=16, port=31000)
    res = engines.resolve(s)
    ports = sglang.listen_ports(s, res, allocation(2).ports, 2)
    assert 31000 in ports[0] and 31000 in ports[1]


# --- argv checks: every rank of every mode names the engine command it runs ---------------------

MODES = [
    ("vllm", 1, dict(), {"vllm"}),
    ("vllm", 2, dict(tp=8, pp=2), {"ray", "vllm"}),
    ("vllm", 2, dict(tp=16, launch_mode="mp"), {"vllm"}),
    ("vllm", 2, dict(tp=4, dp=4), {"vllm"}),
    ("sglang", 2, dict(tp=16), {"sglang"}),
    ("trtllm", 2, dict(tp=16), {"trtllm"}),
]


@pytest.mark.parametrize("engine,nodes,kw,parsers", MODES)
def test_every_rank_has_its_argv_checks(engine, nodes, kw, parsers) -> None:
    p = plan(engine, nodes, **kw)
    seen = set()
    for node in p.nodes:
        assert node.argv_checks and all(isinstance(c, ArgvCheck) for c in node.argv_checks)
        seen |= {c.parser for c in node.argv_checks}
        for check in node.argv_checks:
            if check.parser in ("vllm", "trtllm"):
                assert check.argv[0] == "org/model"
            if check.parser == "sglang":
                assert tuple(node.command[3:]) == check.argv
            if check.parser == "ray" and node.rank:
                assert tuple(node.command[2:]) == check.argv
    assert seen == parsers
    assert all("argv_checks" in n for n in p.to_dict()["nodes"])


@pytest.mark.parametrize("engine,args", [("vllm", ["--api_key", "k"]), ("vllm", ["--api-k=k"]),
                                         ("sglang", ["--api-key=k"])])
def test_key_flags_in_any_spelling_are_refused(engine, args) -> None:
    with pytest.raises(SpecError, match="--api-key"):
        spec(engine, engine_args=args)


def test_vllm_ray_dp_refuses_replicas_vllm_cannot_place() -> None:
    with pytest.raises(SpecError, match="Ray DP places whole replicas"):
        spec("vllm", 3, tp=12, dp=2, launch_mode="ray")


def test_trtllm_yaml_keys_slurmserve_owns_are_refused(tmp_path) -> None:
    user = tmp_path / "llm.yaml"
    user.write_text("model: other/model\n")
    with pytest.raises(SpecError, match="overrides MODEL"):
        spec("trtllm", engine_args=["--config", str(user)])
    user.write_text("moe_tensor_parallel_size: 8\n")
    with pytest.raises(SpecError, match="moe_tensor_parallel_size"):
        spec("trtllm", tp=8, ep=2, engine_args=["--config", str(user)])


@pytest.mark.parametrize("engine,nodes,kw", [("vllm", 1, {}), ("vllm", 2, dict(tp=8, pp=2)),
                                             ("vllm", 2, dict(tp=4, dp=4)), ("sglang", 2, {})])
def test_the_config_file_slurmserve_read_is_the_one_the_engine_reads(engine, nodes, kw,
                                                                    tmp_path) -> None:
    cfg = tmp_path / "engine.yaml"
    cfg.write_text("max-model-len: 4096\n" if engine == "vllm" else "context-length: 4096\n")
    p = plan(engine, nodes, engine_args=["--config", str(cfg)], **kw)
    runs = [n for n in p.nodes if any(c.parser == engine for c in n.argv_checks)]
    assert runs
    for node in runs:
        argv = next(c.argv for c in node.argv_checks if c.parser == engine)
        assert argv[argv.index("--config") + 1] == "/slurmserve/engine-config.yaml"
        assert "4096" in dict(node.files)["engine-config.yaml"]
        assert str(cfg) not in json.dumps(p.to_dict())


def test_an_ambiguous_prefix_is_left_to_the_engine() -> None:
    # argparse refuses `--data 2` (--data-parallel-size, -size-local, -address, ...): no TP/DP
    # is read from it, and the engine's own check names it.
    assert vllm.FLAGS.canonical("--data") is None
    assert vllm.FLAGS.canonical("--enable-e") is None  # --enable-expert-parallel, --enable-eplb
    assert vllm.FLAGS.canonical("--data-parallel-size") == "--data-parallel-size"  # exact wins
