"""The programs mounted into containers (slurmserve/node/): their behaviour, without Ray or the Hub."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from slurmserve import node
from slurmserve.node import hf_prefetch, ray_wait

NODE = Path(node.__file__).parent


class FakeRay:
    """Answers ray.nodes() and ray.cluster_resources() from a script of cluster states."""

    def __init__(self, states: list[tuple[list[tuple[str, bool]], float]]) -> None:
        self.states = states
        self.polls = 0
        self.calls: list[str] = []

    def init(self, **kw) -> None:
        self.calls.append(f"init {kw['address']}")

    def shutdown(self) -> None:
        self.calls.append("shutdown")

    def _state(self):
        return self.states[min(self.polls, len(self.states) - 1)]

    def nodes(self):
        return [{"NodeManagerAddress": ip, "Alive": alive} for ip, alive in self._state()[0]]

    def cluster_resources(self):
        gpus = self._state()[1]
        self.polls += 1
        return {"GPU": gpus} if gpus else {}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


EXPECTED = {"10.0.0.1", "10.0.0.2"}


def test_ray_wait_returns_once_every_node_and_gpu_is_there() -> None:
    ray = FakeRay([([("10.0.0.1", True)], 8), ([("10.0.0.1", True), ("10.0.0.2", False)], 8),
                   ([("10.0.0.1", True), ("10.0.0.2", True)], 16)])
    clock = Clock()
    line = ray_wait.wait(ray, 2, 16, 60, EXPECTED, clock=clock, sleep=clock.sleep)
    assert line == "slurmserve: Ray cluster ready: 2 nodes, 16 GPUs"
    assert ray.polls == 3 and ray.calls == ["init auto", "shutdown"]


def test_ray_wait_waits_for_the_gpus_too() -> None:
    ray = FakeRay([([("10.0.0.1", True), ("10.0.0.2", True)], 8),
                   ([("10.0.0.1", True), ("10.0.0.2", True)], 16)])
    clock = Clock()
    assert ray_wait.wait(ray, 2, 16, 60, EXPECTED, clock=clock, sleep=clock.sleep).endswith("16 GPUs")
    assert clock.now == pytest.approx(ray_wait.POLL_S)


def test_ray_wait_fails_at_once_on_a_node_from_an_unplanned_address() -> None:
    ray = FakeRay([([("10.0.0.1", True), ("172.17.0.1", True)], 16)])
    clock = Clock()
    with pytest.raises(SystemExit) as exc:
        ray_wait.wait(ray, 2, 16, 60, EXPECTED, clock=clock, sleep=clock.sleep)
    assert "unexpected addresses ['172.17.0.1']" in str(exc.value) and clock.now == 0
    assert ray.calls[-1] == "shutdown"


def test_ray_wait_gives_up_after_the_timeout_naming_what_it_has() -> None:
    ray = FakeRay([([("10.0.0.1", True)], 8)])
    clock = Clock()
    with pytest.raises(SystemExit) as exc:
        ray_wait.wait(ray, 2, 16, 1, EXPECTED, clock=clock, sleep=clock.sleep)
    assert str(exc.value) == ("slurmserve: Ray has ['10.0.0.1'] and 8 GPUs after 1s, expected "
                              "['10.0.0.1', '10.0.0.2'] and 16 GPUs")
    assert 1 < clock.now < 1.5


def test_ray_wait_usage_and_has_client_without_ray() -> None:
    assert ray_wait.main(["nonsense"]) == 2
    script = NODE / "ray_wait.py"
    result = subprocess.run([sys.executable, str(script), "has-client"], capture_output=True,
                            text=True, cwd="/")
    assert result.returncode != 0  # no Ray here: the head script keeps the default ports


def test_hf_prefetch_prints_where_the_snapshot_is() -> None:
    assert hf_prefetch.fetch("org/m", lambda model: f"/hf/{model}") == \
        "slurmserve: fetched org/m to /hf/org/m"


def test_hf_prefetch_fails_with_the_first_line_of_the_error() -> None:
    def refuse(model: str) -> str:
        raise PermissionError("401 Client Error: gated repo\nlong traceback text")

    with pytest.raises(SystemExit) as exc:
        hf_prefetch.fetch("org/m", refuse)
    assert str(exc.value) == "slurmserve: PermissionError: 401 Client Error: gated repo"


def test_hf_prefetch_without_huggingface_hub_says_so(tmp_path) -> None:
    # Runs as the container runs it: a file, under a python3 without slurmserve on its path.
    blocker = tmp_path / "huggingface_hub.py"
    blocker.write_text("raise ImportError('no huggingface_hub in this image')\n")
    result = subprocess.run([sys.executable, str(NODE / "hf_prefetch.py"), "org/m"],
                            capture_output=True, text=True, cwd="/",
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert result.stderr.strip() == "slurmserve: ImportError: no huggingface_hub in this image"
    assert hf_prefetch.main([]) == 2


@pytest.mark.parametrize("name", ["ray_wait.py", "hf_prefetch.py"])
def test_node_programs_import_nothing_from_slurmserve(name: str) -> None:
    text = node.read(name)
    assert "slurmserve." not in text.replace("slurmserve: ", "") and "from ." not in text


def test_read_refuses_what_is_not_a_program() -> None:
    for bad in ("__init__.py", "../spec.py", "ray_wait"):
        with pytest.raises(ValueError):
            node.read(bad)
