"""Teardown: stop the serving step, remove this job's containers by label, drop secrets.

Only containers labelled with our job IDs are ever removed; logs stay.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .. import runner, runtimes, slurm
from ..errors import LaunchError
from ..render import render_template
from ..slurm.steps import terminate
from .context import RunContext
from .launch import Launch
from .watch import Serving

STEP_STOP_GRACE_S = 20  # node.sh gives the container 10 s; srun needs a little more


@dataclass(frozen=True)
class Cleanup:
    removed: int
    unchecked: tuple[str, ...]  # nodes the cleanup could not check, and why


def cleanup(ctx: RunContext, job_ids: list[str], runtime: str, keep_staged: bool = False
            ) -> Cleanup:
    """Remove what carries these jobs' mark on every node (containers by label, processes by
    the job mark), and only that: the last word. `keep_staged`: leave staged images (a
    replica's restart reads them again)."""
    script = render_template("cleanup.sh.j2", job_ids=job_ids,
                             stage_dir="" if keep_staged else ctx.spec.stage_dir,
                             cleanup_runtimes=[runtime] if runtime else [], optional=False,
                             **runtimes.shell_context(runtime, ctx.job.job_id))
    try:
        facts = ctx.steps.run_uninterruptible("cleanup", script, timeout=120).facts
    except LaunchError as exc:
        ctx.console.error(f"cleanup step failed: {exc}")
        facts = None
    answers = {rank: facts.of(rank) if facts else {} for rank in range(len(ctx.nodes))}
    missing = [rank for rank, fact in answers.items() if "removed" not in fact]
    if missing and len(ctx.nodes) > 1:
        # One unreachable node can fail the whole step before any task runs: each other node
        # is then checked on its own.
        answers.update(_cleanup_each(ctx, script, missing))
    unchecked = []
    removed = 0
    for rank, host in enumerate(ctx.nodes):
        fact = answers[rank]
        removed += int(fact.get("removed", "0"))
        if "removed" not in fact:
            unchecked.append(
                f"{host}: its cleanup task did not answer (unreachable?); once the node is "
                "back, SLURM ends the step there and its task stops the container")
        elif fact.get("runtime", "").startswith("error"):
            unchecked.append(
                f"{host}: {runtime} does not answer ({fact['runtime'].removeprefix('error: ')}); "
                "a stopping dockerd stops its containers")
    return Cleanup(removed, tuple(unchecked))


def _cleanup_each(ctx: RunContext, script: str, ranks: list[int]) -> dict[int, dict[str, str]]:
    """The cleanup script on each of these nodes alone, all at once: what each answered."""
    from concurrent.futures import ThreadPoolExecutor

    def one(rank: int) -> dict[str, str]:
        try:
            return ctx.steps.run_uninterruptible(f"cleanup-{rank}", script, timeout=60,
                                                 host=ctx.nodes[rank]).facts.of(0)
        except LaunchError:
            return {}

    with ThreadPoolExecutor(max_workers=min(16, len(ranks))) as pool:
        return dict(zip(ranks, pool.map(one, ranks), strict=True))


def remove_leftovers(ctx: RunContext, jobs: list[str], runtime: str) -> None:
    """Containers of ours from jobs that are over (field failure 12); others untouched."""
    if not jobs:
        return
    states = slurm.job_states(jobs)
    finished = sorted(j for j, s in states.items() if s not in slurm.ACTIVE_STATES)
    if finished:
        removed = cleanup(ctx, finished, runtime).removed
        ctx.console.phase("preflight", f"removed {removed} leftover container(s) of "
                          f"finished job(s) {', '.join(finished)}")


@dataclass(frozen=True)
class Teardown:
    cleanup: Cleanup | None  # None when nothing could or needed to be checked
    job_ended: bool


def teardown(ctx: RunContext, serving: Serving | None, bundle: Launch | None,
             touched_nodes: bool, runtime: str) -> Teardown:
    """Stop, clean, and say what is left. `touched_nodes`: any step ran on the nodes."""
    if serving is not None and serving.proc.poll() is None:
        ctx.console.phase("teardown", "stopping containers on every node")
        _stop_serving_step(ctx, serving)
    ended = touched_nodes and ctx.job_ended()
    result = cleanup(ctx, [ctx.job.job_id], runtime) if touched_nodes and not ended else None
    if serving is not None:
        serving.done.set()
    if bundle is not None:
        remove_secrets(bundle)
    return Teardown(result, ended)


def summary(ctx: RunContext, down: Teardown, launched: bool, seconds: float) -> str:
    """The last line of a run: what is left where, and where the logs are."""
    reason = f" ({ctx.stop_reason})" if ctx.stop_reason else ""
    clean = down.cleanup
    unchecked = clean.unchecked if clean else ()
    checked = [n for n in ctx.nodes if not any(u.startswith(f"{n}: ") for u in unchecked)]
    if down.job_ended:  # new steps are refused now, so no cleanup step could check
        result = "SLURM ended the job's steps; " + (
            "no container had been started" if not launched else
            "each node's task stops its container on SLURM's SIGTERM (a node cut off: once "
            "it is back; the next run removes leftovers by label)")
    elif not unchecked:
        result = f"no container of job {ctx.job.job_id} left"
    else:
        result = (f"no container of job {ctx.job.job_id} left on "
                  f"{', '.join(checked) or 'no node'}; could not check "
                  f"{'; '.join(unchecked)}; the next run removes leftovers by label")
    removed = clean.removed if clean else 0
    return (f"done in {seconds:.1f}s{reason}: {result}"
            + (f" (cleanup removed {removed})" if removed else "")
            + f"; logs kept in {ctx.run_dir}")


def stop_step(ctx: RunContext, serving: Serving) -> None:
    """Stop one serving step (a replica's), leaving the job's other steps alone."""
    if serving.proc.poll() is None:
        _stop_serving_step(ctx, serving)
    serving.done.set()


def _stop_serving_step(ctx: RunContext, serving: Serving) -> None:
    """SIGTERM to the step's tasks (each stops its container gracefully), then force."""
    step = slurm.find_step(ctx.job.job_id, serving.step)
    if step and slurm.signal_step(step, "TERM"):
        try:
            serving.proc.wait(STEP_STOP_GRACE_S)
            return
        except runner.TimeoutExpired:
            ctx.console.phase("teardown", f"step {step} still running; forcing it")
    terminate(serving.proc)


def remove_secrets(bundle: Launch) -> None:
    """Env files and per-job keys may hold secrets: gone at teardown (logs stay)."""
    for node in bundle.nodes:
        for path in (node.env_file, node.redact_file or ""):
            if os.path.exists(path):
                os.remove(path)
        if node.files_dir:
            secrets = os.path.join(node.files_dir, "secrets")
            if os.path.isdir(secrets):
                for name in os.listdir(secrets):
                    os.remove(os.path.join(secrets, name))
                os.rmdir(secrets)
