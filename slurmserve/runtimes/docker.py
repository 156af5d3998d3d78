"""Docker: a named, labelled container per node in each node's daemon, stopped by label."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..spec import Mount
from ._common import FILES_DIR, HF_DIR, container_name, labels

if TYPE_CHECKING:
    from ..plan import ClusterPlan, NodePlan
    from ..spec import ServeSpec

NAME = "docker"
FAMILY = "daemon"
MPI_LAUNCH = "ssh"  # mpirun reaches an sshd in each node's container on the job's port
EXPERIMENTAL = False
NATIVE_SUFFIXES: tuple[str, ...] = ()
CONVERTS = False
TOOLS = "a docker daemon the job's steps can reach (DOCKER_HOST)"
FIX = "start dockerd (or set DOCKER_HOST for job steps)"
SRUN_OPTION: str | None = None


def native_name(image_id: str) -> str:
    return image_id


def reference(ref: str) -> str:
    return ref


def step_options(image: str, job_id: str, mounts: Sequence[Mount]) -> list[str]:
    return []


def run_argv(spec: ServeSpec, plan: ClusterPlan, node: NodePlan, image: str, env_file: str,
             files_dir: str | None, cli: str = "docker") -> tuple[list[str], list[str]]:
    """`docker run` options (podman takes the same), and the entrypoint/image/command tail."""
    # Attached (not --detach): the client streams the log from the first byte and returns the
    # exit code. --rm: the daemon removes the container once it stops, even if SLURM SIGKILLs
    # the node task (after KillWait) while `docker stop` still waits for the engine to exit.
    argv = [cli, "run", "--rm", "--name", container_name(plan.job_id, node.rank)]
    for key, value in labels(plan, node).items():
        argv += ["--label", f"{key}={value}"]
    argv += [
        "--init",  # a real PID 1: signals reach the engine, zombies are reaped
        "--network", "host",
        "--ipc", "host",  # the engine's shared memory is the host's, not a 64 MB /dev/shm
        "--ulimit", "stack=67108864",
        "--env-file", env_file,
    ]
    # Every node's name resolves inside every container (Gloo/NCCL and c10d look peers up).
    for peer in plan.nodes:
        argv += ["--add-host", f"{peer.host}:{peer.address}"]
    for mount in spec.mounts:
        argv += ["--volume", str(mount)]
    if spec.hf_cache:
        argv += ["--volume", f"{spec.hf_cache}:{HF_DIR}"]
    if files_dir:
        argv += ["--volume", f"{files_dir}:{FILES_DIR}:ro"]
    # The image's own entrypoint (e.g. `vllm serve` in vLLM's images) must not prefix ours.
    return argv, ["--entrypoint", node.command[0], image, *node.command[1:]]
