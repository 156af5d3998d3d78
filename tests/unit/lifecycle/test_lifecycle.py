"""The whole `run` lifecycle in-process over the fake SLURM: real templates, real bash, a
recording docker, no root. The sandbox cluster tests cover the same paths on real SLURM."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from slurmserve import api, load_spec, runner, state
from slurmserve.console import Console
from slurmserve.lifecycle import driver, preflight
from slurmserve.slurm import Job

from .fakeslurm import FakeSlurm

MODEL = "tiny"


def docker_save(path: Path, tag: str = "engine:1") -> str:
    """A minimal `docker save` archive: manifest, config, one layer. Returns the image ID."""
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    digest = "ab" * 32
    members = {f"{digest}.json": config, "layer/layer.tar": b"\0" * 1024,
               "manifest.json": json.dumps([{"Config": f"{digest}.json", "RepoTags": [tag],
                                             "Layers": ["layer/layer.tar"]}]).encode()}
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlurm]:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    fake = FakeSlurm(tmp_path)
    fake.set_control(model=MODEL)
    with runner.use(fake):
        yield fake
    for step in fake.steps:  # nothing of a failed test keeps running
        step.kill()
    for pidfile in (tmp_path / "docker").glob("*/containers/*.json"):
        with contextlib.suppress(OSError):
            os.kill(json.loads(pidfile.read_text())["pid"], signal.SIGKILL)


class Run:
    """One `run` in this (main) thread, with what it printed."""

    def __init__(self, slurm: FakeSlurm, tmp: Path, nodes: int = 1, **spec_fields) -> None:
        self.slurm = slurm
        self.tarball = tmp / "engine.tar"
        self.image_id = docker_save(self.tarball)
        fields = dict(engine="vllm", model="/models/m", served_model_name=MODEL,
                      image=str(self.tarball), nodes=nodes, gpus="none", gpus_per_node=1,
                      log_dir=str(tmp / "logs"), health_timeout=30, port=free_port())
        fields.update(spec_fields)
        self.spec = load_spec(**fields)
        self.err = io.StringIO()
        self.code: int | None = None
        self.run_dir = tmp / "logs" / slurm.job_id

    def __call__(self, capsys: pytest.CaptureFixture[str]) -> Run:
        job = Job(self.slurm.job_id, self.slurm.nodes)
        self.code = driver.run(self.spec, job, console=Console(self.err), follow_logs=False)
        self.out = capsys.readouterr().out
        return self

    @property
    def stderr(self) -> str:
        return self.err.getvalue()

    def record(self) -> state.JobRecord:
        found = state.read(self.slurm.job_id)
        assert found is not None
        return found


def when(predicate: Callable[[], bool], then: Callable[[], None], timeout: float = 30) -> None:
    """In the background: once predicate() holds, do then()."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                then()
                return
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()


def ready(run: Run) -> Callable[[], bool]:
    def check() -> bool:
        record = state.read(run.slurm.job_id)
        return record is not None and record.status == state.Status.READY
    return check


def interrupt() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def stop_marker(run: Run) -> Callable[[], None]:
    return lambda: (run.run_dir / state.STOP_MARKER).write_text("now\n")


def steps_end(slurm: FakeSlurm, within: float = 5.0) -> bool:
    """Every step's tasks end (a released held step ends in the background)."""
    deadline = time.monotonic() + within
    while any(step.poll() is None for step in slurm.steps):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def launched(slurm: FakeSlurm) -> Callable[[], bool]:
    return lambda: bool(slurm.launched())


