"""slurmserve: serve LLMs with vLLM, SGLang or TensorRT-LLM on SLURM clusters."""

from .api import describe, load_spec, plan_cluster, preview_allocation, render_sbatch
from .errors import LaunchError, SlurmserveError, SpecError
from .spec import ServeSpec
from .topology import Allocation, ClusterPlan, NodeInfo, NodePlan

__all__ = [
    "Allocation",
    "ClusterPlan",
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
