"""Turn a ClusterPlan into the files one launch needs: node script, env files, mounted files.

Pure rendering (plus reading the API key and the engine's per-job secrets, such as TRT-LLM's ssh
keys): the plan's file sources (templates, node programs) become text here. `write` is the only
function here that touches the disk. Secrets (env files, /slurmserve/secrets) are created 0600
and removed at teardown (driver.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .. import apikey, engines, envfile, runtimes
from .. import node as programs
from ..errors import LaunchError
from ..plan import ClusterPlan, FileSource, Program, Rendered
from ..render import render_template
from ..runtimes import _common as common
from ..spec import ServeSpec, is_secret_name

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
    files: tuple[tuple[str, str], ...]  # (name, text) in files_dir
    secrets: tuple[tuple[str, str], ...] = ()  # (name, content) in files_dir/secrets, 0600
    redact_file: str | None = None  # secret values node.sh masks in the log, one a line, 0600
    redact: tuple[str, ...] = ()

    def __repr__(self) -> str:  # env and secrets may hold secrets: never in a traceback or log
        return f"NodeLaunch(rank={self.rank}, host={self.host!r}, container={self.container!r})"


@dataclass(frozen=True)
class Launch:
    """A rendered launch: `script` runs on every node under one srun step."""

    run_dir: str
    script: str
    nodes: tuple[NodeLaunch, ...]
    api_key: str | None = field(default=None, repr=False)  # for the readiness probe
    run_files: tuple[tuple[str, str], ...] = ()  # (name, text) in run_dir: helper programs
    step_options: tuple[str, ...] = ()  # the serving step's runtime options (pyxis)

    @property
    def script_path(self) -> str:
        return os.path.join(self.run_dir, "node.sh")


def build(spec: ServeSpec, plan: ClusterPlan, run_dir: str, image: str,
          runtime: str = "docker", untouched: frozenset[int] = frozenset()) -> Launch:
    """`untouched`: ranks the preflight found holding nothing of this job, whose node script
    need not look for an earlier attempt's container (rt_prepare)."""
    run_dir = os.path.abspath(run_dir)
    rt = runtimes.get(runtime)
    user_env = list(spec.env)
    if spec.env_file:
        user_env = envfile.pairs(spec.env_file) + user_env
    api_key = apikey.read(spec.api_key) if spec.api_key else None
    secrets = secret_texts(plan, spec.engine, api_key)
    masked = redactions([v for k, v in user_env if is_secret_name(k)] + [api_key or ""])
    globs, required = common.device_globs(spec)
    nodes: list[NodeLaunch] = []
    rendered: list[dict[str, object]] = []
    for node in plan.nodes:
        files_dir = os.path.join(run_dir, f"node-{node.rank}") if (node.files or node.secrets) \
            else None
        env_file = os.path.join(run_dir, f"node-{node.rank}.env")
        opts, tail = rt.run_argv(spec, plan, node, image, env_file, files_dir)
        launch = NodeLaunch(
            rank=node.rank, host=node.host, container=common.container_name(plan.job_id, node.rank),
            log=os.path.join(run_dir, f"node-{node.rank}-{node.host}.log"), env_file=env_file,
            env=tuple(common.env_pairs(spec, node, user_env, plan.job_id)
                      + [(var, secrets[name]) for var, name in node.secret_env]),
            files_dir=files_dir, files=tuple((name, file_text(src)) for name, src in node.files),
            secrets=tuple((name, secrets[name]) for name in node.secrets),
            redact_file=os.path.join(run_dir, f"node-{node.rank}.redact") if masked else None,
            redact=masked)
        nodes.append(launch)
        rendered.append(dict(rank=node.rank, host=node.host, name=launch.container,
                             log=launch.log, wait_for=list(node.wait_for), run_opts=opts,
                             run_tail=tail, redact=launch.redact_file or "",
                             prepare=node.rank not in untouched))
    script = render_template(
        "node.sh.j2", nodes=rendered, device_globs=list(globs), image=image, gpus=spec.gpus,
        devices_required=required, fabric=spec.fabric, wait_timeout=spec.health_timeout,
        stop_grace=STOP_GRACE_S, tasks_per_node=plan.tasks_per_node,
        **runtimes.shell_context(runtime, plan.job_id))
    # The head's Hub download (prefetch.sh.j2) runs this beside its script in the run dir.
    run_files = (("hf_prefetch.py", programs.read("hf_prefetch.py")),) \
        if spec.hf_cache and not spec.model_is_local else ()
    options = [*rt.step_options(image, plan.job_id, runtimes.serve_mounts(spec, run_dir))]
    if plan.mpi:  # the step's tasks are an MPI world's ranks (TRT-LLM under pyxis)
        options.append(f"--mpi={plan.mpi}")
    return Launch(run_dir=run_dir, script=script, nodes=tuple(nodes), api_key=api_key,
                  run_files=run_files, step_options=tuple(options))


