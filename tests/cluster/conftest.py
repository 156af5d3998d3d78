"""Fixtures for tests on the real SLURM + Docker sandbox cluster (see ./sandbox).

The cluster is brought up once per session (or reused when already up) and left running:
CI tears it down with `tests/cluster/sandbox down`.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy import STANDIN, Deployment, our_containers
from sandboxlib import (
    BUILD,
    HERE,
    SANDBOX,
    TEST_LABEL,
    Containers,
    Sandbox,
    run,
    sandbox_env,
    sandbox_status,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.cluster)


SESSION_LOCK = Path("/run/slurmserve-sandbox.session.lock")
LOCK_WAIT_S = 3 * 3600  # another session's whole run


def hold_sandbox() -> None:
    """One cluster test session per machine: wait for any other, then hold the lock until this
    process exits (two sessions once reconfigured the sandbox under each other)."""
    handle = open(SESSION_LOCK, "w")  # noqa: SIM115 - held open for the whole session
    deadline = time.monotonic() + LOCK_WAIT_S
    said = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if not said:
                owner = Path(f"{SESSION_LOCK}.owner")
                print(f"\nwaiting for the cluster test session "
                      f"{owner.read_text().strip() if owner.exists() else '?'} to end",
                      file=sys.stderr)
                said = True
            if time.monotonic() > deadline:
                pytest.exit("another cluster test session holds the sandbox", returncode=1)
            time.sleep(2)
    Path(f"{SESSION_LOCK}.owner").write_text(f"pid {os.getpid()}\n")
    os.environ["SLURMSERVE_SANDBOX_SESSION"] = str(os.getpid())  # our own `sandbox up` may run
    _held.append(handle)


_held: list[object] = []


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    """The running cluster, brought up when needed (left up at session end)."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox cluster needs root (namespaces, dockerd, slurmd)")
    hold_sandbox()
    want = int(os.environ.get("SLURMSERVE_SANDBOX_NODES", "6"))
    status = sandbox_status()
    if not (status["up"] and status["node_count"] >= want):
        run([str(SANDBOX), "up", "--nodes", str(want)], timeout=900)
        status = sandbox_status()
        assert status["up"], f"sandbox up returned but status says not up: {status}"
    box = Sandbox(
        nodes=[n["name"] for n in status["nodes"]],
        addrs={n["name"]: n["addr"] for n in status["nodes"]},
        env=sandbox_env(),
    )
    for node in box.nodes:  # leftovers of an interrupted earlier session
        ids = box.docker(node, "ps", "-aq", "--filter", f"label={TEST_LABEL}").stdout.split()
        if ids:
            box.docker(node, "rm", "-f", *ids)
    return box


def build_image(name: str) -> Path:
    """Run containers/testing/build NAME; its last stdout line is the tarball path."""
    if not BUILD.exists():
        pytest.fail(f"{BUILD} is missing: cannot build the {name} test image")
    proc = run([str(BUILD), name], timeout=3600)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{BUILD} {name} printed no tarball path; stderr:\n{proc.stderr[-3000:]}"
    path = Path(lines[-1])
    assert path.is_file(), f"{BUILD} {name} printed {path}, which is not a file"
    return path


@pytest.fixture(scope="session")
def standin_tarball() -> Path:
    return build_image("standin")


@pytest.fixture(scope="session")
def vllm_tarball() -> Path:
    return build_image("vllm-cpu")


@pytest.fixture
def containers(sandbox: Sandbox) -> Iterator[Containers]:
    box = Containers(sandbox)
    try:
        yield box
    finally:
        box.remove_all()



@pytest.fixture
def deploy(sandbox, standin_tarball, tmp_path):
    started: list[Deployment] = []

    def make(nodes: int, *args: str, **kw) -> Deployment:
        cut = args.index("--") if "--" in args else len(args)  # engine args stay last
        # The test's own flags come after the defaults, so they win.
        d = Deployment(tmp_path / f"d{len(started)}", nodes, "--image", str(standin_tarball),
                       *STANDIN, *args[:cut], *args[cut:], **kw)
        started.append(d)
        return d

    yield make
    for d in started:
        d.close()
    for d in started:
        if d.log_dir.exists() and list(d.log_dir.glob("*/state.json")):
            assert not our_containers(sandbox, d.job_id), "containers left after the test"
