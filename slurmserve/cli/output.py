"""How commands print: tables, the READY block, progress, one-line summaries. No decisions."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..api import BenchRun, JobRecord, JobStatus


def echo_json(data: Any, indent: int | None = 2) -> None:
    click.echo(json.dumps(data, indent=indent))


def ready(endpoint: str, model: str | None, job: str, remote: str | None) -> None:
    """The READY block: the endpoint, and how to reach it from here."""
    click.echo(f"READY {endpoint} model={model} job={job}")
    if remote:
        click.echo(f"  from here: slurmserve tunnel {job} --remote {remote}")
    else:
        click.echo(f"  OPENAI_BASE_URL={endpoint}/v1")


def status_table(rows: Sequence[JobStatus]) -> None:
    if not rows:
        click.echo("no slurmserve jobs known here")
        return
    header = ("JOB", "SLURM", "STATUS", "HEALTH", "ENDPOINT", "MODEL", "NODES")
    table = [header] + [(
        r.job, r.slurm_state, r.status.value,
        {True: "ok", False: "down", None: "-"}[r.healthy], r.endpoint or "-", r.model or "-",
        ",".join(r.nodes) or "-") for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


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