def test_ready_then_stop_leaves_nothing(slurm, tmp_path, capsys):
    run = Run(slurm, tmp_path)
    when(ready(run), stop_marker(run))
    run(capsys)
    assert run.code == 0, run.stderr
    endpoint = f"http://127.0.0.1:{run.spec.port}"
    assert f"READY {endpoint} model={MODEL} nodes=1 engine=vllm" in run.out
    assert f"OPENAI_BASE_URL={endpoint}/v1" in run.out
    assert "(slurmserve stop)" in run.stderr and "no container of job 4242 left" in run.stderr
    assert slurm.containers() == []
    record = run.record()
    assert record.status == state.Status.STOPPED and record.endpoint == endpoint
    assert record.nodes[0].host == "n1" and record.image == run.image_id
    assert record.cleanup_removed == 0
    timeline = list(record.timeline.items())  # each event once, in the order it happened
    assert [e for e, _ in timeline][:3] == ["process", "driver", "preflight"]
    assert {"image load", "argument check", "launch", "waiting for ready", "health",
            "ready", "serving"} <= set(record.timeline)
    assert [t for _, t in timeline] == sorted(t for _, t in timeline)
    assert record.timeline["health"] <= record.timeline["ready"]
    loads = slurm.docker_calls("load")
    assert [node for node, _ in loads] == ["n1"]
    engine = [argv for _, argv in slurm.docker_calls("run") if "--name" in argv]
    assert engine and "slurmserve.job=4242" in engine[0]
    assert not list(run.run_dir.glob("*.env")), "env files (secrets) must be gone"
    assert slurm.step_names() == ["slurmserve-preflight", "slurmserve-distribute",
                                  "slurmserve-argcheck", "slurmserve-cleanup"]
    assert slurm.launched() == ["slurmserve-preflight"]  # in the preflight's own tasks
    assert steps_end(slurm)
    assert "args      not checked: no vllm parser in the image" in run.stderr


def test_two_nodes_image_present_everywhere_is_not_loaded(slurm, tmp_path, capsys):
    run = Run(slurm, tmp_path, nodes=2, tp=1, pp=1, dp=2, launch_mode="dp")
    for node in slurm.nodes:
        slurm.give_image(node, run.image_id)
    when(ready(run), stop_marker(run))
    run(capsys)
    assert run.code == 0, run.stderr
    assert "already on every node: skipped" in run.stderr
    assert slurm.docker_calls("load") == []
    assert "nodes=2" in run.out
    assert {node for node, argv in slurm.docker_calls("run") if "--name" in argv} == {"n1", "n2"}
    assert slurm.containers() == []


def test_a_failing_rank_fails_the_run_with_its_log(slurm, tmp_path, capsys):
    run = Run(slurm, tmp_path, nodes=2, tp=1, pp=1, dp=2, launch_mode="dp")
    slurm.set_control(healthy=False, exit={"1": [0.5, 7]})
    run(capsys)
    assert run.code == 1
    assert "node n2 (rank 1): container slurmserve-4242-1 exited with code 7" in run.stderr
    assert "slurmserve[1@n2]: FAILED:" in run.stderr
    assert "fake engine: rank 1 exits with code 7" in run.stderr  # the log tail
    assert run.record().status == state.Status.FAILED
    assert slurm.containers() == []


def test_preflight_failure_starts_nothing(slurm, tmp_path, capsys):
    run = Run(slurm, tmp_path, nodes=2, tp=1, pp=1, dp=2, launch_mode="dp")
    slurm.set_control(docker_down=["n2"])
    run(capsys)
    assert run.code == 1
    assert "preflight failed, nothing was started" in run.stderr
    assert "node n2: docker is not usable here" in run.stderr
    assert not [c for c in slurm.docker_calls() if c[1][0] in ("run", "load")]
    assert not slurm.launched()
    assert steps_end(slurm)  # the held preflight's tasks too


@pytest.mark.parametrize("phase, setup, trigger", [
    ("preflight", dict(delay={"version": 3}), "preflight checking"),
    ("image load", dict(load_delay=5), "n1: loading"),
    ("waiting for ready", dict(healthy=False), "container slurmserve-4242-0 started"),
])
def test_ctrl_c_in_each_phase(slurm, tmp_path, capsys, phase, setup, trigger):
    run = Run(slurm, tmp_path)
    slurm.set_control(**setup)
    when(lambda: trigger in run.stderr, lambda: (time.sleep(0.3), interrupt()))
    run(capsys)
    assert run.code == 0, run.stderr
    assert f"SIGINT during {phase}, stopping" in run.stderr
    assert "READY" not in run.out
    assert slurm.containers() == []
    if phase != "waiting for ready":
        assert not [a for _, a in slurm.docker_calls("run") if "--name" in a], \
            "nothing may start after a stop"


def test_ctrl_c_while_serving(slurm, tmp_path, capsys):
    run = Run(slurm, tmp_path)
    when(ready(run), interrupt)
    run(capsys)
    assert run.code == 0
    assert "SIGINT during serving" in run.stderr and "READY" in run.out
    assert slurm.containers() == []
    assert run.record().status == state.Status.STOPPED


