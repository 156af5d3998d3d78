"""Preflight: one srun step reports facts from every node; pure verdicts judge them.

`check` runs the step (templates/preflight.sh.j2) and `evaluate` turns the facts into
ok/warn/fail findings. `slurmserve run` refuses to start on any failure; `slurmserve doctor`
prints the table. The HTTP port is chosen here, once, from what the head reported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from .. import engines, images, router, runtimes, slurm
from ..errors import LaunchError, SpecError
from ..images import TarballImage
from ..plan import Allocation, ImageCheck, NodeInfo, PortBlock
from ..render import render_template
from ..runtimes import _common as common
from ..slurm.steps import Facts, HeldStep
from ..spec import ServeSpec
from ..state import Phase
from .context import RunContext

CHECKS = ("step", "route", "runtime", "image", "gpus", "rdma", "ports", "tools", "args")


@dataclass(frozen=True)
class Finding:
    node: str
    check: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"node {self.node}: {self.detail}" + (f"; {self.fix}" if self.fix else "")


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)
    nodes: list[NodeInfo] = field(default_factory=list)
    port: int | None = None  # HTTP port to use instead of a taken default
    runtime: str = ""  # the container runtime chosen ("" when none works)
    closest: str = ""  # when none works everywhere: the one that works on the most nodes

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    def to_dict(self) -> dict[str, object]:
        return {"ok": not self.failures, "findings": [asdict(f) for f in self.findings],
                "nodes": [asdict(n) for n in self.nodes], "port": self.port,
                "runtime": self.runtime}

    def table(self, names: list[str]) -> str:
        cells = {(f.node, f.check): f.status for f in self.findings}
        checks = [c for c in CHECKS if any(f.check == c for f in self.findings)]
        width = max([4, *(len(n) for n in names)])
        lines = [("NODE".ljust(width) + "  " + "  ".join(c.ljust(6) for c in checks)).rstrip()]
        for name in names:
            row = [cells.get((name, c), "-").upper() if cells.get((name, c)) == "fail"
                   else cells.get((name, c), "-") for c in checks]
            lines.append((name.ljust(width) + "  " + "  ".join(v.ljust(6) for v in row)).rstrip())
        lines += [f"  {f.status}: {f.line()}" for f in self.findings if f.status != "ok"]
        return "\n".join(lines)


@dataclass(frozen=True)
class HttpPort:
    """The engine's HTTP port, and the job's own one to use when the default is taken."""

    port: int
    fallback: int
    explicit: bool  # the user chose it: never replaced
    ranks: frozenset[int] = frozenset({0})  # the ranks that bind it (SGLang's: every rank)

    def choose(self, busy: dict[int, set[int]]) -> int | None:
        """The job's own port when the default is taken where it is needed and the fallback
        is free there; None to keep the default (a taken explicit port is a failure)."""
        needed = [busy.get(r, set()) for r in self.ranks]
        if self.explicit or not any(self.port in b for b in needed):
            return None
        return self.fallback if not any(self.fallback in b for b in needed) else None


@dataclass(frozen=True)
class Preflight:
    """What preflight learned: the verdict, the nodes as they reach the head, the image."""

    verdict: Verdict
    head_ip: str
    tarball: TarballImage | None
    facts: Facts
    http: HttpPort
    runtime: str  # the chosen runtime ("" when none works: the verdict fails)
    images: dict[str, runtimes.ImagePlan]  # per candidate runtime
    held: HeldStep | None = None  # the step, waiting: the launch may run in it

    @property
    def image_plan(self) -> runtimes.ImagePlan:
        return self.images[self.runtime]

    @property
    def image(self) -> str:
        """What the runtime runs: an image ID, a reference or a native image file."""
        return self.image_plan.image

    def image_fact(self, rank: int) -> str:
        return self.facts.of(rank).get(f"image.{self.runtime}", "absent")

    def untouched(self) -> frozenset[int]:
        """Ranks whose node holds nothing of this job (no container of its names, no process
        of its mark: facts named.RUNTIME): their launch skips looking for leftovers of an
        earlier attempt. A runtime that does not say is looked at again."""
        key = f"named.{self.runtime}"
        return frozenset(r for r in self.facts.ranks() if self.facts.of(r).get(key) == "0")

    @property
    def port(self) -> int:
        """The HTTP port to serve on: chosen once, here."""
        return self.verdict.port or self.http.port

    def allocation(self, job_id: str) -> Allocation:
        return Allocation(job_id, tuple(self.verdict.nodes), runtimes.mpi_launch(self.runtime))


def check(ctx: RunContext, resolution: engines.Resolution, hold: bool = False) -> Preflight:
    """Run the preflight step on every node and judge it; starts nothing. `hold`: the step's
    tasks wait after reporting, for the launch to run in them (`Preflight.held`)."""
    spec = ctx.spec
    ctx.enter(Phase.PREFLIGHT)
    ctx.console.phase("preflight", f"checking {len(ctx.nodes)} node(s): {', '.join(ctx.nodes)}")
    inputs: _Inputs | None = None

    def script() -> str:  # rendered while srun starts the step's tasks
        nonlocal inputs
        inputs = _Inputs.of(ctx, resolution)
        return inputs.script(ctx, hold)

    result = ctx.steps.run("preflight", script, timeout=120, hold=hold)
    ctx.mark("preflight facts")
    assert inputs is not None  # steps.run renders the script before it returns
    note = f"srun exit {result.code}: " + (result.out.strip().splitlines()[-1:] or ["no output"])[0]
    options = runtimes.srun_options(list(inputs.plans))
    plugin = bool(options) and slurm.srun_offers(*options)
    verdict = evaluate(spec, list(ctx.nodes), result.facts.per_rank(), inputs.head_ip,
                       inputs.tarball, inputs.http, note, plans=inputs.plans, srun_plugin=plugin)
    return Preflight(verdict, inputs.head_ip, inputs.tarball, result.facts, inputs.http,
                     verdict.runtime, inputs.plans, result.held)


@dataclass(frozen=True)
class _Inputs:
    """What the preflight script checks: the head, the image as each runtime runs it, ports."""

    head_ip: str
    tarball: TarballImage | None
    plans: dict[str, runtimes.ImagePlan]
    http: HttpPort
    ports: dict[int, list[int]]  # per rank, the ports it will listen on

    @classmethod
    def of(cls, ctx: RunContext, resolution: engines.Resolution) -> _Inputs:
        spec = ctx.spec
        tarball = images.read_tarball(spec.image) if spec.image_is_tarball else None
        block = PortBlock.for_job(ctx.job.job_id)
        http = HttpPort(resolution.port, block.http_fallback, resolution.port_explicit)
        ports = listen_ports(spec, resolution, block, len(ctx.nodes))
        http = dataclasses.replace(http, ranks=frozenset(
            r for r, p in ports.items() if http.port in p))
        if not http.explicit:
            for rank in http.ranks:
                ports[rank].append(http.fallback)
        return cls(slurm.node_address(ctx.nodes[0]), tarball, image_plans(spec, tarball),
                   http, ports)

    def script(self, ctx: RunContext, hold: bool) -> str:
        globs, _ = common.device_globs(ctx.spec)
        return render_template(
            "preflight.sh.j2", head_ip=self.head_ip,
            images={n: p.image for n, p in self.plans.items()},
            tarball=self.tarball.path if self.tarball else "", device_globs=list(globs),
            ports=self.ports, stage_dir=ctx.spec.stage_dir, hold=hold,
            **runtimes.shell_context("", ctx.job.job_id))


def listen_ports(spec: ServeSpec, resolution: engines.Resolution, block: PortBlock,
                 count: int) -> dict[int, list[int]]:
    """Per rank: the ports it will listen on. Every replica's ranks as one replica's; the
    router's two on the first node."""
    one = spec.replica_spec
    ports = engines.get(spec.engine).listen_ports(one, resolution, block, one.nodes)
    by_rank = {rank: list(ports.get(rank % one.nodes, ())) for rank in range(count)}
    if spec.replicas > 1:
        by_rank[0] += [block.at(router.PORT_OFFSET), block.at(router.METRICS_OFFSET)]
    return by_rank


