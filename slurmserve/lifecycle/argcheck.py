"""The argument check: every rank's planned command line through the engine's own parser,
inside the image, on one node, before anything starts (a bad flag costs seconds, not an image
load and a model start). The parsers are node/argcheck.py's; the verdict is here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field

from .. import engines, images, node, runtimes
from ..errors import LaunchError
from ..plan import ClusterPlan, PortBlock
from ..render import render_template
from ..slurm.steps import Facts
from ..spec import Mount
from ..state import Phase
from .context import RunContext
from .preflight import Finding


@dataclass(frozen=True)
class Rejection:
    rank: int
    host: str
    parser: str
    version: str
    flag: str
    error: str

    def line(self) -> str:
        what = f"`{self.flag}`" if self.flag else "the command line"
        return (f"rank {self.rank} ({self.host}): {self.parser} {self.version} rejects {what}: "
                f"{self.error}")


@dataclass(frozen=True)
class ArgsVerdict:
    versions: dict[str, str] = field(default_factory=dict)  # parser -> version found
    rejected: tuple[Rejection, ...] = ()
    unchecked: str = ""  # why nothing could be checked (no parser in the image)
    cached: bool = False  # the verdict of an earlier check of the same command lines

    @property
    def summary(self) -> str:
        """e.g. "vllm 0.32.0, ray 2.60.0"."""
        return ", ".join(f"{p} {v}" for p, v in self.versions.items())

    def findings(self, host: str) -> list[Finding]:
        if self.unchecked:
            return [Finding(host, "args", "warn", f"not checked: {self.unchecked}")]
        if self.rejected:
            return [Finding(host, "args", "fail", r.line(), fix_for(r)) for r in self.rejected]
        return [Finding(host, "args", "ok", f"accepted by {self.summary}")]


def fix_for(rejection: Rejection) -> str:
    if rejection.flag:
        return (f"remove {rejection.flag} or spell it as {rejection.parser} "
                f"{rejection.version} does (its --help), after `--`")
    return f"check the engine args after `--` against {rejection.parser} {rejection.version}"


def request(plan: ClusterPlan) -> dict[str, object]:
    """What node/argcheck.py reads on stdin: the checks, and what the engine adds to them."""
    checks = [{"rank": n.rank, "parser": c.parser, "argv": list(c.argv)}
              for n in plan.nodes for c in n.argv_checks]
    return {"checks": checks, **engines.get(plan.engine).argcheck_data()}


def launchers(plan: ClusterPlan) -> list[str]:
    """Commands whose Python interpreter runs the engine: the plan's, then the parsers' names."""
    names = [n.command[0] for n in plan.nodes if n.command]
    names += [c.parser for n in plan.nodes for c in n.argv_checks]
    return list(dict.fromkeys(names))


def verdict_key(plan: ClusterPlan, image: str, runtime: str) -> str:
    """The check's identity: the image ID, the runtime and every command line with what is
    this job's own (its nodes' addresses, its ports, its ID) put in place by position. Two
    jobs of one layout and image have the same key; the parsers judge the words, and these
    values are valid by construction wherever they stand."""
    own = [n.address for n in plan.nodes] + [str(plan.port), str(plan.job_id)]
    block = PortBlock.for_job(plan.job_id).base
    own += [str(port) for port in range(block, block + PortBlock.SIZE)]
    names = {value: f"<{i}>" for i, value in enumerate(dict.fromkeys(own))}
    pattern = re.compile("|".join(rf"(?<![\w.]){re.escape(v)}(?![\w.])"
                                  for v in sorted(names, key=len, reverse=True)))
    shape = [[check["rank"], check["parser"],
              [pattern.sub(lambda m: names[m[0]], word) for word in check["argv"]]]
             for check in request(plan)["checks"]]  # type: ignore[union-attr]
    text = json.dumps([image, runtime, plan.engine, shape], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _verdict_path(key: str) -> str:
    return os.path.join(os.path.dirname(images.default_cache_dir()), "argcheck", f"{key}.json")


def cached_verdict(key: str) -> ArgsVerdict | None:
    try:
        with open(_verdict_path(key), encoding="utf-8") as fh:
            return ArgsVerdict(versions=dict(json.load(fh)["versions"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember(key: str, verdict: ArgsVerdict) -> None:
    """Keep an acceptance (a rejection is checked again: the user is about to change it)."""
    if verdict.rejected or verdict.unchecked:
        return
    path = _verdict_path(key)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(f"{path}.tmp", "w", encoding="utf-8") as fh:
            json.dump({"versions": verdict.versions}, fh)
        os.replace(f"{path}.tmp", path)
    except OSError:
        pass  # a cache that cannot be written only costs the next run the check


def check_args(ctx: RunContext, plan: ClusterPlan, image: str, runtime: str) -> ArgsVerdict:
    """Run the check on the head node (which holds the image by now), unless the same command
    lines were accepted in this image before (`verdict_key`)."""
    ctx.enter(Phase.ARGUMENT_CHECK)
    wanted = request(plan)
    if not any(n.argv_checks for n in plan.nodes):
        return ArgsVerdict(unchecked="the plan names no command to check")
    key = verdict_key(plan, image, runtime)
    cached = cached_verdict(key)
    if cached is not None:
        return cached
    check_dir = os.path.join(ctx.run_dir, "argcheck")
    os.makedirs(check_dir, exist_ok=True)
    with open(os.path.join(check_dir, "request.json"), "w", encoding="utf-8") as fh:
        json.dump(wanted, fh)
    with open(os.path.join(check_dir, "argcheck.py"), "w", encoding="utf-8") as fh:
        fh.write(node.read("argcheck.py"))
    script = render_template("argcheck.sh.j2", check_dir=check_dir, image=image,
                             launchers=launchers(plan),
                             **runtimes.shell_context(runtime, ctx.job.job_id))
    options = runtimes.get(runtime).step_options(
        image, ctx.job.job_id, (Mount(ctx.run_dir, ctx.run_dir),
                                Mount(check_dir, "/slurmserve-check", read_only=True)))
    step = ctx.steps.run("argcheck", script, nodes=1, timeout=300, options=options)
    verdict = judge(step.facts, list(ctx.nodes))
    remember(key, verdict)
    return verdict


def judge(facts: Facts, hosts: list[str]) -> ArgsVerdict:
    """The verdict from the step's facts (pure)."""
    found = facts.of(0)
    if "argcheck" not in found:
        why = found.get("argcheck_error", "the check did not run")
        return ArgsVerdict(unchecked=f"the check could not run in the image ({why})")
    results = json.loads(found["argcheck"])["results"]
    versions = {r["parser"]: r["version"] for r in results if r["version"]}
    missing = sorted({r["parser"] for r in results if not r["version"]})
    rejected = tuple(Rejection(r["rank"], hosts[r["rank"]], r["parser"], r["version"], r["flag"],
                               r["error"])
                     for r in results if r["version"] and not r["ok"])
    if missing and not versions:
        return ArgsVerdict(unchecked=f"no {', '.join(missing)} parser in the image")
    return ArgsVerdict(versions, rejected)


def require(ctx: RunContext, verdict: ArgsVerdict) -> None:
    """`run`'s judgement: a rejected flag stops the run before anything starts."""
    if verdict.rejected:
        raise LaunchError("argument check failed, nothing was started:\n  " + "\n  ".join(
            f"{r.line()}; {fix_for(r)}" for r in verdict.rejected))
    if verdict.unchecked:
        ctx.console.phase("args", f"not checked: {verdict.unchecked}")
    else:
        ctx.console.phase("args", f"every rank's command line accepted by {verdict.summary}"
                          + (" (as before: the same command lines in this image)"
                             if verdict.cached else ""))
