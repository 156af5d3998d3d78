"""What every container runtime shares: names and labels, the node's environment, fabrics.

Every runtime marks what it starts with the job ID: daemon runtimes by container name and
label, step-native ones by the SLURMSERVE_JOB variable in the engine's environment (cleanup
finds processes by it). Nothing without our mark is ever touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..plan import ClusterPlan, NodePlan

if TYPE_CHECKING:
    from ..spec import ServeSpec

LABEL_JOB = "slurmserve.job"  # other tools find our containers by this key: keep it
LABEL_RANK = "slurmserve.rank"
LABEL_ROLE = "slurmserve.role"
LABEL_ENGINE = "slurmserve.engine"
FILES_DIR = "/slurmserve"  # NodePlan.files and secrets appear here, read-only
HF_DIR = "/slurmserve-hf"  # --hf-cache appears here, as HF_HOME
MARK_VAR = "SLURMSERVE_JOB"  # in every engine environment: the process-level label
NODE_VAR = "SLURMSERVE_NODE"  # beside it: where nodes share one PID space (a test machine)

# Fabric -> (device globs passed through when present, whether one must exist, NCCL/FI env).
# NCCL names its transport at INFO (INIT,NET only: a few lines per rank), so the driver can flag
# a silent fall-back to sockets (logwatch.py); a user's own NCCL_DEBUG wins.
_NCCL_SAYS_TRANSPORT = (("NCCL_DEBUG", "INFO"), ("NCCL_DEBUG_SUBSYS", "INIT,NET"))
_FABRICS: dict[str, tuple[tuple[str, ...], bool, tuple[tuple[str, str], ...]]] = {
    "efa": (("/dev/infiniband/uverbs*", "/dev/gdrdrv"), True,
            (("FI_PROVIDER", "efa"), ("FI_EFA_USE_DEVICE_RDMA", "1"),
             # Naming the plugin makes NCCL fail loudly when it is missing, instead of
             # falling back to TCP sockets (field failure 4).
             ("NCCL_NET", "AWS Libfabric"), *_NCCL_SAYS_TRANSPORT)),
    "ib": (("/dev/infiniband/uverbs*", "/dev/infiniband/rdma_cm"), True,
           (("NCCL_IB_DISABLE", "0"), *_NCCL_SAYS_TRANSPORT)),
    "auto": (("/dev/infiniband/uverbs*", "/dev/infiniband/rdma_cm", "/dev/gdrdrv"), False,
             _NCCL_SAYS_TRANSPORT),
    "tcp": ((), False, (("NCCL_IB_DISABLE", "1"), ("NCCL_NET", "Socket"))),
}


def has_rdma(devices: str | Iterable[str]) -> bool:
    """Whether found devices (paths, or one space-separated string of them) include an RDMA
    verbs device (/dev/infiniband/uverbsN): the one rule for "this node has RDMA"."""
    paths = devices.split() if isinstance(devices, str) else devices
    return any(path.rsplit("/", 1)[-1].startswith("uverbs") for path in paths)


def container_name(job_id: str, rank: int | str) -> str:
    """`slurmserve-JOB-RANK`, or a helper's role in place of the rank (e.g. `prefetch`)."""
    return f"slurmserve-{job_id}-{rank}"


def job_label(job_id: str) -> str:
    """`--label` value that marks a container as this job's: cleanup finds it by this."""
    return f"{LABEL_JOB}={job_id}"


def labels(plan: ClusterPlan, node: NodePlan) -> dict[str, str]:
    return {LABEL_JOB: plan.job_id, LABEL_RANK: str(node.rank), LABEL_ROLE: node.role,
            LABEL_ENGINE: plan.engine}


def device_globs(spec: ServeSpec) -> tuple[tuple[str, ...], bool]:
    """Device paths the node script passes through when present, and whether one is required.

    Detection happens on the node at launch (node.sh), not here. When it finds RDMA devices it
    also lifts the memlock limit, which RDMA memory registration needs (field failure 4).
    """
    globs, required, _ = _FABRICS[spec.fabric]
    return globs, required


def env_pairs(spec: ServeSpec, node: NodePlan, user_env: list[tuple[str, str]], job_id: str
              ) -> list[tuple[str, str]]:
    """The container's environment, written to a 0600 env file (values never reach argv).

    Later entries win: fabric defaults, then the user's variables, then the engine's per-node
    values (they carry this node's address, which must be right), then our job mark.
    """
    pairs: list[tuple[str, str]] = [
        # Every collective library binds the interface on the route to the head (failures 1-2).
        ("GLOO_SOCKET_IFNAME", node.ifname),
        ("NCCL_SOCKET_IFNAME", node.ifname),
        ("TP_SOCKET_IFNAME", node.ifname),
        *_FABRICS[spec.fabric][2],
    ]
    if spec.model_is_local:
        pairs.append(("HF_HUB_OFFLINE", "1"))  # a local model never needs the hub
    elif spec.hf_cache:  # the head fetched it once (prefetch.sh.j2): nobody else downloads
        pairs += [("HF_HOME", HF_DIR), ("HF_HUB_OFFLINE", "1")]
    pairs += user_env
    pairs += list(node.env)
    pairs += [(MARK_VAR, job_id), (NODE_VAR, node.host)]
    seen: dict[str, str] = {}
    for key, value in pairs:
        seen[key] = value
    return list(seen.items())
