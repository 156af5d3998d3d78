"""Helpers for the sandbox cluster tests: command runner, node handle, images, containers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SANDBOX = HERE / "sandbox"
BUILD = REPO / "containers" / "testing" / "build"
TEST_LABEL = "slurmserve.test=1"
TEST_PREFIX = "sstest-"
SANDBOX_RUN = Path("/run/slurmserve-sandbox")  # ./sandbox keeps its daemons' pid files here


class CommandFailed(AssertionError):
    """A command exited non-zero; the message carries its output."""


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv (never through a shell) and capture its text output."""
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        input=input,
        check=False,
    )
    if check and proc.returncode != 0:
        raise CommandFailed(
            f"{list(argv)} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc


@dataclass(frozen=True)
class Sandbox:
    """Handle on a running sandbox cluster."""

    nodes: list[str]
    addrs: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)

    def addr(self, node: str) -> str:
        return self.addrs[node]

    def exec(
        self, node: str, *argv: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside NODE's network namespace with its DOCKER_HOST."""
        return run([str(SANDBOX), "exec", node, *argv], check=check, timeout=timeout)

    def docker(
        self, node: str, *argv: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.exec(node, "docker", *argv, check=check, timeout=timeout)

    def host(
        self, *argv: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client (srun, sbatch, ...) on the host."""
        return run(argv, check=check, timeout=timeout, env=self.env)


def sandbox_status() -> dict:
    """`sandbox status --json` (it exits 1 when the cluster is not fully up)."""
    proc = run([str(SANDBOX), "status", "--json"], check=False, timeout=60)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as err:
        raise CommandFailed(f"sandbox status --json: {proc.stdout!r} {proc.stderr!r}") from err


def sandbox_env() -> dict[str, str]:
    """Parse the `export NAME=VALUE` lines of `sandbox env`."""
    out = run([str(SANDBOX), "env"]).stdout
    env = {}
    for line in out.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        if name and value:
            env[name] = value
    return env


def tarball_image(tarball: Path) -> tuple[str, str]:
    """(image ID, first tag) from a `docker save` tarball's manifest.json."""
    with tarfile.open(tarball) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None, f"{tarball} has no manifest.json"
        manifest = json.load(member)
    entry = manifest[0]
    image_id = "sha256:" + Path(entry["Config"]).name.removesuffix(".json")
    tags = entry.get("RepoTags") or [image_id]
    return image_id, tags[0]


def load_image(sandbox: Sandbox, node: str, tarball: Path) -> str:
    """`docker load` TARBALL into NODE's engine unless that image ID is there; returns its tag."""
    image_id, tag = tarball_image(tarball)
    have = sandbox.docker(node, "image", "inspect", "-f", "{{.Id}}", tag, check=False)
    if have.returncode != 0 or have.stdout.strip() != image_id:
        sandbox.docker(node, "load", "-i", str(tarball), timeout=600)
        # An earlier build of the same tag is left dangling: drop it to bound disk use.
        sandbox.docker(node, "image", "prune", "-f", check=False)
    return tag


class Containers:
    """Starts labelled `sstest-` containers on nodes and removes them all afterwards."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.started: list[tuple[str, str]] = []

    def run(
        self, node: str, name: str, image: str, *argv: str, docker_args: Sequence[str] = ()
    ) -> str:
        """`docker run -d` on NODE; returns the container name."""
        full = f"{TEST_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
        self.started.append((node, full))
        self.sandbox.docker(
            node, "run", "-d", "--name", full, "--label", TEST_LABEL, *docker_args, image, *argv
        )
        return full

    def logs(self, node: str, name: str, tail: int = 60) -> str:
        proc = self.sandbox.docker(node, "logs", "--tail", str(tail), name, check=False)
        return proc.stdout + proc.stderr

    def running(self, node: str, name: str) -> bool:
        proc = self.sandbox.docker(
            node, "inspect", "-f", "{{.State.Running}}", name, check=False
        )
        return proc.stdout.strip() == "true"

    def remove_all(self) -> None:
        for node, name in reversed(self.started):
            self.sandbox.docker(node, "rm", "-f", name, check=False, timeout=60)
        self.started.clear()


# --- disrupting a node, and bringing it back (tests/cluster/test_faults.py) -----------------


def stop_dockerd(node: str, timeout: float = 60) -> None:
    """Stop NODE's dockerd as a service manager would: SIGTERM, it stops its containers."""
    pid = int((SANDBOX_RUN / f"dockerd-{node}.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"dockerd of {node} (pid {pid}) did not stop within {timeout} s")
        time.sleep(0.1)


def cut_network(node: str, up: bool = False) -> None:
    """Take NODE's link to the bridge down (its veth's host end), or back up."""
    run(["ip", "link", "set", f"ssv-{node}", "up" if up else "down"])


def restore_nodes(sandbox: Sandbox) -> None:
    """Undo stopped daemons and cut links: `sandbox up` restarts what is missing, sets every
    link up, resumes DOWN nodes and waits for them; then each node must run a step again."""
    run([str(SANDBOX), "up", "--nodes", str(len(sandbox.nodes))], timeout=300)
    for node in sandbox.nodes:
        sandbox.host("srun", "--nodes=1", f"--nodelist={node}", "--oversubscribe",
                     "--job-name=sstest-probe", "true", timeout=120)


@contextmanager
def dropped(sandbox: Sandbox, node: str, *match: str) -> Iterator[Callable[[], int]]:
    """TCP packets to NODE matching MATCH (iptables syntax) are dropped in its namespace while
    the block runs: connections hang in SYN retries, as to a filtered port. Yields a function
    counting the packets dropped so far (the sandbox adds no DROP rules of its own)."""
    rule = ["INPUT", "-p", "tcp", *match, "-j", "DROP"]
    sandbox.exec(node, "iptables", "-I", *rule)

    def hits() -> int:
        rules = sandbox.exec(node, "iptables", "-S", "INPUT", "-v").stdout.splitlines()
        return sum(int(r.split(" -c ")[1].split()[0]) for r in rules if r.endswith("-j DROP"))

    try:
        yield hits
    finally:
        sandbox.exec(node, "iptables", "-D", *rule, check=False)
