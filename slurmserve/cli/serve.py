"""Commands that serve and manage jobs: render, run, doctor, submit, wait, status, url, logs,
stop, tunnel."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from .. import api
from ..errors import LaunchError, SpecError
from . import output
from .common import Remote, errors, invocation, remote_options, serve_options, spec, spec_data

if TYPE_CHECKING:
    from ..client import Cluster


@click.command()
@serve_options
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the script here.")
@click.option("--python", "python", help="Python with slurmserve on the nodes (default: this one).")
@click.option("--json", "as_json", is_flag=True, help="Print spec, plan and script as JSON.")
@errors
def render(output: str | None, python: str | None, as_json: bool, **params: Any) -> None:
    """Render the sbatch script that serves ENGINE MODEL."""
    served = spec(params)
    script = api.render_sbatch(served, python=python)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(script)
    if as_json:
        click.echo(json.dumps({**api.describe(served), "script": script, "output": output},
                              indent=2))
    elif not output:
        click.echo(script, nl=False)
    else:
        click.echo(f"wrote {output}: sbatch {output}", err=True)


@click.command()
@serve_options
@click.option("--quiet-logs", is_flag=True, help="Do not stream the containers' logs here.")
@click.option("--quiet", "-q", is_flag=True, help="Only the READY block and errors.")
@click.option("--json", "as_json", is_flag=True, help="Also print ready/stopped events as JSON lines.")
@errors
def run(quiet_logs: bool, quiet: bool, as_json: bool, **params: Any) -> None:
    """Serve ENGINE MODEL in this allocation until Ctrl+C, scancel or a node failing.

    Run inside salloc (or the sbatch script from `render`). Prints `READY http://HEAD:PORT`
    when the server answers a real generation; tears everything down on exit.
    """
    served = spec(params, defaults=api.allocation_defaults())

    def emit(event: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(event), nl=True)

    sys.exit(api.run(served, follow_logs=not (quiet_logs or quiet), quiet=quiet, emit=emit))


@click.command()
@serve_options
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@errors
def doctor(as_json: bool, **params: Any) -> None:
    """Run every preflight check of `run` on every node, start nothing, print node x check.

    Inside an allocation it checks its nodes; elsewhere it asks SLURM for --nodes N first.
    Exit code 0 only when every check passes.
    """
    api.ensure_allocation(params.get("nodes") or 1, invocation().argv)
    verdict, names = api.doctor(spec(params, defaults=api.allocation_defaults()))
    if as_json:
        output.echo_json(verdict.to_dict())
    else:
        click.echo(verdict.table(names))
        click.echo("all checks passed" if not verdict.failures
                   else f"{len(verdict.failures)} check(s) failed")
    sys.exit(0 if not verdict.failures else 1)


@click.command()
@serve_options
@click.option("--serve-for", help="Serve this long (e.g. 7d) across as many jobs of --time as "
              "it takes, each handing over to its successor; needs --name and --time.")
@click.option("--handover", help="Lead time before a job's --time ends at which its successor "
              "is submitted: queue wait plus model start (default a third of --time, at most 10m).")
@click.option("--drain-grace", help="How long a handed-over job's in-flight requests may take "
              "to finish (default 30s).")
@click.option("--router-partition", help="Partition of the chain's router job (one CPU; "
              "default --partition).")
@click.option("--router-time", help="--time of the router job; it renews itself the same way "
              "(default --time).")
@click.option("--python", "python", help="Python with slurmserve on the nodes (default: this one).")
@click.option("--no-wait", is_flag=True, help="Return once sbatch accepted the job.")
@click.option("--json", "as_json", is_flag=True, help="Print the job (and endpoint) as JSON.")
@remote_options
@errors
def submit(python: str | None, no_wait: bool, as_json: bool, remote: Remote, **params: Any
           ) -> None:
    """Render the job script, sbatch it, and wait until it serves (unless --no-wait).

    With --remote the login host renders and submits it: --image, --env-file, --mount and
    --log-dir name paths on the cluster (relative ones: from your home directory there).
    """
    with remote.cluster() as cluster:
        fields = spec_data(params) if cluster.remote else spec(params)
        job = cluster.submit(fields, python=python, wait=False)
        where = f" on {cluster.label}" if cluster.remote else ""
        info: dict[str, Any] = {"job": job.id, "run_dir": job.run_dir}
        submitted = job.record
        router_job = submitted.router.get("job") if submitted else None
        if router_job:  # --serve-for: a chain of jobs behind a router job
            info["router_job"] = router_job
        if not as_json:
            click.echo(f"submitted job {job.id}{where}; logs in {job.run_dir}", err=True)
            if submitted and router_job:
                click.echo(f"deployment {submitted.name}: router job {router_job}; `slurmserve "
                           f"url {submitted.name}` gives its endpoint", err=True)
        if not no_wait:
            job.wait_ready(on_progress=None if as_json else lambda t: click.echo(t, err=True))
            assert job.record is not None
            info.update(endpoint=job.endpoint, model=job.model, status=job.record.status.value)
            if not as_json:
                output.ready(job.endpoint, job.model, job.id,
                             cluster.label if cluster.remote else None)
        if as_json:
            click.echo(json.dumps(info))


@click.command("wait")
@click.argument("job_id")
@click.option("--timeout", type=float, default=5400.0, show_default=True,
              help="Seconds to wait for READY.")
@click.option("--json", "as_json", is_flag=True,
              help="Print progress and the final record as JSON lines.")
@remote_options
@errors
def wait_command(job_id: str, timeout: float, as_json: bool, remote: Remote) -> None:
    """Wait until a submitted job serves, printing its progress; exit 1 if it ends first."""
    with remote.cluster() as cluster:
        job = cluster.job(job_id)
        if as_json:
            job.wait_ready(timeout, on_progress=lambda t: click.echo(json.dumps({"progress": t})))
            assert job.record is not None
            click.echo(json.dumps({"ready": job.record.to_dict()}))
        else:
            job.wait_ready(timeout, on_progress=lambda t: click.echo(t, err=True))
            output.ready(job.endpoint, job.model, job.id,
                         cluster.label if cluster.remote else None)


@click.command()
@click.argument("job_ids", nargs=-1)
@click.option("--json", "as_json", is_flag=True,
              help="Print the jobs as JSON (with --watch: one line per refresh).")
@click.option("--no-health", is_flag=True, help="Skip the live health and load checks.")
@click.option("--watch", "-w", is_flag=True,
              help="Show each job's replicas (or endpoint) with live load, refreshed until Ctrl+C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between --watch refreshes.")
@remote_options
@errors
def status(job_ids: tuple[str, ...], as_json: bool, no_health: bool, watch: bool,
           interval: float, remote: Remote) -> None:
    """Our jobs: SLURM state, serving status, endpoint and a live health check; a job with
    replicas also gets a table of them with their load (requests, KV cache, tokens/s)."""
    with remote.cluster() as cluster:
        if watch:
            try:
                frames = cluster.watch_status(list(job_ids) or None, not no_health, interval)
                for count, rows in enumerate(frames):
                    output.watch_frame(rows, count, interval, as_json)
            except KeyboardInterrupt:
                pass
            return
        rows = cluster.status(list(job_ids) or None, health=not no_health)
    if as_json:
        output.echo_json([r.to_dict() for r in rows])
    else:
        output.status_table(rows)
        output.replica_tables(rows)


@click.command("url")
@click.argument("target", metavar="NAME")
@remote_options
@errors
def url_command(target: str, remote: Remote) -> None:
    """Print the endpoint that serves deployment NAME (or a job) right now."""
    with remote.cluster() as cluster:
        click.echo(cluster.url(target))


@click.command()
@click.argument("job_id")
@click.option("--node", help="Only this node (rank or host name).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@remote_options
@errors
def logs(job_id: str, node: str | None, follow: bool, remote: Remote) -> None:
    """Print a job's container logs (all nodes, prefixed by host, or one node)."""
    with remote.cluster() as cluster:
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


