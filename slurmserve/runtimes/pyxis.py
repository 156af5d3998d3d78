"""pyxis + enroot: every in-image step is `srun --container-image=...`; the engine is a process
of the step, so SLURM's signals and cgroups end it.

A `docker save` tarball is converted once into an enroot squashfs (`podman load`, then
`enroot import podman://`), cached by image ID; a .sqsh runs as it is; a registry reference
goes to pyxis as enroot names it (registry#name:tag), and each node imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..spec import Mount

if TYPE_CHECKING:
    from ..plan import ClusterPlan, NodePlan
    from ..spec import ServeSpec

NAME = "pyxis"
FAMILY = "step"
MPI_LAUNCH = "pmix"  # the serving step's tasks are the ranks (srun --mpi=pmix, enroot PMI hook)
EXPERIMENTAL = False
NATIVE_SUFFIXES = (".sqsh",)
CONVERTS = True
TOOLS = "pyxis in srun (--container-image) and enroot on every node"
FIX = "install enroot on every node and pyxis in SLURM's plugstack.conf"
SRUN_OPTION: str | None = "--container-image"


def native_name(image_id: str) -> str:
    return f"{image_id.removeprefix('sha256:')[:24]}.sqsh"


def reference(ref: str) -> str:
    """enroot's docker://[REGISTRY#]IMAGE[:TAG]: a registry host is split off by '#'."""
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return f"{first}#{rest}"
    return ref


def container_name(job_id: str) -> str:
    """One named container per job and node: later steps reuse its root file system."""
    return f"slurmserve-{job_id}"


def step_options(image: str, job_id: str, mounts: Sequence[Mount]) -> list[str]:
    options = [f"--container-image={image}", f"--container-name={container_name(job_id)}",
               "--container-writable", "--no-container-mount-home"]
    if mounts:
        options.append("--container-mounts=" + ",".join(str(m) for m in mounts))
    return options


def run_argv(spec: ServeSpec, plan: ClusterPlan, node: NodePlan, image: str, env_file: str,
             files_dir: str | None) -> tuple[list[str], list[str]]:
    """node.sh already runs inside the container: the engine starts with the env file's
    variables (read by shell builtins, never in argv), its files linked at /slurmserve."""
    return ["rt_with_env", env_file, files_dir or ""], list(node.command)