def image_plans(spec: ServeSpec, tarball: TarballImage | None) -> dict[str, runtimes.ImagePlan]:
    """The image as each candidate runtime would run it."""
    cache = spec.image_cache or images.default_cache_dir()
    return {name: runtimes.image_plan(name, spec.image, tarball.image_id if tarball else None,
                                      cache) for name in runtimes.candidates(spec)}


def require(ctx: RunContext, pre: Preflight) -> None:
    """`run`'s judgement: any failure stops it; say what was decided."""
    verdict = pre.verdict
    if verdict.failures:
        raise LaunchError("preflight failed, nothing was started:\n  "
                          + "\n  ".join(f.line() for f in verdict.failures))
    if verdict.port:
        ctx.console.phase("preflight", f"port {pre.http.port} is taken on {ctx.nodes[0]}; "
                          f"serving on this job's port {verdict.port}")
    summary = ", ".join(f"{i.name}={i.address}/{i.ifname}" for i in verdict.nodes)
    ctx.console.phase("preflight", f"ok: {summary}")
    spec = ctx.spec
    if spec.nodes > 1 and not spec.model_is_local and not spec.hf_cache:
        ctx.console.phase("preflight", f"warning: each of {spec.nodes} nodes downloads "
                          f"{spec.model} from the Hub itself (rate limits, HTTP 429): "
                          "--hf-cache DIR on a shared file system fetches it once")


