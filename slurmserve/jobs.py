"""Batch jobs: submit (render + sbatch), status, logs, stop. State comes from state.json files."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from . import apikey, runner, slurm, state
from .api import render_sbatch
from .errors import LaunchError, SpecError
from .spec import ServeSpec
from .state import STOP_MARKER

TERMINAL = {"stopped", "failed"}


@dataclass(frozen=True)
class JobStatus:
    job: str
    slurm_state: str
    status: str  # ours: pending | starting | ready | stopping | stopped | failed
    endpoint: str | None
    model: str | None
    nodes: list[str]
    healthy: bool | None  # live /health check; None when not applicable
    run_dir: str | None
    engine: str | None = None
    image: str | None = None
    api_key: str | None = None  # where the endpoint's key comes from (env:VAR, file:PATH)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def submit(spec: ServeSpec, python: str | None = None) -> tuple[str, str]:
    """Render the job script next to the logs, sbatch it; returns (job id, run dir)."""
    log_dir = os.path.abspath(spec.log_dir)
    os.makedirs(log_dir, exist_ok=True)
    script_path = os.path.join(log_dir, f"{spec.job_name}-{time.strftime('%Y%m%d-%H%M%S')}.sbatch")
    with open(script_path, "w", encoding="utf-8") as fh:
        fh.write(render_sbatch(spec, python=python))
    result = runner.run(slurm.sbatch_argv(script_path), timeout=120)
    if not result.ok:
        raise LaunchError(f"sbatch refused the job: {(result.err or result.out).strip()}")
    job_id = result.out.strip().split(";")[0]
    run_dir = os.path.join(log_dir, job_id)
    os.makedirs(run_dir, exist_ok=True)
    state.write(run_dir, {"job": job_id, "status": "pending", "engine": spec.engine,
                          "model": spec.model_name, "run_dir": run_dir, "script": script_path})
    return job_id, run_dir


def _load(job_id: str) -> dict[str, Any]:
    data = state.read(job_id)
    if data is None:
        raise SpecError("JOB", f"no slurmserve job {job_id} is known here",
                        "run `slurmserve status` to list known jobs")
    return data


def wait_ready(job_id: str, timeout: float, on_progress: Callable[[str], None] | None = None
               ) -> dict[str, Any]:
    """Wait until the job's driver reports ready (or the job fails/ends)."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        data = _load(job_id)
        slurm_state = slurm.job_states([job_id])[job_id]
        text = f"job {job_id}: {slurm_state.value.lower()}, {data.get('status')}"
        if on_progress and text != last:
            on_progress(text)
            last = text
        if data.get("status") == "ready":
            return data
        if data.get("status") in TERMINAL or slurm_state not in slurm.ACTIVE_STATES:
            batch_log = os.path.join(os.path.dirname(data.get("run_dir", "")),
                                     f"slurmserve-{job_id}.out")
            raise LaunchError(f"job {job_id} ended before it was ready ({slurm_state.value}, "
                              f"{data.get('status')}); see `slurmserve logs {job_id}` and "
                              f"{batch_log}")
        if time.monotonic() > deadline:
            raise LaunchError(f"job {job_id} not ready after {timeout:g}s "
                              f"({slurm_state.value}); it keeps running: `slurmserve stop "
                              f"{job_id}` to end it")
        time.sleep(0.5)


def status(job_ids: list[str] | None = None, check_health: bool = True) -> list[JobStatus]:
    ids = job_ids or [j for j in state.known_jobs() if state.find(j)]
    states = slurm.job_states(ids) if ids else {}
    result = []
    for job_id in ids:
        data = _load(job_id)
        slurm_state = states.get(job_id, slurm.JobState.UNKNOWN)
        ours = data.get("status", "unknown")
        if slurm_state not in slurm.ACTIVE_STATES and ours not in TERMINAL:
            ours = "ended"  # the job is gone but its driver never wrote a final state
        healthy = None
        if check_health and data.get("endpoint") and slurm_state == slurm.JobState.RUNNING:
            healthy = _healthy(data["endpoint"], apikey.try_read(data.get("api_key")))
        result.append(JobStatus(
            job=job_id, slurm_state=slurm_state.value, status=ours,
            endpoint=data.get("endpoint"), model=data.get("model"),
            nodes=[n["host"] for n in data.get("nodes", [])], healthy=healthy,
            run_dir=data.get("run_dir"), engine=data.get("engine"), image=data.get("image"),
            api_key=data.get("api_key")))
    return result


def _healthy(endpoint: str, api_key: str | None = None) -> bool:
    """/health answers 200 (with the job's key, read from its recorded source, when it has one)."""
    import requests

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        return requests.get(f"{endpoint}/health", headers=headers, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def log_paths(job_id: str, node: str | None = None) -> list[tuple[str, str]]:
    """(host, path) of the job's per-node logs; `node` is a rank or a host name."""
    nodes = _load(job_id).get("nodes") or []
    if not nodes:
        raise LaunchError(f"job {job_id} has not launched containers yet; no logs")
    if node is not None:
        nodes = [n for n in nodes if str(n["rank"]) == node or n["host"] == node]
        if not nodes:
            raise SpecError("--node", f"job {job_id} has no node '{node}'",
                            "give a rank (0, 1, ...) or a host name from `slurmserve status`")
    return [(n["host"], n["log"]) for n in nodes]


def follow(paths: list[tuple[str, str]], job_id: str, follow_: bool) -> Iterator[str]:
    """Lines of the logs, prefixed by host when several; with follow_, until the job ends."""
    prefix = len(paths) > 1
    positions = dict.fromkeys((p for _, p in paths), 0)
    while True:
        for host, path in paths:
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    fh.seek(positions[path])
                    for line in fh:
                        yield (f"[{host}] " if prefix else "") + line.rstrip("\n")
                    positions[path] = fh.tell()
            except FileNotFoundError:
                continue
        if not follow_ or slurm.job_states([job_id])[job_id] not in slurm.ACTIVE_STATES:
            return
        time.sleep(0.3)


def stop(job_id: str, timeout: float = 90.0) -> dict[str, Any]:
    """Graceful stop, verified: ask the driver (a marker file it polls), else signal the job.

    The driver then stops every container, runs its cleanup step and records how it ended.
    """
    data = _load(job_id)
    if slurm.job_states([job_id])[job_id] not in slurm.ACTIVE_STATES:
        return data
    run_dir = data.get("run_dir")
    if run_dir:
        with open(os.path.join(run_dir, STOP_MARKER), "w", encoding="utf-8") as fh:
            fh.write(f"{time.time()}\n")
    if data.get("status") == "pending" or not _wait_terminal(job_id, min(30.0, timeout)):
        # No driver running yet (or it died): let SLURM signal every step, then cancel.
        runner.run(slurm.scancel_argv(job_id, signal="TERM"), timeout=30)
        if not _wait_terminal(job_id, timeout):
            runner.run(slurm.scancel_argv(job_id), timeout=30)
            raise LaunchError(f"job {job_id} did not stop within {timeout:g}s; cancelled it hard")
    return _load(job_id)


def _wait_terminal(job_id: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _load(job_id).get("status") in TERMINAL:
            return True
        if slurm.job_states([job_id])[job_id] not in slurm.ACTIVE_STATES:
            return True
        time.sleep(0.3)
    return False
