"""What every command shares: error reporting, the spec's flags, --remote and its client."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from .. import api
from ..errors import SlurmserveError, SpecError

if TYPE_CHECKING:
    from ..api import JobRecord, ServeSpec
    from ..client import Cluster


@dataclass(frozen=True)
class Invocation:
    """What main() was given: the whole argv, and the engine args after the first `--`."""

    argv: tuple[str, ...]
    engine_args: tuple[str, ...]


def invocation() -> Invocation:
    obj = click.get_current_context().find_root().obj
    return obj if isinstance(obj, Invocation) else Invocation((), ())


def fail(exc: Exception, code: int) -> None:
    click.echo(f"slurmserve: error: {exc}", err=True)
    sys.exit(code)


def errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Known errors become one line on stderr and their exit code (2 for bad input)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SlurmserveError as exc:
            fail(exc, exc.exit_code)

    return wrapper


def _engine_facts() -> tuple[str, str]:
    """(launch modes, default ports) per engine, for help texts: from the engines themselves."""
    facts = api.engine_facts()
    modes = "; ".join(f"{e.name}: {'|'.join(e.modes)}" for e in facts)
    ports = ", ".join(f"{e.name} {e.default_port}" for e in facts)
    return modes, ports


def engine_choice() -> str:
    """`vllm|sglang|...`: the engines' names, for help texts."""
    return "|".join(e.name for e in api.engine_facts())


