"""Field failures (README "What can go wrong") reproduced on the sandbox, caught or prevented.

The others live where their subject does: two jobs, leftovers, hanging generation, secrets and
side steps in test_run.py. The engines here are the stand-ins (containers/testing/), not the
engines.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from deploy import RUNTIME, our_containers
from sandboxlib import SANDBOX, TEST_LABEL, load_image, tarball_image

NO_RAY = "slurmserve-testing/standin:noray"
MIXED = "slurmserve-testing/standin:mixed"


@pytest.fixture(scope="module")
def image_without_ray(sandbox, standin_tarball, tmp_path_factory):
    """The stand-in image with Ray uninstalled, under the same ID on n1 and n2 (and the
    full image tagged MIXED on n1, the Ray-less one under that tag on n2)."""
    _, tag = tarball_image(standin_tarball)
    for node in ("n1", "n2"):
        load_image(sandbox, node, standin_tarball)
    name = "sstest-noray-build"
    sandbox.docker("n1", "rm", "-f", name, check=False)
    sandbox.docker("n1", "run", "--name", name, "--label", TEST_LABEL, "--network", "none",
                   "--entrypoint", "sh", tag, "-c", "pip uninstall --yes --quiet ray")
    sandbox.docker("n1", "commit", name, NO_RAY)
    sandbox.docker("n1", "rm", name)
    saved = tmp_path_factory.mktemp("noray") / "noray.tar"
    sandbox.docker("n1", "save", "--output", str(saved), NO_RAY, timeout=300)
    sandbox.docker("n2", "load", "--input", str(saved), timeout=300)
    saved.unlink()
    sandbox.docker("n1", "tag", tag, MIXED)
    sandbox.docker("n2", "tag", NO_RAY, MIXED)
    yield NO_RAY
    for node in ("n1", "n2"):
        sandbox.docker(node, "rmi", MIXED, NO_RAY, check=False)


def test_image_without_ray_fails_before_launch_naming_each_node(deploy, sandbox,
                                                               image_without_ray):
    d = deploy(2, "vllm", "org/tiny-model", "--nodes", "2", "--pp", "2",
               "--image", image_without_ray, nodelist="n1,n2")
    assert d.wait(120) == 1, d.err
    for node in ("n1", "n2"):
        assert f"node {node}: image check `ray --version` failed" in d.err, d.err
    assert "--launch-mode mp, which needs no Ray" in d.err
    assert "nothing was started" in d.err
    assert "] launch" not in d.err
    assert not our_containers(sandbox, d.job_id)


def test_doctor_runs_the_image_checks_without_loading_or_serving(sandbox, image_without_ray,
                                                                 tmp_path):
    argv = ["salloc", "--nodes=2", "--nodelist=n1,n2", "--oversubscribe", "slurmserve",
            "doctor", "vllm", "org/tiny-model", "--image", image_without_ray, "--nodes", "2",
            "--runtime", RUNTIME,
            "--pp", "2", "--gpus", "none", "--gpus-per-node", "1", "--log-dir", str(tmp_path),
            "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    tools = [f for f in json.loads(proc.stdout)["findings"] if f["check"] == "tools"]
    assert {(f["node"], f["status"]) for f in tools} == {("n1", "fail"), ("n2", "fail")}
    assert all("ray: not found" in f["detail"] for f in tools)
    assert not our_containers(sandbox)


def test_one_tag_naming_different_images_fails_preflight_naming_the_node(deploy, sandbox,
                                                                        image_without_ray):
    d = deploy(2, "vllm", "org/tiny-model", "--nodes", "2", "--pp", "2", "--image", MIXED,
               nodelist="n1,n2")
    assert d.wait(120) == 1, d.err
    assert "preflight failed, nothing was started" in d.err, d.err
    assert f"node n2: {MIXED} is sha256:" in d.err
    assert "docker pull it everywhere, or pass a `docker save` tarball" in d.err
    assert not our_containers(sandbox, d.job_id)


def test_ray_version_is_checked_and_the_group_forms_when_ray_is_there(deploy, sandbox):
    d = deploy(2, "vllm", "org/tiny-model", "--nodes", "2", "--pp", "2", nodelist="n1,n2")
    d.wait_ready()
    assert "checked on 2 node(s): ray: ray, version" in d.err, d.err
    assert {m["ip"] for m in d.info()["group"]["members"]} == {"10.77.0.1", "10.77.0.2"}


@pytest.fixture
def second_interface(sandbox):
    """A second, earlier-sorting interface with its own address in n2's namespace."""
    netns = "ss-n2"

    def ip(*argv: str, check: bool = True) -> None:
        subprocess.run(["ip", "-n", netns, *argv], check=check, capture_output=True)

    ip("link", "del", "a0", check=False)
    ip("link", "add", "a0", "type", "veth", "peer", "name", "a1")
    ip("addr", "add", "10.78.0.2/24", "dev", "a0")
    ip("link", "set", "a0", "up")
    ip("link", "set", "a1", "up")
    try:
        yield "a0", "10.78.0.2"
    finally:
        ip("link", "del", "a0", check=False)


