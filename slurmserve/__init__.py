"""slurmserve: serve LLMs with vLLM, SGLang or TensorRT-LLM on SLURM clusters."""

from .api import describe, load_spec, plan_cluster, preview_allocation, render_sbatch
from .errors import LaunchError, SlurmserveError, SpecError
from .plan import Allocation, ClusterPlan, NodeInfo, NodePlan
from .spec import ServeSpec

__all__ = [
    "Allocation",
    "Cluster",
    "ClusterPlan",
    "Job",
    "LaunchError",
    "NodeInfo",
    "NodePlan",
    "ServeSpec",
    "SlurmserveError",
    "SpecError",
    "describe",
    "load_spec",
    "plan_cluster",
    "preview_allocation",
    "render_sbatch",
]


def __getattr__(name: str) -> object:
    """`Cluster` and `Job` (the job client) load on first use: the CLI starts faster."""
    if name in ("Cluster", "Job"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'slurmserve' has no attribute {name!r}")
