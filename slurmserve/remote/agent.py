"""The login host's side of remote mode: `python -m slurmserve.remote.agent COMMAND ...`.

A workstation runs it over SSH (remote.commands). Each command prints typed records, one
line each (`wire`), never the human CLI's shapes; a failure is the CLI's one line on stderr
(`slurmserve: error: ...`) with its exit code (2 for bad input).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import api
from ..errors import SlurmserveError
from . import wire


def _emit(record: wire.Record) -> None:
    print(wire.encode(record), flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slurmserve.remote.agent")
    commands = parser.add_subparsers(dest="command", required=True)
    submit = commands.add_parser("submit", help="sbatch the spec fields read from stdin")
    submit.add_argument("--python")
    wait = commands.add_parser("wait", help="progress, then the ready JobRecord")
    wait.add_argument("job")
    wait.add_argument("--timeout", type=float, default=5400.0)
    status = commands.add_parser("status", help="one JobStatus per job")
    status.add_argument("jobs", nargs="*")
    status.add_argument("--no-health", action="store_true")
    info = commands.add_parser("info", help="the job's JobRecord")
    info.add_argument("job")
    stop = commands.add_parser("stop", help="stop, verified; the final JobRecord")
    stop.add_argument("job")
    stop.add_argument("--timeout", type=float, default=90.0)
    return parser


def run(args: argparse.Namespace) -> None:
    """Answer one command with records on stdout."""
    if args.command == "submit":
        _emit(api.submit(api.load_spec("-"), python=args.python))
    elif args.command == "wait":
        _emit(api.wait_ready(args.job, args.timeout, on_progress=lambda t: _emit(wire.Progress(t))))
    elif args.command == "status":
        for row in api.status(args.jobs or None, check_health=not args.no_health):
            _emit(row)
    elif args.command == "info":
        _emit(api.job_record(args.job, field="--job"))
    elif args.command == "stop":
        _emit(api.stop(args.job, timeout=args.timeout))


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns its exit code (errors as one line on stderr, as the CLI does)."""
    args = _parser().parse_args(argv)
    try:
        run(args)
    except SlurmserveError as exc:
        print(f"slurmserve: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