def test_second_interface_is_not_chosen_and_the_ray_group_forms(deploy, sandbox,
                                                               second_interface):
    ifname, address = second_interface
    shown = subprocess.run([str(SANDBOX), "exec", "n2", "hostname", "-I"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert address in shown  # the node really has two addresses
    d = deploy(2, "vllm", "org/tiny-model", "--nodes", "2", "--pp", "2", nodelist="n1,n2")
    d.wait_ready()
    nodes = {n["host"]: n for n in d.state()["nodes"]}
    assert nodes["n2"]["address"] == sandbox.addr("n2")
    assert nodes["n2"]["ifname"] != ifname
    # The Ray head admits exactly the planned addresses: Ray and vLLM agree on n2's IP.
    members = {m["ip"] for m in d.info()["group"]["members"]}
    assert members == {sandbox.addr("n1"), sandbox.addr("n2")}
    assert d.chat()


def test_hub_model_is_fetched_once_on_the_head_and_a_failure_names_it(sandbox, vllm_tarball,
                                                                      tmp_path):
    """Mode 13. No Hub here, so the fetch fails; it runs once, on the head, in the engine image
    with the env file's token, and nothing is launched. (The offline env is unit-tested.)"""
    from deploy import Deployment

    env_file = tmp_path / "secrets.env"
    env_file.write_text("HF_TOKEN=hf_sandboxsecret123\n")
    env_file.chmod(0o600)
    d = Deployment(tmp_path / "d", 1, "vllm", "org/tiny-model", "--image", str(vllm_tarball),
                   "--gpus", "none", "--hf-cache", str(tmp_path / "hf"),
                   "--env", "HF_ENDPOINT=http://127.0.0.1:9", "--env-file", str(env_file),
                   nodelist="n1")
    try:
        assert d.wait(300) == 1, d.err
    finally:
        d.close()
    assert "fetching org/tiny-model once into" in d.err
    assert "node n1: downloading org/tiny-model into" in d.err, d.err
    assert "LocalEntryNotFoundError" in d.err and "check HF_TOKEN in --env-file" in d.err
    assert "] launch" not in d.err
    assert "hf_sandboxsecret123" not in d.out + d.err
    assert (tmp_path / "hf").is_dir()
    assert not our_containers(sandbox, d.job_id)


HUB_REPO = "org/tiny-hub-model"
HOST_ON_BRIDGE = "10.77.0.254"  # the host's side of ssbr0: every node reaches it


@pytest.fixture
def fakehub():
    """The stand-in Hub (fakehub.py) with one small repo, on the host's bridge address; a
    request without the token gets 401, as for a gated repo."""
    import secrets

    from fakehub import FakeHub

    files = {"config.json": b'{"model_type": "standin"}\n', "model.safetensors": bytes(range(256)) * 64}
    hub = FakeHub({HUB_REPO: files}, host=HOST_ON_BRIDGE, token=f"hf_{secrets.token_hex(12)}")
    try:
        yield hub
    finally:
        hub.close()


def test_hub_model_is_downloaded_once_by_the_head_and_every_node_loads_it_offline(
        deploy, sandbox, fakehub, tmp_path):
    """Mode 13, success path: two nodes, one download per file (from the head, with the
    env file's token), then each rank resolves the model from the shared cache offline."""
    env_file = tmp_path / "secrets.env"
    env_file.write_text(f"HF_TOKEN={fakehub.token}\n")
    env_file.chmod(0o600)
    cache = tmp_path / "hf"  # /tmp is one directory for all sandbox nodes: a shared FS
    d = deploy(2, "vllm", HUB_REPO, "--nodes", "2", "--pp", "2", "--launch-mode", "mp",
               "--hf-cache", str(cache), "--env", f"HF_ENDPOINT={fakehub.url}",
               "--env-file", str(env_file), nodelist="n1,n2")
    d.wait_ready()
    assert f"fetching {HUB_REPO} once into {cache} on n1" in d.err, d.err
    assert "from the Hub itself" not in d.err
    for name in fakehub.repos[HUB_REPO]:
        assert fakehub.downloads(HUB_REPO, name) == 1, (name, fakehub.requests)
    assert {r.client for r in fakehub.requests} == {sandbox.addr("n1")}
    assert {r.authorization for r in fakehub.requests if HUB_REPO in r.path} == \
        {f"Bearer {fakehub.token}"}
    info = d.info()
    snapshot = f"/slurmserve-hf/hub/models--org--tiny-hub-model/snapshots/{fakehub.commits[HUB_REPO]}"
    assert info["model_path"] == snapshot
    assert (info["env"]["HF_HUB_OFFLINE"], info["env"]["HF_HOME"]) == ("1", "/slurmserve-hf")
    worker_log = next(d.log_dir.glob("*/node-1-n2.log")).read_text()
    assert f"model {HUB_REPO} resolved offline to {snapshot}" in worker_log, worker_log
    assert (cache / snapshot.removeprefix("/slurmserve-hf/") / "config.json").is_file()
    assert d.chat()
    requests = len(fakehub.requests)
    d.signal_driver()
    assert d.wait() == 0, d.err
    assert len(fakehub.requests) == requests  # nobody went back to the Hub
    secret = fakehub.token.encode()
    leaks = [p for p in d.log_dir.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert not leaks and fakehub.token not in d.out + d.err
    assert not our_containers(sandbox, d.job_id)


def test_two_nodes_without_hf_cache_are_warned_about_hub_downloads(deploy):
    d = deploy(2, "vllm", HUB_REPO, "--nodes", "2", "--pp", "2", nodelist="n1,n2")
    d.wait_err(rf"warning: each of 2 nodes downloads {HUB_REPO} from the Hub itself .*"
               "--hf-cache DIR", timeout=120)
    d.signal_driver()
    d.wait(60)
