"""Faults on the real sandbox: a stop in every phase, killed containers and daemons, a cut
network, bad tarballs, a full disk, a taken port, stale containers, a SIGKILLed driver.

Each ends the same way (`assert_clean_end`): a meaningful exit code and message, no container
of ours on any node, foreign containers untouched, logs kept. What holds a phase long enough
to be hit is a real condition (a filtered port, a big layer to load, a worker waiting for its
head, a slow engine start), never a sleep. Disruptions are undone in `finally` before the
test ends. The stop-while-serving cases SIGINT and scancel, a killed worker and leftovers of
finished jobs are in test_run.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest
from deploy import RUNTIME, STANDIN, STEP_RUNTIMES, Deployment, kill_rank, our_containers
from sandboxlib import (
    TEST_LABEL,
    Sandbox,
    cut_network,
    dropped,
    load_image,
    restore_nodes,
    run,
    sandbox_status,
    stop_dockerd,
    tarball_image,
)

MODEL = "org/tiny-model"
PORT = 23871  # an explicit --port, for holds that must know the port before the job exists
SGLANG_PORT = 30000  # SGLang's default HTTP port
SLURMD_PORT = "6818"  # the sandbox's slurmd (SLURM's default SlurmdPort)
TWO = ("--nodes", "2", "--tp", "2")


@pytest.fixture(scope="module")
def variant(sandbox, standin_tarball, tmp_path_factory):
    """(tarball, image ID): the stand-in plus a 200 MB layer, saved by ID so the tarball has
    no tag. Loading it takes seconds on any node, and no node holds it before a test."""
    _, tag = tarball_image(standin_tarball)
    node = sandbox.nodes[-1]
    load_image(sandbox, node, standin_tarball)
    name = f"sstest-variant-{uuid.uuid4().hex[:8]}"
    sandbox.docker(node, "run", "--name", name, "--label", TEST_LABEL, "--network", "none",
                   "--entrypoint", "sh", tag, "-c",
                   f"head -c 200000000 /dev/zero >/slurmserve-pad && echo {name} >/variant")
    image_id = sandbox.docker(node, "commit", name).stdout.strip()
    sandbox.docker(node, "rm", name)
    path = tmp_path_factory.mktemp("variant") / "variant.tar"
    sandbox.docker(node, "save", "--output", str(path), image_id, timeout=300)
    path.chmod(0o644)
    sandbox.docker(node, "rmi", image_id)
    yield path, image_id
    for n in sandbox.nodes:
        sandbox.docker(n, "rmi", "--force", image_id, check=False)


def absent(sandbox: Sandbox, image_id: str, nodes=("n1", "n2")) -> None:
    for node in nodes:
        sandbox.docker(node, "rmi", "--force", image_id, check=False)


@pytest.fixture
def foreign(sandbox, containers, standin_tarball) -> tuple[str, str]:
    """A container on n1 that is not ours: every test checks it survives."""
    _, tag = tarball_image(standin_tarball)
    load_image(sandbox, "n1", standin_tarball)
    return "n1", containers.run("n1", "foreign", tag, "600", docker_args=["--entrypoint", "sleep"])


def gone_after(sandbox: Sandbox, job: str, timeout: float, skip: tuple[str, ...] = ()) -> float:
    """Seconds until no container of JOB is left on any node (fails after TIMEOUT)."""
    t0 = time.monotonic()
    while left := our_containers(sandbox, job, skip):
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"containers of job {job} still there after {timeout} s: {left}")
        time.sleep(0.2)
    return time.monotonic() - t0


def assert_clean_end(d: Deployment, sandbox: Sandbox, code: int, *says: str,
                     foreign: tuple[str, str] | None = None, settle: float = 0,
                     timeout: float = 90, skip: tuple[str, ...] = ()) -> float:
    """The run ends with CODE and says SAYS; nothing of ours is left on any node but SKIP (at
    once, or within SETTLE s when SLURM rather than the driver stops the containers); FOREIGN
    still runs; the logs are kept. Returns the seconds from the call to the last one gone."""
    t0 = time.monotonic()
    got = d.wait(timeout)
    assert got == code, f"exit {got}, expected {code}\n{d.err[-5000:]}"
    for text in says:
        assert text in d.err, f"{text!r} not in the driver's output:\n{d.err[-5000:]}"
    gone_after(sandbox, d.job_id, settle, skip)
    if foreign:
        running = sandbox.docker(foreign[0], "inspect", "-f", "{{.State.Running}}", foreign[1])
        assert running.stdout.strip() == "true", f"foreign container {foreign[1]} was touched"
    run_dir = d.log_dir / d.job_id
    assert run_dir.is_dir() and any(run_dir.iterdir()), f"logs not kept in {run_dir}"
    return time.monotonic() - t0


# --- a stop in every phase --------------------------------------------------------------------


def wait_until(what: str, probe, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def start_in_phase(phase: str, deploy, sandbox: Sandbox, variant, stack: ExitStack,
                   hold: ExitStack) -> Deployment:
    """Start a 2-node run and return once it is inside PHASE, held there (by `stack`, or by
    `hold` where the stop's own teardown needs what holds it)."""
    if phase == "preflight":  # n1's slurmd does not answer: the step's launch there hangs
        hits = hold.enter_context(dropped(sandbox, "n1", "--dport", SLURMD_PORT))
        d = deploy(2, "sglang", MODEL, *TWO, nodelist="n1,n2")
        d.wait_err(r"preflight +checking")
        wait_until("the preflight step's launch on n1 hangs", lambda: hits() > 0)
    elif phase == "image load" and RUNTIME in STEP_RUNTIMES:  # converted once: into a new cache
        cache = stack.enter_context(tempfile.TemporaryDirectory(dir=str(variant[0].parent)))
        d = deploy(2, "sglang", MODEL, *TWO, "--image", str(variant[0]), "--image-cache", cache,
                   nodelist="n1,n2")
        d.wait_err(r"image +converting")
    elif phase == "image load":  # a 750 MB tarball no node holds
        path, image_id = variant
        absent(sandbox, image_id)
        stack.callback(absent, sandbox, image_id)
        d = deploy(2, "sglang", MODEL, *TWO, "--image", str(path), nodelist="n1,n2")
        d.wait_err(r"image +n[12]: loading")
    elif phase == "launch":  # the Ray worker waits for its head, which it cannot reach
        stack.enter_context(dropped(sandbox, "n1", "--source", sandbox.addr("n2")))
        d = deploy(2, "vllm", MODEL, "--nodes", "2", "--tp", "1", "--pp", "2", nodelist="n1,n2")
        d.wait_err(r"\[0@n1\]: container \S+ started")
    elif phase == "waiting for ready":  # the head's engine opens its API much later
        d = deploy(2, "sglang", MODEL, *TWO, "--env", "SLURMSERVE_STANDIN_FAULT=slow-start=300@0",
                   nodelist="n1,n2")
        d.wait_err(r"\[1@n2\]: container \S+ started")
        d.wait_err(r"\[0@n1\]: container \S+ started")
        d.wait_err(r"ready\? +polling")
    else:
        d = deploy(2, "sglang", MODEL, *TWO, nodelist="n1,n2")
        d.wait_ready()
    return d


PHASES = ["preflight", "image load", "launch", "waiting for ready", "serving"]
STOPS = [(how, phase) for how in ("SIGINT", "SIGTERM", "scancel") for phase in PHASES
         if (how, phase) not in {("SIGINT", "serving"), ("scancel", "serving")}]  # test_run.py


@pytest.mark.parametrize("how,phase", STOPS)
def test_stop_in_every_phase(deploy, sandbox, variant, foreign, how, phase):
    with ExitStack() as stack, ExitStack() as hold:
        d = start_in_phase(phase, deploy, sandbox, variant, stack, hold)
        said = "launch (1 of 2 containers started)" if phase == "launch" else phase
        if how == "scancel":
            sandbox.host("scancel", d.job_id)
            hold.close()
            # SLURM ends every step: each node's task stops its container on SLURM's SIGTERM.
            assert_clean_end(d, sandbox, 0, f"job {d.job_id} was ended by SLURM",
                             f"during {said}", "SLURM ended the job's steps", foreign=foreign,
                             settle=15)
        else:
            d.signal_driver(getattr(signal, how))
            hold.close()
            assert_clean_end(d, sandbox, 0, f"slurmserve: {how} during {said}, stopping",
                             f"no container of job {d.job_id} left", foreign=foreign)
    if phase in PHASES[2:]:
        assert len(list((d.log_dir / d.job_id).glob("node-*.log"))) >= 1


# --- containers and daemons dying -------------------------------------------------------------


def test_killed_head_container_fails_the_job_with_its_log(deploy, sandbox, foreign):
    d = deploy(2, "sglang", MODEL, *TWO, nodelist="n1,n2")
    d.wait_ready()
    head = d.state()["nodes"][0]
    kill_rank(sandbox, d.job_id, head)  # its container, or under pyxis its engine's processes
    died = f"the engine ({head['container']})" if RUNTIME in STEP_RUNTIMES else \
        f"container {head['container']}"
    assert_clean_end(d, sandbox, 1, f"node {head['host']} (rank 0): {died} exited with code "
                     "137", head["log"], f"no container of job {d.job_id} left", foreign=foreign)


@pytest.mark.parametrize("when", ["before the run", "while serving"])
def test_stopped_dockerd(deploy, sandbox, foreign, when):
    try:
        if when == "before the run":
            stop_dockerd("n2")
            d = deploy(2, "sglang", MODEL, *TWO, nodelist="n1,n2")
            assert_clean_end(d, sandbox, 1, "preflight failed, nothing was started",
                             "node n2: docker is not usable here", "could not check n2: docker "
                             "does not answer", foreign=foreign, skip=("n2",))
            assert "] launch" not in d.err
        else:
            d = deploy(2, "sglang", MODEL, *TWO, nodelist="n1,n2")
            d.wait_ready()
            stop_dockerd("n2")
            # dockerd stops its containers as it goes; the driver cannot check n2 afterwards.
            assert_clean_end(d, sandbox, 1, "node n2 (rank 1): docker on n2 stopped or does "
                             "not answer", f"no container of job {d.job_id} left on n1; could "
                             "not check n2: docker does not answer", foreign=foreign, skip=("n2",))
    finally:
        restore_nodes(sandbox)
    assert not our_containers(sandbox, d.job_id)  # n2 again, now that its docker answers


def reconnect_and_see_n2_cleaned(sandbox: Sandbox, job: str) -> None:
    """n1 is clean already; n2's container goes once its link is back (SLURM ends the step)."""
    assert not our_containers(sandbox, job).get("n1")
    cut_network("n2", up=True)
    print(f"n2's container gone {gone_after(sandbox, job, 120):.1f} s after the link came back")


def test_network_cut_while_serving(deploy, sandbox, foreign):
    """A cut-off node keeps its container while it is unreachable; the driver says so, ends
    in bounded time, and once the node is back SLURM ends the step there, whose task stops
    the container."""
    d = deploy(2, "sglang", MODEL, *TWO, nodelist="n1,n2")
    d.wait_ready()
    worker = d.state()["nodes"][1]
    try:
        cut_network("n2")
        d.signal_driver(signal.SIGINT)
        assert d.wait(120) == 0, d.err
        assert "slurmserve: SIGINT during serving, stopping" in d.err
        assert "could not check n2: its cleanup task did not answer" in d.err, d.err
        # The node's docker socket (or its processes) are on this machine, so what is left
        # there can still be seen: its container, or under pyxis its engine process.
        left = our_containers(sandbox, d.job_id)
        assert set(left) == {"n2"}, left
        if RUNTIME in STEP_RUNTIMES:
            assert any(item.startswith("pid ") for item in left["n2"]), left
        else:
            assert left["n2"] == [worker["container"]], left
        reconnect_and_see_n2_cleaned(sandbox, d.job_id)
    finally:
        restore_nodes(sandbox)
    assert sandbox.docker("n1", "inspect", foreign[1]).returncode == 0


def test_network_cut_while_starting(deploy, sandbox, foreign):
    """n2 cut off after its container started, before the group formed: the head never
    becomes ready, the run fails at its health timeout, n1 is clean at once and n2 once its
    link is back. What n2 sends n1 is dropped from the start, so the group cannot form before
    the cut however fast the ranks start."""
    # pyxis unpacks the image as the container starts (15 s once in CI): the clock runs then.
    health = "45" if RUNTIME in STEP_RUNTIMES else "15"
    try:
        with dropped(sandbox, "n1", "--source", sandbox.addr("n2")):
            d = deploy(2, "sglang", MODEL, *TWO, "--health-timeout", health, nodelist="n1,n2")
            d.wait_err(r"\[1@n2\]: container \S+ started")
            cut_network("n2")
            assert d.wait(120) == 1, d.err
        assert f"not ready after {health}s" in d.err, d.err
        assert "could not check n2" in d.err, d.err
        reconnect_and_see_n2_cleaned(sandbox, d.job_id)
    finally:
        restore_nodes(sandbox)
    assert sandbox.docker("n1", "inspect", foreign[1]).returncode == 0


def test_network_cut_before_the_run_fails_preflight_naming_the_node(deploy, sandbox, foreign):
    try:
        cut_network("n2")
        d = deploy(2, "sglang", MODEL, *TWO, nodelist="n1,n2")
        assert_clean_end(d, sandbox, 1, "preflight failed, nothing was started",
                         "node n2: preflight did not complete", foreign=foreign, timeout=180)
        assert "] launch" not in d.err
    finally:
        restore_nodes(sandbox)


# --- bad images and full disks ----------------------------------------------------------------


def _truncated(variant, tmp: Path) -> Path:
    path = tmp / "truncated.tar"
    with variant[0].open("rb") as src, path.open("wb") as dst:
        dst.write(src.read(variant[0].stat().st_size // 2))
    return path


def _incomplete(variant, tmp: Path) -> Path:
    """A manifest naming a layer the archive does not hold."""
    path = tmp / "incomplete.tar"
    with tarfile.open(variant[0]) as src, tarfile.open(path, "w") as dst:
        manifest = json.load(src.extractfile("manifest.json"))
        config = manifest[0]["Config"]
        for name, data in ((config, src.extractfile(config).read()),
                           ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, fileobj=io.BytesIO(data))
    return path


def _corrupt(variant, tmp: Path) -> Path:
    """One byte changed inside the 200 MB layer: only `docker load` can tell."""
    path = tmp / "corrupt.tar"
    shutil.copyfile(variant[0], path)
    with tarfile.open(path) as tar:
        top = json.load(tar.extractfile("manifest.json"))[0]["Layers"][-1]
        member = tar.getmember(top)
    with path.open("r+b") as fh:
        fh.seek(member.offset_data + member.size // 2)
        fh.write(b"\x01")
    return path


@pytest.mark.parametrize("make,code,says", [
    (_truncated, 2, "is truncated: reading it as a `docker save` archive failed"),
    (_incomplete, 2, "is incomplete: its manifest names"),
    (_corrupt, 1, "looks corrupt or truncated"),
])
def test_bad_tarball_fails_before_launch(deploy, sandbox, variant, tmp_path, foreign, make,
                                         code, says):
    path = make(variant, tmp_path)
    absent(sandbox, variant[1])
    d = deploy(2, "sglang", MODEL, *TWO, "--image", str(path), nodelist="n1,n2")
    got = d.wait(120)
    assert got == code and says in d.err and str(path) in d.err, d.err
    assert "re-create it with `docker save" in d.err
    assert "] launch" not in d.err and not our_containers(sandbox, d.job_id)
    assert sandbox.docker("n1", "inspect", foreign[1]).returncode == 0


def test_untagged_tarball_is_loaded_and_run_by_id(deploy, sandbox, variant):
    path, image_id = variant
    absent(sandbox, image_id)
    try:
        d = deploy(2, "sglang", MODEL, *TWO, "--image", str(path), nodelist="n1,n2")
        d.wait_ready()
        assert "n1: loaded" in d.err and "n2: loaded" in d.err
        for node in d.state()["nodes"]:
            running = sandbox.docker(node["host"], "inspect", "-f", "{{.Image}}",
                                     node["container"]).stdout.strip()
            assert running == image_id
        d.signal_driver(signal.SIGINT)
        assert_clean_end(d, sandbox, 0, f"no container of job {d.job_id} left")
    finally:
        absent(sandbox, image_id)


def test_disk_full_on_load(deploy, sandbox, standin_tarball, foreign):
    """n2's docker data root is a 64 MB tmpfs: `docker load` there runs out of space."""
    root = Path(sandbox_status()["state_dir"]) / "docker" / "n2"
    mounted = False
    try:
        stop_dockerd("n2")
        run(["mount", "-t", "tmpfs", "-o", "size=64m", "sstest-full", str(root)])
        mounted = True
        restore_nodes(sandbox)  # starts n2's dockerd on the small, empty data root
        d = deploy(2, "sglang", MODEL, *TWO, nodelist="n1,n2")
        assert_clean_end(d, sandbox, 1, "image distribution failed, nothing was started",
                         "node n2: error: docker load failed", "no space left on device",
                         "image store is full", foreign=foreign)
        assert "] launch" not in d.err
    finally:
        if mounted:
            stop_dockerd("n2")
            run(["umount", "--lazy", str(root)])
        restore_nodes(sandbox)
    load_image(sandbox, "n2", standin_tarball)  # still there under the tmpfs: no load needed


# --- ports and names already taken ------------------------------------------------------------


@pytest.mark.parametrize("explicit", [True, False])
def test_port_taken_on_the_head(deploy, sandbox, explicit):
    port = PORT if explicit else SGLANG_PORT
    holder = subprocess.Popen(
        [str(Path(__file__).parent / "sandbox"), "exec", "n1", "python3", "-c",
         "import socket, sys, time\n"
         f"s = socket.create_server(('0.0.0.0', {port}))\n"
         "print('listening', flush=True)\ntime.sleep(600)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said = holder.stdout.readline().strip() if holder.stdout else ""
        if said != "listening":  # say why (e.g. something of an earlier test still there)
            holder.kill()
            _, err = holder.communicate(timeout=30)
            listeners = sandbox.exec("n1", "ss", "-ltnp", check=False).stdout
            raise AssertionError(f"the test's own listener on n1:{port} did not start: "
                                 f"{err.strip()[-2000:]}\nlistening on n1:\n{listeners}")
        args = ("--port", str(port)) if explicit else ()
        d = deploy(2, "sglang", MODEL, *TWO, *args, nodelist="n1,n2")
        if explicit:
            assert_clean_end(d, sandbox, 1, "preflight failed, nothing was started",
                             f"node n1: port(s) {port} already in use")
            assert "] launch" not in d.err
        else:
            d.wait_ready()
            moved = re.search(rf"port {port} is taken on n1; serving on this job's port (\d+)",
                              d.err)
            assert moved and d.endpoint == f"http://{sandbox.addr('n1')}:{moved[1]}", d.err
            assert d.chat()
            d.signal_driver(signal.SIGINT)
            assert_clean_end(d, sandbox, 0, f"no container of job {d.job_id} left")
    finally:
        holder.kill()
        holder.wait()


def test_container_with_our_name(sandbox, standin_tarball, tmp_path):
    """Our name without our label is someone else's: left alone, and the run says so. With
    our label (an earlier attempt of the same job) it is replaced."""
    _, tag = tarball_image(standin_tarball)
    granted = sandbox.host("salloc", "--no-shell", "--nodes=2", "--nodelist=n1,n2",
                           "--oversubscribe", "--job-name=sstest-alloc").stderr
    job = re.search(r"Granted job allocation (\d+)", granted)[1]
    args = ("sglang", MODEL, *TWO, "--image", str(standin_tarball), *STANDIN)
    names = [f"slurmserve-{job}-1", f"slurmserve-{job}-0"]
    try:
        sandbox.docker("n2", "run", "-d", "--name", names[0], "--label", TEST_LABEL,
                       "--entrypoint", "sleep", tag, "600")
        d = Deployment(tmp_path / "a", 2, *args, nodelist="n1,n2", job=job)
        assert_clean_end(d, sandbox, 1, f"a container named {names[0]} exists on n2 without "
                         f"the label slurmserve.job={job}; it is not ours, so it was left alone")
        assert sandbox.docker("n2", "inspect", "-f", "{{.State.Running}}",
                              names[0]).stdout.strip() == "true"
        sandbox.docker("n2", "rm", "-f", names[0])

        stale = sandbox.docker("n1", "run", "-d", "--name", names[1], "--label",
                               f"slurmserve.job={job}", "--entrypoint", "sleep", tag,
                               "600").stdout.strip()
        d = Deployment(tmp_path / "b", 2, *args, nodelist="n1,n2", job=job)
        d.wait_ready()
        now = sandbox.docker("n1", "inspect", "-f", "{{.Id}}", names[1]).stdout.strip()
        assert now != stale and d.chat()
        d.signal_driver(signal.SIGINT)
        assert_clean_end(d, sandbox, 0, f"no container of job {job} left")
    finally:
        sandbox.host("scancel", job, check=False)
        for node, name in (("n2", names[0]), ("n1", names[1])):
            sandbox.docker(node, "rm", "-f", name, check=False)


# --- the driver SIGKILLed -----------------------------------------------------------------------


def kill_run(driver_pid: int, run_dir: Path, node_scripts: bool) -> None:
    """SIGKILL the driver and, if asked, every node.sh of its run with its `docker run`
    client (as an OOM killer or `kill -9` of everything might). The driver and the scripts
    are frozen first, so none reacts to another's death; a client is never frozen, as its
    process group, orphaned, would get a SIGHUP that it passes on to the container."""
    os.kill(driver_pid, signal.SIGSTOP)
    scripts, clients = [], []
    script = str(run_dir / "node.sh").encode()
    for proc in Path("/proc").iterdir() if node_scripts else ():
        try:
            if script in (proc / "cmdline").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGSTOP)
                scripts.append(int(proc.name))
                clients += map(int, (proc / "task" / proc.name / "children").read_text().split())
        except (OSError, ValueError):
            continue
    for pid in [*clients, *scripts]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # a short-lived child (a `sleep` of a wait loop) ended itself
            continue
    os.kill(driver_pid, signal.SIGKILL)


@pytest.mark.parametrize("node_scripts", [False, True])
def test_driver_sigkill_under_salloc(deploy, sandbox, foreign, node_scripts):
    """salloc ends the job when its command dies, and SLURM's SIGTERM makes each node's task
    stop its container. If those tasks were SIGKILLed too, the containers outlive the job
    until the next run on the node removes them (leftovers of a finished job, by label).
    Under a step-native runtime the job's end removes them itself."""
    d = deploy(2, "sglang", MODEL, *TWO, nodelist="n1,n2")
    d.wait_ready()
    kill_run(d.driver_pid(), d.log_dir / d.job_id, node_scripts)
    d.wait(60)  # salloc exits 0 for a command killed by SIGKILL (its own convention)
    if not node_scripts:
        print(f"containers gone {gone_after(sandbox, d.job_id, 30):.1f} s after the kill")
    else:
        assert set(our_containers(sandbox, d.job_id)) == {"n1", "n2"}
        wait_until(f"job {d.job_id} finishes", lambda: sandbox.host(
            "squeue", "--noheader", f"--jobs={d.job_id}", "--states=PD,CF,R,CG",
            check=False).stdout.strip() == "")  # only leftovers of finished jobs are removed
        if RUNTIME in STEP_RUNTIMES:
            # The engine is a process of the job's step: the job's end kills it with the
            # step's cgroup, and pyxis removes the job's named container; nothing waits for
            # the next run.
            print(f"gone {gone_after(sandbox, d.job_id, 30):.1f} s after the job finished")
            return
        after = deploy(2, "sglang", MODEL, *TWO, nodelist="n1,n2")
        after.wait_ready()
        assert re.search(rf"removed \d+ leftover container\(s\) of finished job\(s\) "
                         rf"[\d, ]*\b{d.job_id}\b", after.err), after.err
        assert not our_containers(sandbox, d.job_id)
    assert sandbox.docker("n1", "inspect", foreign[1]).returncode == 0


def steps_of(sandbox: Sandbox, job: str) -> list[str]:
    out = sandbox.host("squeue", "--steps", f"--jobs={job}", "--noheader", "--format=%j",
                       check=False).stdout
    return out.split()


@pytest.mark.skipif(RUNTIME in STEP_RUNTIMES, reason="the held step waits through a docker load")
def test_a_driver_killed_while_preflight_waits_leaves_no_waiting_task(sandbox, variant, tmp_path,
                                                                       foreign):
    """The preflight step's tasks wait for the driver's word (its launch may run in them). A
    batch job's driver SIGKILLed while it loads the image: srun's stdin ends, and so do they,
    at once; the job itself goes on to its final cleanup."""
    path, image_id = variant
    absent(sandbox, image_id)
    log_dir = tmp_path / "logs"
    submit = subprocess.run(
        ["slurmserve", "submit", "sglang", MODEL, *TWO, "--image", str(path), "--runtime", RUNTIME,
         *STANDIN, "--log-dir", str(log_dir), "--sbatch-arg=--nodelist=n1,n2",
         "--sbatch-arg=--oversubscribe", "--no-wait", "--json"],
        capture_output=True, text=True, timeout=180)
    assert submit.returncode == 0, submit.stderr
    job = json.loads(submit.stdout.strip().splitlines()[-1])["job"]
    state_file = log_dir / job / "state.json"
    try:
        def loading() -> bool:
            try:
                return "image load" in json.loads(state_file.read_text()).get("timeline", {})
            except (OSError, ValueError):
                return False

        wait_until("the driver loads the image", loading, timeout=120)
        assert "slurmserve-preflight" in steps_of(sandbox, job)  # held, waiting
        os.kill(json.loads(state_file.read_text())["driver_pid"], signal.SIGKILL)
        wait_until("the held preflight step ends", lambda: "slurmserve-preflight" not in
                   steps_of(sandbox, job), timeout=10)
    finally:
        sandbox.host("scancel", job, check=False)
        absent(sandbox, image_id)
    assert sandbox.docker("n1", "inspect", foreign[1]).returncode == 0


@pytest.mark.parametrize("how", ["SIGKILL to everything", "SIGTERM to the batch shell"])
def test_batch_job(sandbox, standin_tarball, tmp_path, foreign, how):
    """Driver and node scripts SIGKILLed: the batch script's final cleanup step removes the
    containers by label. A TERM for the batch shell only (`scancel --batch`): it reaches the
    driver, whose own teardown runs."""
    log_dir = tmp_path / "logs"
    submit = subprocess.run(
        ["slurmserve", "submit", "sglang", MODEL, *TWO, "--image", str(standin_tarball),
         "--runtime", RUNTIME,
         *STANDIN, "--log-dir", str(log_dir), "--sbatch-arg=--nodelist=n1,n2",
         "--sbatch-arg=--oversubscribe", "--json"], capture_output=True, text=True, timeout=180)
    assert submit.returncode == 0, submit.stderr
    job = json.loads(submit.stdout.strip().splitlines()[-1])["job"]
    try:
        state = json.loads((log_dir / job / "state.json").read_text())
        on_n1 = our_containers(sandbox, job).get("n1", [])  # its container, or under pyxis
        assert len(on_n1) == 1 or RUNTIME in STEP_RUNTIMES and on_n1, on_n1  # processes too
        t0 = time.monotonic()
        if how.startswith("SIGKILL"):
            kill_run(state["driver_pid"], log_dir / job, node_scripts=True)
        else:
            sandbox.host("scancel", "--batch", "--signal=TERM", job)
        gone = gone_after(sandbox, job, 30)
        wait_until(f"job {job} ends", lambda: not sandbox.host(
            "squeue", "--noheader", f"--jobs={job}", check=False).stdout.strip())
        print(f"{how}: containers gone {gone:.1f} s, job ended {time.monotonic() - t0:.1f} s "
              "after it")
        batch_log = (log_dir / f"slurmserve-{job}.out").read_text()
        removed = [int(m) for m in re.findall(r"SLURMSERVE_FACT\t\d+\tremoved\t(\d+)", batch_log)]
        assert len(removed) == 2, batch_log[-3000:]  # the final step ran on every node
        if how.startswith("SIGKILL") and RUNTIME in STEP_RUNTIMES:
            # The engine is the node script's own child in the step: the kill ended it, so
            # the final step had nothing left to remove.
            assert sum(removed) == 0, batch_log[-3000:]
        elif how.startswith("SIGKILL"):
            # Nothing else was left to stop them. (Which node's removal came first varies:
            # the other stand-in may exit on its own once its group is broken.)
            assert sum(removed) >= 1, batch_log[-3000:]
        else:
            assert "slurmserve: SIGTERM during serving, stopping" in batch_log, batch_log[-3000:]
            assert f"no container of job {job} left" in batch_log
            assert sum(removed) == 0  # the driver's teardown had removed them
    finally:
        sandbox.host("scancel", job, check=False)
    assert sandbox.docker("n1", "inspect", foreign[1]).returncode == 0
