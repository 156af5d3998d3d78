"""slurmserve: serve LLMs with vLLM, SGLang or TensorRT-LLM on SLURM clusters.

The public API, for scripts and notebooks: `slurmserve.run`, `submit`, `status`, ... (see api.py),
the job client `Cluster`/`Job` (client.py), and the typed records they return.
"""

from .api import (
    BenchOptions,
    EngineFacts,
    JobStatus,
    LiveLoad,
    ReplicaStatus,
    allocation_defaults,
    bench,
    check_endpoint,
    client_key,
    compare_bench,
    current_job,
    describe,
    doctor,
    engine_facts,
    ensure_allocation,
    job_record,
    load_spec,
    log_paths,
    logs,
    plan_cluster,
    preview_allocation,
    render_sbatch,
    run,
    size,
    sizing_catalogue,
    spec_data,
    status,
    stop,
    submit,
    url,
    wait_ready,
)
from .errors import LaunchError, SlurmserveError, SpecError
from .plan import Allocation, ClusterPlan, NodeInfo, NodePlan
from .spec import ServeSpec
from .state import JobRecord, NodeRecord, Phase, RecordError, Status

__all__ = [
    "Allocation",
    "BenchOptions",
    "Cluster",
    "ClusterPlan",
    "EngineFacts",
    "Job",
    "JobRecord",
    "JobStatus",
    "LaunchError",
    "LiveLoad",
    "NodeInfo",
    "NodePlan",
    "NodeRecord",
    "Phase",
    "RecordError",
    "ReplicaStatus",
    "ServeSpec",
    "SlurmserveError",
    "SpecError",
    "Status",
    "allocation_defaults",
    "bench",
    "check_endpoint",
    "client_key",
    "compare_bench",
    "current_job",
    "describe",
    "doctor",
    "engine_facts",
    "ensure_allocation",
    "job_record",
    "load_spec",
    "log_paths",
    "logs",
    "plan_cluster",
    "preview_allocation",
    "render_sbatch",
    "run",
    "size",
    "sizing_catalogue",
    "spec_data",
    "status",
    "stop",
    "submit",
    "url",
    "wait_ready",
]


def __getattr__(name: str) -> object:
    """`Cluster` and `Job` (the job client) load on first use: the CLI starts faster."""
    if name in ("Cluster", "Job"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'slurmserve' has no attribute {name!r}")
