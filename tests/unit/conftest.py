"""Unit-test fixtures: run the CLI in-process (plain helpers live in helpers.py)."""

from __future__ import annotations

import pytest

from slurmserve import cli


@pytest.fixture
def run_cli(capsys):
    """Run `slurmserve ARGV` in-process; return (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = 0
        try:
            cli.main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run
