"""A fake batch system behind slurmserve's process seam, for the job API (submit, status,
wait, stop) without SLURM: sbatch queues a job, squeue reports it, scancel ends it, and a
`driver` hook plays the batch job's driver by writing its state record."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

from slurmserve import state
from slurmserve.runner import Result
from slurmserve.state import JobRecord, NodeRecord, Status


class Replaced(Exception):
    """What `replace_process` raises instead of exec-ing."""

    def __init__(self, argv: Sequence[str]) -> None:
        super().__init__(" ".join(argv))
        self.argv = list(argv)


class FakeBatch:
    """sbatch/squeue/scancel answered here; every call recorded in `calls`."""

    def __init__(self, first_job: int = 4242) -> None:
        self.next_job = first_job
        self.states: dict[str, str] = {}
        self.calls: list[list[str]] = []
        #: Called on each squeue with the job ID: plays the job's driver (writes its record).
        self.driver: Callable[[str], None] = lambda job: None

    def run(self, argv: Sequence[str], *, timeout: float | None = 60,
            env: Mapping[str, str] | None = None) -> Result:
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "sbatch":
            job = str(self.next_job)
            self.next_job += 1
            self.states[job] = "PENDING"
            return Result(tuple(argv), 0, f"{job}\n", "")
        if argv[0] == "squeue":
            jobs = argv[argv.index("--jobs") + 1].split(",")
            for job in jobs:
                if job in self.states:
                    self.driver(job)
            rows = [f"{j}|{self.states[j]}" for j in jobs if j in self.states]
            return Result(tuple(argv), 0, "\n".join(["JOBID|STATE", *rows]) + "\n", "")
        if argv[0] == "scancel":
            self.states[argv[-1]] = "CANCELLED"
            return Result(tuple(argv), 0, "", "")
        raise AssertionError(f"unexpected command {argv}")

    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              feed: bool = False) -> NoReturn:
        raise AssertionError(f"unexpected process {list(argv)}")

    def replace_process(self, argv: Sequence[str]) -> NoReturn:
        self.calls.append(list(argv))
        raise Replaced(argv)


def serve(record: JobRecord, endpoint: str = "http://127.0.0.1:9") -> JobRecord:
    """The record the driver writes once the job serves (one node, its log in the run dir)."""
    assert record.run_dir
    log = os.path.join(record.run_dir, "n1.log")
    return dataclasses.replace(
        record, status=Status.READY, endpoint=endpoint, head="127.0.0.1", port=9, mode="auto",
        image="sha256:0123", driver_pid=1, driver_host="n1",
        nodes=(NodeRecord(rank=0, host="n1", address="127.0.0.1", ifname="lo", role="head",
                          container=f"slurmserve-{record.job}-0", log=log),))


def playing_driver(batch: FakeBatch, log_lines: Sequence[str] = ("STAND-IN serving",)
                   ) -> Callable[[str], None]:
    """A driver that starts on the first squeue, is ready on the second, and stops (writing
    `stopped` and leaving SLURM) once the stop marker appears."""
    seen: dict[str, int] = {}

    def driver(job: str) -> None:
        record = state.read(job)
        if record is None or batch.states[job] in ("CANCELLED", "COMPLETED"):
            return
        seen[job] = seen.get(job, 0) + 1
        assert record.run_dir
        if os.path.exists(os.path.join(record.run_dir, state.STOP_MARKER)):
            state.write(record.run_dir, dataclasses.replace(record, status=Status.STOPPED,
                                                            cleanup_removed=0))
            batch.states[job] = "COMPLETED"
        elif seen[job] == 1:
            batch.states[job] = "RUNNING"
            state.write(record.run_dir, dataclasses.replace(record, status=Status.STARTING))
        elif record.status is Status.STARTING:
            ready = serve(record)
            with open(ready.nodes[0].log or "", "w", encoding="utf-8") as fh:
                fh.write("".join(f"{line}\n" for line in log_lines))
            state.write(record.run_dir, ready)

    return driver
