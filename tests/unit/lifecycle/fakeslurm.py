"""A recording fake SLURM behind slurmserve's process seam (in the spirit of submitit's
MockedSubprocess): it answers scontrol/squeue/scancel/sbcast itself and runs each srun task's
rendered script locally with its SLURM_PROCID and SLURMD_NODENAME, with the recording `docker`
of fake_docker.py first on PATH. Every node is 127.0.0.1. No root, no daemons.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from slurmserve.runner import Result

HERE = Path(__file__).resolve().parent


class Broadcast:
    """srun --input=all: what is written to srun's stdin reaches every task's."""

    def __init__(self, pipes: Sequence[IO[str]]) -> None:
        self.pipes = list(pipes)
        self.said: list[str] = []  # everything written, for tests

    def write(self, text: str) -> int:
        self.said.append(text)
        for pipe in self.pipes:
            with contextlib.suppress(OSError):  # that task has ended
                pipe.write(text)
        return len(text)

    def flush(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.flush()

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.close()


class FakeStep:
    """One srun: a task per node, their output merged into one pipe (what srun prints)."""

    def __init__(self, step_id: str, name: str, command: Sequence[str], nodes: Sequence[str],
                 env: Mapping[str, str], feed: bool = False) -> None:
        self.step_id = step_id
        self.name = name
        self.script = command[-1]  # `bash PATH`, or bash -c WAIT_FOR_SCRIPT PATH
        read, write = os.pipe()
        self.tasks = []
        for rank, node in enumerate(nodes):
            task_env = {**env, "SLURM_PROCID": str(rank), "SLURMD_NODENAME": node,
                        "SLURM_STEP_ID": step_id}
            self.tasks.append(subprocess.Popen(
                list(command), stdout=write, stderr=write,
                stdin=subprocess.PIPE if feed else subprocess.DEVNULL, text=True, env=task_env,
                start_new_session=True))
        os.close(write)
        self.stdout: IO[str] | None = os.fdopen(read, "r", encoding="utf-8", errors="replace")
        self.stdin: Broadcast | None = Broadcast(
            [t.stdin for t in self.tasks if t.stdin is not None]) if feed else None
        self.returncode: int | None = None

    def poll(self) -> int | None:
        codes = [t.poll() for t in self.tasks]
        if any(c is None for c in codes):
            return None
        self.returncode = next((c for c in codes if c), 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("srun", timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """srun forwards SIGTERM/SIGINT to every task."""
        for task in self.tasks:
            if task.poll() is None:
                task.send_signal(sig)

    def kill(self) -> None:
        for task in self.tasks:
            if task.poll() is None:
                os.killpg(task.pid, signal.SIGKILL)


class FakeSlurm:
    """A job `job_id` on `nodes`; implements slurmserve.runner.Runner."""

    def __init__(self, tmp: Path, nodes: Sequence[str] = ("n1", "n2"), job_id: str = "4242"
                 ) -> None:
        self.tmp = tmp
        self.nodes = tuple(nodes)
        self.job_id = job_id
        self.job_state = "RUNNING"
        self.other_jobs: dict[str, str] = {}  # job id -> state, for squeue
        self.calls: list[list[str]] = []
        self.steps: list[FakeStep] = []
        self.on_step: dict[str, Callable[[FakeStep], None]] = {}  # step name -> hook at start
        self.control: dict[str, Any] = {}
        bin_dir = tmp / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        docker = bin_dir / "docker"
        docker.write_text(f"#!/bin/sh\nexec {sys.executable} {HERE / 'fake_docker.py'} \"$@\"\n")
        docker.chmod(0o755)
        # The machine's own podman/enroot/apptainer stay out of it: on this fake's nodes they
        # are installed but broken, so `auto` finds docker (tests of the others set their own);
        # curl too, so a docker daemon of this machine's is never asked (the probe's API path).
        for tool in ("podman", "enroot", "apptainer", "singularity", "curl"):
            shim = bin_dir / tool
            shim.write_text(f"#!/bin/sh\necho '{tool}: not on this fake node' >&2\nexit 1\n")
            shim.chmod(0o755)
        self.pyxis = False  # whether `srun --help` lists --container-image
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                    "FAKE_DOCKER_ROOT": str(tmp / "docker"),
                    "FAKE_DOCKER_LOG": str(tmp / "docker-calls.jsonl"),
                    "FAKE_CONTROL": str(tmp / "control.json")}
        self.env.pop("DOCKER_HOST", None)
        self.set_control()

    # -- what a test sets up and reads -------------------------------------------------------

    def set_control(self, **control: Any) -> None:
        self.control.update(control)
        (self.tmp / "control.json").write_text(json.dumps(self.control))

    def give_image(self, node: str, image_id: str, tags: Sequence[str] = ()) -> None:
        root = self.tmp / "docker" / node
        root.mkdir(parents=True, exist_ok=True)
        path = root / "images.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        data[image_id] = list(tags)
        path.write_text(json.dumps(data))

    def docker_calls(self, verb: str | None = None) -> list[tuple[str, list[str]]]:
        path = self.tmp / "docker-calls.jsonl"
        if not path.exists():
            return []
        calls = [json.loads(line) for line in path.read_text().splitlines()]
        return [(c["node"], c["argv"]) for c in calls if verb is None or c["argv"][0] == verb]

    def containers(self) -> list[str]:
        """Containers alive on any node (their fake engine processes still run)."""
        alive = []
        for entry in (self.tmp / "docker").glob("*/containers/*.json"):
            pid = json.loads(entry.read_text())["pid"]
            try:
                os.kill(pid, 0)
                alive.append(entry.stem)
            except OSError:
                pass
        return sorted(alive)

    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    def launched(self) -> list[str]:
        """The steps that ran the node script: a serving step of its own, or a held step told
        to launch it."""
        return [s.name for s in self.steps if os.path.basename(s.script) == "node.sh"
                or (s.stdin is not None and any(w.startswith("launch ") for w in s.stdin.said))]

    def cancel(self) -> None:
        """What scancel does: the job ends and SLURM signals every step's tasks."""
        self.job_state = "CANCELLED"
        for step in self.steps:
            step.send_signal(signal.SIGTERM)

    # -- the Runner protocol ----------------------------------------------------------------

    def run(self, argv: Sequence[str], *, timeout: float | None = 60,
            env: Mapping[str, str] | None = None) -> Result:
        argv = list(argv)
        self.calls.append(argv)
        if argv == ["srun", "--help"]:
            return Result(tuple(argv), 0, "Usage: srun [OPTIONS(0)...]\n" + (
                "      --container-image=[USER@][REGISTRY#]IMAGE[:TAG]|PATH\n" if self.pyxis
                else ""), "")
        if argv[0] == "srun":
            step = self._srun(argv)
            if step is None:
                return Result(tuple(argv), 1, "", "srun: error: job is not running")
            assert step.stdout is not None
            out = step.stdout.read()
            return Result(tuple(argv), step.wait(timeout), out, "")
        handler = getattr(self, "_" + argv[0], None)
        assert handler, f"the fake SLURM does not know {argv}"
        code, out = handler(argv[1:])
        return Result(tuple(argv), code, out, "")

    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              feed: bool = False) -> FakeStep:
        argv = list(argv)
        self.calls.append(argv)
        assert argv[0] == "srun", argv
        assert feed == ("--input=all" in argv), "a fed step broadcasts its stdin to every task"
        step = self._srun(argv, feed)
        if step is None:  # a refused step: ends at once with srun's error
            return FakeStep("refused", "refused", ["bash", str(self._refusal())], (self.nodes[0],),
                            self.env)
        return step

    def replace_process(self, argv: Sequence[str]) -> NoReturn:
        raise AssertionError(f"exec {argv}")

    # -- SLURM commands ---------------------------------------------------------------------

    def _srun(self, argv: list[str], feed: bool = False) -> FakeStep | None:
        if self.job_state != "RUNNING":
            return None
        opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
        count = int(opts["nodes"])
        name = opts.get("job-name", "step")
        command = argv[next(i for i, a in enumerate(argv) if i and not a.startswith("--")):]
        step = FakeStep(f"{self.job_id}.{len(self.steps)}", name, command, self.nodes[:count],
                        self.env, feed)
        self.steps.append(step)
        hook = self.on_step.get(name)
        if hook:
            threading.Thread(target=hook, args=(step,), daemon=True).start()
        return step

    def _refusal(self) -> Path:
        path = self.tmp / "refused.sh"
        path.write_text("echo 'srun: error: Unable to create step: job is not running' >&2\n"
                        "exit 1\n")
        return path

    def _scontrol(self, args: list[str]) -> tuple[int, str]:
        if args[:2] == ["show", "hostnames"]:
            return 0, "\n".join(self.nodes) + "\n"
        if "node" in args:
            return 0, f"NodeName={args[-1]} NodeAddr=127.0.0.1 State=MIXED\n"
        raise AssertionError(args)

    def _squeue(self, args: list[str]) -> tuple[int, str]:
        if "--steps" in args:
            rows = [f"{s.step_id}|{s.name}" for s in self.steps if s.poll() is None]
            return 0, "\n".join(["STEPID|NAME", *rows]) + "\n"
        jobs = args[args.index("--jobs") + 1].split(",")
        states = {self.job_id: self.job_state, **self.other_jobs}
        rows = [f"{j}|{states[j]}" for j in jobs if j in states]
        return 0, "\n".join(["JOBID|STATE", *rows]) + "\n"

    def _scancel(self, args: list[str]) -> tuple[int, str]:
        target = args[-1]
        sig = next((a.split("=", 1)[1] for a in args if a.startswith("--signal=")), None)
        for step in self.steps:
            if step.step_id == target and step.poll() is None:
                step.send_signal(getattr(signal, f"SIG{sig or 'KILL'}"))
                return 0, ""
        if target == self.job_id:
            self.cancel()
            return 0, ""
        return 1, ""

    def _sbcast(self, args: list[str]) -> tuple[int, str]:
        source, target = args[-2], args[-1]
        shutil.copyfile(source, target)
        return 0, ""
