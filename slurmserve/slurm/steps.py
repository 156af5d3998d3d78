"""Job steps: render -> write -> one srun task per node -> facts, interruptible.

Node scripts report to the driver in one line protocol, written by the `fact` function of
templates/_facts.sh.j2 and parsed only here:

    SLURMSERVE_FACT <TAB> rank <TAB> key <TAB> value
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .. import runner
from ..errors import LaunchError, Stopped
from . import Job, srun_argv

FACT = "SLURMSERVE_FACT"
# A step started before its script is written: each task waits for the word `run` on stdin
# (srun --input=all), then runs the script at $0. Anything else, or EOF, ends the task.
WAIT_FOR_SCRIPT = 'IFS= read -r word && [[ "$word" == run ]] && exec bash "$0"'


@dataclass(frozen=True)
class Fact:
    rank: int
    key: str
    value: str


def parse_fact(line: str) -> Fact | None:
    parts = line.rstrip("\n").split("\t", 3)
    if len(parts) == 4 and parts[0] == FACT and parts[1].isdigit():
        return Fact(int(parts[1]), parts[2], parts[3])
    return None


@dataclass
class Facts:
    """Every fact of a step, by rank; a key may repeat (e.g. one `check` per image check)."""

    by_rank: dict[int, dict[str, list[str]]] = field(default_factory=dict)

    def add(self, fact: Fact) -> None:
        self.by_rank.setdefault(fact.rank, {}).setdefault(fact.key, []).append(fact.value)

    def of(self, rank: int) -> dict[str, str]:
        """The last value of each key a rank reported."""
        return {k: v[-1] for k, v in self.by_rank.get(rank, {}).items()}

    def all(self, rank: int, key: str) -> list[str]:
        return list(self.by_rank.get(rank, {}).get(key, []))

    def ranks(self) -> list[int]:
        return sorted(self.by_rank)

    def per_rank(self) -> dict[int, dict[str, str]]:
        return {rank: self.of(rank) for rank in self.ranks()}


def parse(text: str) -> Facts:
    facts = Facts()
    for line in text.splitlines():
        fact = parse_fact(line)
        if fact:
            facts.add(fact)
    return facts


class HeldStep:
    """A step whose tasks have reported and now wait, one per node, for the driver's word on
    stdin (srun --input=all gives every task the same line): `launch PATH` runs that script
    in the same tasks, sparing a second srun step; anything else, or EOF (the driver gone),
    ends them."""

    def __init__(self, name: str, proc: runner.Process, nodes: int) -> None:
        self.name = name  # the step's name in squeue (its --job-name)
        self.proc = proc
        self.nodes = nodes
        self._done = False

    def fits(self, nodes: int, tasks: int, options: Sequence[str]) -> bool:
        """Whether a launch of this shape can run in it: one task on each of its nodes, no
        srun options of its own (a runtime's step options need a step of their own)."""
        return not self._done and self.proc.poll() is None and nodes == self.nodes \
            and tasks == nodes and not options

    def launch(self, path: str) -> runner.Process:
        """Run `path` in every task; the step's process (its output from now on) is the
        caller's."""
        assert not self._done, "a held step is told once"
        self._done = True
        _say(self.proc, f"launch {path}\n")
        return self.proc

    def release(self) -> None:
        """End the tasks (idempotent); the step's end is waited for in the background."""
        if self._done:
            return
        self._done = True
        _say(self.proc, "")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        try:
            if self.proc.stdout is not None:
                for _ in self.proc.stdout:
                    pass
            self.proc.wait(30)
        except (OSError, ValueError, runner.TimeoutExpired):
            terminate(self.proc)


@dataclass(frozen=True)
class StepResult:
    code: int
    out: str
    facts: Facts
    held: HeldStep | None = None  # a held step still waiting for the driver's word


class StepRunner:
    """Runs rendered scripts as srun steps of one job, each writing its script to `run_dir`.

    `stop` interrupts a running step (raising Stopped); `job_ended` tells a step that SLURM
    ended with the job from one that failed on its own.
    """

    def __init__(self, job: Job, nodes: int, run_dir: str, stop: threading.Event,
                 job_ended: Callable[[], bool]) -> None:
        self.job = job
        self.nodes = nodes  # the job's first `nodes` nodes run the steps
        self.run_dir = run_dir
        self.stop = stop
        self.job_ended = job_ended

    def write(self, name: str, script: str) -> str:
        path = os.path.join(self.run_dir, f"{name}.sh")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(script)
        return path

    def run(self, name: str, script: str | Callable[[], str], *, nodes: int | None = None,
            timeout: float = 3600, on_fact: Callable[[Fact], None] | None = None,
            options: Sequence[str] = (), hold: bool = False) -> StepResult:
        """Run to completion on every node (or the first `nodes`); Stopped on a stop.
        `script`: the script, or a function that renders it: then srun starts first and its
        tasks wait for the script (WAIT_FOR_SCRIPT), so the step's start (tens of ms, more
        with a cold page cache) overlaps the rendering.
        `options`: more srun options (a runtime's, for a step that runs inside the image).
        `hold`: the script ends by waiting for the driver's word (see HeldStep); the result
        comes as soon as every task has reported `done`, with the step in `held`."""
        if self.stop.is_set():
            raise Stopped
        count = nodes or self.nodes
        render = script if callable(script) else None
        if render is None:
            command = ["bash", self.write(name, str(script))]
        else:
            command = ["bash", "-c", WAIT_FOR_SCRIPT, os.path.join(self.run_dir, f"{name}.sh")]
        if hold or render:
            options = [*options, "--input=all"]
        proc = runner.start(srun_argv(self.job, command, nodes=count, label=f"slurmserve-{name}",
                                      options=options), feed=hold or render is not None)
        if render is not None:
            try:
                self.write(name, render())
            except BaseException:
                HeldStep(name, proc, count).release()  # the waiting tasks end
                raise
            _say(proc, "run\n", close=not hold)
        lines: list[str] = []
        facts = Facts()
        reported = threading.Event()  # every task said `done`: a held step waits now

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                fact = parse_fact(line)
                if fact:
                    facts.add(fact)
                    if on_fact:
                        on_fact(fact)
                    if hold and fact.key == "done" and len(facts.by_rank) == count and all(
                            "done" in facts.by_rank[r] for r in facts.by_rank):
                        reported.set()
                        return  # the rest of the output is the launch's (HeldStep.launch)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        while proc.poll() is None and not reported.is_set():
            if self.stop.is_set() or time.monotonic() > deadline:
                terminate(proc)
                reader.join(5)
                if self.stop.is_set():
                    raise Stopped
                raise LaunchError(f"{name} did not finish within {timeout:g}s")
            reported.wait(0.05)
        if reported.is_set() and proc.poll() is None:
            held = HeldStep(f"slurmserve-{name}", proc, count)
            # A task still starting when the job was cancelled can miss SLURM's signal; a new
            # step would be refused, so the held one must not be told to launch either.
            if self.job_ended():
                held.release()
                raise Stopped
            return StepResult(0, "".join(lines), facts, held)
        reader.join(5)
        code = proc.returncode if proc.returncode is not None else proc.poll() or 0
        if code != 0 and (self.stop.is_set() or self.job_ended()):
            raise Stopped  # SLURM ended the step with the job: not a finding about the nodes
        return StepResult(code, "".join(lines), facts)

    def run_uninterruptible(self, name: str, script: str, *, timeout: float = 120,
                            host: str | None = None) -> StepResult:
        """For teardown: runs even after a stop was asked for. `host`: on that node alone (its
        task is rank 0 then)."""
        path = self.write(name, script)
        job = Job(self.job.job_id, (host,)) if host else self.job
        argv = srun_argv(job, ["bash", path], nodes=1 if host else self.nodes,
                         label=f"slurmserve-{name}")
        result = runner.run(argv, timeout=timeout)
        return StepResult(result.code, result.out, parse(result.out))

    def start(self, name: str, path: str, nodes: int, label: str,
              options: Sequence[str] = (), tasks: int | None = None,
              tasks_per_node: int = 1) -> runner.Process:
        """A long-running step (the serving step); the caller reads its output."""
        return runner.start(srun_argv(self.job, ["bash", path], nodes=nodes, label=label,
                                      options=options, tasks=tasks,
                                      tasks_per_node=tasks_per_node))


def _say(proc: runner.Process, word: str, close: bool = True) -> None:
    """Write `word` to every task's stdin (srun --input=all); `close`: then EOF."""
    stdin = proc.stdin
    if stdin is None:
        return
    try:
        if word:
            stdin.write(word)
            stdin.flush()
        if close:
            stdin.close()
    except (OSError, ValueError):
        pass  # the step is gone already: its tasks have ended


def terminate(proc: runner.Process, grace: float = 5.0) -> None:
    """SIGTERM srun (it forwards the signal to every task), then SIGKILL after `grace`."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except runner.TimeoutExpired:
        proc.kill()
        proc.wait(5)
