"""The `slurmserve` command line: parse, call the API, print a table or --json. No logic here.

`serve` holds the commands that serve and manage jobs, `tools` test/bench/plan, `common` what
they share (flags, --remote, errors), `output` how things print.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence

import click

from . import serve, tools
from .common import Invocation, fail


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="slurmserve")
def cli() -> None:
    """Serve LLMs with vLLM, SGLang or TensorRT-LLM on SLURM, from one GPU to many nodes.

    Engine arguments go after `--`, verbatim: slurmserve render vllm MODEL -- --max-model-len 8192
    """


for _command in (*serve.COMMANDS, *tools.COMMANDS):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: split engine args at the first `--`, then let click parse the rest."""
    import faulthandler
    import signal

    # `kill -USR1 PID` prints every thread's stack: it shows where a run waits. Skipped
    # without SIGUSR1 (not POSIX) or without a real stderr.
    with contextlib.suppress(AttributeError, ValueError, OSError):
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__)
    given = list(sys.argv[1:] if argv is None else argv)
    args, engine_args = given, []
    if "--" in given:
        cut = given.index("--")
        args, engine_args = given[:cut], given[cut + 1:]
    obj = Invocation(argv=tuple(given), engine_args=tuple(engine_args))
    try:
        code = cli.main(args=args, prog_name="slurmserve", obj=obj, standalone_mode=False)
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `slurmserve`: the help
            exc.show()
            sys.exit(exc.exit_code)
        # One line naming the option, like every other bad input (exit 2).
        where = exc.ctx.command_path if exc.ctx else "slurmserve"
        message = " ".join(exc.format_message().split()).rstrip(".")
        fail(Exception(f"{message}; see `{where} --help`"), exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
