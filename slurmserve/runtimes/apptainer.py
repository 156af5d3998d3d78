"""Apptainer/Singularity (experimental: implemented from its documented CLI; no Apptainer
could be built on the test machine, so no real one ran): `apptainer exec` per node, a child
of the node's task, so SLURM's signals and cgroups end it.

A `docker save` tarball is built once into a .sif (`apptainer build X.sif
docker-archive://X.tar`), cached by image ID; a .sif runs as it is; a registry reference is
run as docker://REF. `--containall` isolates the file system, so /dev/shm, the devices and the
HF cache are bound in explicitly; the environment is clean, and the env file's variables reach
the engine as APPTAINERENV_*, never in argv.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..spec import Mount
from ._common import FILES_DIR, HF_DIR

if TYPE_CHECKING:
    from ..plan import ClusterPlan, NodePlan
    from ..spec import ServeSpec

NAME = "apptainer"
FAMILY = "step"
MPI_LAUNCH = "pmix"  # the serving step's tasks are the ranks (srun --mpi=pmix: "hybrid" MPI)
EXPERIMENTAL = True
NATIVE_SUFFIXES = (".sif",)
CONVERTS = True
TOOLS = "apptainer (or singularity) on every node"
FIX = "install apptainer (or singularity) on every node"
SRUN_OPTION: str | None = None


def native_name(image_id: str) -> str:
    return f"{image_id.removeprefix('sha256:')[:24]}.sif"


def reference(ref: str) -> str:
    return f"docker://{ref}"


def step_options(image: str, job_id: str, mounts: Sequence[Mount]) -> list[str]:
    return []


def run_argv(spec: ServeSpec, plan: ClusterPlan, node: NodePlan, image: str, env_file: str,
             files_dir: str | None) -> tuple[list[str], list[str]]:
    """`apptainer exec` options (node.sh adds the GPU flag and the devices it finds), and the
    image/command tail."""
    argv = ["rt_with_env", env_file, "", "apptainer", "exec", "--containall", "--cleanenv",
            "--writable-tmpfs", "--no-home", "--pwd", "/"]
    # --containall gives the container a small /dev/shm of its own: the engine needs the host's.
    binds = [Mount("/dev/shm", "/dev/shm")]
    binds += [m for m in spec.mounts]
    if spec.hf_cache:
        binds.append(Mount(spec.hf_cache, HF_DIR))
    if files_dir:
        binds.append(Mount(files_dir, FILES_DIR, read_only=True))
    for bind in binds:
        argv += ["--bind", str(bind)]
    return argv, [image, *node.command]