@click.command()
@click.argument("job_id")
@click.option("--timeout", type=float, default=90.0, show_default=True,
              help="Seconds to wait for a verified teardown.")
@click.option("--json", "as_json", is_flag=True, help="Print the final record as JSON.")
@remote_options
@errors
def stop(job_id: str, timeout: float, as_json: bool, remote: Remote) -> None:
    """Stop a job gracefully and verify that no container of it is left."""
    with remote.cluster() as cluster:
        record = cluster.job(job_id).stop_record(timeout=timeout)
    if as_json:
        output.echo_json(record.to_dict())
    else:
        output.stopped(job_id, record)


@click.command("tunnel")
@click.argument("job_id")
@click.option("--local-port", type=int,
              help="Port on 127.0.0.1 (default: the job's own port when free here, else any).")
@remote_options
@errors
def tunnel_command(job_id: str, local_port: int | None, remote: Remote) -> None:
    """Forward a local port through the login host to a job's endpoint.

    Prints OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 and stays up until Ctrl+C (exit 0);
    reconnects after a dropped connection; exits 1 with the reason when the job ends.
    """
    from ..client import end_reason, is_deployment_name

    with remote.cluster(prefix="tunnel") as cluster:
        if not cluster.remote:
            raise SpecError("--remote", "tunnel forwards from a workstation through a login host",
                            f"give --remote HOST; on the cluster `slurmserve status {job_id}` "
                            "shows the endpoint to use directly")
        if is_deployment_name(job_id):
            _follow_deployment(cluster, job_id, local_port)
            return
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
            reason = job.watch(on_event=event)
        except KeyboardInterrupt:
            event("closed")
            return
        raise LaunchError(reason or f"job {job_id} ended")


def _follow_deployment(cluster: Cluster, name: str, local_port: int | None) -> None:
    """`tunnel NAME`: one local URL, moved to whichever job serves NAME, until all of it ends."""

    def event(text: str) -> None:
        click.echo(f"tunnel: {text}", err=True)

    deployment = cluster.deployment(name)
    tun = deployment.tunnel(local_port, on_event=event, watch=False)
    event(f"127.0.0.1:{tun.local_port} -> {cluster.label} -> {deployment.serving()} "
          f"(deployment {name}, following its serving job); Ctrl+C closes it")
    click.echo(f"OPENAI_BASE_URL={tun.url}/v1")
    try:
        reason = deployment.follow(on_event=event)
    except KeyboardInterrupt:
        return
    if reason:
        raise LaunchError(reason)


COMMANDS = (render, run, doctor, submit, wait_command, status, url_command, logs, stop,
            tunnel_command)
