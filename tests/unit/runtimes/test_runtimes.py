"""The container-runtime seam: choosing a runtime, naming its image, and its rt_* shell functions.

The shell functions run for real in bash, against fake runtime CLIs (tiny scripts on PATH that
record their argv and environment); nothing here needs a cluster or a real container runtime.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slurmserve import api, load_spec, runtimes
from slurmserve.errors import SpecError
from slurmserve.lifecycle import launch
from slurmserve.render import render_template
from slurmserve.runtimes import pyxis
from slurmserve.spec import Mount
from tests.unit.helpers import allocation

IMG = "registry.example/engine:1"
IMAGE_ID = "sha256:" + "0123456789abcdef" * 4
BASH = shutil.which("bash") or "/bin/bash"


def _spec(tmp_path: Path, **kw):
    kw.setdefault("image", IMG)
    return load_spec(engine="vllm", model="org/m", gpus_per_node=8,
                     log_dir=str(tmp_path / "logs"), **kw)


def _fake(bin_dir: Path, name: str, record: Path, stdout: str = "") -> None:
    """A fake CLI: appends {"argv", "env"} of each call to `record` as a JSON line."""
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"with open({str(record)!r}, 'a') as fh:\n"
                    "    fh.write(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}) + '\\n')\n"
                    f"sys.stdout.write({stdout!r})\n")
    tool.chmod(0o755)


def _calls(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def _partial(tmp_path: Path, runtime: str, image: str = "/img/x.sif") -> Path:
    path = tmp_path / f"{runtime}.sh"
    # Every template that includes a runtime sets `image` just before it (node.sh.j2 and others).
    text = render_template(f"runtimes/{runtime}.sh.j2", image=image,
                           **runtimes.shell_context(runtime, "4242"))
    path.write_text(f"image={shlex.quote(image)}\n{text}")
    return path


def _bash(snippet: str, partial: Path, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "CUDA_"))}
    script = f"fact() {{ printf 'FACT %s %s\\n' \"$1\" \"$2\"; }}\nsource {partial}\n{snippet}\n"
    return subprocess.run([BASH, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**clean, "PATH": path, **env})


# 1. choosing a runtime

def _found(**per_runtime: list[str]) -> dict[int, dict[str, str]]:
    """runtime=[fact of rank 0, fact of rank 1, ...] -> rank -> runtime -> fact."""
    ranks = max(len(v) for v in per_runtime.values())
    return {r: {n: facts[r] for n, facts in per_runtime.items()} for r in range(ranks)}


def test_an_explicit_runtime_is_chosen_only_when_it_works_on_every_rank(tmp_path):
    spec = _spec(tmp_path, runtime="docker")
    choice = runtimes.choose(spec, _found(docker=["ok 27.1", "ok 27.2"]), False, 2)
    assert choice == runtimes.Choice("docker", "--runtime docker", {0: "27.1", 1: "27.2"})
    assert runtimes.choose(spec, _found(docker=["ok 27.1", "absent"]), True, 2) is None
    pyxis_spec = _spec(tmp_path, runtime="pyxis")
    assert runtimes.choose(pyxis_spec, _found(pyxis=["ok enroot 4.1"]), False, 1) is None
    assert runtimes.choose(pyxis_spec, _found(pyxis=["ok enroot 4.1"]), True, 1).name == "pyxis"


def test_auto_prefers_pyxis_then_apptainer_then_docker_then_podman(tmp_path):
    spec = _spec(tmp_path)
    everything = _found(pyxis=["ok enroot 4.1"] * 2, apptainer=["ok 1.3"] * 2,
                        docker=["ok 27"] * 2, podman=["ok 5"] * 2)
    assert runtimes.choose(spec, everything, True, 2).name == "pyxis"
    no_pyxis = runtimes.choose(spec, everything, False, 2)
    assert no_pyxis.name == "apptainer"
    assert no_pyxis.reason == ("auto: srun has no --container-image (no pyxis); "
                               "apptainer works on every node")
    found = _found(pyxis=["absent"] * 2, apptainer=["ok 1.3", "absent"],
                   docker=["ok 27", "error: Cannot connect to the Docker daemon"],
                   podman=["ok 5", "ok 5"])
    choice = runtimes.choose(spec, found, True, 2)
    assert choice.name == "podman" and choice.versions == {0: "5", 1: "5"}
    assert choice.reason == ("auto: no pyxis (absent); no apptainer (absent); "
                             "no docker (error: Cannot connect to the Docker daemon); "
                             "podman works on every node")
    assert runtimes.choose(spec, _found(docker=["ok 27", "absent"]), False, 2) is None


def test_closest_names_the_runtime_working_on_most_nodes(tmp_path):
    spec = _spec(tmp_path)
    found = _found(pyxis=["ok enroot"] * 3, apptainer=["ok 1", "ok 1", "absent"],
                   docker=["absent", "absent", "ok 27"])
    assert runtimes.closest(spec, found, False, 3) == "apptainer"  # pyxis: srun lacks it
    assert runtimes.closest(spec, found, True, 3) == "pyxis"
    assert runtimes.closest(spec, _found(docker=["absent"] * 2), True, 2) is None


def test_a_native_image_file_has_only_its_own_runtime_as_candidate(tmp_path):
    sqsh, sif = tmp_path / "img.sqsh", tmp_path / "img.sif"
    sqsh.touch()
    sif.touch()
    assert runtimes.candidates(_spec(tmp_path, image=str(sqsh))) == ("pyxis",)
    assert runtimes.candidates(_spec(tmp_path, image=str(sif))) == ("apptainer",)
    assert runtimes.candidates(_spec(tmp_path)) == runtimes.AUTO_ORDER


# 2. spec validation

def test_a_runtime_that_cannot_run_the_image_file_is_a_spec_error_with_the_fix(tmp_path):
    sqsh = tmp_path / "img.sqsh"
    sqsh.touch()
    with pytest.raises(SpecError) as err:
        _spec(tmp_path, image=str(sqsh), runtime="docker")
    assert err.value.field == "--runtime"
    assert "runs only under --runtime pyxis, not docker" in err.value.problem
    assert "pass --runtime pyxis" in err.value.fix


def test_an_unknown_runtime_lists_the_choices(tmp_path):
    with pytest.raises(SpecError) as err:
        _spec(tmp_path, runtime="rkt")
    assert err.value.field == "runtime"
    assert err.value.fix == "choose one of: auto, docker, podman, pyxis, apptainer"
    with pytest.raises(SpecError, match="unknown runtime 'rkt'"):
        runtimes.get("rkt")


# 3. image_plan

def test_a_tarball_runs_by_id_under_daemons_and_converts_once_for_step_runtimes():
    tar = "/data/engine.tar"
    assert runtimes.image_plan("docker", tar, IMAGE_ID, "/cache") == runtimes.ImagePlan(IMAGE_ID)
    assert runtimes.image_plan("podman", tar, IMAGE_ID, "/cache") == runtimes.ImagePlan(IMAGE_ID)
    hex24 = "0123456789abcdef01234567"
    assert runtimes.image_plan("pyxis", tar, IMAGE_ID, "/cache") == \
        runtimes.ImagePlan(f"/cache/{hex24}.sqsh", convert_from=tar)
    assert runtimes.image_plan("apptainer", tar, IMAGE_ID, "/cache") == \
        runtimes.ImagePlan(f"/cache/{hex24}.sif", convert_from=tar)


@pytest.mark.parametrize("runtime,ref,image", [
    ("pyxis", "nvcr.io/nvidia/pytorch:24.01", "nvcr.io#nvidia/pytorch:24.01"),
    ("pyxis", "localhost/engine:1", "localhost#engine:1"),
    ("pyxis", "registry:5000/engine:1", "registry:5000#engine:1"),
    ("pyxis", "ubuntu:22.04", "ubuntu:22.04"),
    ("pyxis", "library/ubuntu", "library/ubuntu"),
    ("apptainer", "ubuntu:22.04", "docker://ubuntu:22.04"),
    ("docker", "nvcr.io/nvidia/pytorch:24.01", "nvcr.io/nvidia/pytorch:24.01"),
    ("pyxis", "/images/engine.sqsh", "/images/engine.sqsh"),
])
def test_a_reference_is_named_as_the_runtime_names_it(runtime, ref, image):
    assert runtimes.image_plan(runtime, ref, None, "/cache") == runtimes.ImagePlan(image)


# 4. pyxis step options

def test_pyxis_steps_run_in_the_jobs_named_writable_container():
    mounts = [Mount("/run/x", "/run/x"), Mount("/fsx", "/data", read_only=True)]
    assert pyxis.step_options("/c/e.sqsh", "4242", mounts) == [
        "--container-image=/c/e.sqsh", "--container-name=slurmserve-4242",
        "--container-writable", "--no-container-mount-home",
        "--container-mounts=/run/x:/run/x,/fsx:/data:ro"]
    assert not any(o.startswith("--container-mounts") for o in pyxis.step_options("i", "1", []))


# 5. apptainer (experimental)

def test_apptainer_node_script_execs_the_image_with_everything_bound(tmp_path):
    spec = _spec(tmp_path, runtime="apptainer", mounts=["/fsx:/fsx:ro"], hf_cache="/shared/hf")
    plan = api.plan_cluster(spec, allocation(1))
    bundle = launch.build(spec, plan, str(tmp_path / "run"), "/img/e.sif", "apptainer")
    env_file = bundle.nodes[0].env_file
    assert (f"    run_opts=(rt_with_env {env_file} '' apptainer exec --containall --cleanenv "
            "--writable-tmpfs --no-home --pwd / --bind /dev/shm:/dev/shm --bind /fsx:/fsx:ro "
            "--bind /shared/hf:/slurmserve-hf)\n") in bundle.script
    assert ("    run_tail=(/img/e.sif vllm serve org/m --tensor-parallel-size 8 "
            "--host 0.0.0.0 --port 8000)\n") in bundle.script
    assert bundle.step_options == ()
    checked = subprocess.run([BASH, "-n"], input=bundle.script, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    # A node with files (the Ray head) gets them read-only at /slurmserve, after the other binds.
    spec2 = _spec(tmp_path, runtime="apptainer", nodes=2, tp=8, pp=2)
    head = launch.build(spec2, api.plan_cluster(spec2, allocation(2)), str(tmp_path / "r2"),
                        "/img/e.sif", "apptainer")
    files = head.nodes[0].files_dir
    assert files and f"--bind /dev/shm:/dev/shm --bind {files}:/slurmserve:ro)\n" in head.script


def test_apptainer_env_file_values_reach_the_engine_by_environment_never_argv(tmp_path):
    record, bin_dir = tmp_path / "calls", tmp_path / "bin"
    _fake(bin_dir, "apptainer", record)
    env_file = tmp_path / "node.env"
    env_file.write_text("SECRET=s3cr3t\nx=y=z\nnot a pair\nLAST=no-newline")
    ran = _bash(f"rt_with_env {env_file} '' apptainer exec --containall /img/x.sif cmd arg",
                _partial(tmp_path, "apptainer"), f"{bin_dir}:/usr/bin:/bin")
    assert ran.returncode == 0, ran.stderr
    (call,) = _calls(record)
    assert call["argv"] == ["exec", "--containall", "/img/x.sif", "cmd", "arg"]
    assert call["env"]["APPTAINERENV_SECRET"] == "s3cr3t"
    assert call["env"]["APPTAINERENV_x"] == "y=z"
    assert call["env"]["APPTAINERENV_LAST"] == "no-newline"
    assert "SECRET" not in call["env"]  # only the prefixed form: the host side never sees it
    assert not any("s3cr3t" in a for a in call["argv"])


@pytest.mark.parametrize("ids,cuda,opts,visible", [
    ("2,3", None, ["--nv"], ("2,3", "2,3")),
    ("2,3", "0,1", ["--nv"], ("2,3", "0,1")),
    ("all", None, ["--nv"], ("", "")),
    ("", None, [], ("", "")),
])
def test_apptainer_gpus_are_nv_plus_the_jobs_visible_devices(tmp_path, ids, cuda, opts, visible):
    extra = {"CUDA_VISIBLE_DEVICES": cuda} if cuda else {}
    ran = _bash(f'rt_gpu_opts {ids!r}; printf "%s\\n" "${{gpu_opts[@]}}" ---\n'
                'echo "${APPTAINERENV_NVIDIA_VISIBLE_DEVICES:-}|${APPTAINERENV_CUDA_VISIBLE_DEVICES:-}"',
                _partial(tmp_path, "apptainer"), "/usr/bin:/bin", **extra)
    assert ran.returncode == 0, ran.stderr
    out = ran.stdout.splitlines()
    assert out[:-2] == opts and out[-2] == "---"
    assert out[-1] == "|".join(visible)


def test_apptainer_devices_convert_and_throwaway_exec(tmp_path):
    record, bin_dir = tmp_path / "calls", tmp_path / "bin"
    _fake(bin_dir, "apptainer", record)
    ran = _bash('rt_device_opts /dev/infiniband/uverbs0 /dev/gdrdrv; printf "%s\\n" "${device_opts[@]}"\n'
                "rt_convert /t/e.tar /c/e.sif\n"
                'rt_exec none "" "/a:/b:ro" -- sh -c true',
                _partial(tmp_path, "apptainer"), f"{bin_dir}:/usr/bin:/bin")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["--bind", "/dev/infiniband/uverbs0", "--bind", "/dev/gdrdrv"]
    convert, exec_ = (c["argv"] for c in _calls(record))
    assert convert == ["build", "--force", "/c/e.sif", "docker-archive:///t/e.tar"]
    assert exec_ == ["exec", "--containall", "--cleanenv", "--bind", "/a:/b:ro", "--net",
                     "--network", "none", "/img/x.sif", "sh", "-c", "true"]


def test_a_singularity_only_node_runs_singularity_as_apptainer(tmp_path):
    if shutil.which("apptainer", path="/usr/bin:/bin"):
        pytest.skip("a real apptainer is installed in /usr/bin or /bin")
    record, bin_dir = tmp_path / "calls", tmp_path / "bin"
    _fake(bin_dir, "singularity", record, stdout="singularity-ce version 4.1\n")
    ran = _bash("rt_apptainer --version", _partial(tmp_path, "apptainer"),
                f"{bin_dir}:/usr/bin:/bin", TMPDIR=str(tmp_path), SLURM_JOB_ID="77")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "singularity-ce version 4.1\n"
    assert [c["argv"] for c in _calls(record)] == [["--version"]]
    assert (tmp_path / "slurmserve-77-bin" / "apptainer").resolve() == bin_dir / "singularity"


# 6. step-family cleanup: processes found by the job mark in their environment

def test_step_cleanup_kills_only_this_jobs_processes_on_this_node(tmp_path):
    node = f"nX-{os.getpid()}"  # unique: nothing else on this machine carries this mark
    record, bin_dir = tmp_path / "calls", tmp_path / "bin"
    _fake(bin_dir, "enroot", record, stdout="pyxis_slurmserve-4242\npyxis_slurmserve-42\n")
    marks = [("4242", node), ("9999", node), ("4242", "other")]
    procs = [subprocess.Popen(["sleep", "60"], env={**os.environ, "SLURMSERVE_JOB": job,
                                                    "SLURMSERVE_NODE": where})
             for job, where in marks]
    try:
        partial = _partial(tmp_path, "pyxis", "/img/x.sqsh")
        path = f"{bin_dir}:/usr/bin:/bin"
        ran = _bash("rt_remove 4242", partial, path, SLURMD_NODENAME=node)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "1\n"
        assert procs[0].wait(timeout=10) == -15  # SIGTERM
        assert procs[1].poll() is None and procs[2].poll() is None
        assert [c["argv"] for c in _calls(record)] == [
            ["list"], ["remove", "--force", "pyxis_slurmserve-4242"]]
        again = _bash("set -euo pipefail\nrt_kill_marked 4242\necho done", partial, path,
                      SLURMD_NODENAME=node)
        assert (again.returncode, again.stdout) == (0, "0\ndone\n"), again.stderr
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _sleepers(marks: list[dict[str, str]]) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(["sleep", "60"], env={**os.environ, **mark}) for mark in marks]


def test_marked_processes_are_found_by_job_node_and_step_and_never_the_search_itself(tmp_path):
    node = f"nZ-{os.getpid()}"  # unique: nothing else on this machine carries this mark
    procs = _sleepers([
        {"SLURMSERVE_JOB": "4242", "SLURMSERVE_NODE": node, "SLURM_STEP_ID": "3"},
        {"SLURMSERVE_JOB": "4242", "SLURMSERVE_NODE": node, "SLURM_STEP_ID": "7"},
        {"SLURMSERVE_JOB": "9999", "SLURMSERVE_NODE": node},
        {"SLURMSERVE_JOB": "4242", "SLURMSERVE_NODE": "other"},
        {"SLURMSERVE_JOB": "", "SLURMSERVE_NODE": node},
        {"SLURMSERVE_NODE": node}])
    pids = [str(p.pid) for p in procs]
    probe = tmp_path / "marked.sh"
    probe.write_text(render_template("runtimes/probe/_marked.sh.j2",
                                     **runtimes.shell_context("apptainer", "4242")))
    try:
        # The probe: every job of ours on this node, by PID (the calling shell carries no mark).
        found = _bash("marked_jobs", probe, "/usr/bin:/bin", SLURMD_NODENAME=node)
        assert found.returncode == 0, found.stderr
        assert sorted(found.stdout.split()) == sorted(
            [f"{pids[0]}=4242", f"{pids[1]}=4242", f"{pids[2]}=9999"])
        # Cleanup's search, from a shell that carries the job's mark itself (a node script):
        # neither that shell nor the search's own processes are listed.
        partial = _partial(tmp_path, "pyxis", "/img/x.sqsh")
        mark = {"SLURMD_NODENAME": node, "SLURMSERVE_JOB": "4242", "SLURMSERVE_NODE": node}
        everyone = _bash("rt_marked 4242", partial, "/usr/bin:/bin", **mark)
        assert sorted(everyone.stdout.split()) == sorted([pids[0], pids[1]]), everyone.stderr
        others = _bash("rt_marked 4242 7", partial, "/usr/bin:/bin", **mark)
        assert others.stdout.split() == [pids[0]], others.stderr
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


# 7. daemon family: GPUs

@pytest.mark.parametrize("cli,ids,opts", [
    ("podman", "1,3", ["--device", "nvidia.com/gpu=1", "--device", "nvidia.com/gpu=3"]),
    ("podman", "all", ["--device", "nvidia.com/gpu=all"]),
    ("podman", "", []),
    ("docker", "1,3", ["--gpus", '"device=1,3"']),  # the quotes are docker's CSV syntax
    ("docker", "all", ["--gpus", "all"]),
    ("docker", "", []),
])
def test_daemon_gpu_options_reach_the_cli_as_it_wants_them(tmp_path, cli, ids, opts):
    record, bin_dir = tmp_path / "calls", tmp_path / "bin"
    _fake(bin_dir, cli, record)
    ran = _bash(f'set -euo pipefail\nrt_gpu_opts {ids!r}\n{cli} run "${{gpu_opts[@]}}" img',
                _partial(tmp_path, cli, IMG), f"{bin_dir}:/usr/bin:/bin")
    assert ran.returncode == 0, ran.stderr
    assert [c["argv"] for c in _calls(record)] == [["run", *opts, "img"]]


# 8. node.sh: the GPUs SLURM gave this job

def _node_sh(tmp_path: Path, gpus: str, step_gpus: str):
    spec = _spec(tmp_path, runtime="docker", gpus=gpus)
    plan = api.plan_cluster(spec, allocation(1))
    bundle = launch.build(spec, plan, str(tmp_path / "run"), IMG, "docker")
    launch.write(bundle)
    record, bin_dir = tmp_path / "calls", tmp_path / "bin"
    _fake(bin_dir, "docker", record)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "CUDA_"))}
    ran = subprocess.run(
        [BASH, bundle.script_path], capture_output=True, text=True, timeout=60,
        env={**clean, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_PROCID": "0",
             "SLURMD_NODENAME": plan.nodes[0].host, "SLURM_STEP_GPUS": step_gpus})
    runs = [c["argv"] for c in _calls(record) if c["argv"][:1] == ["run"]]
    return bundle, ran, runs


def test_node_script_passes_only_the_gpus_slurm_gave_the_step(tmp_path):
    bundle, ran, runs = _node_sh(tmp_path, "all", "2,3")
    assert 'allocated="${SLURM_STEP_GPUS:-${SLURM_JOB_GPUS:-}}"' in bundle.script
    assert "SLURMSERVE_FACT\t0\tgpus\t2,3\n" in ran.stdout, ran.stdout + ran.stderr
    (argv,) = runs
    assert argv[argv.index("--gpus") + 1] == '"device=2,3"'
    assert argv[argv.index("--entrypoint") + 1:][:2] == ["vllm", IMG]


def test_node_script_refuses_a_gpu_slurm_did_not_give_the_job(tmp_path):
    _, ran, runs = _node_sh(tmp_path, "0,5", "0,1")
    assert ran.returncode == 4, ran.stdout + ran.stderr
    assert ("SLURMSERVE_FACT\t0\tfailed\t--gpus 0,5 names GPU 5, which SLURM did not give "
            "this job on gpu-1 (it gave 0,1)\n") in ran.stdout
    assert runs == []


def test_a_plan_that_needs_sshd_across_nodes_is_refused_under_pyxis_only():
    from slurmserve import api

    spec = load_spec(engine="trtllm", model="m", image="registry.example/trtllm:1", nodes=2,
                     gpus_per_node=8, tp=16)
    plan = api.plan_cluster(spec, api.preview_allocation(spec))
    assert plan.needs == ("sshd",)
    refused = runtimes.refusal(plan.needs, "pyxis")
    assert refused and refused.startswith("--runtime pyxis: an sshd inside an enroot container")
    assert "--runtime docker" in refused
    assert runtimes.refusal(plan.needs, "docker") is None
    one = api.plan_cluster(load_spec(engine="trtllm", model="m", image="r.example/t:1",
                                     gpus_per_node=8), api.preview_allocation(spec))
    assert one.needs == () and runtimes.refusal(one.needs, "pyxis") is None


# 9. an MPI world across nodes under a step runtime: the serving step's tasks are the ranks

@pytest.mark.parametrize("runtime", ["pyxis", "apptainer"])
def test_trtllm_across_nodes_under_a_step_runtime_is_a_pmix_world_without_sshd(tmp_path, runtime):
    spec = load_spec(engine="trtllm", model="m", image="registry.example/trtllm:1", nodes=2,
                     gpus_per_node=8, tp=16, runtime=runtime, log_dir=str(tmp_path / "logs"))
    alloc = api.preview_allocation(spec)
    assert alloc.mpi_launch == "pmix"
    plan = api.plan_cluster(spec, alloc)
    assert (plan.mpi, plan.tasks_per_node, plan.world_size, plan.needs) == ("pmix", 8, 16, ())
    assert [n.role for n in plan.nodes] == ["mpi-head", "mpi-ranks"]
    assert all(n.command[:2] == ("trtllm-llmapi-launch", "trtllm-serve") for n in plan.nodes)
    assert all(not n.secrets and not n.wait_for for n in plan.nodes)  # no ssh keys, no sshd
    assert [n.serves_http for n in plan.nodes] == [True, False]
    assert runtimes.refusal(plan.needs, runtime) is None
    bundle = launch.build(spec, plan, str(tmp_path / "run"), "/img/t.sqsh", runtime)
    assert "--mpi=pmix" in bundle.step_options
    from slurmserve.slurm import Job, srun_argv

    argv = srun_argv(Job("7", ("a", "b")), ["bash", "x"], tasks=16, tasks_per_node=8)
    assert argv[2:5] == ["--nodes=2", "--ntasks=16", "--ntasks-per-node=8"]
    assert "--distribution=block" in argv
    # Under docker the same spec stays mpirun over ssh (the world in one step's task 0).
    docker = load_spec(engine="trtllm", model="m", image="registry.example/trtllm:1", nodes=2,
                       gpus_per_node=8, tp=16, runtime="docker")
    ssh = api.plan_cluster(docker, api.preview_allocation(docker))
    assert (ssh.mpi, ssh.tasks_per_node, ssh.needs) == (None, 1, ("sshd",))


def test_a_nodes_tasks_of_an_mpi_step_map_to_its_rank_in_blocks(tmp_path):
    spec = load_spec(engine="trtllm", model="m", image="registry.example/trtllm:1", nodes=2,
                     gpus_per_node=8, tp=16, runtime="pyxis", log_dir=str(tmp_path / "logs"))
    plan = api.plan_cluster(spec, api.preview_allocation(spec))
    bundle = launch.build(spec, plan, str(tmp_path / "run"), "/img/t.sqsh", "pyxis")
    launch.write(bundle)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "CUDA_"))}
    for task, rank in ((0, 0), (7, 0), (8, 1), (15, 1)):
        ran = subprocess.run([BASH, bundle.script_path], capture_output=True, text=True,
                             timeout=60, env={**clean, "SLURM_PROCID": str(task),
                                              "SLURMD_NODENAME": "elsewhere"})
        host = plan.nodes[rank].host
        assert ran.returncode == 3, ran.stdout + ran.stderr
        assert ran.stdout == (f"SLURMSERVE_FACT\t{rank}\tfailed\tplanned for {host} but running "
                              "on elsewhere; the allocation changed, re-run slurmserve\n")


def test_a_step_runtime_prepares_a_node_without_killing_its_own_steps_other_ranks(tmp_path):
    node = f"nY-{os.getpid()}"  # unique: nothing else on this machine carries this mark
    marks = [("4242", "7"), ("4242", "6")]  # this step's other rank; an earlier attempt's
    procs = [subprocess.Popen(["sleep", "60"], env={**os.environ, "SLURMSERVE_JOB": job,
                                                    "SLURMSERVE_NODE": node,
                                                    "SLURM_STEP_ID": step})
             for job, step in marks]
    try:
        ran = _bash("rt_prepare slurmserve-4242", _partial(tmp_path, "pyxis", "/img/x.sqsh"),
                    "/usr/bin:/bin", SLURMD_NODENAME=node, SLURM_STEP_ID="7")
        assert ran.returncode == 0, ran.stderr
        assert procs[1].wait(timeout=10) == -15
        assert procs[0].poll() is None
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_apptainer_ranks_of_a_pmix_step_see_the_pmix_server(tmp_path):
    ran = _bash('rt_device_opts; printf "%s\\n" "${device_opts[@]}"\n'
                'echo "$APPTAINERENV_PMIX_RANK $APPTAINERENV_SLURM_STEP_ID"',
                _partial(tmp_path, "apptainer"), "/usr/bin:/bin",
                PMIX_SERVER_TMPDIR="/var/spool/slurmd/pmix.7.0", PMIX_RANK="3",
                SLURM_STEP_ID="0")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["--bind", "/var/spool/slurmd/pmix.7.0", "3 0"]
    plain = _bash('rt_device_opts; echo "${#device_opts[@]} ${APPTAINERENV_PMIX_RANK:-unset}"',
                  _partial(tmp_path, "apptainer"), "/usr/bin:/bin")
    assert plain.stdout == "0 unset\n", plain.stderr
