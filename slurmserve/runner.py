"""The only module that starts processes: argv lists only, never a shell string."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import LaunchError


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0


def run(argv: Sequence[str], *, timeout: float | None = 60, env: Mapping[str, str] | None = None,
        check: bool = False, input_text: str | None = None) -> Result:
    """Run to completion and capture output. A missing program is a LaunchError naming it."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              env=None if env is None else dict(env), input=input_text,
                              stdin=None if input_text is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise LaunchError(f"{argv[0]}: command not found; is it installed and on PATH?") from None
    except subprocess.TimeoutExpired:
        raise LaunchError(f"{' '.join(argv[:3])} ... did not finish within {timeout:g}s") from None
    result = Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and not result.ok:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise LaunchError(f"{' '.join(argv[:2])} failed ({proc.returncode}): {detail[0]}")
    return result


def start(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
          merge_output: bool = True) -> subprocess.Popen[str]:
    """Start a long-running process with line-buffered text output on stdout."""
    try:
        return subprocess.Popen(
            list(argv), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True, bufsize=1,
            env=None if env is None else dict(env), start_new_session=True)
    except FileNotFoundError:
        raise LaunchError(f"{argv[0]}: command not found; is it installed and on PATH?") from None
