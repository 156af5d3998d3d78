"""The held preflight step (slurm/steps.py HeldStep) over the fake SLURM, with the real
preflight template: it reports, then waits for the driver's word on stdin."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from slurmserve import engines, load_spec, runner
from slurmserve.console import Console
from slurmserve.errors import Stopped
from slurmserve.lifecycle import preflight
from slurmserve.lifecycle.context import RunContext
from slurmserve.slurm import Job

from .fakeslurm import FakeSlurm


@pytest.fixture
def slurm(tmp_path: Path) -> Iterator[FakeSlurm]:
    fake = FakeSlurm(tmp_path)
    with runner.use(fake):
        yield fake
    for step in fake.steps:
        step.kill()


def held_preflight(slurm: FakeSlurm, tmp_path: Path) -> preflight.Preflight:
    spec = load_spec(engine="vllm", model="/models/m", image="engine:1", nodes=2, gpus="none",
                     log_dir=str(tmp_path / "logs"))
    ctx = RunContext(spec, Job(slurm.job_id, slurm.nodes), Console(io.StringIO()), False)
    (tmp_path / "logs" / slurm.job_id).mkdir(parents=True)
    pre = preflight.check(ctx, engines.get("vllm").resolve(spec), hold=True)
    assert pre.held is not None and pre.held.proc.poll() is None, "the tasks wait"
    assert sorted(pre.facts.ranks()) == [0, 1] and pre.facts.of(1)["done"] == "1"
    return pre


def test_launch_runs_the_script_in_the_same_tasks(slurm, tmp_path):
    held = held_preflight(slurm, tmp_path).held
    assert held is not None
    script = tmp_path / "node.sh"
    script.write_text('echo "launched rank $SLURM_PROCID in step $SLURM_STEP_ID"\n')
    assert held.fits(2, 2, ())
    proc = held.launch(str(script))
    assert proc.wait(10) == 0
    assert proc.stdout is not None
    out = sorted(proc.stdout.read().splitlines())
    assert out == ["launched rank 0 in step 4242.0", "launched rank 1 in step 4242.0"]
    assert slurm.step_names() == ["slurmserve-preflight"]  # no second step
    assert not held.fits(2, 2, ())  # told once


def test_the_driver_gone_ends_the_tasks(slurm, tmp_path):
    """The driver SIGKILLed: srun's stdin ends, and so do the waiting tasks (no orphan)."""
    held = held_preflight(slurm, tmp_path).held
    assert held is not None and held.proc.stdin is not None
    held.proc.stdin.close()
    assert held.proc.wait(10) == 0


def test_release_ends_the_tasks_without_launching(slurm, tmp_path):
    held = held_preflight(slurm, tmp_path).held
    assert held is not None
    held.release()
    held.release()  # idempotent
    assert held.proc.wait(10) == 0
    assert not slurm.launched() and not held.fits(2, 2, ())


@pytest.mark.parametrize("nodes, tasks, options", [
    (1, 1, ()),  # fewer nodes than the preflight's
    (2, 4, ()),  # an MPI world of 2 ranks a node
    (2, 2, ("--container-image=/img.sqsh",)),  # a runtime's step options (pyxis)
])
def test_a_launch_of_another_shape_needs_its_own_step(slurm, tmp_path, nodes, tasks, options):
    held = held_preflight(slurm, tmp_path).held
    assert held is not None
    assert not held.fits(nodes, tasks, options)
    held.release()
    assert held.proc.wait(10) == 0


def test_a_cancel_the_starting_tasks_missed_launches_nothing(slurm, tmp_path, monkeypatch):
    """scancel while the step's tasks were still starting: SLURM's signal can miss them (seen
    in CI), so they report as if nothing happened. A new step would be refused; the held one
    is told to end, and the run stops as ended by SLURM during preflight."""
    srun = slurm._srun

    def srun_then_cancel(argv, feed=False):
        step = srun(argv, feed)
        slurm.job_state = "CANCELLED"  # and no signal reaches the step's tasks
        return step

    monkeypatch.setattr(slurm, "_srun", srun_then_cancel)
    spec = load_spec(engine="vllm", model="/models/m", image="engine:1", nodes=2, gpus="none",
                     log_dir=str(tmp_path / "logs"))
    ctx = RunContext(spec, Job(slurm.job_id, slurm.nodes), Console(io.StringIO()), False)
    (tmp_path / "logs" / slurm.job_id).mkdir(parents=True)
    with pytest.raises(Stopped):
        preflight.check(ctx, engines.get("vllm").resolve(spec), hold=True)
    assert "was ended by SLURM (CANCELLED" in ctx.stop_reason
    assert ctx.stop_reason.endswith("during preflight")
    assert slurm.steps[0].wait(10) == 0 and not slurm.launched()
