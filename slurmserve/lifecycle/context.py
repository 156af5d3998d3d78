"""What every phase of a run shares: the spec, the job, its steps, and how to stop."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import slurm
from ..console import Console
from ..errors import LaunchError, Stopped
from ..slurm.steps import StepRunner
from ..spec import ServeSpec
from ..state import STOP_MARKER, Phase

FAILURE_SETTLE_S = 0.5  # gather failures of other nodes that follow the first


def process_started() -> float:
    """When this process started (wall clock, to the kernel's 10 ms tick); now without /proc."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return time.time()
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - max(0.0, age)


@dataclass(frozen=True)
class Failure:
    rank: int
    host: str
    reason: str


@dataclass
class RunContext:
    """One run's shared state. Phases read it and record what they learn in their results."""

    spec: ServeSpec
    job: slurm.Job
    console: Console
    follow_logs: bool = True
    emit: Callable[[dict[str, Any]], None] = lambda event: None
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = ""
    handover: threading.Event = field(default_factory=threading.Event)  # USR1, in a chain
    phase: Phase = Phase.START
    running: set[int] = field(default_factory=set)  # ranks whose container started
    ranks: int = 0  # ranks the launch starts (for "launch (1 of 2 containers started)")
    failed: list[Failure] = field(default_factory=list)  # in arrival order
    first_failure: float = 0.0
    started: float = field(default_factory=time.monotonic)
    subdir: str = ""  # a replica's own directory under the job's run dir
    marks: dict[str, float] = field(default_factory=dict)  # the timeline: event -> wall clock

    def __post_init__(self) -> None:
        self.steps = StepRunner(self.job, len(self.nodes), self.run_dir, self.stop, self.job_ended)
        self.marks.setdefault("process", process_started())
        self.mark("driver")

    def mark(self, event: str) -> None:
        """The first time `event` happened, for the record's timeline."""
        self.marks.setdefault(event, time.time())

    def timeline(self) -> dict[str, float]:
        """Each event's seconds after the process started, in order."""
        start = self.marks["process"]
        return {event: round(at - start, 4) for event, at in self.marks.items()}

    @property
    def run_dir(self) -> str:
        job_dir = os.path.join(os.path.abspath(self.spec.log_dir), self.job.job_id)
        return os.path.join(job_dir, self.subdir) if self.subdir else job_dir

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.job.nodes[: self.spec.nodes]

    def enter(self, phase: Phase) -> None:
        self.phase = phase
        self.mark(phase.value)

    def phase_now(self) -> str:
        if self.phase == Phase.WAITING_FOR_READY and len(self.running) < self.ranks:
            return f"launch ({len(self.running)} of {self.ranks} containers started)"
        return self.phase.value

    def request_stop(self, reason: str, announce: bool = False) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            if announce:
                self.console.line(f"slurmserve: {reason}, stopping")
        self.stop.set()

    def add_failure(self, rank: int, reason: str) -> None:
        if self.stop.is_set():
            return
        if not self.failed:
            self.first_failure = time.monotonic()
        self.failed.append(Failure(rank, self.nodes[rank] if rank < len(self.nodes) else "?",
                                   reason))

    def job_ended(self) -> bool:
        """The allocation is over (scancel, time limit): steps die and new ones are refused."""
        state = slurm.job_states([self.job.job_id]).get(self.job.job_id)
        if state in (slurm.JobState.RUNNING, None):
            return False
        self.request_stop(f"job {self.job.job_id} was ended by SLURM ({state.value}: scancel, "
                          f"time limit or node failure) during {self.phase_now()}")
        return True

    def check(self) -> None:
        """Raise Stopped on a stop request, LaunchError when a rank failed."""
        if not self.stop.is_set() and os.path.exists(os.path.join(self.run_dir, STOP_MARKER)):
            self.request_stop("slurmserve stop")
        if self.stop.is_set():
            raise Stopped
        if self.failed:
            # One node failing often takes its peers down within moments: report them all.
            time.sleep(max(0.0, self.first_failure + FAILURE_SETTLE_S - time.monotonic()))
            raise LaunchError("; ".join(f"node {f.host} (rank {f.rank}): {f.reason}"
                                        for f in self.failed))
