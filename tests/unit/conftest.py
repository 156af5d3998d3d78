"""Shared helpers for unit tests: run the CLI in-process, build allocations."""

from __future__ import annotations

import pytest

from slurmserve import cli
from slurmserve.plan import Allocation, NodeInfo


def allocation(nodes: int, job_id: str = "4242") -> Allocation:
    """Documentation addresses (RFC 5737): plain data, never contacted."""
    return Allocation(job_id=job_id, nodes=tuple(
        NodeInfo(name=f"gpu-{i + 1}", address=f"192.0.2.{i + 1}", ifname="ens5")
        for i in range(nodes)))


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
