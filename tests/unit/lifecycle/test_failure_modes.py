"""Field failures the sandbox cannot reproduce (no GPU, no RDMA, no Hub), checked on what
slurmserve generates: each test names its mode in README "What can go wrong" (1-15).

The modes the sandbox reproduces are tested for real in tests/cluster/.
"""

from __future__ import annotations

import subprocess

from slurmserve import api, load_spec, runtimes
from slurmserve import node as node_programs
from slurmserve.lifecycle import launch
from slurmserve.lifecycle.logwatch import LogWatch
from slurmserve.render import render_template
from slurmserve.runtimes import _common as docker
from tests.unit.helpers import allocation

IMG = "registry.example/engine:1"


def _launch(tmp_path, engine="vllm", nodes=2, **kw):
    kw.setdefault("gpus_per_node", 8)
    spec = load_spec(engine=engine, model=kw.pop("model", "org/model"), image=IMG, nodes=nodes,
                     **kw)
    plan = api.plan_cluster(spec, allocation(nodes))
    return spec, plan, launch.build(spec, plan, str(tmp_path), IMG)


def test_mode_2_every_collective_binds_the_interface_on_the_route_to_the_head(tmp_path):
    _, plan, bundle = _launch(tmp_path, tp=8, pp=2)
    for node, planned in zip(bundle.nodes, plan.nodes, strict=True):
        env = dict(node.env)
        assert env["GLOO_SOCKET_IFNAME"] == env["NCCL_SOCKET_IFNAME"] == "ens5"
        assert env["TP_SOCKET_IFNAME"] == "ens5"
        assert env["VLLM_HOST_IP"] == planned.address  # one address per node, never `^lo`


def test_mode_4_efa_names_the_plugin_and_asks_nccl_to_say_its_transport(tmp_path):
    _, _, bundle = _launch(tmp_path, fabric="efa")
    env = dict(bundle.nodes[0].env)
    assert env["NCCL_NET"] == "AWS Libfabric"  # a missing plugin fails loudly, not TCP
    assert env["FI_PROVIDER"] == "efa"
    assert (env["NCCL_DEBUG"], env["NCCL_DEBUG_SUBSYS"]) == ("INFO", "INIT,NET")
    globs, required = docker.device_globs(load_spec(engine="vllm", model="m", image=IMG,
                                                    fabric="efa"))
    assert required and "/dev/infiniband/uverbs*" in globs  # preflight fails without them
    # The node script passes found devices and lifts memlock only then.
    assert "--ulimit memlock=-1" in bundle.script and "uverbs" in bundle.script


def test_mode_4_a_users_nccl_debug_wins_and_tcp_fabric_stays_quiet(tmp_path):
    _, _, bundle = _launch(tmp_path, fabric="ib", env={"NCCL_DEBUG": "WARN"})
    assert dict(bundle.nodes[0].env)["NCCL_DEBUG"] == "WARN"
    _, _, tcp = _launch(tmp_path, fabric="tcp")
    assert "NCCL_DEBUG" not in dict(tcp.nodes[0].env)


# Lines as NCCL 2.2x prints them with NCCL_DEBUG=INFO (host:pid:tid prefix).
NCCL_SOCKET = "gpu-2:2411:2411 [0] NCCL INFO Using network Socket"
NCCL_SOCKET_INIT = "gpu-2:2411:2411 [0] NCCL INFO NET/Socket : Using [0]ens5:192.0.2.2<0>"
NCCL_IB = "gpu-2:2411:2411 [0] NCCL INFO Using network IB"
NCCL_VERSION = "gpu-2:2411:2411 [0] NCCL INFO NCCL version 2.21.5+cuda12.4"


def test_mode_4_nccl_on_sockets_is_flagged_once_when_rdma_was_expected():
    watch = LogWatch("gpu-2", rdma_expected=True)
    [warning] = watch.feed(NCCL_SOCKET)
    assert warning.startswith("warning: node gpu-2: NCCL is using TCP sockets (NET/Socket)")
    assert "--fabric tcp" in warning
    assert watch.feed(NCCL_SOCKET_INIT) == []  # said once
    assert LogWatch("gpu-2", rdma_expected=True).feed(NCCL_SOCKET_INIT)


def test_mode_4_sockets_without_rdma_are_expected_and_rdma_is_reported():
    assert LogWatch("gpu-2", rdma_expected=False).feed(NCCL_SOCKET) == []
    assert LogWatch("gpu-2", rdma_expected=True).feed(NCCL_IB) == ["node gpu-2: NCCL network IB"]
    assert LogWatch("gpu-2", rdma_expected=True).feed("INFO vllm serving on :8000") == []