def leftover_jobs(facts: Facts, own_job: str, runtime: str) -> list[str]:
    """Jobs whose containers (or processes) of ours the nodes hold, other than this one
    (field failure 12)."""
    jobs = {pair.rsplit("=", 1)[1] for rank in facts.ranks()
            for pair in facts.of(rank).get(f"ours.{runtime}", "").split() if "=" in pair}
    jobs.discard(own_job)
    return sorted(jobs)


def evaluate(spec: ServeSpec, names: list[str], facts: dict[int, dict[str, str]], head_ip: str,
             tarball: TarballImage | None, http: HttpPort, step_note: str = "", *,
             plans: dict[str, runtimes.ImagePlan] | None = None,
             srun_plugin: bool = False) -> Verdict:
    plans = plans or image_plans(spec, tarball)
    found = {r: {n: f.get(f"runtime.{n}", "") for n in plans} for r, f in facts.items()}
    choice = runtimes.choose(spec, found, srun_plugin, len(names))
    verdict = Verdict(runtime=choice.name if choice else "")
    add = verdict.findings.append
    taken = {rank: {int(p) for p in f.get("busy_ports", "").split()} for rank, f in facts.items()}
    verdict.port = http.choose(taken)
    rt = choice.name if choice else ""
    near = "" if choice else runtimes.closest(spec, found, srun_plugin, len(names)) or (
        spec.runtime if spec.runtime != "auto" else "")
    verdict.closest = near
    held = _majority_image(facts, rt or near) if tarball is None and (rt or near) else None
    for rank, name in enumerate(names):
        f = facts.get(rank, {})
        if f.get("done") != "1":
            add(Finding(name, "step", "fail", f"preflight did not complete ({step_note})",
                        "check that slurmd runs there and the node can start job steps"))
            continue
        add(Finding(name, "step", "ok", "preflight ran"))
        address = f.get("address", "")
        try:
            verdict.nodes.append(NodeInfo(name, address, f.get("ifname") or "eth0"))
            add(Finding(name, "route", "ok", f"{address} on {f.get('ifname')} reaches {head_ip}"))
        except SpecError:
            add(Finding(name, "route", "fail", f"no address on the route to the head {head_ip} "
                        f"(got '{address}')", "check routing between the nodes"))
        if choice is not None:
            version = choice.versions.get(rank, "")
            tag = " (experimental)" if runtimes.get(rt).EXPERIMENTAL else ""
            add(Finding(name, "runtime", "ok", f"{rt} {version}{tag}; {choice.reason}"))
            add(_image_finding(spec, name, f, rank, rt, plans[rt], tarball, held))
        elif near and f.get(f"runtime.{near}", "").startswith("ok"):
            add(Finding(name, "runtime", "ok", f"{near} {f[f'runtime.{near}'][3:]} (not on "
                        "every node)"))
            add(_image_finding(spec, name, f, rank, near, plans[near], tarball, held))
        elif near:
            add(Finding(name, "runtime", "fail", f"{near} is not usable here "
                        f"({f.get(f'runtime.{near}') or 'absent'})", _runtime_fix(spec, near)))
        else:
            said = runtimes.none_works(list(plans), f, srun_plugin)
            add(Finding(name, "runtime", "fail", f"no container runtime works on every node "
                        f"({said})", _runtime_fix(spec)))
        add(_gpu_finding(spec, name, f))
        _, required = common.device_globs(spec)
        if required and not common.has_rdma(f.get("devices", "")):
            add(Finding(name, "rdma", "fail", f"--fabric {spec.fabric} needs "
                        "/dev/infiniband/uverbs* and there is none",
                        "check the driver or use --fabric tcp"))
        else:
            add(Finding(name, "rdma", "ok", f.get("devices") or "none (TCP sockets)"))
        busy = set(taken.get(rank, set()))
        if verdict.port and rank in http.ranks:
            busy.discard(http.port)  # another job holds the default: this job uses its own
        busy.discard(http.fallback)
        if busy:
            add(Finding(name, "ports", "fail", f"port(s) {' '.join(map(str, sorted(busy)))} "
                        "already in use", "stop what holds them or choose another --port"))
        else:
            add(Finding(name, "ports", "ok", "free" + (
                f" (HTTP on the job's port {http.fallback})" if rank in http.ranks and verdict.port
                else "")))
    return verdict


