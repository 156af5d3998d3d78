"""Engine rules: parallel layouts, modes, native flags meaning the same as unified ones."""

from __future__ import annotations

import pytest

from slurmserve import SpecError, api, engines, load_spec
from slurmserve.engines import vllm
from slurmserve.plan import PortBlock
from tests.unit.helpers import allocation

IMG = "registry.example/engine:1"


def spec(engine: str, **kw):
    kw.setdefault("gpus_per_node", 8)
    return load_spec(engine=engine, model="org/model", image=IMG, **kw)


def resolve(engine: str, **kw):
    return engines.get(engine).resolve(spec(engine, **kw)).parallel


@pytest.mark.parametrize("unified,native", [
    (dict(tp=8, ep=8), ["--tensor-parallel-size", "8", "--enable-expert-parallel"]),
    (dict(tp=4, pp=2, nodes=1), ["-tp", "4", "-pp", "2"]),
    (dict(tp=4, dp=4, nodes=2), ["--tensor-parallel-size=4", "--data-parallel-size", "4"]),
])
def test_vllm_native_flags_mean_the_same(unified, native):
    nodes = unified.get("nodes", 1)
    a = resolve("vllm", **unified)
    b = resolve("vllm", nodes=nodes, engine_args=native)
    assert (a.tp, a.pp, a.dp, a.ep, a.world, a.expert_parallel) == \
        (b.tp, b.pp, b.dp, b.ep, b.world, b.expert_parallel)


def test_vllm_ep_is_tp_times_dp():
    par = resolve("vllm", nodes=2, tp=4, dp=4, engine_args=["--enable-expert-parallel"])
    assert par.ep == 16 and par.world == 16


def test_sglang_and_trtllm_ep_subdivide_tp():
    assert resolve("sglang", engine_args=["--tp", "8", "--ep", "2"]).world == 8
    assert resolve("trtllm", engine_args=["--tp_size", "8", "--ep_size", "2"]).world == 8
    cfg = api.plan_cluster(spec("trtllm", tp=8, ep=2), allocation(1)).nodes[0].files
    assert "moe_tensor_parallel_size: 4" in dict(cfg)["trtllm-config.yaml"]


def test_sglang_dp_attention_lives_inside_tp():
    par = resolve("sglang", nodes=2, tp=16, dp=2, engine_args=["--enable-dp-attention"])
    assert (par.world, par.nodes, par.dp_attention) == (16, 2, True)
    assert resolve("sglang", tp=4, dp=2).world == 8  # without it, replicas multiply


def test_default_layout_is_tp_in_node_pp_across():
    par = resolve("vllm", nodes=3)
    assert (par.tp, par.pp, par.dp) == (8, 3, 1)


@pytest.mark.parametrize("kw,mode", [
    (dict(), "single"),
    (dict(nodes=2, tp=8, pp=2), "ray"),
    (dict(nodes=2, tp=4, dp=4), "dp"),
    (dict(nodes=2, tp=16, launch_mode="mp"), "mp"),
    (dict(nodes=2, tp=16, engine_args=["--distributed-executor-backend", "mp"]), "mp"),
])
def test_vllm_auto_modes(kw, mode):
    assert api.plan_cluster(spec("vllm", **kw), allocation(kw.get("nodes", 1))).mode == mode


def test_vllm_ray_workers_wait_for_the_head_and_use_job_ports():
    plan = api.plan_cluster(spec("vllm", nodes=3, tp=8, pp=3), allocation(3, job_id="7"))
    head, *workers = plan.nodes
    gcs = PortBlock.for_job("7").at(vllm.RAY_GCS)
    assert head.role == "ray-head" and head.serves_http
    for w in workers:
        assert w.role == "ray-worker" and not w.serves_http
        assert w.wait_for == (f"192.0.2.1:{gcs}",)
        assert w.command[-1] == "--block"
        assert ("VLLM_HOST_IP", w.address) in w.env


def test_vllm_dp_ranks_per_node():
    plan = api.plan_cluster(spec("vllm", nodes=2, tp=4, dp=4), allocation(2))
    second = plan.nodes[1].command
    assert second[second.index("--data-parallel-start-rank") + 1] == "2"
    assert "--headless" in second and "--headless" not in plan.nodes[0].command


