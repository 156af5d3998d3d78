"""How commands print: tables, the READY block, progress, one-line summaries. No decisions."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..api import BenchRun, JobRecord, JobStatus, LiveLoad


def echo_json(data: Any, indent: int | None = 2) -> None:
    click.echo(json.dumps(data, indent=indent))


def ready(endpoint: str, model: str | None, job: str, remote: str | None) -> None:
    """The READY block: the endpoint, and how to reach it from here."""
    click.echo(f"READY {endpoint} model={model} job={job}")
    if remote:
        click.echo(f"  from here: slurmserve tunnel {job} --remote {remote}")
    else:
        click.echo(f"  OPENAI_BASE_URL={endpoint}/v1")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    table = [tuple(header)] + [tuple(row) for row in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    return ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
            for row in table]


def _health(healthy: bool | None) -> str:
    return {True: "ok", False: "down", None: "-"}[healthy]


def _number(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def status_table(rows: Sequence[JobStatus]) -> None:
    if not rows:
        click.echo("no slurmserve jobs known here")
        return
    header = ("JOB", "SLURM", "STATUS", "HEALTH", "ENDPOINT", "MODEL", "NODES")
    for line in _table(header, [(
            f"{r.job} (router)" if r.role == "router" else r.job, r.slurm_state,
            r.status.value, _health(r.healthy), r.endpoint or "-", r.model or "-",
            ",".join(r.nodes) or "-") for r in rows]):
        click.echo(line)


REPLICA_HEADER = ("REPLICA", "NODES", "ENDPOINT", "STATUS", "HEALTH", "RESTARTS", "RUNNING",
                  "WAITING", "KV%", "TOK/S")


def _load_cells(load: LiveLoad | None) -> tuple[str, ...]:
    if load is None:
        return ("-",) * 4
    return (_number(load.running, ".0f"), _number(load.waiting, ".0f"),
            _number(load.kv_cache, ".1f", 100.0), _number(load.gen_tokens_per_s, ".1f"))


def replica_lines(row: JobStatus) -> list[str]:
    """A job's replicas (a job without: itself, as one row): a title, the table, last errors."""
    title = f"job {row.job} ({row.engine or '?'} {row.model or '?'}): {row.status.value}"
    if row.replicas:
        router = row.router
        detail = [str(router["policy"])] if router.get("policy") else []
        if router.get("active_workers") is not None:
            detail.append(f"{router['active_workers']:g}/{len(row.replicas)} in the router")
        title += (f", {len(row.replicas)} replicas behind {router.get('endpoint') or row.endpoint}"
                  + (f" ({', '.join(detail)})" if detail else "")
                  + (f", metrics {router['metrics']}" if router.get("metrics") else ""))
        cells = [(r.index, ",".join(r.nodes) or "-", r.endpoint or "-", r.status,
                  _health(r.healthy), r.restarts, *_load_cells(r.load)) for r in row.replicas]
    else:
        cells = [("-", ",".join(row.nodes) or "-", row.endpoint or "-", row.status.value,
                  _health(row.healthy), "-", *_load_cells(row.load))]
    errors = [f"  replica {r.index}: {r.last_error}" for r in row.replicas if r.last_error]
    return [title, *_table(REPLICA_HEADER, cells), *errors]


def replica_tables(rows: Sequence[JobStatus]) -> None:
    """After the job table: one table per job that has replicas."""
    for row in rows:
        if row.replicas:
            click.echo("")
            for line in replica_lines(row):
                click.echo(line)


CLEAR = "\033[2J\033[1;1H"  # clear the screen, cursor to the top left


def watch_frame(rows: Sequence[JobStatus], count: int, interval: float, as_json: bool,
                tty: bool | None = None) -> None:
    """One refresh of `status --watch`: a JSON line, or the replica tables of every job,
    redrawn in place on a terminal and otherwise after a blank line."""
    if as_json:
        echo_json([r.to_dict() for r in rows], indent=None)
        return
    tty = sys.stdout.isatty() if tty is None else tty
    if tty:
        click.echo(CLEAR, nl=False, color=True)
    elif count:
        click.echo("")
    click.echo(f"{time.strftime('%H:%M:%S')} every {interval:g}s, Ctrl+C ends")
    if not rows:
        click.echo("no slurmserve jobs known here")
    for row in rows:
        click.echo("")
        for line in replica_lines(row):
            click.echo(line)


def stopped(job: str, record: JobRecord) -> None:
    left = record.cleanup_removed
    click.echo(f"job {job}: {record.status}"
               + (f"; final cleanup removed {left} container(s)" if left else "")
               + f"; logs in {record.run_dir}")


def bench_progress(done: int, total: int, point: Any, result: Any) -> None:
    """A progress bar on stderr, one line per failed point."""
    bar = "#" * (20 * done // max(total, 1))
    status = "" if result is None else (" ok" if result.ok else " FAILED")
    click.echo(f"\r[{bar:<20}] {done}/{total} {point.name}{status}\033[K",
               err=True, nl=result is not None and not result.ok)


def bench_report(run: BenchRun, as_json: bool) -> None:
    if as_json:
        echo_json(run.to_dict())
        return
    click.echo("", err=True)
    click.echo(run.table())
    click.echo(f"results: {run.out_dir}/results.json; plots: "
               + (", ".join(map(str, run.plots)) or "none"))
    for note in run.notes:
        click.echo(f"note: {note}")


def remote_stderr(data: bytes) -> None:
    """A login host's stderr as it comes; its error line is re-raised, prefixed by the host."""
    text = re.sub(r"(?m)^slurmserve: error: .*\n?", "", data.decode(errors="replace"))
    sys.stderr.write(text)
    sys.stderr.flush()
