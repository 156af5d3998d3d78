"""The image phase: get the image to every node in the runtime's own form, check what the
launch needs inside it, and (with --hf-cache) fetch a hub model once.

Daemon runtimes (docker, podman) load a tarball into each node's store where it is missing.
Step-native runtimes (pyxis, apptainer) run one file: a tarball is converted into it once per
image ID on the head (cached), and read from shared storage. Either file is read from its
shared path by every node, or copied once by sbcast to node-local storage (below
SBCAST_MIN_NODES, N parallel reads cost less than a fan-out).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .. import runner, runtimes
from ..errors import LaunchError
from ..images import TarballImage
from ..plan import ClusterPlan
from ..render import render_template
from ..runtimes import _common as common
from ..slurm.steps import Fact, Facts
from ..spec import Mount
from ..state import Phase
from . import preflight
from .context import RunContext
from .preflight import Finding, Preflight

SBCAST_MIN_NODES = 4


@dataclass(frozen=True)
class Distribution:
    """How the image reached the nodes, for state.json and the benchmark."""

    image: str  # what the runtime runs from here on (a staged copy, for a native file)
    loaded: int = 0  # nodes that loaded it
    details: dict[str, Any] = field(default_factory=dict)


def distribute(ctx: RunContext, pre: Preflight, plan: ClusterPlan) -> Distribution:
    ctx.enter(Phase.IMAGE_LOAD)
    if runtimes.get(pre.runtime).FAMILY == "step":
        return _distribute_file(ctx, pre, plan)
    image, tarball = pre.image, pre.tarball
    missing = [r for r in range(len(ctx.nodes)) if pre.image_fact(r) != "present"]
    checks = plan.image_checks
    if not missing:
        ctx.console.phase("image", f"{image[:19]} already on every node: skipped")
        if not checks:
            return Distribution(image)
    if missing:
        source, staged = _stage(ctx, tarball.path if tarball else None, len(missing),
                                "image.tar" + (".gz" if tarball and tarball.compressed else ""),
                                tarball.size if tarball else 0)
    else:  # only the in-image checks run: nothing to stage
        source, staged = (tarball.path if tarball else ctx.spec.image), False
    what = f"{tarball.size / 1e9:.2f} GB tarball" if tarball else "registry pull"
    if missing:
        ctx.console.phase("image", f"loading {image[:19]} on {len(missing)} of "
                          f"{len(ctx.nodes)} node(s) ({what}); others skip")
    script = render_template(
        "distribute.sh.j2", image=image, source=source, pull=tarball is None,
        compressed=bool(tarball and tarball.compressed), staged=staged, checks=checks,
        load=True, **runtimes.shell_context(pre.runtime, ctx.job.job_id))
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
    _require_checks(ctx, checks, step.facts)
    if not (tarball and missing):
        return Distribution(image, loaded=len(missing))
    # Each loading node reads the whole tarball; sbcast reads it once and fans out.
    # (benchmarks/cluster.py measures the real reads from /proc.)
    shared = tarball.size * (1 if staged else len(missing))
    ctx.console.phase("image", f"read {shared / 1e9:.2f} GB from {tarball.path}"
                      + (" once (sbcast fan-out)" if staged else ""))
    return Distribution(image, len(missing), {"stage": "sbcast" if staged else "direct",
                                              "nodes_loaded": len(missing),
                                              "shared_path_bytes": shared})


def _distribute_file(ctx: RunContext, pre: Preflight, plan: ClusterPlan) -> Distribution:
    """Step-native runtimes: convert a tarball once (cached by image ID), stage the file where
    that pays, then check inside the image on every node."""
    image, details = pre.image, {}
    if pre.image_plan.convert_from and pre.image_fact(0) != "present":
        details = convert(ctx, pre)
    elif pre.image_plan.convert_from:
        ctx.console.phase("image", f"{image} already converted (cached by image ID): skipped")
    if image.startswith("/"):
        size = os.path.getsize(image)
        staged_path, staged = _stage(ctx, image, len(ctx.nodes), "image" + os.path.splitext(
            image)[1], size, keep=True)
        if staged:
            image = staged_path
            details.update(stage="sbcast", shared_path_bytes=size)
        else:
            details.update(stage="direct", shared_path_bytes=size * len(ctx.nodes))
    if plan.image_checks:
        options = runtimes.get(pre.runtime).step_options(image, ctx.job.job_id,
                                                         _in_run_dir(ctx))
        script = render_template(
            "distribute.sh.j2", image=image, source="", pull=False, compressed=False,
            staged=False, checks=plan.image_checks, load=False, in_image=bool(options),
            **runtimes.shell_context(pre.runtime, ctx.job.job_id))
        step = ctx.steps.run("distribute", script, options=options)
        if step.code != 0:
            raise LaunchError(f"the image check could not run (srun exit {step.code}): "
                              + (step.out.strip().splitlines() or ["no output"])[-1])
        _require_checks(ctx, plan.image_checks, step.facts)
    return Distribution(image, 0, details)


def convert(ctx: RunContext, pre: Preflight) -> dict[str, Any]:
    """The tarball into the runtime's own image file, once, on the head, with its own tools."""
    tarball, out = pre.tarball, pre.image
    assert tarball is not None
    ctx.console.phase("image", f"converting {tarball.path} ({tarball.size / 1e9:.2f} GB) into "
                      f"{out} on {ctx.nodes[0]}, once (cached by image ID)")
    script = render_template("convert.sh.j2", tarball=tarball.path, out=out,
                             **runtimes.shell_context(pre.runtime, ctx.job.job_id))
    step = ctx.steps.run("convert", script, nodes=1)
    said = step.facts.of(0).get("convert", "")
    if step.code != 0 or not said.startswith("done"):
        why = said.removeprefix("error: ") or (step.out.strip().splitlines() or ["no output"])[-1]
        raise LaunchError(f"node {ctx.nodes[0]}: converting the image for {pre.runtime} failed, "
                          f"nothing was started: {why}; the step's output is in "
                          f"{ctx.run_dir}/convert.sh's srun log above")
    _, seconds, size = said.split()
    ctx.console.phase("image", f"converted in {seconds}s: {int(size) / 1e9:.2f} GB {out}")
    return {"converted_seconds": int(seconds), "converted_bytes": int(size)}


