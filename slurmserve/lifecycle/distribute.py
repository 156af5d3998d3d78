"""The image phase: load the image where it is missing, check what the launch needs inside it,
and (with --hf-cache) fetch a hub model once.

A tarball is read from its shared path by every loading node, or copied once by sbcast to
node-local storage (below SBCAST_MIN_NODES, N parallel reads cost less than a fan-out).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .. import runner
from ..errors import LaunchError
from ..images import TarballImage
from ..plan import ClusterPlan
from ..render import render_template
from ..runtimes import docker
from ..slurm.steps import Fact, Facts
from ..state import Phase
from . import preflight
from .context import RunContext
from .preflight import Finding, Preflight

SBCAST_MIN_NODES = 4


@dataclass(frozen=True)
class Distribution:
    """How the image reached the nodes, for state.json and the benchmark."""

    loaded: int = 0  # nodes that loaded it
    details: dict[str, Any] = field(default_factory=dict)


def distribute(ctx: RunContext, pre: Preflight, plan: ClusterPlan) -> Distribution:
    ctx.enter(Phase.IMAGE_LOAD)
    image, tarball = pre.image, pre.tarball
    missing = [r for r in range(len(ctx.nodes)) if pre.facts.of(r).get("image") != "present"]
    checks = plan.image_checks
    if not missing:
        ctx.console.phase("image", f"{image[:19]} already on every node: skipped")
        if not checks:
            return Distribution()
    source, staged = _stage(ctx, tarball, len(missing))
    what = f"{tarball.size / 1e9:.2f} GB tarball" if tarball else "registry pull"
    if missing:
        ctx.console.phase("image", f"loading {image[:19]} on {len(missing)} of "
                          f"{len(ctx.nodes)} node(s) ({what}); others skip")
    script = render_template(
        "distribute.sh.j2", image_id=image, source=source, pull=tarball is None,
        compressed=bool(tarball and tarball.compressed), staged=staged, checks=checks,
        label=docker.job_label(ctx.job.job_id), load=True)
    results: dict[int, str] = {}

    def on_fact(fact: Fact) -> None:
        if fact.key == "image":
            results[fact.rank] = fact.value
            unit = "s" if fact.value.startswith("loaded") else ""
            if fact.value != "skipped":
                ctx.console.phase("image", f"{ctx.nodes[fact.rank]}: {fact.value}{unit}")

    step = ctx.steps.run("distribute", script, on_fact=on_fact)
    errors = [f"node {ctx.nodes[r]}: {v}" for r, v in results.items() if v.startswith("error")]
    if step.code != 0 or errors:
        raise LaunchError("image distribution failed, nothing was started:\n  " + "\n  ".join(
            errors or [f"srun exit {step.code}"]) + _load_hint(" ".join(errors), tarball))
    if checks:
        findings = preflight.image_tools(list(ctx.nodes), checks, _check_results(step.facts))
        failures = [f.line() for f in findings if f.status == "fail"]
        if failures:
            raise LaunchError("image check failed, nothing was started:\n  "
                              + "\n  ".join(failures))
        ctx.console.phase("image", f"checked on {len(ctx.nodes)} node(s): " + findings[0].detail)
    if not (tarball and missing):
        return Distribution(loaded=len(missing))
    # Each loading node reads the whole tarball; sbcast reads it once and fans out.
    # (benchmarks/cluster.py measures the real reads from /proc.)
    shared = tarball.size * (1 if staged else len(missing))
    ctx.console.phase("image", f"read {shared / 1e9:.2f} GB from {tarball.path}"
                      + (" once (sbcast fan-out)" if staged else ""))
    return Distribution(len(missing), {"stage": "sbcast" if staged else "direct",
                                       "nodes_loaded": len(missing), "shared_path_bytes": shared})


def _stage(ctx: RunContext, tarball: TarballImage | None, missing: int) -> tuple[str, bool]:
    """Where the loading nodes read the image from, and whether sbcast put it there."""
    spec = ctx.spec
    if tarball is None:
        return ctx.spec.image, False
    use_sbcast = spec.stage == "sbcast" or (spec.stage == "auto" and missing >= SBCAST_MIN_NODES)
    if use_sbcast and not stage_dir_is_node_local(ctx):
        ctx.console.phase("image", f"{spec.stage_dir} is shared between nodes, so sbcast "
                          "copies would collide: loading directly (--stage-dir sets a "
                          "node-local directory)")
        use_sbcast = False
    if not use_sbcast:
        return tarball.path, False
    target = os.path.join(spec.stage_dir, f"slurmserve-{ctx.job.job_id}-image.tar"
                          + (".gz" if tarball.compressed else ""))
    ctx.console.phase("image", f"sbcast {tarball.size / 1e9:.2f} GB to node-local {target}")
    runner.run(["sbcast", f"--jobid={ctx.job.job_id}", "--force", tarball.path, target],
               timeout=3600, check=True)
    return target, True


def stage_dir_is_node_local(ctx: RunContext) -> bool:
    """Each node sees only its own preflight marker in the staging directory."""
    script = render_template("stage_check.sh.j2", stage_dir=ctx.spec.stage_dir,
                             job_id=ctx.job.job_id)
    step = ctx.steps.run("stage-check", script, timeout=60)
    counts = [step.facts.of(r).get("markers", "") for r in step.facts.ranks()]
    return len(counts) == len(ctx.nodes) and all(c == "1" for c in counts)


def check_tools(ctx: RunContext, plan: ClusterPlan, image: str) -> list[Finding]:
    """`doctor`: the in-image checks on nodes that hold the image; loads nothing."""
    if not plan.image_checks:
        return []
    script = render_template(
        "distribute.sh.j2", image_id=image, source="", pull=False, compressed=False,
        staged=False, checks=plan.image_checks, label=docker.job_label(ctx.job.job_id),
        load=False)
    step = ctx.steps.run("image-check", script, timeout=300)
    return preflight.image_tools(list(ctx.nodes), plan.image_checks, _check_results(step.facts))


def prefetch(ctx: RunContext, env_file: str, image: str) -> None:
    """Download a hub model once, on the head, into the shared --hf-cache."""
    spec = ctx.spec
    assert spec.hf_cache
    ctx.enter(Phase.MODEL_DOWNLOAD)
    ctx.console.phase("model", f"fetching {spec.model} once into {spec.hf_cache} on "
                      f"{ctx.nodes[0]}; every node then reads it offline")
    script = render_template(
        "prefetch.sh.j2", job_id=ctx.job.job_id, cache=spec.hf_cache, image=image,
        container=docker.container_name(ctx.job.job_id, "prefetch"), env_file=env_file,
        label=docker.job_label(ctx.job.job_id), hf_dir=docker.HF_DIR, model=spec.model)
    step = ctx.steps.run("prefetch", script, nodes=1)
    if step.code != 0:
        said = [line for line in step.out.splitlines() if line.startswith("slurmserve: ")]
        last = said[-1].removeprefix("slurmserve: ") if said else \
            (step.out.strip().splitlines() or ["no output"])[-1]
        raise LaunchError(f"node {ctx.nodes[0]}: downloading {spec.model} into "
                          f"{spec.hf_cache} failed ({last}); check HF_TOKEN in --env-file "
                          "and the Hub's reachability from that node, or download it "
                          "yourself and pass the local path as MODEL")
    ctx.console.phase("model", f"{spec.model} is in {spec.hf_cache}")


def _check_results(facts: Facts) -> dict[int, list[str]]:
    """The in-image check results per rank (one `check` fact per check)."""
    return {rank: facts.all(rank, "check") for rank in facts.ranks() if facts.all(rank, "check")}


def _load_hint(errors: str, tarball: TarballImage | None) -> str:
    """What to do about a failed load; the error text only picks the advice."""
    if "no space left on device" in errors:
        return ("\n  the node's docker data root is full: free space there (docker system df, "
                "docker image prune), then re-run")
    if tarball and "error: docker load failed" in errors:
        return (f"\n  {tarball.path} looks corrupt or truncated: check it with `tar tf`, "
                "re-create it with `docker save IMAGE -o FILE.tar`")
    return ""
