"""`slurmserve run` on the real sandbox cluster: every engine through its stand-in, teardown,
distribution, and two jobs sharing nodes. The stand-ins are test engines, not the engines."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from deploy import STANDIN, Deployment, kill_rank, our_containers
from sandboxlib import TEST_LABEL, tarball_image


def _assert_spans(d: Deployment, sandbox, nodes: int) -> None:
    state = d.state()
    hosts = [n["host"] for n in state["nodes"]]
    assert len(hosts) == nodes
    head_ip = sandbox.addr(hosts[0])
    assert d.endpoint.startswith(f"http://{head_ip}:"), (d.endpoint, hosts)
    info = d.info()
    assert info["standin"] is True
    member_ips = {m["ip"] for m in info["group"]["members"]}
    assert member_ips == {sandbox.addr(h) for h in hosts}, info["group"]
    assert d.chat()


@pytest.mark.parametrize("engine,nodes,args", [
    ("vllm", 1, ["--tp", "1"]),
    ("vllm", 2, ["--tp", "1", "--pp", "2"]),  # Ray head + worker
    ("vllm", 3, ["--", "--tensor-parallel-size", "3", "--distributed-executor-backend", "mp"]),
    ("vllm", 2, ["--tp", "1", "--dp", "2"]),  # DP-RPC
    ("sglang", 1, []),
    ("sglang", 3, ["--tp", "3"]),
    ("trtllm", 1, []),
    # The MPI world across node containers: mpirun over ssh (docker), or the serving step's
    # tasks joined by srun --mpi=pmix (pyxis); then two ranks per node.
    ("trtllm", 2, ["--tp", "2"]),
    ("trtllm", 2, ["--tp", "4", "--gpus-per-node", "2"]),
])
def test_engine_through_standin(deploy, sandbox, engine, nodes, args):
    if nodes > len(sandbox.nodes):
        pytest.skip(f"needs {nodes} nodes")
    per_node = int(args[args.index("--gpus-per-node") + 1]) if "--gpus-per-node" in args else 1
    if per_node > 1:
        # The sandbox's nodes share one host name and one /dev/shm, so Open MPI's shared-memory
        # segments (named by host, job and local rank) would collide between nodes: each
        # node's ranks keep theirs in their own container's /tmp. (Real nodes need nothing.)
        args = ["--env", "OMPI_MCA_btl_vader_backing_directory=/tmp", *args]
    d = deploy(nodes, engine, "org/tiny-model", "--nodes", str(nodes), *args,
               salloc_args=(f"--ntasks-per-node={per_node}",))
    d.wait_ready()
    _assert_spans(d, sandbox, nodes)
    d.signal_driver(signal.SIGINT)
    assert d.wait() == 0, d.err
    assert "no container of job" in d.err


def test_sigint_teardown_keeps_logs_and_foreign_containers(deploy, sandbox, containers,
                                                            standin_tarball):
    _, tag = tarball_image(standin_tarball)
    d = deploy(2, "sglang", "org/tiny-model", "--nodes", "2", "--tp", "2", nodelist="n1,n2")
    d.wait_ready()
    foreign = containers.run("n1", "foreign", tag, "sleep", "600",
                             docker_args=["--entrypoint", ""])
    d.signal_driver(signal.SIGINT)
    assert d.wait() == 0
    assert not our_containers(sandbox, d.job_id)
    assert containers.running("n1", foreign)
    logs = list(d.log_dir.glob(f"{d.job_id}/node-*.log"))
    assert len(logs) == 2 and all(p.stat().st_size > 0 for p in logs)
    assert d.state()["status"] == "stopped"


def test_scancel_tears_down(deploy, sandbox):
    d = deploy(2, "vllm", "org/tiny-model", "--nodes", "2", "--tp", "1", "--pp", "2")
    d.wait_ready()
    sandbox.host("scancel", d.job_id)
    d.wait(60)
    deadline = time.monotonic() + 30
    while our_containers(sandbox, d.job_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not our_containers(sandbox, d.job_id)


def test_killed_worker_container_fails_the_job_with_its_log(deploy, sandbox):
    d = deploy(2, "sglang", "org/tiny-model", "--nodes", "2", "--tp", "2")
    d.wait_ready()
    worker = d.state()["nodes"][1]
    kill_rank(sandbox, d.job_id, worker)
    code = d.wait(60)
    assert code != 0
    assert f"node {worker['host']} (rank 1)" in d.err
    assert "last" in d.err and worker["log"] in d.err
    assert not our_containers(sandbox, d.job_id)


def test_startup_failure_is_reported_fast(deploy, sandbox):
    t0 = time.monotonic()
    d = deploy(2, "sglang", "org/tiny-model", "--nodes", "2", "--tp", "2",
               "--env", "SLURMSERVE_STANDIN_FAULT=exit-after=1")
    code = d.wait(60)
    assert code != 0 and "exited with code" in d.err
    assert time.monotonic() - t0 < 45  # far below the 120 s health timeout


def test_second_run_skips_loading_and_a_changed_image_is_reloaded(deploy, sandbox, tmp_path,
                                                                  standin_tarball):
    first = deploy(2, "sglang", "org/tiny-model", "--nodes", "2", "--tp", "2", nodelist="n1,n2")
    first.wait_ready()
    first.close()
    second = deploy(2, "sglang", "org/tiny-model", "--nodes", "2", "--tp", "2", nodelist="n1,n2")
    second.wait_ready()
    assert "already on every node: skipped" in second.err
    second.close()

    # Same tag, different image ID: built on n3, saved, and the tag restored there.
    image_id, tag = tarball_image(standin_tarball)
    sandbox.docker("n3", "load", "-i", str(standin_tarball), timeout=600)
    sandbox.docker("n3", "rm", "-f", "sstest-variant", check=False)
    sandbox.docker("n3", "create", "--name", "sstest-variant", "--label", TEST_LABEL,
                   "--entrypoint", "true", tag)
    sandbox.docker("n3", "commit", "--change", "LABEL variant=1", "sstest-variant", tag)
    variant = tmp_path / "variant.tar"
    sandbox.docker("n3", "save", "-o", str(variant), tag, timeout=600)
    variant_id, _ = tarball_image(variant)
    sandbox.docker("n3", "rm", "-f", "sstest-variant")
    sandbox.docker("n3", "tag", image_id, tag)
    assert variant_id != image_id
    try:
        third = Deployment(tmp_path / "third", 2, "sglang", "org/tiny-model", "--nodes", "2",
                           "--tp", "2", "--image", str(variant), *STANDIN, nodelist="n1,n2")
        try:
            third.wait_ready()
            assert "loading" in third.err and "skipped" not in third.err
            running = sandbox.docker("n1", "inspect", "-f", "{{.Image}}",
                                     third.state()["nodes"][0]["container"]).stdout.strip()
            assert running == variant_id
        finally:
            third.close()
    finally:
        for node in ("n1", "n2", "n3"):
            sandbox.docker(node, "tag", image_id, tag, check=False)
            sandbox.docker(node, "rmi", variant_id, check=False)


def test_two_jobs_on_the_same_nodes_do_not_collide(deploy, sandbox):
    a = deploy(2, "sglang", "org/tiny-model", "--nodes", "2", "--tp", "2", nodelist="n1,n2")
    a.wait_ready()
    b = deploy(2, "sglang", "org/tiny-model", "--nodes", "2", "--tp", "2", nodelist="n1,n2")
    b.wait_ready()
    assert a.endpoint != b.endpoint
    assert a.job_id != b.job_id
    names_a = {n["container"] for n in a.state()["nodes"]}
    names_b = {n["container"] for n in b.state()["nodes"]}
    assert not names_a & names_b
    for d in (a, b):
        _assert_spans(d, sandbox, 2)


NODE_LOCAL = "/var/tmp/slurmserve-node-local"  # the sandbox's per-node private directory


def test_sbcast_stage_copies_once_to_node_local_storage(deploy, sandbox, standin_tarball):
    image_id, tag = tarball_image(standin_tarball)
    nodes = sandbox.nodes[:3]
    for node in nodes:
        sandbox.docker(node, "rmi", "-f", image_id, check=False)
    try:
        d = deploy(len(nodes), "sglang", "org/tiny-model", "--nodes", str(len(nodes)),
                   "--tp", str(len(nodes)), "--stage", "sbcast", "--stage-dir", NODE_LOCAL,
                   nodelist=",".join(nodes))
        d.wait_ready()
        assert "sbcast" in d.err and "once (sbcast fan-out)" in d.err
        dist = d.state()["distribution"]
        assert dist == {"stage": "sbcast", "nodes_loaded": len(nodes),
                        "shared_path_bytes": standin_tarball.stat().st_size}
        _assert_spans(d, sandbox, len(nodes))
        for node in nodes:  # the node-local copies are gone after loading
            left = sandbox.exec(node, "ls", "-A", NODE_LOCAL).stdout.split()
            assert not [f for f in left if f.startswith("slurmserve-")], left
    finally:
        for node in nodes:  # leave the image everywhere for the other tests
            sandbox.docker(node, "load", "-i", str(standin_tarball), timeout=600)
            sandbox.docker(node, "tag", image_id, tag, check=False)


def test_api_checks_catch_a_broken_stream(deploy, sandbox):
    d = deploy(1, "vllm", "org/tiny-model", "--env", "SLURMSERVE_STANDIN_FAULT=break-streaming")
    d.wait_ready()
    check = subprocess.run(["slurmserve", "test", "--job", d.job_id, "--json"],
                           capture_output=True, text=True, timeout=120)
    failed = [c["name"] for c in json.loads(check.stdout)["checks"] if c["status"] == "FAIL"]
    assert failed == ["streaming"] and check.returncode == 1


def test_sbcast_into_a_shared_directory_falls_back_to_direct_loading(deploy, sandbox,
                                                                     standin_tarball):
    image_id, tag = tarball_image(standin_tarball)
    for node in ("n1", "n2"):
        sandbox.docker(node, "rmi", "-f", image_id, check=False)
    try:  # the sandbox's /tmp is one directory for all nodes, like a shared file system
        d = deploy(2, "sglang", "org/tiny-model", "--nodes", "2", "--tp", "2", "--stage",
                   "sbcast", "--stage-dir", "/tmp", nodelist="n1,n2")
        d.wait_ready()
        assert "/tmp is shared between nodes" in d.err
        assert d.state()["distribution"]["stage"] == "direct"
    finally:
        for node in ("n1", "n2"):
            sandbox.docker(node, "load", "-i", str(standin_tarball), timeout=600)
            sandbox.docker(node, "tag", image_id, tag, check=False)


def test_preflight_failure_names_the_node_and_starts_nothing(sandbox, standin_tarball, tmp_path,
                                                             containers):
    _, tag = tarball_image(standin_tarball)
    # A foreign server holding the port we are told to use, on the head node.
    containers.run("n1", "port-holder", tag, "-m", "http.server", "23999",
                   docker_args=["--network", "host", "--entrypoint", "python3"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sandbox.exec(
            "n1", "bash", "-c", "exec 3<>/dev/tcp/10.77.0.1/23999", check=False).returncode:
        time.sleep(0.2)
    d = Deployment(tmp_path, 2, "sglang", "org/tiny-model", "--nodes", "2", "--tp", "2",
                   "--image", str(standin_tarball), "--gpus-per-node", "1", "--port", "23999",
                   nodelist="n1,n2")
    assert d.wait(60) == 1
    assert "preflight failed, nothing was started" in d.err
    assert "node n1: no NVIDIA GPUs visible" in d.err and "--gpus none" in d.err
    assert "node n1: port(s) 23999 already in use" in d.err
    assert not our_containers(sandbox)


def test_doctor_checks_every_node_and_starts_nothing(sandbox, standin_tarball, tmp_path):
    base = ["slurmserve", "doctor", "sglang", "org/tiny-model", "--image", str(standin_tarball),
            "--nodes", "2", "--tp", "2", "--gpus-per-node", "1", "--log-dir", str(tmp_path)]
    ok = subprocess.run([*base, "--gpus", "none", "--json"], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    verdict = json.loads(ok.stdout)
    assert verdict["ok"] and len(verdict["nodes"]) == 2
    assert {f["check"] for f in verdict["findings"]} >= {"route", "runtime", "image", "ports"}
    bad = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "no NVIDIA GPUs visible" in bad.stdout and "--gpus none" in bad.stdout
    assert bad.stdout.count("FAIL") >= 2  # the gpus cell of both nodes
    assert not our_containers(sandbox)


def test_health_without_generation_is_never_ready(deploy, sandbox):
    d = deploy(1, "vllm", "org/tiny-model", "--health-timeout", "20",
               "--env", "SLURMSERVE_STANDIN_FAULT=hang-generation")
    code = d.wait(90)
    assert code == 1 and "READY" not in d.out
    assert "/health answers and the model is listed, but a 1-token completion failed" in d.err
    assert not our_containers(sandbox, d.job_id)


def test_leftovers_of_finished_jobs_are_removed_and_foreign_containers_kept(
        deploy, sandbox, containers, standin_tarball):
    _, tag = tarball_image(standin_tarball)
    # A container labelled as ours by a job that no longer exists, and a foreign one.
    sandbox.docker("n1", "run", "-d", "--name", "slurmserve-999999-0", "--label",
                   "slurmserve.job=999999", "--entrypoint", "sleep", tag, "600")
    foreign = containers.run("n1", "foreign", tag, "600", docker_args=["--entrypoint", "sleep"])
    try:
        d = deploy(1, "sglang", "org/tiny-model", nodelist="n1")
        d.wait_ready()
        assert "removed 1 leftover container(s) of finished job(s) 999999" in d.err
        assert not our_containers(sandbox, "999999")
        assert containers.running("n1", foreign)
    finally:
        sandbox.docker("n1", "rm", "-f", "slurmserve-999999-0", check=False)


def test_secrets_reach_every_container_but_no_argv_log_or_state(deploy, sandbox, tmp_path):
    secret = "hf_secret_5f0c9b1e"
    env_file = tmp_path / "hf.env"
    env_file.write_text(f"HF_TOKEN={secret}\n")
    env_file.chmod(0o600)
    d = deploy(2, "sglang", "org/tiny-model", "--nodes", "2", "--tp", "2",
               "--env-file", str(env_file), "--env", "SLURMSERVE_MARK=on-every-node",
               nodelist="n1,n2")
    d.wait_ready()
    for node in d.state()["nodes"]:
        printed = sandbox.docker(node["host"], "exec", node["container"], "printenv",
                                 "HF_TOKEN", "SLURMSERVE_MARK").stdout.split()
        assert printed == [secret, "on-every-node"], node
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert secret not in processes
    run_dir = d.log_dir / d.job_id
    env_files = list(run_dir.glob("node-*.env"))
    assert env_files and all(p.stat().st_mode & 0o777 == 0o600 for p in env_files)
    d.close()
    assert not list(run_dir.glob("node-*.env")), "env files must be gone after teardown"
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    assert secret not in d.out + d.err