def _in_run_dir(ctx: RunContext) -> tuple[Mount, ...]:
    """A step that runs inside the image (pyxis) must see its own script, in the run dir."""
    return (Mount(ctx.run_dir, ctx.run_dir),)


def _require_checks(ctx: RunContext, checks: tuple[Any, ...], facts: Facts) -> None:
    if not checks:
        return
    findings = preflight.image_tools(list(ctx.nodes), checks, _check_results(facts))
    failures = [f.line() for f in findings if f.status == "fail"]
    if failures:
        raise LaunchError("image check failed, nothing was started:\n  " + "\n  ".join(failures))
    ctx.console.phase("image", f"checked on {len(ctx.nodes)} node(s): " + findings[0].detail)


def _stage(ctx: RunContext, path: str | None, readers: int, name: str, size: int,
           keep: bool = False) -> tuple[str, bool]:
    """Where the nodes read the image file from, and whether sbcast put it there. `keep`: the
    copy stays until cleanup (a native image is read at every container start)."""
    spec = ctx.spec
    if path is None:
        return ctx.spec.image, False
    use_sbcast = spec.stage == "sbcast" or (spec.stage == "auto" and readers >= SBCAST_MIN_NODES)
    if use_sbcast and not stage_dir_is_node_local(ctx):
        ctx.console.phase("image", f"{spec.stage_dir} is shared between nodes, so sbcast "
                          "copies would collide: reading it directly (--stage-dir sets a "
                          "node-local directory)")
        use_sbcast = False
    if not use_sbcast:
        return path, False
    # The cleanup step removes .slurmserve-JOB-* from the staging directory on every node.
    prefix = f".slurmserve-{ctx.job.job_id}-" if keep else f"slurmserve-{ctx.job.job_id}-"
    target = os.path.join(spec.stage_dir, prefix + name)
    ctx.console.phase("image", f"sbcast {size / 1e9:.2f} GB to node-local {target}")
    runner.run(["sbcast", f"--jobid={ctx.job.job_id}", "--force", path, target],
               timeout=3600, check=True)
    return target, True


def stage_dir_is_node_local(ctx: RunContext) -> bool:
    """Each node sees only its own preflight marker in the staging directory."""
    script = render_template("stage_check.sh.j2", stage_dir=ctx.spec.stage_dir,
                             job_id=ctx.job.job_id)
    step = ctx.steps.run("stage-check", script, timeout=60)
    counts = [step.facts.of(r).get("markers", "") for r in step.facts.ranks()]
    return len(counts) == len(ctx.nodes) and all(c == "1" for c in counts)


def check_tools(ctx: RunContext, plan: ClusterPlan, pre: Preflight) -> list[Finding]:
    """`doctor`: the in-image checks on nodes that hold the image; loads nothing."""
    if not plan.image_checks:
        return []
    rt = runtimes.get(pre.runtime)
    if rt.FAMILY == "step" and pre.image_fact(0) != "present":
        return [Finding(n, "tools", "warn", "image not converted yet: checked inside it at "
                        "launch") for n in ctx.nodes]
    options = rt.step_options(pre.image, ctx.job.job_id, _in_run_dir(ctx))
    script = render_template(
        "distribute.sh.j2", image=pre.image, source="", pull=False, compressed=False,
        staged=False, checks=plan.image_checks, load=False, in_image=bool(options),
        **runtimes.shell_context(pre.runtime, ctx.job.job_id))
    step = ctx.steps.run("image-check", script, timeout=300, options=options)
    return preflight.image_tools(list(ctx.nodes), plan.image_checks, _check_results(step.facts))


def prefetch(ctx: RunContext, env_file: str, image: str, runtime: str) -> None:
    """Download a hub model once, on the head, into the shared --hf-cache."""
    spec = ctx.spec
    assert spec.hf_cache
    ctx.enter(Phase.MODEL_DOWNLOAD)
    ctx.console.phase("model", f"fetching {spec.model} once into {spec.hf_cache} on "
                      f"{ctx.nodes[0]}; every node then reads it offline")
    script = render_template(
        "prefetch.sh.j2", cache=spec.hf_cache, image=image, env_file=env_file,
        hf_dir=common.HF_DIR, model=spec.model, **runtimes.shell_context(runtime, ctx.job.job_id))
    mounts = (Mount(spec.hf_cache, common.HF_DIR), Mount(ctx.run_dir, ctx.run_dir))
    step = ctx.steps.run("prefetch", script, nodes=1, options=runtimes.get(runtime).step_options(
        image, ctx.job.job_id, mounts))
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
        return ("\n  the node's image store is full: free space there (docker system df, "
                "docker image prune, or podman's), then re-run")
    if tarball and " load failed" in errors:
        return (f"\n  {tarball.path} looks corrupt or truncated: check it with `tar tf`, "
                "re-create it with `docker save IMAGE -o FILE.tar`")
    return ""
