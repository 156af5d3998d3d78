"""Turn a ClusterPlan into the files one launch needs: node script, env files, mounted files.

Pure rendering; `write` is the only function here that touches the disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .render import render_template
from .runtimes import docker
from .spec import ServeSpec, env_file_pairs
from .topology import ClusterPlan

STOP_GRACE_S = 10


@dataclass(frozen=True)
class NodeLaunch:
    rank: int
    host: str
    container: str
    log: str
    env_file: str
    env: tuple[tuple[str, str], ...]
    files_dir: str | None
    files: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Launch:
    """A rendered launch: `script` runs on every node under one srun step."""

    run_dir: str
    script: str
    nodes: tuple[NodeLaunch, ...]

    @property
    def script_path(self) -> str:
        return os.path.join(self.run_dir, "node.sh")


def build(spec: ServeSpec, plan: ClusterPlan, run_dir: str, image: str) -> Launch:
    run_dir = os.path.abspath(run_dir)
    user_env = list(spec.env)
    if spec.env_file:
        user_env = env_file_pairs(spec.env_file) + user_env
    globs, required = docker.device_globs(spec)
    nodes: list[NodeLaunch] = []
    rendered: list[dict[str, object]] = []
    for node in plan.nodes:
        files_dir = os.path.join(run_dir, f"node-{node.rank}") if (node.files or node.secrets) \
            else None
        env_file = os.path.join(run_dir, f"node-{node.rank}.env")
        opts, tail = docker.run_argv(spec, plan, node, image, env_file, files_dir)
        launch = NodeLaunch(
            rank=node.rank, host=node.host, container=docker.container_name(plan.job_id, node.rank),
            log=os.path.join(run_dir, f"node-{node.rank}-{node.host}.log"), env_file=env_file,
            env=tuple(docker.env_pairs(spec, node, user_env)), files_dir=files_dir,
            files=node.files)
        nodes.append(launch)
        rendered.append(dict(rank=node.rank, host=node.host, name=launch.container,
                             log=launch.log, wait_for=list(node.wait_for), run_opts=opts,
                             run_tail=tail))
    script = render_template(
        "node.sh.j2", job_id=plan.job_id, nodes=rendered, device_globs=list(globs),
        devices_required=required, fabric=spec.fabric, wait_timeout=spec.health_timeout,
        stop_grace=STOP_GRACE_S, job_label=f"{docker.LABEL_JOB}={plan.job_id}")
    return Launch(run_dir=run_dir, script=script, nodes=tuple(nodes))


def env_file_text(pairs: tuple[tuple[str, str], ...]) -> str:
    """docker --env-file format: KEY=VALUE lines, taken literally (no quotes, no expansion)."""
    return "".join(f"{key}={value}\n" for key, value in pairs)


def write(launch: Launch) -> None:
    """Write the launch under its run dir: env files 0600 (they may hold secrets)."""
    os.makedirs(launch.run_dir, exist_ok=True)
    write_file(launch.script_path, launch.script, 0o755)
    for node in launch.nodes:
        write_file(node.env_file, env_file_text(node.env), 0o600)
        if node.files_dir:
            os.makedirs(node.files_dir, exist_ok=True)
            for name, content in node.files:
                write_file(os.path.join(node.files_dir, name), content, 0o644)


def write_file(path: str, content: str, mode: int) -> None:
    """Create or replace a file with `mode` from the start (no window with wider permissions)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # an existing file keeps its old mode otherwise
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(content)
