"""Plain data with no I/O: the allocation we got and the plan of what runs on each node."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from .errors import SpecError


@dataclass(frozen=True)
class NodeInfo:
    """One allocated node as seen from the route to the head (facts from preflight)."""

    name: str
    address: str  # the IP this node uses to reach the head: engines bind and advertise it
    ifname: str = "eth0"  # the interface holding `address`: GLOO/NCCL/TP socket ifname

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            raise SpecError("allocation", f"node {self.name} reported '{self.address}', "
                            "which is not an IP address",
                            "check `hostname -I` and routing on that node") from None


@dataclass(frozen=True)
class Allocation:
    """The SLURM job and its nodes, head (rank 0) first."""

    job_id: str
    nodes: tuple[NodeInfo, ...]
    # How an MPI world spans nodes with this runtime: "ssh" (mpirun reaches an sshd in each
    # node's container) or "pmix" (the serving step's tasks are the ranks: srun --mpi=pmix).
    mpi_launch: str = "ssh"

    @property
    def head(self) -> NodeInfo:
        return self.nodes[0]

    @property
    def ports(self) -> PortBlock:
        return PortBlock.for_job(self.job_id)

    def split(self, parts: int) -> list[Allocation]:
        """Equal parts in node order: each replica's own nodes."""
        size = len(self.nodes) // parts
        return [Allocation(self.job_id, self.nodes[k * size:(k + 1) * size], self.mpi_launch)
                for k in range(parts)]


@dataclass(frozen=True)
class PortBlock:
    """A per-job block of ports for everything but the engine's default HTTP port.

    Two jobs sharing a node (field failure 6) get different blocks: the block index comes from
    the job ID. Engines name their own ports by offset (`at`), e.g. vLLM's whole Ray range.
    """

    base: int

    SIZE = 100
    FIRST = 20000
    # Blocks span 20000..29999: below Linux's ephemeral range (32768+) and clear of the engines'
    # default HTTP ports (8000, SGLang's 30000) and Ray's defaults (6379, 8265, 10001).
    COUNT = 100
    RENDEZVOUS = 0
    SSH = 2
    HTTP_FALLBACK = 11

    @classmethod
    def for_job(cls, job_id: str) -> PortBlock:
        digits = "".join(c for c in str(job_id) if c.isdigit()) or "0"
        return cls(cls.FIRST + (int(digits) % cls.COUNT) * cls.SIZE)

    def at(self, offset: int) -> int:
        """The port `offset` places into this job's block."""
        if not 0 <= offset < self.SIZE:
            raise ValueError(f"port offset {offset} is outside a block of {self.SIZE}")
        return self.base + offset

    @property
    def rendezvous(self) -> int:  # a distributed engine's init/master/RPC port
        return self.at(self.RENDEZVOUS)

    @property
    def ssh(self) -> int:  # MPI launch between node containers
        return self.at(self.SSH)

    @property
    def http_fallback(self) -> int:  # HTTP port when the engine's default is taken on the head
        return self.at(self.HTTP_FALLBACK)


@dataclass(frozen=True)
class Readiness:
    """How the driver knows the server really answers."""

    health_path: str = "/health"
    models_path: str = "/v1/models"
    generate_path: str = "/v1/completions"
    exact_model_name: bool = True  # /v1/models lists exactly the planned model name


@dataclass(frozen=True)
class Rendered:
    """A file launch.py renders from slurmserve/templates/`template` with `context`."""

    template: str
    context: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Program:
    """A program shipped in slurmserve/node/, copied as is."""

    program: str


#: A mounted file's content: literal text, a template to render, or a shipped program.
FileSource = str | Rendered | Program


def host_port(address: str, port: int | str) -> str:
    """`address:port`, with an IPv6 address in brackets (`[fd00::1]:8000`), as every engine,
    Ray, MPI and URL parser reads it; IPv4 addresses and names stay as they are."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True)
class ArgvCheck:
    """An engine command line to run through that engine's own parser inside the image.

    `parser` names it: "vllm" (the words after `vllm serve`, model first), "sglang" (after
    `python -m sglang.launch_server`), "trtllm" (after `trtllm-serve`, model first) or "ray"
    (after `ray start`).
    """

    parser: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class NodePlan:
    """What one node runs: its container's command and environment, and its role."""

    rank: int
    host: str
    address: str
    ifname: str
    role: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, FileSource], ...] = ()  # (name, source) mounted under /slurmserve/
    secrets: tuple[str, ...] = ()  # per-job secret files launch.py provides in /slurmserve/secrets
    # (VAR, secret name): VAR holds that secret's value, in the node's 0600 env file only.
    secret_env: tuple[tuple[str, str], ...] = ()
    wait_for: tuple[str, ...] = ()  # "IP:PORT" ("[IPv6]:PORT") that must accept connections first
    ports: tuple[int, ...] = ()  # ports this node must find free
    serves_http: bool = False
    argv_checks: tuple[ArgvCheck, ...] = ()  # the engine command lines this node runs


@dataclass(frozen=True)
class ImageCheck:
    """A command run inside the image on every node before launch (field failure 14)."""

    name: str
    command: str  # shell, run by `sh -c` in a throwaway container of the image
    fix: str


@dataclass(frozen=True)
class ClusterPlan:
    """Everything the driver and the templates need, head first. Plain data, golden-tested."""

    engine: str
    mode: str
    job_id: str
    model_name: str
    head_address: str
    port: int
    world_size: int
    parallel: dict[str, Any]
    nodes: tuple[NodePlan, ...]
    readiness: Readiness = field(default_factory=Readiness)
    image_checks: tuple[ImageCheck, ...] = ()
    needs: tuple[str, ...] = ()  # what the containers must be able to do (runtimes.UNABLE)
    # The serving step's shape: tasks per node (more than one: one MPI rank per GPU, with
    # every node's tasks running its NodePlan), and the srun MPI plugin its tasks join by.
    tasks_per_node: int = 1
    mpi: str | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{host_port(self.head_address, self.port)}"

    @property
    def step_tasks(self) -> int:
        """The serving step's tasks: the world's ranks with an MPI plugin, else one a node."""
        return self.world_size if self.mpi else len(self.nodes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["endpoint"] = self.endpoint
        for node in data["nodes"]:
            node["env"] = dict(node["env"])
            node["secret_env"] = dict(node["secret_env"])
            node["files"] = {name: _source(src) for name, src in node["files"]}
        return data


def _source(src: Any) -> Any:
    """A file source as plain data (asdict already made Rendered/Program dicts)."""
    if isinstance(src, dict) and "context" in src:
        return {"template": src["template"], "context": dict(src["context"])}
    return src
