"""Preflight verdicts: turn the facts every node reported into ok/warn/fail findings.

Pure: the facts come from `templates/preflight.sh.j2` run as one srun step (driver.py).
`slurmserve run` refuses to start on any failure; `slurmserve doctor` prints the table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import SpecError
from ..images import TarballImage
from ..plan import ImageCheck, NodeInfo
from ..runtimes import docker
from ..spec import ServeSpec

CHECKS = ("step", "route", "docker", "image", "gpus", "rdma", "ports", "tools")


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

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    def to_dict(self) -> dict[str, object]:
        return {"ok": not self.failures, "findings": [asdict(f) for f in self.findings],
                "nodes": [asdict(n) for n in self.nodes], "port": self.port}

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


def evaluate(spec: ServeSpec, names: list[str], facts: dict[int, dict[str, str]], head_ip: str,
             tarball: TarballImage | None, http_port: int, fallback_port: int,
             port_explicit: bool, step_note: str = "") -> Verdict:
    verdict = Verdict()
    add = verdict.findings.append
    held = _majority_image(facts) if tarball is None else None
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
        docker_fact = f.get("docker", "")
        if docker_fact.startswith("ok"):
            add(Finding(name, "docker", "ok", f"dockerd {docker_fact[3:]}"))
        else:
            add(Finding(name, "docker", "fail", f"docker is not reachable ({docker_fact})",
                        "start dockerd or set DOCKER_HOST for job steps"))
        if tarball and f.get("tarball") != "readable":
            add(Finding(name, "image", "fail", f"cannot read the image tarball {tarball.path}",
                        "put it on a file system every node mounts"))
        elif held and f.get("held_id", held) != held:
            add(Finding(name, "image", "fail", f"{spec.image} is {f['held_id'][:19]} here but "
                        f"{held[:19]} on the other nodes", "give every node the same image: "
                        "docker pull it everywhere, or pass a `docker save` tarball"))
        else:
            add(Finding(name, "image", "ok", "present" if f.get("image") == "present"
                        else "will be loaded"))
        gpus = f.get("gpus", "none")
        if spec.gpus == "none":
            add(Finding(name, "gpus", "ok", "not used (--gpus none)"))
        elif not gpus.isdigit():
            add(Finding(name, "gpus", "fail", "no NVIDIA GPUs visible (nvidia-smi missing)",
                        "pass --gpus none to run without GPUs"))
        elif int(gpus) < spec.gpus_per_node:
            add(Finding(name, "gpus", "fail", f"{gpus} GPU(s) visible, the spec needs "
                        f"{spec.gpus_per_node}", "fix --gpus-per-node or the allocation"))
        else:
            add(Finding(name, "gpus", "ok", f"{gpus} visible"))
        _, required = docker.device_globs(spec)
        has_rdma = "uverbs" in f.get("devices", "")
        if required and not has_rdma:
            add(Finding(name, "rdma", "fail", f"--fabric {spec.fabric} needs "
                        "/dev/infiniband/uverbs* and there is none",
                        "check the driver or use --fabric tcp"))
        else:
            add(Finding(name, "rdma", "ok", f.get("devices") or "none (TCP sockets)"))
        busy = {int(p) for p in f.get("busy_ports", "").split()}
        if rank == 0 and http_port in busy and not port_explicit and fallback_port not in busy:
            verdict.port = fallback_port  # another job holds the default: use this job's own
            busy.discard(http_port)
        busy.discard(fallback_port)
        if busy:
            add(Finding(name, "ports", "fail", f"port(s) {' '.join(map(str, sorted(busy)))} "
                        "already in use", "stop what holds them or choose another --port"))
        else:
            add(Finding(name, "ports", "ok", "free" + (
                f" (HTTP on the job's port {fallback_port})" if rank == 0 and verdict.port
                else "")))
    return verdict


def _majority_image(facts: dict[int, dict[str, str]]) -> str | None:
    """The image ID most nodes hold under the spec's reference (None when none holds it)."""
    ids = [f["held_id"] for f in facts.values() if f.get("held_id")]
    head = facts.get(0, {}).get("held_id")
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
