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
EXPERIMENTAL = False
NATIVE_SUFFIXES: tuple[str, ...] = ()
CONVERTS = False
TOOLS = "podman on every node"
native_name = docker.native_name
reference = docker.reference


def step_options(image: str, job_id: str, mounts: Sequence[Mount]) -> list[str]:
    return []


def run_argv(spec: ServeSpec, plan: ClusterPlan, node: NodePlan, image: str, env_file: str,
             files_dir: str | None) -> tuple[list[str], list[str]]:
    return docker.run_argv(spec, plan, node, image, env_file, files_dir, cli="podman")
