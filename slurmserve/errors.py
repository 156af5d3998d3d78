"""Exceptions and the exit codes the CLI maps them to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class SlurmserveError(Exception):
    """Base class for errors slurmserve reports to the user."""

    exit_code = EXIT_FAILURE


class SpecError(SlurmserveError, ValueError):
    """Bad user input: names the field, says what is wrong and how to fix it."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, field: str, problem: str, fix: str = "") -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        text = f"{field}: {problem}"
        if fix:
            text += f"; {fix}"
        super().__init__(text)


class LaunchError(SlurmserveError):
    """Something failed on the cluster; the message says where and what to do next."""


class Stopped(Exception):
    """The user asked to stop (Ctrl+C, SIGTERM, scancel, `slurmserve stop`): not an error."""
