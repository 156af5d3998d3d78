"""Podman: docker's model through its own CLI (no daemon; containers in each node's store).

GPUs go through CDI (`--device nvidia.com/gpu=N`, from `nvidia-ctk cdi generate`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..spec import Mount
from . import docker

if TYPE_CHECKING:
    from ..plan import ClusterPlan, NodePlan
    from ..spec import ServeSpec

NAME = "podman"
FAMILY = "daemon"
MPI_LAUNCH = "ssh"  # mpirun reaches an sshd in each node's container on the job's port
EXPERIMENTAL = False
NATIVE_SUFFIXES: tuple[str, ...] = ()
CONVERTS = False
TOOLS = "podman on every node"
FIX = "install podman on every node"
SRUN_OPTION: str | None = None
native_name = docker.native_name
reference = docker.reference


def step_options(image: str, job_id: str, mounts: Sequence[Mount]) -> list[str]:
    return []


def run_argv(spec: ServeSpec, plan: ClusterPlan, node: NodePlan, image: str, env_file: str,
             files_dir: str | None) -> tuple[list[str], list[str]]:
    """docker's line, but with the task's own limits (--ulimit host): any explicit --ulimit
    makes podman drop its defaults and set nofile/nproc itself, which a host without
    CAP_SYS_RESOURCE refuses. The node script raises the soft stack limit (docker's
    --ulimit stack=64 MiB) before the run."""
    opts, tail = docker.run_argv(spec, plan, node, image, env_file, files_dir, cli="podman")
    at = opts.index("--ulimit")
    return [*opts[:at], "--ulimit", "host", *opts[at + 2:]], tail