def test_ctrl_c_during_launch_names_the_containers_started(slurm, tmp_path, capsys):
    run = Run(slurm, tmp_path, nodes=2, tp=1, pp=1, dp=2, launch_mode="dp")
    slurm.set_control(healthy=False, delay={"n2:ps-name": 30})  # n2 has not started its own
    when(lambda: "container slurmserve-4242-0 started" in run.stderr, interrupt)
    run(capsys)
    assert "SIGINT during launch (1 of 2 containers started)" in run.stderr, run.stderr
    assert slurm.containers() == []


def test_scancel_while_serving(slurm, tmp_path, capsys):
    run = Run(slurm, tmp_path)
    when(ready(run), slurm.cancel)
    run(capsys)
    assert run.code == 0
    assert "job 4242 was ended by SLURM (CANCELLED" in run.stderr
    assert "SLURM ended the job's steps" in run.stderr
    deadline = time.monotonic() + 10
    while slurm.containers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert slurm.containers() == [], "each node's task stops its container on SIGTERM"


def test_leftovers_of_finished_jobs_are_removed_others_kept(slurm, tmp_path, capsys):
    run = Run(slurm, tmp_path)
    slurm.give_image("n1", run.image_id, ["engine:1"])
    env = {**slurm.env, "SLURMD_NODENAME": "n1"}
    for name, job in (("slurmserve-99-0", "99"), ("slurmserve-98-0", "98"),
                      ("someone-else", "")):
        labels = ["--label", f"slurmserve.job={job}"] if job else []
        subprocess.Popen([str(tmp_path / "bin" / "docker"), "run", "--rm", "--name", name,
                          *labels, "--entrypoint", "sleep", "engine:1", "60"], env=env,
                         stdout=subprocess.DEVNULL, start_new_session=True)
    slurm.other_jobs = {"99": "COMPLETED", "98": "RUNNING"}
    deadline = time.monotonic() + 30
    while len(slurm.containers()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    when(ready(run), stop_marker(run))
    run(capsys)
    assert "removed 1 leftover container(s) of finished job(s) 99" in run.stderr
    assert slurm.containers() == ["slurmserve-98-0", "someone-else"]


def foreign_container(slurm: FakeSlurm, tmp_path: Path, node: str, name: str) -> None:
    """Someone else's container (no label of ours) named `name` on `node`."""
    env = {**slurm.env, "SLURMD_NODENAME": node}
    subprocess.Popen([str(tmp_path / "bin" / "docker"), "run", "--rm", "--name", name,
                      "--entrypoint", "sleep", "engine:1", "60"], env=env,
                     stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while name not in slurm.containers() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_node_the_preflight_found_clean_is_not_listed_again(slurm, tmp_path, capsys,
                                                              monkeypatch):
    """The preflight saw nothing of the job on the node (docker's API: named.docker 0): the
    launch runs the container without listing the node's containers first."""
    run = Run(slurm, tmp_path)
    monkeypatch.setattr(preflight.Preflight, "untouched", lambda self: frozenset({0}))
    when(ready(run), stop_marker(run))
    run(capsys)
    assert run.code == 0, run.stderr
    assert not [argv for _, argv in slurm.docker_calls("ps") if "name=^/?slurmserve-4242-0$"
                in argv and "--format" in argv], "no rt_prepare listing"
    assert slurm.containers() == []


def test_a_name_taken_after_the_preflight_is_refused_and_left_alone(slurm, tmp_path, capsys,
                                                                   monkeypatch):
    """Someone's container took the job's name between the preflight and the launch: docker
    refuses the name, the run fails saying so, and that container is not touched."""
    run = Run(slurm, tmp_path)
    slurm.give_image("n1", run.image_id, ["engine:1"])
    foreign_container(slurm, tmp_path, "n1", "slurmserve-4242-0")
    monkeypatch.setattr(preflight.Preflight, "untouched", lambda self: frozenset({0}))
    run(capsys)
    assert run.code == 1
    assert "docker could not run the container (code 125)" in run.stderr
    assert "Conflict. The container name" in run.stderr
    assert slurm.containers() == ["slurmserve-4242-0"]


def test_not_ready_in_time_fails_and_cleans(slurm, tmp_path, capsys):
    run = Run(slurm, tmp_path, health_timeout=1.5)
    slurm.set_control(healthy=False)
    run(capsys)
    assert run.code == 1
    assert "not ready after 1.5s" in run.stderr
    assert slurm.containers() == []


def test_doctor_runs_preflight_and_starts_nothing(slurm, tmp_path, monkeypatch):
    run = Run(slurm, tmp_path, nodes=2, tp=1, pp=1, dp=2, launch_mode="dp")
    monkeypatch.setenv("SLURM_JOB_ID", slurm.job_id)
    monkeypatch.setenv("SLURM_JOB_NODELIST", "n[1-2]")
    verdict, nodes = api.doctor(run.spec)
    assert nodes == ["n1", "n2"] and not verdict.failures
    assert {f.check for f in verdict.findings} >= {"step", "route", "runtime", "image", "ports"}
    assert not slurm.docker_calls("run") and not slurm.docker_calls("load")
    assert slurm.step_names() == ["slurmserve-preflight", "slurmserve-cleanup"]



def fake_tool(slurm: FakeSlurm, name: str, output: str) -> None:
    """A program on the nodes' PATH (the fake docker runs in-image checks on the host)."""
    tool = slurm.tmp / "bin" / name
    tool.write_text(f"#!/bin/sh\necho {output!r}\n")
    tool.chmod(0o755)


def test_ray_mode_checks_ray_inside_the_image_on_every_node(slurm, tmp_path, capsys):
    run = Run(slurm, tmp_path, nodes=2, tp=1, pp=2, launch_mode="ray")
    run(capsys)
    assert run.code == 1
    assert "image check failed, nothing was started" in run.stderr
    assert "node n1: image check `ray --version` failed" in run.stderr
    assert "node n2: image check `ray --version` failed" in run.stderr
    assert not slurm.launched()
    assert steps_end(slurm)  # the held preflight's tasks too


def test_ray_mode_with_ray_in_the_image_goes_on_to_launch(slurm, tmp_path, capsys):
    run = Run(slurm, tmp_path, nodes=2, tp=1, pp=2, launch_mode="ray")
    fake_tool(slurm, "ray", "ray, version 2.60.0")
    slurm.set_control(healthy=False)
    when(launched(slurm), interrupt)
    run(capsys)
    assert "checked on 2 node(s): ray: ray, version 2.60.0" in run.stderr
    assert "SIGINT during" in run.stderr and slurm.containers() == []


def test_a_failed_load_names_the_node_and_the_fix(slurm, tmp_path, capsys):
    run = Run(slurm, tmp_path, nodes=2, tp=1, pp=1, dp=2, launch_mode="dp")
    slurm.set_control(load_fail=["n2"])
    run(capsys)
    assert run.code == 1
    assert "image distribution failed, nothing was started" in run.stderr
    assert "node n2: error: docker load failed" in run.stderr
    assert "looks corrupt or truncated" in run.stderr
    assert not slurm.docker_calls("run")


def test_sbcast_stages_the_tarball_once_on_node_local_storage(slurm, tmp_path, capsys):
    stage = tmp_path / "stage"
    stage.mkdir()
    run = Run(slurm, tmp_path, stage="sbcast", stage_dir=str(stage))
    when(ready(run), stop_marker(run))
    run(capsys)
    assert run.code == 0, run.stderr
    assert [c for c in slurm.calls if c[0] == "sbcast"]
    assert "once (sbcast fan-out)" in run.stderr
    assert run.record().distribution["stage"] == "sbcast"
    assert not list(stage.iterdir()), "the staged copy and the markers are removed"


def test_sbcast_stages_nothing_when_every_node_holds_the_image(slurm, tmp_path, capsys):
    stage = tmp_path / "stage"
    stage.mkdir()
    run = Run(slurm, tmp_path, nodes=2, tp=2, pp=1, launch_mode="ray", stage="sbcast",
              stage_dir=str(stage))  # Ray mode: the in-image `ray --version` check still runs
    for node in slurm.nodes:
        slurm.give_image(node, run.image_id)
    when(ready(run), stop_marker(run))
    run(capsys)
    assert "already on every node: skipped" in run.stderr
    assert not [c for c in slurm.calls if c[0] == "sbcast"]
    steps = slurm.step_names()
    assert "slurmserve-distribute" in steps  # for the in-image check (here it finds no ray)
    assert "slurmserve-stage-check" not in steps and "image check `ray --version`" in run.stderr


def test_hub_model_is_fetched_once_on_the_head(slurm, tmp_path, capsys):
    cache = tmp_path / "hf"
    run = Run(slurm, tmp_path, model="org/model", hf_cache=str(cache))
    when(ready(run), stop_marker(run))
    run(capsys)
    assert run.code == 0, run.stderr
    fetches = [(node, argv) for node, argv in slurm.docker_calls("run")
               if any(a.endswith("/hf_prefetch.py") for a in argv)]
    assert [node for node, _ in fetches] == ["n1"]
    assert "org/model" in fetches[0][1] and "--network" in fetches[0][1]
    assert f"org/model is in {cache}" in run.stderr


def test_a_failed_hub_fetch_starts_nothing(slurm, tmp_path, capsys):
    run = Run(slurm, tmp_path, model="org/model", hf_cache=str(tmp_path / "hf"))
    slurm.set_control(prefetch_exit=1)
    run(capsys)
    assert run.code == 1
    assert "downloading org/model into" in run.stderr and "401 Unauthorized" in run.stderr
    assert not [a for _, a in slurm.docker_calls("run") if "--name" in a and "-prefetch" not in
                " ".join(a)]


def fake_parser(slurm: FakeSlurm, version: str = "9.9") -> None:
    """A vllm parser in the "image" through the slurmserve.argcheck entry point (the stand-ins'
    way); it rejects --bogus*."""
    root = slurm.tmp / "site"
    info = root / "fakeengine-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeengine\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[slurmserve.argcheck]\nvllm = fakeengine:VLLM\n")
    (root / "fakeengine.py").write_text(f"""
class _Check:
    VERSION = {version!r}
    def check(self, argv):
        bad = [a for a in argv if a.startswith("--bogus")]
        return f"unrecognized arguments: {{bad[0]}}" if bad else None
VLLM = _Check()
""")
    slurm.env["PYTHONPATH"] = str(root)


def test_a_flag_the_engine_rejects_fails_before_anything_starts(slurm, tmp_path, capsys):
    fake_parser(slurm)
    run = Run(slurm, tmp_path, nodes=2, tp=1, pp=1, dp=2, launch_mode="dp",
              engine_args=("--bogus-flag", "1"))
    run(capsys)
    assert run.code == 1
    assert "argument check failed, nothing was started" in run.stderr
    assert "rank 0 (n1): vllm 9.9 rejects `--bogus-flag`: unrecognized arguments" in run.stderr
    assert "remove --bogus-flag or spell it as vllm 9.9 does" in run.stderr
    assert not slurm.launched()
    assert steps_end(slurm)  # the held preflight's tasks too
    assert [node for node, a in slurm.docker_calls("run") if "--name" not in a] == ["n1"]


def test_the_engine_version_found_is_recorded(slurm, tmp_path, capsys):
    fake_parser(slurm, "0.32.0")
    run = Run(slurm, tmp_path)
    when(ready(run), stop_marker(run))
    run(capsys)
    assert run.code == 0, run.stderr
    assert "every rank's command line accepted by vllm 0.32.0" in run.stderr
    assert run.record().engine_version == "vllm 0.32.0"


def test_doctor_checks_the_args_where_the_image_is(slurm, tmp_path, monkeypatch):
    fake_parser(slurm)
    run = Run(slurm, tmp_path, engine_args=("--bogus",))
    slurm.give_image("n1", run.image_id)
    monkeypatch.setenv("SLURM_JOB_ID", slurm.job_id)
    monkeypatch.setenv("SLURM_JOB_NODELIST", "n1")
    slurm.nodes = ("n1",)
    verdict, _ = api.doctor(run.spec)
    args = [f for f in verdict.findings if f.check == "args"]
    assert [f.status for f in args] == ["fail"] and "vllm 9.9 rejects `--bogus`" in args[0].detail
    assert "args" in verdict.table(["n1"]).splitlines()[0]


def test_no_check_args_skips_the_check(slurm, tmp_path, capsys):
    run = Run(slurm, tmp_path, check_args=False)
    when(ready(run), stop_marker(run))
    run(capsys)
    assert run.code == 0, run.stderr
    assert "slurmserve-argcheck" not in slurm.step_names()
    assert run.record().engine_version is None


def test_a_port_something_listens_on_fails_preflight(slurm, tmp_path, capsys):
    """Read from the kernel's socket tables: a listener on any address takes the port."""
    run = Run(slurm, tmp_path)
    with socket.create_server(("127.0.0.1", run.spec.port)):
        run(capsys)
    assert run.code == 1
    assert f"node n1: port(s) {run.spec.port} already in use" in run.stderr
    assert not slurm.launched() and steps_end(slurm)
