"""Run `slurmserve run` for real under `salloc` on the sandbox, as a user would, and watch it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import requests

# Flags every stand-in deployment needs: no GPUs here, one "GPU" per node for the plan.
STANDIN = ("--gpus", "none", "--gpus-per-node", "1", "--health-timeout", "120")
# The container runtime of the cluster suite (a deployment that names its own keeps it). CI runs
# the suite under docker, then the runtime-dependent part again under pyxis (README, Tests).
RUNTIME = os.environ.get("SLURMSERVE_TEST_RUNTIME", "docker")
STEP_RUNTIMES = ("pyxis", "apptainer")
SANDBOX_STATE = Path("/var/lib/slurmserve-sandbox")
READY = re.compile(r"^READY (http://\S+) model=(\S+)")


class Deployment:
    """`salloc -N N slurmserve run ...` in the background; READY parsed from its stdout.

    With `job`, no salloc: the driver runs in that existing allocation (as inside `salloc`).
    """

    def __init__(self, tmp: Path, nodes: int, *run_args: str, nodelist: str | None = None,
                 salloc_args: tuple[str, ...] = (), job: str | None = None) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.log_dir = tmp / "logs"
        self.out_path = tmp / "run.out"
        self.err_path = tmp / "run.err"
        argv = ["salloc", f"--nodes={nodes}", "--oversubscribe", "--job-name=sstest-run",
                *salloc_args]
        if nodelist:
            argv.append(f"--nodelist={nodelist}")
        env = dict(os.environ)
        if job:
            argv = []
            env.update(SLURM_JOB_ID=job, SLURM_JOB_NODELIST=nodelist or "",
                       SLURM_JOB_NUM_NODES=str(nodes))
        self.job = job
        cut = run_args.index("--") if "--" in run_args else len(run_args)
        self.runtime = run_args[run_args.index("--runtime") + 1] \
            if "--runtime" in run_args[:cut] else RUNTIME
        argv += ["slurmserve", "run", *run_args[:cut], "--log-dir", str(self.log_dir),
                 "--quiet-logs", *(() if "--runtime" in run_args[:cut] else
                                   ("--runtime", RUNTIME)), *run_args[cut:]]
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=self.out_path.open("w"),
                                     stderr=self.err_path.open("w"), stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=env)
        self.endpoint: str | None = None
        self.model: str | None = None

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def wait_ready(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.out.splitlines():
                match = READY.match(line)
                if match:
                    self.endpoint, self.model = match[1], match[2]
                    return self.endpoint
            if self.proc.poll() is not None:
                raise AssertionError(f"slurmserve run exited {self.proc.returncode} before READY"
                                     f"\n--- stdout\n{self.out}\n--- stderr\n{self.err[-6000:]}")
            time.sleep(0.2)
        raise AssertionError(f"no READY within {timeout}s\n--- stderr\n{self.err[-6000:]}")

    def wait_err(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """Wait until the driver's stderr (phase lines, node lines) matches PATTERN."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.err, re.MULTILINE)
            if match:
                return match
            if self.proc.poll() is not None:
                raise AssertionError(f"slurmserve run exited {self.proc.returncode} before "
                                     f"{pattern!r}\n--- stderr\n{self.err[-6000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} within {timeout}s\n--- stderr\n{self.err[-6000:]}")

    def state(self) -> dict:
        paths = list(self.log_dir.glob("*/state.json"))
        assert paths, f"no state.json under {self.log_dir}"
        return json.loads(paths[0].read_text())

    @property
    def job_id(self) -> str:
        if self.job:
            return self.job
        granted = re.search(r"Granted job allocation (\d+)", self.err)
        if granted:  # known even when the run failed before writing its state
            return granted[1]
        return self.state()["job"]

    def driver_pid(self) -> int:
        """From state.json once the launch wrote it; before that, salloc's child."""
        if self.job:
            return self.proc.pid
        if list(self.log_dir.glob("*/state.json")):
            return int(self.state()["driver_pid"])
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        assert children.split(), "salloc has not started slurmserve yet"
        return int(children.split()[0])

    def signal_driver(self, sig: int = signal.SIGINT) -> None:
        os.kill(self.driver_pid(), sig)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:  # the driver prints every thread's stack on SIGUSR1: show where it hangs
                os.kill(self.driver_pid(), signal.SIGUSR1)
                time.sleep(1)
            except (OSError, AssertionError, KeyError, ValueError):
                pass
            self._kill()
            raise AssertionError(f"slurmserve run did not exit within {timeout}s\n{self.err}"
                                 ) from None

    def info(self) -> dict:
        """The stand-in's own report of the group it formed."""
        return requests.get(f"{self.endpoint}/standin/info", timeout=5).json()

    def chat(self, text: str = "Hello there", max_tokens: int = 8, **extra) -> str:
        body = {"model": self.model, "messages": [{"role": "user", "content": text}],
                "max_tokens": max_tokens, **extra}
        response = requests.post(f"{self.endpoint}/v1/chat/completions", json=body, timeout=60)
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.signal_driver(signal.SIGINT)
                self.proc.wait(60)
            except Exception:
                self._kill()

    def _kill(self) -> None:
        """SIGKILL salloc and the run; salloc cannot release its job then, so scancel it."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        try:
            job = self.job_id
        except AssertionError:
            return
        subprocess.run(["scancel", job], capture_output=True, timeout=30, check=False)


def our_containers(sandbox, job_id: str | None = None, skip: tuple[str, ...] = (),
                   runtime: str | None = None) -> dict[str, list[str]]:
    """What of ours is left on every node but SKIP (nodes whose docker is down on purpose), for
    one job or any: containers carrying the slurmserve.job label (docker), or, for step-native
    runtimes, processes carrying the job mark and pyxis's named containers."""
    runtime = runtime or RUNTIME
    if runtime in STEP_RUNTIMES:
        return marked_leftovers(sandbox.nodes, job_id, skip)
    label = "slurmserve.job" + (f"={job_id}" if job_id else "")
    found = {}
    for node in sandbox.nodes:
        if node in skip:
            continue
        names = sandbox.exec(node, runtime, "ps", "-a", "--filter", f"label={label}",
                             "--format", "{{.Names}}").stdout.split()
        if names:
            found[node] = names
    return found


