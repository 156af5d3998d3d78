"""launch.build turns the plan's file sources into text: templates, node programs, secrets."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from slurmserve import api, load_spec, node, runtimes
from slurmserve.lifecycle import launch
from slurmserve.plan import Program, Rendered
from slurmserve.render import render_template
from slurmserve.runtimes import _common as docker
from tests.unit.helpers import allocation

IMG = "registry.example/engine:1"


def _build(tmp_path: Path, **kw):
    kw.setdefault("gpus_per_node", 8)
    spec = load_spec(image=IMG, log_dir=str(tmp_path / "logs"), **kw)
    plan = api.plan_cluster(spec, allocation(spec.nodes))
    return spec, plan, launch.build(spec, plan, str(tmp_path / "run"), IMG)


def test_the_plan_names_the_ray_head_script_and_launch_renders_it(tmp_path):
    _, plan, bundle = _build(tmp_path, engine="vllm", model="org/m", nodes=2, tp=8, pp=2)
    sources = dict(plan.nodes[0].files)
    assert isinstance(sources["ray-head.sh"], Rendered)
    assert sources["ray_wait.py"] == Program("ray_wait.py")
    files = dict(bundle.nodes[0].files)
    assert "python3 /slurmserve/ray_wait.py wait 2 16 1800 192.0.2.1 192.0.2.2" in files["ray-head.sh"]
    assert "<<'PY'" not in files["ray-head.sh"]  # the program is a file, not a heredoc
    assert files["ray_wait.py"] == node.read("ray_wait.py")
    launch.write(bundle)
    mounted = Path(bundle.nodes[0].files_dir or "")
    assert (mounted / "ray_wait.py").read_text() == node.read("ray_wait.py")
    assert bundle.nodes[1].files_dir is None  # workers mount nothing


def test_literal_text_stays_as_it_is(tmp_path):
    _, plan, bundle = _build(tmp_path, engine="trtllm", model="org/m", tp=8)
    assert dict(bundle.nodes[0].files)["trtllm-config.yaml"] == \
        dict(plan.nodes[0].files)["trtllm-config.yaml"]


def test_only_multi_node_trtllm_gets_an_ssh_key_pair(tmp_path):
    _, plan, bundle = _build(tmp_path, engine="trtllm", model="org/m", nodes=2, tp=16)
    head, worker = (dict(n.secrets) for n in bundle.nodes)
    assert head["ssh_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert worker["ssh_key.pub"] == head["ssh_key.pub"]  # one pair per job
    assert "ssh-keygen" not in " ".join(plan.nodes[1].command)
    _, _, single = _build(tmp_path, engine="trtllm", model="org/m", tp=8)
    assert single.nodes[0].secrets == ()


def test_a_hub_model_with_a_shared_cache_gets_the_prefetch_program(tmp_path):
    _, _, bundle = _build(tmp_path, engine="vllm", model="org/m", hf_cache="/shared/hf")
    assert dict(bundle.run_files) == {"hf_prefetch.py": node.read("hf_prefetch.py")}
    launch.write(bundle)
    written = Path(bundle.run_dir) / "hf_prefetch.py"
    assert written.read_text() == node.read("hf_prefetch.py")
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    _, _, local = _build(tmp_path, engine="vllm", model="/models/m", hf_cache="/shared/hf")
    assert local.run_files == ()


def _prefetch(run_dir: Path, fake_bin: Path) -> subprocess.CompletedProcess[str]:
    script = render_template(
        "prefetch.sh.j2", cache=str(run_dir / "hf"), image=IMG,
        env_file=str(run_dir / "node-0.env"), hf_dir=docker.HF_DIR, model="org/m",
        **runtimes.shell_context("docker", "4242"))
    path = run_dir / "prefetch.sh"  # the step runner writes every step script in the run dir
    path.write_text(script)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, cwd="/")


def test_prefetch_mounts_the_program_written_beside_it(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    record = tmp_path / "docker.argv"
    (fake_bin / "docker").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    (fake_bin / "docker").chmod(0o755)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    missing = _prefetch(run_dir, fake_bin)
    assert missing.returncode == 1 and "hf_prefetch.py is missing" in missing.stdout
    assert not record.exists()  # docker would create a directory for a missing mount source
    (run_dir / "hf_prefetch.py").write_text(node.read("hf_prefetch.py"))
    ran = _prefetch(run_dir, fake_bin)
    assert ran.returncode == 0, ran.stderr
    argv = record.read_text().splitlines()
    assert f"{run_dir}/hf_prefetch.py:{run_dir}/hf_prefetch.py:ro" in argv
    assert argv[-3:] == [IMG, f"{run_dir}/hf_prefetch.py", "org/m"]
    assert argv[argv.index("--entrypoint") + 1] == "python3"