def file_text(source: FileSource) -> str:
    """A mounted file's content: a template rendered with its context, a node program, or text."""
    if isinstance(source, Rendered):
        return render_template(source.template, **dict(source.context))
    if isinstance(source, Program):
        return programs.read(source.program)
    return source


def redactions(values: list[str]) -> tuple[str, ...]:
    """Each secret as an engine may print it: as is, and escaped by Python's repr or JSON
    (SGLang logs its ServerArgs, API key included, at start)."""
    import json

    forms = {form for value in values if len(value) >= 4
             for form in (value, repr(value)[1:-1], json.dumps(value)[1:-1])}
    return tuple(sorted(forms, key=len, reverse=True))  # longest first: no partial masks


def secret_texts(plan: ClusterPlan, engine: str, api_key: str | None) -> dict[str, str]:
    """Contents of the secrets the plan names: those the engine makes per job (TRT-LLM's ssh key
    pair), the endpoint's API key as is (`api_key`) and in the engine's own files."""
    names = {n for node in plan.nodes for n in node.secrets}
    names |= {name for node in plan.nodes for _, name in node.secret_env}
    adapter = engines.get(engine)
    texts = adapter.job_secrets(frozenset(names))
    if api_key:
        texts["api_key"] = api_key
        texts.update(adapter.api_key_files(api_key))
    missing = sorted(names - texts.keys())
    if missing:
        raise LaunchError(f"the plan needs secret(s) {', '.join(missing)} that nothing provides")
    return texts


def env_file_text(pairs: tuple[tuple[str, str], ...]) -> str:
    """KEY=VALUE lines, taken literally (no quotes, no expansion): docker's --env-file format,
    and what the step-native runtimes' rt_with_env reads with shell builtins."""
    return "".join(f"{key}={value}\n" for key, value in pairs)


def write(launch: Launch) -> None:
    """Write the launch under its run dir: env files 0600 (they may hold secrets)."""
    os.makedirs(launch.run_dir, exist_ok=True)
    write_file(launch.script_path, launch.script, 0o755)
    for name, content in launch.run_files:
        write_file(os.path.join(launch.run_dir, name), content, 0o644)
    for node in launch.nodes:
        write_file(node.env_file, env_file_text(node.env), 0o600)
        if node.redact_file:
            write_file(node.redact_file, "".join(f"{v}\n" for v in node.redact), 0o600)
        if node.files_dir:
            os.makedirs(node.files_dir, exist_ok=True)
            for name, content in node.files:
                write_file(os.path.join(node.files_dir, name), content, 0o644)
        if node.files_dir and node.secrets:
            directory = os.path.join(node.files_dir, "secrets")
            os.makedirs(directory, mode=0o700, exist_ok=True)
            for name, content in node.secrets:
                write_file(os.path.join(directory, name), content, 0o600)


def write_file(path: str, content: str, mode: int) -> None:
    """Create or replace a file with `mode` from the start (no window with wider permissions)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # an existing file keeps its old mode otherwise
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(content)
