"""Where the engine's own benchmark client runs: in the engine image, on the job's head node
(an `srun --overlap` side step) or on this machine's Docker; never a load generator of ours."""

from __future__ import annotations

import os
from collections.abc import Callable

from .. import runner, slurm
from ..errors import LaunchError
from .bench import client_env

Execute = Callable[[list[str], str], None]
NO_CLIENT = (125, 126, 127)  # docker run could not start it / command not found in the image


def _docker_run(image: str, out_dir: str, argv: list[str], api_key: str | None) -> list[str]:
    cmd = ["docker", "run", "--rm", "--network", "host", "--ipc", "host",
           "--label", "slurmserve.bench=1", "--volume", f"{out_dir}:{out_dir}"]
    if api_key:
        cmd += ["--env", "OPENAI_API_KEY"]  # the value comes from our environment, not argv
    return cmd + ["--entrypoint", argv[0], image, *argv[1:]]


def _check(result: runner.Result, image: str, argv: list[str], result_path: str) -> None:
    if result.code in NO_CLIENT and ("not found" in result.err or "executable" in result.err):
        raise LaunchError(f"the image {image[:19]} has no `{argv[0]}`: its engine's benchmark "
                          "client is not installed there; use an image that has it (--image)")
    if not os.path.exists(result_path):
        tail = (result.err or result.out).strip().splitlines()[-3:]
        raise LaunchError(f"{' '.join(argv[:3])} exited {result.code} without a result: "
                          + " | ".join(tail))


def on_job_node(job_id: str, node: str, image: str, out_dir: str, api_key: str | None
                ) -> Execute:
    """Run the client in `image` on `node` of a running job, beside the server."""
    job = slurm.Job(job_id=job_id, nodes=(node,))
    env = dict(os.environ, **client_env(api_key))

    def execute(argv: list[str], result_path: str) -> None:
        cmd = slurm.srun_argv(job, _docker_run(image, out_dir, argv, api_key), nodes=1,
                              label="slurmserve-bench")
        _check(runner.run(cmd, timeout=7200, env=env), image, argv, result_path)

    return execute


def local_docker(image: str, out_dir: str, api_key: str | None) -> Execute:
    """Run the client in `image` on this machine's Docker (host network)."""
    env = dict(os.environ, **client_env(api_key))

    def execute(argv: list[str], result_path: str) -> None:
        cmd = _docker_run(image, out_dir, argv, api_key)
        _check(runner.run(cmd, timeout=7200, env=env), image, argv, result_path)

    return execute