def test_sglang_every_node_gets_its_rank_and_the_same_init_addr():
    plan = api.plan_cluster(spec("sglang", nodes=2, tp=16), allocation(2))
    ranks = [n.command[n.command.index("--node-rank") + 1] for n in plan.nodes]
    addrs = {n.command[n.command.index("--dist-init-addr") + 1] for n in plan.nodes}
    assert ranks == ["0", "1"] and len(addrs) == 1
    assert [n.serves_http for n in plan.nodes] == [True, False]


def test_trtllm_world_is_one_rank_per_gpu_over_ssh():
    plan = api.plan_cluster(spec("trtllm", nodes=2, tp=16), allocation(2))
    launcher = dict(plan.nodes[0].files)["trtllm-launch.sh"]
    assert "-np 16 -H 192.0.2.1:8,192.0.2.2:8" in launcher
    assert plan.nodes[1].role == "mpi-worker"
    assert plan.nodes[0].wait_for == (f"192.0.2.2:{PortBlock.for_job('4242').ssh}",)


def test_trtllm_user_config_is_merged(tmp_path):
    user = tmp_path / "cfg.yaml"
    user.write_text("kv_cache_config:\n  free_gpu_memory_fraction: 0.9\nenable_attention_dp: true\n")
    s = spec("trtllm", tp=8, engine_args=["--config", str(user), "--max_batch_size", "64"])
    node = api.plan_cluster(s, allocation(1)).nodes[0]
    merged = dict(node.files)["trtllm-config.yaml"]
    assert "free_gpu_memory_fraction: 0.9" in merged and "enable_attention_dp: true" in merged
    launcher = dict(node.files)["trtllm-launch.sh"]
    assert str(user) not in launcher and "--max_batch_size 64" in launcher


def test_user_port_and_host_after_dashes_are_kept_not_duplicated():
    plan = api.plan_cluster(spec("vllm", engine_args=["--host", "0.0.0.0", "--port", "9000"]),
                            allocation(1))
    command = plan.nodes[0].command
    assert command.count("--port") == 1 and plan.port == 9000


def test_default_ports_per_engine():
    assert api.plan_cluster(spec("vllm"), allocation(1)).port == 8000
    assert api.plan_cluster(spec("sglang"), allocation(1)).port == 30000
    assert api.plan_cluster(spec("trtllm"), allocation(1)).port == 8000


def test_port_blocks_differ_between_neighbouring_jobs_and_stay_in_range():
    blocks = {PortBlock.for_job(str(j)).base for j in range(1000, 1000 + PortBlock.COUNT)}
    assert len(blocks) == PortBlock.COUNT
    assert all(b >= 20000 and b + PortBlock.SIZE <= 32768 for b in blocks)


def test_no_port_block_holds_a_default_port():
    """Job 1180 once got the block 30000..30099: its SGLang rendezvous took SGLang's HTTP
    port, and the readiness probe talked to the rendezvous."""
    defaults = {engines.get(name).DEFAULT_PORT for name in ("vllm", "sglang", "trtllm")}
    defaults |= {6379, 8265, 10001}  # Ray's GCS, dashboard and client server
    for job in range(PortBlock.COUNT):
        base = PortBlock.for_job(str(job)).base
        assert not any(base <= port < base + PortBlock.SIZE for port in defaults), job


def test_pp_with_ep_is_accepted_where_engines_accept_it():
    # None of the three engines refuses PP together with EP today (see README, EP semantics).
    assert resolve("vllm", nodes=2, tp=8, pp=2, engine_args=["--enable-expert-parallel"]).ep == 8
    assert resolve("sglang", nodes=2, tp=8, pp=2, ep=2).ep == 2
    assert resolve("trtllm", nodes=2, tp=8, pp=2, ep=4).ep == 4


def test_spec_yaml_and_flags(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"engine: sglang\nmodel: m\nimage: {IMG}\ntp: 4\ngpus_per_node: 4\n"
                   "slurm:\n  partition: gpu\n")
    s = load_spec(cfg, tp=None, partition="big")
    assert (s.tp, s.slurm.partition, s.engine) == (4, "big", "sglang")
    with pytest.raises(SpecError) as err:
        load_spec(cfg, tp=8)
    assert "--tp" in str(err.value)
