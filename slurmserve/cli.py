"""The `slurmserve` command line: parse, call the API, print a table or --json. No logic here."""

from __future__ import annotations

import contextlib
import functools
import json
import os
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
        click.option("--fabric", help="auto|efa|ib|tcp (default auto)."),
        click.option("--gpus", help="GPU passthrough: all|none|0,1,... (default all)."),
        click.option("--health-timeout", type=float, help="Seconds to wait for ready (1800)."),
        click.option("--log-dir", help="Where logs and state go (default ./slurmserve-logs)."),
        click.option("--job-name", help="SLURM job name (default slurmserve)."),
        click.option("--stage", help="Image staging: auto|direct|sbcast (default auto)."),
        click.option("--stage-dir", help="Node-local directory for sbcast copies (default /tmp)."),
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


def _spec(params: dict[str, Any], defaults: dict[str, Any] | None = None) -> Any:
    fields = dict(params)
    config = fields.pop("config", None)
    # Everything after `--`, split off by main() before click parsed the rest.
    fields["engine_args"] = tuple(click.get_current_context().obj or ()) or None
    for key in ("mounts", "env", "sbatch_args"):
        fields[key] = tuple(fields[key]) or None
    return api.load_spec(config, defaults=defaults, **fields)


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
@_errors
def submit(python: str | None, no_wait: bool, as_json: bool, **params: Any) -> None:
    """Render the job script, sbatch it, and wait until it serves (unless --no-wait)."""
    from . import jobs

    spec = _spec(params)
    job_id, run_dir = jobs.submit(spec, python=python)
    info: dict[str, Any] = {"job": job_id, "run_dir": run_dir}
    if not as_json:
        click.echo(f"submitted job {job_id}; logs in {run_dir}", err=True)
    if not no_wait:
        data = jobs.wait_ready(job_id, timeout=spec.health_timeout + 3600,
                               on_progress=None if as_json else lambda t: click.echo(t, err=True))
        info.update(endpoint=data["endpoint"], model=data["model"], status=data["status"])
        if not as_json:
            click.echo(f"READY {data['endpoint']} model={data['model']} job={job_id}")
            click.echo(f"  OPENAI_BASE_URL={data['endpoint']}/v1")
    if as_json:
        click.echo(json.dumps(info))


@cli.command()
@click.argument("job_ids", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@click.option("--no-health", is_flag=True, help="Skip the live health check.")
@_errors
def status(job_ids: tuple[str, ...], as_json: bool, no_health: bool) -> None:
    """Our jobs: SLURM state, serving status, endpoint and a live health check."""
    from . import jobs

    rows = jobs.status(list(job_ids) or None, check_health=not no_health)
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
@_errors
def logs(job_id: str, node: str | None, follow: bool) -> None:
    """Print a job's container logs (all nodes, prefixed by host, or one node)."""
    from . import jobs

    try:
        for line in jobs.follow(jobs.log_paths(job_id, node), job_id, follow):
            click.echo(line)
    except KeyboardInterrupt:
        pass


@cli.command()
@click.argument("job_id")
@click.option("--timeout", type=float, default=90.0, show_default=True,
              help="Seconds to wait for a verified teardown.")
@click.option("--json", "as_json", is_flag=True, help="Print the final state as JSON.")
@_errors
def stop(job_id: str, timeout: float, as_json: bool) -> None:
    """Stop a job gracefully and verify that no container of it is left."""
    from . import jobs

    data = jobs.stop(job_id, timeout=timeout)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    left = data.get("cleanup_removed")
    click.echo(f"job {job_id}: {data.get('status')}"
               + (f"; final cleanup removed {left} container(s)" if left else "")
               + f"; logs in {data.get('run_dir')}")


def _target(url: str | None, job: str | None) -> tuple[str, dict[str, Any]]:
    """The endpoint to test or benchmark: --url, or a job's state (its endpoint and engine)."""
    from . import state

    if bool(url) == bool(job):
        raise SpecError("--url/--job", "give exactly one of them",
                        "e.g. --job 1234 or --url http://HEAD:8000")
    if url:
        return url.rstrip("/"), {}
    data = state.read(job)
    if data is None or not data.get("endpoint"):
        raise SpecError("--job", f"no running slurmserve job {job} with an endpoint is known here",
                        "see `slurmserve status`")
    return data["endpoint"], data


@cli.command("test")
@click.option("--url", help="Base URL of the server, e.g. http://10.0.0.1:8000.")
@click.option("--job", help="A slurmserve job ID instead of --url.")
@click.option("--model", help="Model name (default: from /v1/models).")
@click.option("--engine", help="vllm|sglang|trtllm (default: detected).")
@click.option("--api-key", envvar="OPENAI_API_KEY", help="Sent as Bearer token [$OPENAI_API_KEY].")
@click.option("--only", help="Comma-separated check names.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_errors
def test_command(url: str | None, job: str | None, model: str | None, engine: str | None,
                 api_key: str | None, only: str | None, as_json: bool) -> None:
    """Check that an endpoint behaves like an OpenAI server; exit code = failed checks."""
    from . import apicheck

    base, data = _target(url, job)
    try:
        report = apicheck.run_checks(base, engine=engine or data.get("engine"), model=model,
                                     api_key=api_key, only=only.split(",") if only else None)
    except ValueError as exc:
        raise SpecError("--engine", str(exc), "use vllm, sglang or trtllm") from None
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
@click.option("--api-key", envvar="OPENAI_API_KEY", help="Sent by the client [$OPENAI_API_KEY].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
@_errors
def bench(ctx: click.Context, url: str | None, job: str | None, suites: str, out: str | None,
          model: str | None, engine: str | None, image: str | None, tokenizer: str | None,
          dataset: str | None, slo_ttft_ms: float | None, slo_tpot_ms: float | None, tiny: bool,
          api_key: str | None, as_json: bool) -> None:
    """Benchmark an endpoint with the engine's own client (`bench compare A B` compares)."""
    if ctx.invoked_subcommand is not None:
        return
    from . import bench as benchmod
    from . import benchexec

    base, data = _target(url, job)
    engine = engine or data.get("engine")
    image = image or data.get("image")
    if not engine or not image:
        raise SpecError("--engine/--image", "unknown for a bare --url",
                        "give --engine and --image (the engine image that has its client)")
    model = model or data.get("model")
    if model is None:
        from . import apicheck

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


@bench.command("compare")
@click.argument("a", type=click.Path(exists=True, file_okay=False))
@click.argument("b", type=click.Path(exists=True, file_okay=False))
def bench_compare(a: str, b: str) -> None:
    """Compare two result folders side by side (B/A ratios)."""
    from . import bench as benchmod

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
    from . import configurator

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
    cli.main(args=args, prog_name="slurmserve", obj=engine_args)


if __name__ == "__main__":
    main()