def test_mode_11_engine_flags_pass_verbatim_and_the_nccl_version_is_logged(tmp_path):
    _, plan, _ = _launch(tmp_path, launch_mode="mp", tp=16,
                         engine_args=["--enforce-eager", "--compilation-config", '{"level": 0}'])
    flags = ["--enforce-eager", "--compilation-config", '{"level": 0}']
    for node in plan.nodes:  # every node runs the same engine flags, in order
        start = node.command.index("--enforce-eager")
        assert list(node.command[start:start + 3]) == flags
    assert LogWatch("gpu-1", False).feed(NCCL_VERSION) == ["node gpu-1: NCCL 2.21.5+cuda12.4"]


def test_mode_13_a_hub_model_is_fetched_once_then_every_node_is_offline(tmp_path):
    spec, plan, bundle = _launch(tmp_path, model="Qwen/Qwen2.5-7B-Instruct",
                                 hf_cache="/shared/hf")
    for node in bundle.nodes:
        env = dict(node.env)
        assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HOME"] == docker.HF_DIR
    assert f"/shared/hf:{docker.HF_DIR}" in bundle.script
    script = render_template(
        "prefetch.sh.j2", cache="/shared/hf", image=IMG, env_file=bundle.nodes[0].env_file,
        hf_dir=docker.HF_DIR, model=spec.model, **runtimes.shell_context("docker", "4242"))
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert "snapshot_download" in script
    assert 'os.environ["HF_HUB_OFFLINE"] = "0"' in node_programs.read("hf_prefetch.py")
    assert "HF_TOKEN=" not in script  # the token stays in the head's 0600 env file


def test_mode_13_a_local_model_never_touches_the_hub(tmp_path):
    _, _, bundle = _launch(tmp_path, model="/models/llama")
    env = dict(bundle.nodes[0].env)
    assert env["HF_HUB_OFFLINE"] == "1" and "HF_HOME" not in env
    _, _, hub = _launch(tmp_path, model="org/model")  # no cache: the engine downloads itself
    assert "HF_HUB_OFFLINE" not in dict(hub.nodes[0].env)


def test_mode_15_mpi_world_is_one_rank_per_gpu_and_the_image_is_checked(tmp_path):
    _, plan, _ = _launch(tmp_path, engine="trtllm", tp=8, pp=2)
    launcher = dict(plan.nodes[0].files)["trtllm-launch.sh"]
    assert "-np 16" in launcher and "192.0.2.1:8,192.0.2.2:8" in launcher
    assert "trtllm-llmapi-launch" in launcher
    assert [c.command.split()[0] for c in plan.image_checks] == ["mpirun", "test"]
    assert [c.name for c in plan.image_checks] == ["mpirun", "sshd"]


def test_mode_14_ray_mode_checks_ray_in_the_image_and_mp_does_not(tmp_path):
    _, ray, _ = _launch(tmp_path, tp=8, pp=2)
    assert ray.mode == "ray" and [c.command for c in ray.image_checks] == ["ray --version"]
    _, mp, _ = _launch(tmp_path, launch_mode="mp", tp=16)
    assert mp.image_checks == ()


def test_image_checks_render_into_valid_shell():
    _, ray, _ = _launch("/tmp/unused", tp=8, pp=2)
    for load in (True, False):  # run's distribution step, and doctor's check-only step
        script = render_template("distribute.sh.j2", image="sha256:abc", source="/x.tar",
                                 pull=False, compressed=False, staged=False,
                                 checks=ray.image_checks, load=load,
                                 **runtimes.shell_context("docker", "4242"))
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)
        assert "ray --version" in script and "--label slurmserve.job=4242" in script
        assert ("rt_load " in script) is load


def test_image_tools_name_each_failing_node_and_a_version_split():
    from slurmserve.lifecycle.preflight import image_tools

    _, ray, _ = _launch("/tmp/unused", tp=8, pp=2)
    found = {0: ["ray ok ray, version 2.60.0"], 1: ["ray fail sh: 1: ray: not found"],
             2: ["image absent"], 3: ["ray ok ray, version 2.49.1"]}
    findings = image_tools(["a", "b", "c", "d"], ray.image_checks, found)
    by_node = {(f.node, f.status) for f in findings}
    assert ("b", "fail") in by_node and ("c", "warn") in by_node
    [split] = [f for f in findings if "differ" in f.detail]
    assert split.node == "d" and "a: ray, version 2.60.0" in split.detail
    assert "--launch-mode mp" in next(f.fix for f in findings if f.node == "b")
