"""Commands around a running server and sizing: test, bench (and bench compare), plan."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from .. import api
from ..errors import SpecError
from . import output
from .common import Remote, client_key, engine_choice, errors, remote_options, target


@click.command("test")
@click.option("--url", help="Base URL of the server, e.g. http://10.0.0.1:8000.")
@click.option("--job", help="A slurmserve job ID instead of --url.")
@click.option("--model", help="Model name (default: from /v1/models).")
@click.option("--engine", help=f"{engine_choice()} (default: detected).")
@click.option("--api-key", envvar="OPENAI_API_KEY", help="Bearer token: env:VAR, file:PATH or the "
              "key (default: the job's own key source, else $OPENAI_API_KEY).")
@click.option("--only", help="Comma-separated check names.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@remote_options
@errors
def test_command(url: str | None, job: str | None, model: str | None, engine: str | None,
                 api_key: str | None, only: str | None, as_json: bool, remote: Remote) -> None:
    """Check that an endpoint behaves like an OpenAI server; exit code = failed checks.

    With --remote the checks run here, through a tunnel via the login host.
    """
    cluster = remote.cluster()
    base, record = target(url, job, cluster)
    report = api.check_endpoint(base, engine=engine or (record.engine if record else None),
                               model=model, api_key=client_key(api_key, record),
                               only=only.split(",") if only else None)
    cluster.close()
    if as_json:
        output.echo_json(report.to_dict())
    else:
        click.echo(report.table())
    sys.exit(min(report.failures, 125))


@click.group(invoke_without_command=True)
@click.option("--url", help="Base URL of the server.")
@click.option("--job", help="A slurmserve job ID instead of --url.")
@click.option("--type", "suites", default="latency,concurrency", show_default=True,
              help="Suites: throughput,prefill,decode,latency,concurrency,sharegpt,longctx.")
@click.option("--out", type=click.Path(file_okay=False), help="Result folder (default bench-JOB).")
@click.option("--model", help="Model name (default: the job's, or from /v1/models).")
@click.option("--engine", help=f"{engine_choice()} (default: the job's).")
@click.option("--image", help="Image with the engine's client (default: the job's image).")
@click.option("--tokenizer", help="Tokenizer path/id when the served name is not one.")
@click.option("--dataset", type=click.Path(dir_okay=False), help="ShareGPT JSON for `sharegpt`.")
@click.option("--slo-ttft-ms", type=float, help="Goodput: time-to-first-token SLO.")
@click.option("--slo-tpot-ms", type=float, help="Goodput: time-per-output-token SLO.")
@click.option("--tiny", is_flag=True, help="Small sizes (for tiny test models).")
@click.option("--replica", type=int, help="With --job: replica K of a --replicas job, by its own "
              "endpoint, instead of the router (see `slurmserve status JOB`).")
@click.option("--api-key", envvar="OPENAI_API_KEY", help="Key the client sends: env:VAR, file:PATH "
              "or the key (default: the job's own key source, else $OPENAI_API_KEY).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@remote_options
@click.pass_context
@errors
def bench(ctx: click.Context, url: str | None, job: str | None, out: str | None,
          api_key: str | None, remote: Remote, **fields: Any) -> None:
    """Benchmark an endpoint with the engine's own client (`bench compare A B` compares).

    With --remote --job JOB it runs on the cluster as there (beside the server; --image,
    --dataset and --tokenizer are cluster paths) and copies the result folder here.
    """
    if ctx.invoked_subcommand is not None:
        return
    options = api.BenchOptions(**fields)
    cluster = remote.cluster()
    if cluster.remote:
        with cluster:
            if not job:
                raise SpecError("--job", "bench with --remote needs --job",
                                "e.g. --job 1234 --remote login")
            local_out = os.path.abspath(out or f"bench-{job}-{time.strftime('%Y%m%d-%H%M%S')}")
            code = cluster.job(job).bench(options, local_out, api_key=client_key(api_key, None),
                                          on_line=click.echo, on_stderr=output.remote_stderr)
            click.echo(f"results copied from {cluster.label} to {local_out}", err=True)
        sys.exit(code)
    base, record = target(url, job, cluster)
    run = api.bench(options, base, job=record, out=out, api_key=client_key(api_key, record),
                    progress=None if options.as_json else output.bench_progress)
    output.bench_report(run, options.as_json)
    sys.exit(1 if run.failures else 0)


@bench.command("compare")
@click.argument("a", type=click.Path(exists=True, file_okay=False))
@click.argument("b", type=click.Path(exists=True, file_okay=False))
def bench_compare(a: str, b: str) -> None:
    """Compare two result folders side by side (B/A ratios)."""
    click.echo(api.compare_bench(a, b))


@click.command("plan")
@click.option("--model", "-m", help="Preset name or Hugging Face id (see --list).")
@click.option("--params-b", type=float, help="Model size in billions, when no preset fits.")
@click.option("--context", type=int, help="Context length in tokens (default 8192).")
@click.option("--gpu", help="GPU type, e.g. H100-80GB, A100-40GB, MI300X.")
@click.option("--gpus-per-node", type=int, help="GPUs per node (default: the GPU's usual 8).")
@click.option("--qps", type=float, help="Target requests per second (default 1).")
@click.option("--ttft-ms", type=float, help="Time-to-first-token SLO.")
@click.option("--tpot-ms", type=float, help="Time-per-output-token SLO.")
@click.option("--weight-dtype", help="bf16|fp16|fp8|int4 (default: the model's own).")
@click.option("--engine", help=f"{engine_choice()}: EP advice and the emitted config.")
@click.option("--emit-config", type=click.Path(dir_okay=False),
              help="Write a YAML spec that render/run --config accept.")
@click.option("--list", "list_presets", is_flag=True, help="List model presets and GPUs.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@errors
def plan_command(emit_config: str | None, list_presets: bool, as_json: bool, **params: Any
                 ) -> None:
    """Size a deployment: TP/PP/DP/EP, node count and predicted latency for a model and GPU."""
    if list_presets:
        data = api.sizing_catalogue()
        if as_json:
            output.echo_json(data)
        else:
            click.echo("models: " + ", ".join(data["models"]))
            click.echo("gpus:   " + ", ".join(data["gpus"]))
        return
    result = api.size(**params)  # a bad request is a SpecError naming its flag
    spec = result.to_spec()
    if emit_config:
        import yaml

        with open(emit_config, "w", encoding="utf-8") as fh:
            yaml.safe_dump(spec, fh, sort_keys=False)
    if as_json:
        output.echo_json(result.to_dict())
    else:
        click.echo(result.table())
        if emit_config:
            # A plan sized by --params-b names no model: render/run take it as ENGINE MODEL.
            model = "" if "model" in spec else f" {spec['engine']} MODEL"
            click.echo(f"wrote {emit_config}: slurmserve render --config {emit_config}{model} "
                       "--image IMAGE.tar")


COMMANDS = (test_command, bench, plan_command)