def _gpu_finding(spec: ServeSpec, name: str, f: dict[str, str]) -> Finding:
    """The GPUs SLURM gave this job here (global indices) count first; nvidia-smi confirms."""
    visible, ids = f.get("gpus", "none"), f.get("gpu_ids", "")
    if spec.gpus == "none":
        return Finding(name, "gpus", "ok", "not used (--gpus none)")
    if ids:
        given = len(ids.split(","))
        if given < spec.gpus_per_node:
            return Finding(name, "gpus", "fail", f"SLURM gave this job {given} GPU(s) here "
                           f"({ids}), the spec needs {spec.gpus_per_node}",
                           f"allocate with --gpus-per-node={spec.gpus_per_node}, or fix "
                           "--gpus-per-node")
        if not visible.isdigit():
            return Finding(name, "gpus", "warn", f"SLURM gave GPU(s) {ids}; nvidia-smi is not "
                           "on this node, so they were not seen")
        return Finding(name, "gpus", "ok", f"{ids} of {visible} (SLURM's, by global index)")
    if not visible.isdigit():
        return Finding(name, "gpus", "fail", "no NVIDIA GPUs visible (nvidia-smi missing)",
                       "pass --gpus none to run without GPUs")
    if int(visible) < spec.gpus_per_node:
        return Finding(name, "gpus", "fail", f"{visible} GPU(s) visible, the spec needs "
                       f"{spec.gpus_per_node}", "fix --gpus-per-node or the allocation")
    return Finding(name, "gpus", "ok", f"{visible} visible")


def _image_finding(spec: ServeSpec, name: str, f: dict[str, str], rank: int, rt: str,
                   plan: runtimes.ImagePlan, tarball: TarballImage | None,
                   held: str | None) -> Finding:
    here = f.get(f"image.{rt}", "absent")
    converts = plan.convert_from is not None
    if tarball and here != "present" and (not converts or rank == 0) \
            and f.get("tarball") != "readable":
        return Finding(name, "image", "fail", f"cannot read the image tarball {tarball.path}",
                       "put it on a file system every node mounts")
    if held and f.get(f"held_id.{rt}", held) != held:
        return Finding(name, "image", "fail", f"{spec.image} is {f[f'held_id.{rt}'][:19]} here "
                       f"but {held[:19]} on the other nodes", "give every node the same image: "
                       f"{rt} pull it everywhere, or pass a `docker save` tarball")
    if plan.image.startswith("/") and not converts and here != "present":
        return Finding(name, "image", "fail", f"cannot read {plan.image} here",
                       "put it on a file system every node mounts")
    return Finding(name, "image", "ok", "present" if here == "present" else
                   "will be converted once" if converts else "will be loaded")


def _runtime_fix(spec: ServeSpec, name: str = "") -> str:
    name = name or (spec.runtime if spec.runtime != "auto" else "")
    if name:
        return f"{runtimes.get(name).FIX}, or choose another --runtime"
    return ("start dockerd (or set DOCKER_HOST for job steps), install podman or apptainer, "
            "or run where srun offers --container-image (pyxis)")


def _majority_image(facts: dict[int, dict[str, str]], runtime: str) -> str | None:
    """The image ID most nodes hold under the spec's reference (None when none holds it)."""
    key = f"held_id.{runtime}"
    ids = [f[key] for f in facts.values() if f.get(key)]
    head = facts.get(0, {}).get(key)
    return max(ids, key=lambda i: (ids.count(i), i == head)) if ids else None


def image_tools(names: list[str], checks: tuple[ImageCheck, ...],
                found: dict[int, list[str]]) -> list[Finding]:
    """Judge the in-image checks ("NAME ok|fail DETAIL" per node, from distribute.sh.j2).

    Every node's image must pass every check with the same output (e.g. one Ray version).
    """
    findings: list[Finding] = []
    seen: dict[str, dict[str, list[str]]] = {}
    for rank, host in enumerate(names):
        results = dict(v.split(" ", 1) for v in found.get(rank, []) if " " in v)
        if results.get("image", "").startswith("absent"):
            findings.append(Finding(host, "tools", "warn", "image not on this node yet: "
                                    "checked inside it at launch"))
            continue
        if "image" in results:  # the checks could not run at all
            findings.append(Finding(host, "tools", "fail", results["image"].removeprefix("fail "),
                                    "check that the image runs `sh`"))
            continue
        failed = False
        for check in checks:
            status, _, detail = results.get(check.name, "fail no result").partition(" ")
            if status != "ok":
                failed = True
                findings.append(Finding(host, "tools", "fail", f"image check `{check.command}` "
                                        f"failed ({detail})", check.fix))
            else:
                seen.setdefault(check.name, {}).setdefault(detail, []).append(host)
        if not failed:
            findings.append(Finding(host, "tools", "ok", ", ".join(
                f"{c.name}: {results[c.name].partition(' ')[2]}" for c in checks)))
    for name, outputs in seen.items():
        if len(outputs) > 1:
            where = "; ".join(f"{', '.join(h)}: {o}" for o, h in outputs.items())
            for host in [h for hosts in list(outputs.values())[1:] for h in hosts]:
                findings.append(Finding(host, "tools", "fail", f"the nodes' images differ in "
                                        f"`{name}` ({where})", "use one image (by ID) on every "
                                        "node"))
    return findings