def serve_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The serving spec's flags, shared by render, run, doctor and submit."""
    modes, ports = _engine_facts()
    options = [
        click.argument("engine", required=False),
        click.argument("model", required=False),
        click.option("--config", type=click.Path(dir_okay=False),
                     help="YAML spec; flags given here override its keys."),
        click.option("--image", help="`docker save` tarball (.tar/.tar.gz), image reference, "
                     "or a runtime's own image file (.sqsh for pyxis, .sif for apptainer)."),
        click.option("--runtime", help="Container runtime: auto|docker|podman|pyxis|apptainer "
                     "(default auto: pyxis where srun offers --container-image, then "
                     "apptainer, docker, podman on every node)."),
        click.option("--image-cache", help="Shared directory for images converted for pyxis "
                     "or apptainer, by image ID (default ~/.cache/slurmserve/images)."),
        click.option("--served-model-name", help="Name clients use (default: MODEL)."),
        click.option("--name", help="Name the deployment: `slurmserve url|status|logs|stop "
                     "NAME` find its jobs."),
        click.option("--idle-timeout", help="End the run after this long without a request "
                     "served (90s, 30m, 2h, 1d)."),
        click.option("--replicas", type=int, help="Copies of the layout, each on NODES/REPLICAS "
                     "nodes, behind one router endpoint (default 1: no router)."),
        click.option("--ready-replicas", type=int,
                     help="READY once this many replicas answer (default 1)."),
        click.option("--route", help="Router policy: round-robin|least-load|prefix|random|"
                     "consistent-hash (default prefix, cache-aware)."),
        click.option("--restart", help="A failed replica: on-failure (restart it on its nodes, "
                     "the default) or never."),
        click.option("--max-restarts", type=int, help="Restarts per replica (default 3)."),
        click.option("--nodes", "-N", type=int, help="Nodes to serve on (default 1)."),
        click.option("--gpus-per-node", type=int, help="GPUs on each node (default 8)."),
        click.option("--tp", type=int, help="Tensor-parallel size."),
        click.option("--pp", type=int, help="Pipeline-parallel size."),
        click.option("--dp", type=int, help="Data-parallel size."),
        click.option("--ep", type=int, help="Expert-parallel size (engine semantics, see README)."),
        click.option("--launch-mode", help=f"Engine launch mode ({modes})."),
        click.option("--host", help="Address the server binds (default 0.0.0.0)."),
        click.option("--port", type=int, help=f"HTTP port (default: {ports})."),
        click.option("--mount", "mounts", multiple=True, help="SRC:DST[:ro] bind mount; repeatable."),
        click.option("--env", "env", multiple=True, help="KEY=VALUE for every container; repeatable."),
        click.option("--env-file", help="File of KEY=VALUE lines for every container (secrets)."),
        click.option("--api-key", help="Require `Authorization: Bearer KEY` on /v1/*; the key "
                     "comes from env:VAR or file:PATH (0600), never the command line. Engines "
                     "that cannot require a key refuse it."),
        click.option("--fabric", help="auto|efa|ib|tcp (default auto)."),
        click.option("--gpus", help="GPU passthrough: all|none|0,1,... (default all)."),
        click.option("--health-timeout", type=float, help="Seconds to wait for ready (1800)."),
        click.option("--log-dir", help="Where logs and state go (default ./slurmserve-logs)."),
        click.option("--job-name", help="SLURM job name (default slurmserve)."),
        click.option("--stage", help="Image staging: auto|direct|sbcast (default auto)."),
        click.option("--stage-dir", help="Node-local directory for sbcast copies (default /tmp)."),
        click.option("--hf-cache", help="Shared directory for the Hugging Face cache: the head "
                     "downloads a hub model once, every node then reads it offline."),
        click.option("--check-args/--no-check-args", default=None,
                     help="Check every rank's command line with the engine's own parser inside "
                     "the image before launch (default on)."),
        click.option("--partition", "-p", help="SLURM partition."),
        click.option("--account", "-A", help="SLURM account."),
        click.option("--qos", help="SLURM QOS."),
        click.option("--time", "-t", help="SLURM time limit, e.g. 04:00:00."),
        click.option("--exclusive/--no-exclusive", default=None, help="Exclusive nodes."),
        click.option("--sbatch-arg", "sbatch_args", multiple=True,
                     help="Extra sbatch option, e.g. --sbatch-arg=--constraint=h100; repeatable."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def spec_fields(params: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(config path, spec fields) from serve_options' values and the engine args."""
    fields = dict(params)
    config = fields.pop("config", None)
    fields["engine_args"] = invocation().engine_args or None
    for key in ("mounts", "env", "sbatch_args"):
        fields[key] = tuple(fields[key]) or None
    return config, fields


def spec(params: dict[str, Any], defaults: dict[str, Any] | None = None) -> ServeSpec:
    """The validated spec."""
    config, fields = spec_fields(params)
    return api.load_spec(config, defaults=defaults, **fields)


def spec_data(params: dict[str, Any]) -> dict[str, Any]:
    """The merged spec fields only (the login host validates them)."""
    config, fields = spec_fields(params)
    return api.spec_data(config, **fields)


@dataclass(frozen=True)
class Remote:
    """--remote and its SSH settings, as given."""

    target: str | None = None
    accept_new_host_key: bool = False
    ssh_config: str | None = None
    connect_timeout: float | None = None
    python: str | None = None

    def cluster(self, prefix: str = "slurmserve") -> Cluster:
        """The client: local, or over SSH to the login host (notices go to stderr)."""
        from ..client import Cluster

        if not self.target:
            return Cluster.local()
        return Cluster.connect(self.target, accept_new_host_key=self.accept_new_host_key,
                               ssh_config=self.ssh_config, connect_timeout=self.connect_timeout,
                               python=self.python,
                               notice=lambda text: click.echo(f"{prefix}: {text}", err=True))


def remote_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--remote and its SSH settings, passed to the command as one `remote: Remote`."""

    @functools.wraps(func)
    def wrapper(*args: Any, remote_target: str | None, accept_new_host_key: bool,
                ssh_config: str | None, connect_timeout: float | None,
                remote_python: str | None, **kwargs: Any) -> Any:
        where = Remote(remote_target, accept_new_host_key, ssh_config, connect_timeout,
                       remote_python)
        return func(*args, remote=where, **kwargs)

    options = [
        click.option("--remote", "remote_target", envvar="SLURMSERVE_REMOTE",
                     help="Run on the cluster over SSH: [user@]host[:port], a Host from "
                     "~/.ssh/config, or a profile of ~/.config/slurmserve/config.yaml. Paths in "
                     "the spec are then paths on the cluster [$SLURMSERVE_REMOTE]."),
        click.option("--accept-new-host-key", is_flag=True,
                     help="Trust and save the login host's key when known_hosts lacks it "
                     "(a changed key is always refused)."),
        click.option("--ssh-config", envvar="SLURMSERVE_SSH_CONFIG", type=click.Path(dir_okay=False),
                     help="OpenSSH client config to read [$SLURMSERVE_SSH_CONFIG; ~/.ssh/config]."),
        click.option("--connect-timeout", type=float,
                     help="Seconds to wait for the login host (default: ConnectTimeout, else 10)."),
        click.option("--remote-python", envvar="SLURMSERVE_REMOTE_PYTHON",
                     help="Python with slurmserve on the login host (default: the profile's, "
                     "else python3) [$SLURMSERVE_REMOTE_PYTHON]."),
    ]
    decorated: Callable[..., Any] = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def client_key(api_key: str | None, record: JobRecord | None) -> str | None:
    """--api-key typed on the command line, else the job's own key source, else $OPENAI_API_KEY."""
    typed = (click.get_current_context().get_parameter_source("api_key")
             == click.core.ParameterSource.COMMANDLINE)
    return api.client_key(api_key if typed else None, record, None if typed else api_key)


def target(url: str | None, job: str | None, cluster: Cluster
           ) -> tuple[str, JobRecord | None]:
    """The endpoint to test or benchmark: --url, or a job's record (its endpoint and engine).

    With --remote the URL is a tunnel through the login host to that endpoint.
    """
    if bool(url) == bool(job):
        raise SpecError("--url/--job", "give exactly one of them",
                        "e.g. --job 1234 or --url http://HEAD:8000")
    if url:
        return (cluster.forward(url).url if cluster.remote else url.rstrip("/")), None
    assert job is not None
    handle = cluster.job(job)
    record = handle.info()
    if not record.endpoint:
        raise SpecError("--job", f"no running slurmserve job {job} with an endpoint is known on "
                        f"{cluster.label}", "see `slurmserve status`")
    return (handle.url if cluster.remote else record.endpoint), record
