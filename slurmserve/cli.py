"""The `slurmserve` command line: parse, call the API, print a table or --json. No logic here."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import click

from . import api
from .errors import SlurmserveError, SpecError


def _fail(exc: Exception, code: int) -> None:
    click.echo(f"slurmserve: error: {exc}", err=True)
    sys.exit(code)


def _errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Known errors become one line on stderr and their exit code (2 for bad input)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SlurmserveError as exc:
            _fail(exc, exc.exit_code)

    return wrapper


def serve_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The serving spec's flags, shared by render, run and submit."""
    options = [
        click.argument("engine", required=False),
        click.argument("model", required=False),
        click.option("--config", type=click.Path(dir_okay=False),
                     help="YAML spec; flags given here override its keys."),
        click.option("--image", help="`docker save` tarball (.tar/.tar.gz) or image reference."),
        click.option("--served-model-name", help="Name clients use (default: MODEL)."),
        click.option("--nodes", "-N", type=int, help="Nodes to serve on (default 1)."),
        click.option("--gpus-per-node", type=int, help="GPUs on each node (default 8)."),
        click.option("--tp", type=int, help="Tensor-parallel size."),
        click.option("--pp", type=int, help="Pipeline-parallel size."),
        click.option("--dp", type=int, help="Data-parallel size."),
        click.option("--ep", type=int, help="Expert-parallel size (engine semantics, see README)."),
        click.option("--launch-mode", help="Engine launch mode (vLLM: auto|single|ray|mp|dp)."),
        click.option("--host", help="Address the server binds (default 0.0.0.0)."),
        click.option("--port", type=int, help="HTTP port (default: vLLM/TRT-LLM 8000, SGLang 30000)."),
        click.option("--mount", "mounts", multiple=True, help="SRC:DST[:ro] bind mount; repeatable."),
        click.option("--env", "env", multiple=True, help="KEY=VALUE for every container; repeatable."),
        click.option("--env-file", help="File of KEY=VALUE lines for every container (secrets)."),
        click.option("--api-key", help="Require `Authorization: Bearer KEY` on /v1/*; the key "
                     "comes from env:VAR or file:PATH (0600), never the command line. vLLM and "
                     "SGLang only."),
        click.option("--fabric", help="auto|efa|ib|tcp (default auto)."),
        click.option("--gpus", help="GPU passthrough: all|none|0,1,... (default all)."),
        click.option("--health-timeout", type=float, help="Seconds to wait for ready (1800)."),
        click.option("--log-dir", help="Where logs and state go (default ./slurmserve-logs)."),
        click.option("--job-name", help="SLURM job name (default slurmserve)."),
        click.option("--stage", help="Image staging: auto|direct|sbcast (default auto)."),
        click.option("--stage-dir", help="Node-local directory for sbcast copies (default /tmp)."),
        click.option("--hf-cache", help="Shared directory for the Hugging Face cache: the head "
                     "downloads a hub model once, every node then reads it offline."),
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


def _spec(params: dict[str, Any], defaults: dict[str, Any] | None = None, raw: bool = False
          ) -> Any:
    """The validated spec; `raw`: its merged fields only (the login host validates them)."""
    fields = dict(params)
    config = fields.pop("config", None)
    # Everything after `--`, split off by main() before click parsed the rest.
    fields["engine_args"] = tuple(click.get_current_context().obj or ()) or None
    for key in ("mounts", "env", "sbatch_args"):
        fields[key] = tuple(fields[key]) or None
    if raw:
        return api.spec_data(config, defaults=defaults, **fields)
    return api.load_spec(config, defaults=defaults, **fields)


REMOTE_KEYS = ("remote", "accept_new_host_key", "ssh_config", "connect_timeout", "remote_python")


def remote_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--remote and its SSH settings, for the commands a workstation runs on the cluster."""
    options = [
        click.option("--remote", envvar="SLURMSERVE_REMOTE",
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
    for option in reversed(options):
        func = option(func)
    return func


def _cluster(params: dict[str, Any], prefix: str = "slurmserve") -> Any:
    """The client for this command: local, or over SSH with --remote (keys popped from params)."""
    from .client import Cluster

    opts = {key: params.pop(key, None) for key in REMOTE_KEYS}
    if not opts["remote"]:
        return Cluster.local()
    return Cluster.connect(opts["remote"], accept_new_host_key=bool(opts["accept_new_host_key"]),
                           ssh_config=opts["ssh_config"], connect_timeout=opts["connect_timeout"],
                           python=opts["remote_python"],
                           notice=lambda text: click.echo(f"{prefix}: {text}", err=True))


def _print_ready(job: Any, remote: str | None) -> None:
    click.echo(f"READY {job.endpoint} model={job.model} job={job.id}")
    if remote:
        click.echo(f"  from here: slurmserve tunnel {job.id} --remote {remote}")
    else:
        click.echo(f"  OPENAI_BASE_URL={job.endpoint}/v1")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="slurmserve")
def cli() -> None:
    """Serve LLMs with vLLM, SGLang or TensorRT-LLM on SLURM, from one GPU to many nodes.

    Engine arguments go after `--`, verbatim: slurmserve render vllm MODEL -- --max-model-len 8192
    """


@cli.command()
@serve_options
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the script here.")
@click.option("--python", "python", help="Python with slurmserve on the nodes (default: this one).")
@click.option("--json", "as_json", is_flag=True, help="Print spec, plan and script as JSON.")
@_errors
def render(output: str | None, python: str | None, as_json: bool, **params: Any) -> None:
    """Render the sbatch script that serves ENGINE MODEL."""
    spec = _spec(params)
    script = api.render_sbatch(spec, python=python)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(script)
    if as_json:
        click.echo(json.dumps({**api.describe(spec), "script": script, "output": output},
                              indent=2))
    elif not output:
        click.echo(script, nl=False)
    else:
        click.echo(f"wrote {output}: sbatch {output}", err=True)


@cli.command()
@serve_options
@click.option("--quiet-logs", is_flag=True, help="Do not stream the containers' logs here.")
@click.option("--quiet", "-q", is_flag=True, help="Only the READY block and errors.")
@click.option("--json", "as_json", is_flag=True, help="Also print ready/stopped events as JSON lines.")
@_errors
def run(quiet_logs: bool, quiet: bool, as_json: bool, **params: Any) -> None:
    """Serve ENGINE MODEL in this allocation until Ctrl+C, scancel or a node failing.

    Run inside salloc (or the sbatch script from `render`). Prints `READY http://HEAD:PORT`
    when the server answers a real generation; tears everything down on exit.
    """
    spec = _spec(params, defaults=api.allocation_defaults())

    def emit(event: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(event), nl=True)

    sys.exit(api.run(spec, follow_logs=not (quiet_logs or quiet), quiet=quiet, emit=emit))


@cli.command()
@serve_options
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@_errors
def doctor(as_json: bool, **params: Any) -> None:
    """Run every preflight check of `run` on every node, start nothing, print node x check.

    Inside an allocation it checks its nodes; elsewhere it asks SLURM for --nodes N first.
    Exit code 0 only when every check passes.
    """
    if not os.environ.get("SLURM_JOB_ID"):
        nodes = str(params.get("nodes") or 1)
        os.execvp("salloc", ["salloc", f"--nodes={nodes}", "--quiet", sys.executable, "-m",
                             "slurmserve", *sys.argv[1:]])
    spec = _spec(params, defaults=api.allocation_defaults())
    verdict, names = api.doctor(spec)
    if as_json:
        click.echo(json.dumps(verdict.to_dict(), indent=2))
    else:
        click.echo(verdict.table(names))
        click.echo("all checks passed" if not verdict.failures
                   else f"{len(verdict.failures)} check(s) failed")
    sys.exit(0 if not verdict.failures else 1)


@cli.command()
@serve_options
@click.option("--python", "python", help="Python with slurmserve on the nodes (default: this one).")
@click.option("--no-wait", is_flag=True, help="Return once sbatch accepted the job.")
@click.option("--json", "as_json", is_flag=True, help="Print the job (and endpoint) as JSON.")
@remote_options
@_errors
def submit(python: str | None, no_wait: bool, as_json: bool, **params: Any) -> None:
    """Render the job script, sbatch it, and wait until it serves (unless --no-wait).

    With --remote the login host renders and submits it: --image, --env-file, --mount and
    --log-dir name paths on the cluster (relative ones: from your home directory there).
    """
    with _cluster(params) as cluster:
        spec = _spec(params, raw=cluster.remote)
        job = cluster.submit(spec, python=python, wait=False)
        where = f" on {cluster.label}" if cluster.remote else ""
        info: dict[str, Any] = {"job": job.id, "run_dir": job.run_dir}
        if not as_json:
            click.echo(f"submitted job {job.id}{where}; logs in {job.run_dir}", err=True)
        if not no_wait:
            job.wait_ready(on_progress=None if as_json else lambda t: click.echo(t, err=True))
            info.update(endpoint=job.endpoint, model=job.model, status=job.state.get("status"))
            if not as_json:
                _print_ready(job, cluster.label if cluster.remote else None)
        if as_json:
            click.echo(json.dumps(info))


@cli.command("wait")
@click.argument("job_id")
@click.option("--timeout", type=float, default=5400.0, show_default=True,
              help="Seconds to wait for READY.")
@click.option("--json", "as_json", is_flag=True,
              help="Print progress and the final state as JSON lines.")
@remote_options
@_errors
def wait_command(job_id: str, timeout: float, as_json: bool, **remote: Any) -> None:
    """Wait until a submitted job serves, printing its progress; exit 1 if it ends first."""
    with _cluster(remote) as cluster:
        job = cluster.job(job_id)
        if as_json:
            job.wait_ready(timeout, on_progress=lambda t: click.echo(json.dumps({"progress": t})))
            click.echo(json.dumps({"ready": job.state}))
        else:
            job.wait_ready(timeout, on_progress=lambda t: click.echo(t, err=True))
            _print_ready(job, cluster.label if cluster.remote else None)


@cli.command()
@click.argument("job_ids", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@click.option("--no-health", is_flag=True, help="Skip the live health check.")
@remote_options
@_errors
def status(job_ids: tuple[str, ...], as_json: bool, no_health: bool, **remote: Any) -> None:
    """Our jobs: SLURM state, serving status, endpoint and a live health check."""
    with _cluster(remote) as cluster:
        rows = cluster.status(list(job_ids) or None, health=not no_health)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no slurmserve jobs known here")
        return
    header = ("JOB", "SLURM", "STATUS", "HEALTH", "ENDPOINT", "MODEL", "NODES")
    table = [header] + [(
        r.job, r.slurm_state, r.status,
        {True: "ok", False: "down", None: "-"}[r.healthy], r.endpoint or "-", r.model or "-",
        ",".join(r.nodes) or "-") for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@cli.command()
@click.argument("job_id")
@click.option("--node", help="Only this node (rank or host name).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@remote_options
@_errors
def logs(job_id: str, node: str | None, follow: bool, **remote: Any) -> None:
    """Print a job's container logs (all nodes, prefixed by host, or one node)."""
    with _cluster(remote) as cluster:
        lines = cluster.job(job_id).logs(node, follow)
        try:
            for line in lines:
                click.echo(line)
        except KeyboardInterrupt:
            pass
        finally:
            close = getattr(lines, "close", None)
            if close:
                close()  # remotely this ends `logs -f` on the login host


@cli.command()
@click.argument("job_id")
@click.option("--timeout", type=float, default=90.0, show_default=True,
              help="Seconds to wait for a verified teardown.")
@click.option("--json", "as_json", is_flag=True, help="Print the final state as JSON.")
@remote_options
@_errors
def stop(job_id: str, timeout: float, as_json: bool, **remote: Any) -> None:
    """Stop a job gracefully and verify that no container of it is left."""
    with _cluster(remote) as cluster:
        data = cluster.job(job_id).stop(timeout=timeout)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    left = data.get("cleanup_removed")
    click.echo(f"job {job_id}: {data.get('status')}"
               + (f"; final cleanup removed {left} container(s)" if left else "")
               + f"; logs in {data.get('run_dir')}")


def _target(url: str | None, job: str | None, cluster: Any) -> tuple[str, dict[str, Any]]:
    """The endpoint to test or benchmark: --url, or a job's state (its endpoint and engine).

    With --remote the URL is a tunnel through the login host to that endpoint.
    """
    if bool(url) == bool(job):
        raise SpecError("--url/--job", "give exactly one of them",
                        "e.g. --job 1234 or --url http://HEAD:8000")
    if url:
        return (cluster.forward(url).url if cluster.remote else url.rstrip("/")), {}
    handle = cluster.job(job)
    data = handle.info()
    if not data.get("endpoint"):
        raise SpecError("--job", f"no running slurmserve job {job} with an endpoint is known on "
                        f"{cluster.label}", "see `slurmserve status`")
    return (handle.url if cluster.remote else data["endpoint"]), data


def _client_key(api_key: str | None, data: dict[str, Any]) -> str | None:
    """--api-key typed on the command line, else the job's own key source, else $OPENAI_API_KEY."""
    from . import apikey

    typed = (click.get_current_context().get_parameter_source("api_key")
             == click.core.ParameterSource.COMMANDLINE)
    return apikey.for_client(api_key if typed else None, data.get("api_key"),
                             None if typed else api_key)


@cli.command("test")
@click.option("--url", help="Base URL of the server, e.g. http://10.0.0.1:8000.")
@click.option("--job", help="A slurmserve job ID instead of --url.")
@click.option("--model", help="Model name (default: from /v1/models).")
@click.option("--engine", help="vllm|sglang|trtllm (default: detected).")
@click.option("--api-key", envvar="OPENAI_API_KEY", help="Bearer token: env:VAR, file:PATH or the "
              "key (default: the job's own key source, else $OPENAI_API_KEY).")
@click.option("--only", help="Comma-separated check names.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@remote_options
@_errors
def test_command(url: str | None, job: str | None, model: str | None, engine: str | None,
                 api_key: str | None, only: str | None, as_json: bool, **remote: Any) -> None:
    """Check that an endpoint behaves like an OpenAI server; exit code = failed checks.

    With --remote the checks run here, through a tunnel via the login host.
    """
    from .tools import apicheck

    cluster = _cluster(remote)
    base, data = _target(url, job, cluster)
    api_key = _client_key(api_key, data)
    try:
        report = apicheck.run_checks(base, engine=engine or data.get("engine"), model=model,
                                     api_key=api_key, only=only.split(",") if only else None)
    except ValueError as exc:
        raise SpecError("--engine", str(exc), "use vllm, sglang or trtllm") from None
    cluster.close()
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
    sys.exit(min(report.failures, 125))


@cli.group(invoke_without_command=True)
@click.option("--url", help="Base URL of the server.")
@click.option("--job", help="A slurmserve job ID instead of --url.")
@click.option("--type", "suites", default="latency,concurrency", show_default=True,
              help="Suites: throughput,prefill,decode,latency,concurrency,sharegpt,longctx.")
@click.option("--out", type=click.Path(file_okay=False), help="Result folder (default bench-JOB).")
@click.option("--model", help="Model name (default: the job's, or from /v1/models).")
@click.option("--engine", help="vllm|sglang|trtllm (default: the job's).")
@click.option("--image", help="Image with the engine's client (default: the job's image).")
@click.option("--tokenizer", help="Tokenizer path/id when the served name is not one.")
@click.option("--dataset", type=click.Path(dir_okay=False), help="ShareGPT JSON for `sharegpt`.")
@click.option("--slo-ttft-ms", type=float, help="Goodput: time-to-first-token SLO.")
@click.option("--slo-tpot-ms", type=float, help="Goodput: time-per-output-token SLO.")
@click.option("--tiny", is_flag=True, help="Small sizes (for tiny test models).")
@click.option("--api-key", envvar="OPENAI_API_KEY", help="Key the client sends: env:VAR, file:PATH "
              "or the key (default: the job's own key source, else $OPENAI_API_KEY).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@remote_options
@click.pass_context
@_errors
def bench(ctx: click.Context, url: str | None, job: str | None, suites: str, out: str | None,
          model: str | None, engine: str | None, image: str | None, tokenizer: str | None,
          dataset: str | None, slo_ttft_ms: float | None, slo_tpot_ms: float | None, tiny: bool,
          api_key: str | None, as_json: bool, **remote: Any) -> None:
    """Benchmark an endpoint with the engine's own client (`bench compare A B` compares).

    With --remote --job JOB it runs on the cluster as there (beside the server; --image,
    --dataset and --tokenizer are cluster paths) and copies the result folder here.
    """
    if ctx.invoked_subcommand is not None:
        return
    from .tools import bench as benchmod
    from .tools import benchexec

    cluster = _cluster(remote)
    if cluster.remote:
        with cluster:
            sys.exit(_bench_remote(cluster, ctx.params, job, out, _client_key(api_key, {})))
    base, data = _target(url, job, cluster)
    api_key = _client_key(api_key, data)
    engine = engine or data.get("engine")
    image = image or data.get("image")
    if not engine or not image:
        raise SpecError("--engine/--image", "unknown for a bare --url",
                        "give --engine and --image (the engine image that has its client)")
    model = model or data.get("model")
    if model is None:
        from .tools import apicheck

        model = apicheck.run_checks(base, engine=engine, api_key=api_key, only=["models"]).model
    out_dir = os.path.abspath(out or f"bench-{job or 'url'}-{time.strftime('%Y%m%d-%H%M%S')}")
    fields = dict(suites=tuple(s for s in suites.split(",") if s), tokenizer=tokenizer,
                  sharegpt_path=dataset, slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms)
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        config = benchmod.BenchConfig.tiny(**fields) if tiny else benchmod.BenchConfig(**fields)
    except ValueError as exc:
        raise SpecError("--type", str(exc), "see `slurmserve bench --help`") from None
    head = (data.get("nodes") or [{}])[0].get("host")
    execute = (benchexec.on_job_node(job, head, image, out_dir, api_key) if job and head
               else benchexec.local_docker(image, out_dir, api_key))

    def progress(done: int, total: int, point: Any, result: Any) -> None:
        if not as_json:
            bar = "#" * (20 * done // max(total, 1))
            status = "" if result is None else (" ok" if result.ok else " FAILED")
            click.echo(f"\r[{bar:<20}] {done}/{total} {point.name}{status}\033[K",
                       err=True, nl=result is not None and not result.ok)

    run_ = benchmod.run_suite(config, execute, engine=engine, base_url=base, model=model,
                              out_dir=out_dir, progress=progress)
    if as_json:
        click.echo(json.dumps(run_.to_dict(), indent=2))
    else:
        click.echo("", err=True)
        click.echo(run_.table())
        click.echo(f"results: {out_dir}/results.json; plots: "
                   + (", ".join(map(str, run_.plots)) or "none"))
        for note in run_.notes:
            click.echo(f"note: {note}")
    sys.exit(1 if run_.failures else 0)


def _bench_remote(cluster: Any, params: dict[str, Any], job: str | None, out: str | None,
                  api_key: str | None) -> int:
    """`slurmserve bench` on the login host, streamed here; its results copied back."""
    if not job:
        raise SpecError("--job", "bench with --remote needs --job", "e.g. --job 1234 --remote login")
    flags = {"suites": "--type", "model": "--model", "engine": "--engine", "image": "--image",
             "tokenizer": "--tokenizer", "dataset": "--dataset", "slo_ttft_ms": "--slo-ttft-ms",
             "slo_tpot_ms": "--slo-tpot-ms"}
    options = [a for key, flag in flags.items() if params.get(key) is not None
               for a in (flag, str(params[key]))]
    options += ["--tiny"] * bool(params.get("tiny")) + ["--json"] * bool(params.get("as_json"))
    local_out = os.path.abspath(out or f"bench-{job}-{time.strftime('%Y%m%d-%H%M%S')}")

    def stderr(data: bytes) -> None:
        # Progress as it comes; its error line is re-raised below, prefixed by the host.
        text = re.sub(r"(?m)^slurmserve: error: .*\n?", "", data.decode(errors="replace"))
        sys.stderr.write(text)
        sys.stderr.flush()

    code = cluster.job(job).bench(options, local_out, api_key=api_key, on_line=click.echo,
                                  on_stderr=stderr)
    click.echo(f"results copied from {cluster.label} to {local_out}", err=True)
    return code


@cli.command("tunnel")
@click.argument("job_id")
@click.option("--local-port", type=int,
              help="Port on 127.0.0.1 (default: the job's own port when free here, else any).")
@remote_options
@_errors
def tunnel_command(job_id: str, local_port: int | None, **remote: Any) -> None:
    """Forward a local port through the login host to a job's endpoint.

    Prints OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 and stays up until Ctrl+C (exit 0);
    reconnects after a dropped connection; exits 1 with the reason when the job ends.
    """
    from .client import end_reason
    from .errors import LaunchError
    from .remote.tunnel import supervise

    with _cluster(remote, prefix="tunnel") as cluster:
        if not cluster.remote:
            raise SpecError("--remote", "tunnel forwards from a workstation through a login host",
                            f"give --remote HOST; on the cluster `slurmserve status {job_id}` "
                            "shows the endpoint to use directly")
        job = cluster.job(job_id)
        st = job.status(health=False)
        reason = end_reason(st)
        if reason:
            raise LaunchError(reason)
        if not st.endpoint:
            raise LaunchError(f"job {job_id} has no endpoint yet ({st.status}); wait for it: "
                              f"`slurmserve wait {job_id} --remote {cluster.label}`")

        def event(text: str) -> None:
            click.echo(f"tunnel: {text}", err=True)

        tun = job.tunnel(local_port, on_event=event, watch=False)
        event(f"127.0.0.1:{tun.local_port} -> {cluster.label} -> {st.endpoint} (job {job_id}); "
              "Ctrl+C closes it")
        click.echo(f"OPENAI_BASE_URL={tun.url}/v1")
        try:
            reason = supervise(cluster.session, job.end_reason, on_event=event)
        except KeyboardInterrupt:
            event("closed")
            return
        raise LaunchError(reason or f"job {job_id} ended")


@bench.command("compare")
@click.argument("a", type=click.Path(exists=True, file_okay=False))
@click.argument("b", type=click.Path(exists=True, file_okay=False))
def bench_compare(a: str, b: str) -> None:
    """Compare two result folders side by side (B/A ratios)."""
    from .tools import bench as benchmod

    click.echo(benchmod.compare(a, b))


@cli.command("plan")
@click.option("--model", "-m", help="Preset name or Hugging Face id (see --list).")
@click.option("--params-b", type=float, help="Model size in billions, when no preset fits.")
@click.option("--context", type=int, help="Context length in tokens (default 8192).")
@click.option("--gpu", help="GPU type, e.g. H100-80GB, A100-40GB, MI300X.")
@click.option("--gpus-per-node", type=int, help="GPUs per node (default: the GPU's usual 8).")
@click.option("--qps", type=float, help="Target requests per second (default 1).")
@click.option("--ttft-ms", type=float, help="Time-to-first-token SLO.")
@click.option("--tpot-ms", type=float, help="Time-per-output-token SLO.")
@click.option("--weight-dtype", help="bf16|fp16|fp8|int4 (default: the model's own).")
@click.option("--engine", help="vllm|sglang|trtllm: EP advice and the emitted config.")
@click.option("--emit-config", type=click.Path(dir_okay=False),
              help="Write a YAML spec that render/run --config accept.")
@click.option("--list", "list_presets", is_flag=True, help="List model presets and GPUs.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@_errors
def plan_command(emit_config: str | None, list_presets: bool, as_json: bool, **params: Any
                 ) -> None:
    """Size a deployment: TP/PP/DP/EP, node count and predicted latency for a model and GPU."""
    from .tools import configurator

    if list_presets:
        data = {"models": configurator.presets(), "gpus": configurator.gpus()}
        if as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            click.echo("models: " + ", ".join(data["models"]))
            click.echo("gpus:   " + ", ".join(data["gpus"]))
        return
    try:
        request = configurator.PlanRequest(**{k: v for k, v in params.items() if v is not None})
        result = configurator.plan(request)
    except configurator.PlanError as exc:
        raise SpecError(exc.field, exc.message, exc.fix) from None
    if emit_config:
        import yaml

        with open(emit_config, "w", encoding="utf-8") as fh:
            yaml.safe_dump(result.to_spec(), fh, sort_keys=False)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.table())
        if emit_config:
            click.echo(f"wrote {emit_config}: slurmserve render --config {emit_config} "
                       "--image IMAGE.tar")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: split engine args at the first `--`, then let click parse the rest."""
    import faulthandler
    import signal

    # `kill -USR1 PID` prints every thread's stack: it shows where a run waits. Skipped
    # without SIGUSR1 (not POSIX) or without a real stderr.
    with contextlib.suppress(AttributeError, ValueError, OSError):
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__)
    args = list(sys.argv[1:] if argv is None else argv)
    engine_args: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, engine_args = args[:cut], args[cut + 1:]
    try:
        code = cli.main(args=args, prog_name="slurmserve", obj=engine_args, standalone_mode=False)
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `slurmserve`: the help
            exc.show()
            sys.exit(exc.exit_code)
        # One line naming the option, like every other bad input (exit 2).
        where = exc.ctx.command_path if exc.ctx else "slurmserve"
        message = " ".join(exc.format_message().split()).rstrip(".")
        _fail(Exception(f"{message}; see `{where} --help`"), exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
