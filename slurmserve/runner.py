"""The only module that starts processes: argv lists only, never a shell string.

Everything that starts a process (srun, sbatch, squeue, scontrol, scancel, sbcast, salloc,
docker on the login host) calls `run`, `start` or `replace_process` here. They go through the
current `Runner`: `SubprocessRunner` for real, or a fake in tests (`use(fake)`), the way httpx
plugs a MockTransport into its one transport seam.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, NoReturn, Protocol

from .errors import LaunchError

TimeoutExpired = subprocess.TimeoutExpired  # what Process.wait raises: callers need no subprocess


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0


class Process(Protocol):
    """What callers use of a started process (a subset of `subprocess.Popen`)."""

    stdout: IO[str] | None
    stdin: IO[str] | None  # a pipe only when started with feed=True
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


class Runner(Protocol):
    def run(self, argv: Sequence[str], *, timeout: float | None = 60,
            env: Mapping[str, str] | None = None) -> Result: ...

    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              feed: bool = False) -> Process: ...

    def replace_process(self, argv: Sequence[str]) -> NoReturn: ...


class SubprocessRunner:
    """Real processes."""

    def run(self, argv: Sequence[str], *, timeout: float | None = 60,
            env: Mapping[str, str] | None = None) -> Result:
        try:
            proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                                  env=None if env is None else dict(env),
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise _not_found(argv) from None
        except subprocess.TimeoutExpired:
            raise LaunchError(f"{' '.join(argv[:3])} ... did not finish within {timeout:g}s"
                              ) from None
        return Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)

    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              feed: bool = False) -> Process:
        """stdout and stderr merged, line-buffered text; `feed`: stdin is a pipe to write to."""
        try:
            return subprocess.Popen(
                list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE if feed else subprocess.DEVNULL, text=True, bufsize=1,
                env=None if env is None else dict(env), start_new_session=True)
        except FileNotFoundError:
            raise _not_found(argv) from None

    def replace_process(self, argv: Sequence[str]) -> NoReturn:
        try:
            os.execvp(argv[0], list(argv))
        except FileNotFoundError:
            raise _not_found(argv) from None


_current: list[Runner] = [SubprocessRunner()]


def current() -> Runner:
    return _current[-1]


@contextlib.contextmanager
def use(runner: Runner) -> Iterator[Runner]:
    """Route every process start through `runner` while the block runs (tests, dry runs)."""
    _current.append(runner)
    try:
        yield runner
    finally:
        _current.remove(runner)


def run(argv: Sequence[str], *, timeout: float | None = 60, env: Mapping[str, str] | None = None,
        check: bool = False) -> Result:
    """Run to completion and capture output. A missing program is a LaunchError naming it."""
    result = current().run(argv, timeout=timeout, env=env)
    if check and not result.ok:
        detail = (result.err or result.out).strip().splitlines()[-1:] or ["no output"]
        raise LaunchError(f"{' '.join(argv[:2])} failed ({result.code}): {detail[0]}")
    return result


def start(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
          feed: bool = False) -> Process:
    """Start a long-running process with line-buffered text output (stdout and stderr).
    `feed`: its stdin is a pipe the caller writes to."""
    return current().start(argv, env=env, feed=feed)


def replace_process(argv: Sequence[str]) -> NoReturn:
    """Become `argv` (exec): for re-running this command inside `salloc`."""
    current().replace_process(argv)


def _not_found(argv: Sequence[str]) -> LaunchError:
    return LaunchError(f"{argv[0]}: command not found; is it installed and on PATH?")
