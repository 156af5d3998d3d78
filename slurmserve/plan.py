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

    @property
    def head(self) -> NodeInfo:
        return self.nodes[0]

    @property
    def ports(self) -> PortBlock:
        return PortBlock.for_job(self.job_id)


@dataclass(frozen=True)
class PortBlock:
    """A per-job block of ports for everything but the HTTP endpoint.

    Two jobs sharing a node (field failure 6) get different blocks: the block index comes from
    the job ID, and Ray's whole range (GCS, node manager, object manager, workers...) lives in it.
    """

    base: int

    SIZE = 100
    FIRST = 20000
    # Blocks span 20000..29999: below Linux's ephemeral range (32768+) and clear of the engines'
    # default HTTP ports (8000, SGLang's 30000) and Ray's defaults (6379, 8265, 10001).
    COUNT = 100

    @classmethod
    def for_job(cls, job_id: str) -> PortBlock:
        digits = "".join(c for c in str(job_id) if c.isdigit()) or "0"
        return cls(cls.FIRST + (int(digits) % cls.COUNT) * cls.SIZE)

    @property
    def rendezvous(self) -> int:  # SGLang dist-init, vLLM master port, DP RPC port
        return self.base

    @property
    def ray_gcs(self) -> int:
        return self.base + 1

    @property
    def ssh(self) -> int:  # MPI launch between node containers
        return self.base + 2

    def ray_ports(self) -> dict[str, int]:
        """`ray start` port flags, all inside this job's block."""
        b = self.base
        return {
            "node-manager-port": b + 3, "object-manager-port": b + 4,
            "dashboard-agent-listen-port": b + 6,
            "dashboard-agent-grpc-port": b + 7, "metrics-export-port": b + 8,
            "runtime-env-agent-port": b + 9, "min-worker-port": b + 50,
            "max-worker-port": b + 99,
        }

    @property
    def http_fallback(self) -> int:  # HTTP port when the engine's default is taken on the head
        return self.base + 11

    @property
    def ray_client(self) -> int:  # only when ray[client] is installed (head script checks)
        return self.base + 5


@dataclass(frozen=True)
class Readiness:
    """How the driver knows the server really answers."""

    health_path: str = "/health"
    models_path: str = "/v1/models"
    generate_path: str = "/v1/completions"
    exact_model_name: bool = True  # /v1/models lists exactly the planned model name


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
    files: tuple[tuple[str, str], ...] = ()  # (name, content) mounted under /slurmserve/
    secrets: tuple[str, ...] = ()  # per-job secret files launch.py provides in /slurmserve/secrets
    # (VAR, secret name): VAR holds that secret's value, in the node's 0600 env file only.
    secret_env: tuple[tuple[str, str], ...] = ()
    wait_for: tuple[str, ...] = ()  # "IP:PORT" that must accept connections before start
    ports: tuple[int, ...] = ()  # ports this node must find free
    serves_http: bool = False


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
    notes: tuple[str, ...] = ()
    image_checks: tuple[ImageCheck, ...] = ()

    @property
    def endpoint(self) -> str:
        return f"http://{self.head_address}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["endpoint"] = self.endpoint
        for node in data["nodes"]:
            node["env"] = dict(node["env"])
            node["secret_env"] = dict(node["secret_env"])
            node["files"] = dict(node["files"])
        return data
