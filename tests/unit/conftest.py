"""Unit-test fixtures: run the CLI in-process, a fake batch system (plain helpers live in
helpers.py)."""

from __future__ import annotations

import pytest

from slurmserve import cli, runner
from tests.unit.batch import FakeBatch, playing_driver


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """Each test its own cache (argument-check verdicts, converted images): none leaks into
    another, and none comes from this machine's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


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


@pytest.fixture
def batch(tmp_path, monkeypatch):
    """sbatch/squeue/scancel answered by a FakeBatch whose driver plays each job's driver."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    fake = FakeBatch()
    fake.driver = playing_driver(fake)
    with runner.use(fake):
        yield fake