def marked_leftovers(nodes, job_id: str | None = None, skip: tuple[str, ...] = ()
                     ) -> dict[str, list[str]]:
    """Processes whose environment carries SLURMSERVE_JOB (=JOB) and SLURMSERVE_NODE=node (the
    sandbox's nodes share one PID space), and enroot containers pyxis made for the job, in
    each node's node-local enroot data directory."""
    found: dict[str, list[str]] = {}
    for pid, env in marked_processes():
        job, node = env.get("SLURMSERVE_JOB") or env["SLURMSERVE_ROUTER"], env.get("SLURMSERVE_NODE")
        if node in nodes and node not in skip and (job_id is None or job == job_id):
            found.setdefault(node, []).append(f"pid {pid}")
    for node in nodes:
        data = SANDBOX_STATE / "local" / node / "enroot" / "data"
        for entry in data.glob("pyxis_*") if data.is_dir() and node not in skip else ():
            if job_id is None or f"slurmserve-{job_id}" in entry.name:
                found.setdefault(node, []).append(entry.name)
    return found


def marked_processes() -> list[tuple[str, dict[str, str]]]:
    """(pid, environment) of every process carrying a slurmserve job mark (an engine's, or
    the router's of `--replicas`)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            env = dict(kv.split("=", 1) for kv in (proc / "environ").read_bytes().decode(
                errors="replace").split("\0") if "=" in kv)
        except OSError:
            continue
        if env.get("SLURMSERVE_JOB") or env.get("SLURMSERVE_ROUTER"):
            found.append((proc.name, env))
    return found


def kill_rank(sandbox, job_id: str, node: dict) -> None:
    """SIGKILL one rank's engine, as a crash would: its container (daemon runtimes), or every
    process of the job marked with that node (step-native runtimes: the engine is a process of
    the step)."""
    if RUNTIME not in STEP_RUNTIMES:
        sandbox.exec(node["host"], RUNTIME, "kill", node["container"])
        return
    pids = [int(pid) for pid, env in marked_processes()
            if env.get("SLURMSERVE_JOB") == job_id and env.get("SLURMSERVE_NODE") == node["host"]]
    assert pids, f"no process of job {job_id} on {node['host']}"
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

