"""SLURM: read the allocation, build srun/sbatch/scancel argv, parse squeue by header names."""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from .. import runner
from ..errors import LaunchError, SpecError


class JobState(str, Enum):
    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    GONE = "GONE"  # no longer known to squeue (finished and purged)
    UNKNOWN = "UNKNOWN"


ACTIVE_STATES = {JobState.PENDING, JobState.CONFIGURING, JobState.RUNNING, JobState.COMPLETING}


@dataclass(frozen=True)
class Job:
    """The allocation this process runs in."""

    job_id: str
    nodes: tuple[str, ...]


def current_job(env: Mapping[str, str] | None = None) -> Job:
    env = os.environ if env is None else env
    job_id = env.get("SLURM_JOB_ID")
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not job_id or not nodelist:
        raise SpecError("allocation", "not inside a SLURM allocation",
                        "run under `salloc -N N ...`, or use `slurmserve submit`")
    return Job(job_id=job_id, nodes=hostnames(nodelist))


def hostnames(nodelist: str) -> tuple[str, ...]:
    result = runner.run(["scontrol", "show", "hostnames", nodelist], check=True)
    return tuple(result.out.split())


def node_address(node: str) -> str:
    """The node's address as SLURM knows it (NodeAddr), resolved to an IP and validated."""
    result = runner.run(["scontrol", "--oneliner", "show", "node", node], check=True)
    fields = dict(item.split("=", 1) for item in result.out.split() if "=" in item)
    addr = fields.get("NodeAddr") or node
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        pass
    try:
        return socket.gethostbyname(addr)
    except OSError:
        raise LaunchError(f"cannot resolve {node}'s address '{addr}'; fix DNS or NodeAddr") from None


def srun_argv(job: Job, script: Sequence[str], *, nodes: int | None = None,
              label: str | None = None, options: Sequence[str] = (),
              tasks: int | None = None, tasks_per_node: int = 1) -> list[str]:
    """One task per node, or `tasks` in blocks of `tasks_per_node` (an MPI world's ranks: a
    node's tasks are consecutive). `--overlap` lets side steps share nodes with the serving
    step. `options`: more srun options, e.g. a container runtime's (pyxis: --container-image)."""
    count = nodes or len(job.nodes)
    argv = ["srun", f"--jobid={job.job_id}", f"--nodes={count}", f"--ntasks={tasks or count}",
            f"--ntasks-per-node={tasks_per_node}", f"--nodelist={','.join(job.nodes[:count])}",
            "--unbuffered", "--overlap"]
    if tasks_per_node > 1:
        argv.append("--distribution=block")
    if label:
        argv.append(f"--job-name={label}")
    return argv + list(options) + list(script)


@functools.cache
def srun_offers(*options: str) -> bool:
    """Whether this site's srun offers every one of these options (SPANK plugins add theirs,
    as pyxis adds --container-image)."""
    result = runner.run(["srun", "--help"], timeout=30)
    return all(option in result.out for option in options)


def sbatch_argv(script_path: str) -> list[str]:
    return ["sbatch", "--parsable", script_path]


def scancel_argv(job_id: str, signal: str | None = None) -> list[str]:
    argv = ["scancel"]
    if signal:
        argv += [f"--signal={signal}", "--full"]
    return argv + [job_id]


def find_step(job_id: str, name: str) -> str | None:
    """The ID (JOB.STEP) of this job's step with that name, if it is running."""
    result = runner.run(["squeue", "--steps", f"--jobs={job_id}", "--format=%i|%j"], timeout=30)
    for row in _rows(result.out if result.ok else ""):
        if row.get("NAME") == name:
            return row.get("STEPID")
    return None


def signal_step(step_id: str, signal: str = "TERM") -> bool:
    """Send a signal to a step's tasks only (the allocation and other steps stay)."""
    return runner.run(["scancel", f"--signal={signal}", step_id], timeout=30).ok


def _rows(text: str) -> list[dict[str, str]]:
    """Rows of `|`-separated output keyed by its header line (never by position)."""
    lines = text.strip().splitlines()
    if not lines:
        return []
    header = [h.strip() for h in lines[0].split("|")]
    return [dict(zip(header, (v.strip() for v in line.split("|")), strict=False))
            for line in lines[1:]]


def job_states(job_ids: Sequence[str], strict: bool = False) -> dict[str, JobState]:
    """State of each job; jobs squeue no longer lists are GONE. `strict`: a LaunchError when
    squeue fails, rather than every job GONE (for decisions that start jobs)."""
    if not job_ids:
        return {}
    result = runner.run(["squeue", "--jobs", ",".join(job_ids), "--states=all",
                         "--format=%i|%T"], timeout=30)
    if strict and not result.ok and "Invalid job id" not in result.err:
        raise LaunchError(f"squeue failed: {(result.err or result.out).strip()[:200]}")
    states = {job_id: JobState.GONE for job_id in job_ids}
    for row in _rows(result.out if result.ok else ""):
        job_id = row.get("JOBID", "")
        if job_id in states:
            try:
                states[job_id] = JobState(row.get("STATE", "UNKNOWN"))
            except ValueError:
                states[job_id] = JobState.UNKNOWN
    return states
