"""The Python API: everything the CLI does, usable from a notebook.

    >>> from slurmserve import load_spec, render_sbatch
    >>> spec = load_spec(engine="vllm", model="Qwen/Qwen2.5-7B-Instruct", image="vllm.tar",
    ...                  nodes=2, gpus_per_node=8, tp=8, pp=2)
    >>> print(render_sbatch(spec))
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from . import engines
from .errors import SpecError
from .plan import Allocation, ClusterPlan, NodeInfo
from .render import render_template
from .spec import ServeSpec, load_spec, spec_data

__all__ = ["load_spec", "plan_cluster", "preview_allocation", "render_sbatch", "describe", "run",
           "allocation_defaults", "doctor", "spec_data"]

PREVIEW_NET = "192.0.2"  # RFC 5737 documentation addresses: a preview never points anywhere real


def plan_cluster(spec: ServeSpec, allocation: Allocation) -> ClusterPlan:
    """What runs on which node, for a real allocation."""
    return engines.get(spec.engine).plan(spec, allocation)


def preview_allocation(spec: ServeSpec, job_id: str = "JOBID") -> Allocation:
    """A stand-in allocation for showing a plan before SLURM has given us nodes."""
    return Allocation(job_id=job_id, nodes=tuple(
        NodeInfo(name=f"node{i + 1}", address=f"{PREVIEW_NET}.{i + 1}")
        for i in range(spec.nodes)))


def render_sbatch(spec: ServeSpec, python: str | None = None, run_args: list[str] | None = None
                  ) -> str:
    """A complete sbatch script that runs the job: header, embedded spec, the driver."""
    return render_template(
        "sbatch.sh.j2",
        job_name=spec.job_name,
        nodes=spec.nodes,
        gpus_per_node=0 if spec.gpus == "none" else spec.gpus_per_node,
        slurm=spec.slurm,
        output=os.path.join(os.path.abspath(spec.log_dir), "slurmserve-%j.out"),
        python=python or sys.executable,
        spec_json=json.dumps(_spec_for_job(spec), sort_keys=True),
        run_args=run_args or [],
    )


def _spec_for_job(spec: ServeSpec) -> dict[str, Any]:
    """The spec as the batch job reads it: paths absolute, since the job may start elsewhere."""
    data = spec.to_dict()
    data["log_dir"] = os.path.abspath(spec.log_dir)
    if spec.image_is_tarball:
        data["image"] = os.path.abspath(spec.image)
    return data


def describe(spec: ServeSpec, allocation: Allocation | None = None) -> dict[str, Any]:
    """Spec and plan as plain data (`render --json`)."""
    alloc = allocation or preview_allocation(spec)
    return {
        "spec": spec.to_dict(),
        "plan": plan_cluster(spec, alloc).to_dict(),
        "preview": allocation is None,
    }


def allocation_defaults(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Spec defaults the surrounding allocation implies: its node count and GPUs per node.

    A value SLURM set that is no count stays text naming its variable, so the spec check
    reports it (e.g. `--gpus-per-node: 'x (SLURM_GPUS_PER_NODE)' is not a whole number`) unless
    a flag or the config file sets the field.
    """
    env = dict(os.environ) if env is None else env
    defaults: dict[str, Any] = {}
    nodes = env.get("SLURM_JOB_NUM_NODES", "")
    if nodes:
        defaults["nodes"] = int(nodes) if nodes.isdigit() else f"{nodes} (SLURM_JOB_NUM_NODES)"
    gpus = env.get("SLURM_GPUS_PER_NODE", "")
    if gpus:
        # [type:]count, or a list of them (volta:2,kepler:1): the node's GPUs are the sum.
        counts = [part.rsplit(":", 1)[-1] for part in gpus.split(",")]
        defaults["gpus_per_node"] = (sum(map(int, counts)) if all(c.isdigit() for c in counts)
                                     else f"{gpus} (SLURM_GPUS_PER_NODE)")
    return defaults


def run(spec: ServeSpec, follow_logs: bool = True, quiet: bool = False,
        emit: Any = None) -> int:
    """Serve `spec` in the current allocation until stopped; returns the exit code."""
    granted = os.environ.get("SLURM_JOB_NUM_NODES", "")
    if granted.isdigit() and spec.nodes > int(granted):
        raise SpecError("--nodes", f"{spec.nodes} node(s) asked, but this allocation has {granted} "
                        "(SLURM_JOB_NUM_NODES)", f"use --nodes {granted}, or allocate more: "
                        f"salloc -N {spec.nodes}")
    from .console import Console
    from .lifecycle.driver import Driver
    from .slurm import current_job

    driver = Driver(spec, current_job(), console=Console(quiet=quiet), follow_logs=follow_logs,
                    emit=emit)
    return driver.run()


def doctor(spec: ServeSpec, quiet: bool = True) -> tuple[Any, list[str]]:
    """Every preflight check of `run` on every node of the current allocation; starts nothing.

    Returns the verdict (findings per node and check) and the node names.
    """
    from .console import Console
    from .lifecycle.driver import Driver
    from .slurm import current_job

    driver = Driver(spec, current_job(), console=Console(quiet=quiet), follow_logs=False)
    os.makedirs(driver.run_dir, exist_ok=True)
    try:
        verdict, image = driver.check()
        if not verdict.failures:
            alloc = Allocation(driver.job.job_id, tuple(verdict.nodes))
            verdict.findings += driver.check_tools(alloc, image)
    finally:
        driver.cleanup([driver.job.job_id])  # the staging-directory markers
    return verdict, list(driver.nodes)
