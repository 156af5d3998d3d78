"""--idle-timeout: what counts as activity, and the stop it asks for."""

from __future__ import annotations

import pytest

from slurmserve import load_spec
from slurmserve.console import Console
from slurmserve.errors import SpecError
from slurmserve.lifecycle.context import RunContext
from slurmserve.lifecycle.idle import IdleWatch
from slurmserve.metrics import Load
from slurmserve.slurm import Job


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def watch(readings: list[Load | None], timeout: float = 60) -> tuple[IdleWatch, Clock]:
    clock = Clock()
    left = iter(readings)
    return IdleWatch(timeout, lambda: ["http://r0"], "vllm",
                     fetch=lambda endpoint, engine, key: next(left), clock=clock), clock


def test_nothing_running_and_no_new_tokens_is_idle() -> None:
    idle, clock = watch([Load(running=0, generation_tokens_total=5)] * 3)
    assert idle.observe() == 0
    clock.now = 30
    assert idle.observe() == 30
    clock.now = 61
    assert idle.observe() == 61


@pytest.mark.parametrize("busy", [Load(running=1, generation_tokens_total=5),
                                  Load(waiting=2, generation_tokens_total=5),
                                  Load(running=0, generation_tokens_total=9),
                                  None])  # metrics that do not answer: never idle on them
def test_activity_or_no_answer_resets_the_clock(busy) -> None:
    idle, clock = watch([Load(running=0, generation_tokens_total=5), busy])
    idle.observe()
    clock.now = 50
    assert idle.observe() == 0


def test_idle_asks_the_run_to_stop(tmp_path) -> None:
    spec = load_spec(engine="vllm", model="m", image="registry.example/e:1", gpus_per_node=1,
                     log_dir=str(tmp_path), idle_timeout="1s")
    ctx = RunContext(spec, Job("1", ("n1",)), Console(quiet=True), follow_logs=False)
    idle = IdleWatch(spec.idle_timeout, lambda: ["http://r0"], "vllm",
                     fetch=lambda *a: Load(running=0, generation_tokens_total=1))
    idle.start(ctx, check_s=0.05).join(5)
    assert ctx.stop.is_set() and "idle for 1s (--idle-timeout)" in ctx.stop_reason


@pytest.mark.parametrize("text,seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200),
                                          ("1d", 86400), ("1.5h", 5400)])
def test_durations(text, seconds) -> None:
    spec = load_spec(engine="vllm", model="m", image="registry.example/e:1", idle_timeout=text)
    assert spec.idle_timeout == seconds


@pytest.mark.parametrize("bad", ["0", "-5m", "soon", "5w", True])
def test_bad_durations(bad) -> None:
    with pytest.raises(SpecError, match="--idle-timeout"):
        load_spec(engine="vllm", model="m", image="registry.example/e:1", idle_timeout=bad)
