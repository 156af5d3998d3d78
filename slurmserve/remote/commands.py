"""slurmserve over SSH: the login host runs slurmserve, and answers in typed records.

Records come from `PYTHON -m slurmserve.remote.agent` (one `wire` line each); `logs` and
`bench` are the CLI's own commands, streamed. A failure there becomes one line that says how
to fix it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..api import BenchOptions, JobStatus
from ..errors import LaunchError
from ..state import JobRecord, RecordError
from . import wire
from .config import DEFAULT_PYTHON, Destination, user_config_path
from .errors import RemoteCommandError, RemoteError

if TYPE_CHECKING:
    from .session import Result

CLIENT_KEY_VAR = "SLURMSERVE_CLIENT_KEY"
Progress = Callable[[str], None]
R = TypeVar("R", JobRecord, JobStatus)
AGENT = "slurmserve.remote.agent"
_NOT_INSTALLED = re.compile(r"No module named '?slurmserve'?(\)|\s|$)")


class Host(Protocol):
    """What the commands need of a session (session.Session, or a fake in tests)."""

    dest: Destination

    @property
    def label(self) -> str: ...

    def run(self, argv: Sequence[str], *, stdin: bytes = b"",
            env: Mapping[str, str] | None = None, timeout: float | None = 300.0) -> Result: ...

    def stream(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
               on_stderr: Callable[[bytes], None] | None = None,
               on_exit: Callable[[int, str], None] | None = None) -> Iterator[str]: ...


def slurmserve_argv(dest: Destination, args: Sequence[str], module: str = "slurmserve"
                    ) -> list[str]:
    """argv that runs `slurmserve ARGS` (or another of its modules) with the login host's
    Python."""
    python = dest.python
    if python.startswith("~/"):  # sessions start in the home directory
        python = "./" + python[2:]
    # A SLURMSERVE_REMOTE in the login host's environment must not send it further.
    return ["env", "-u", "SLURMSERVE_REMOTE", python, "-m", module, *args]


def check(host: Host, args: Sequence[str], code: int, err: str) -> None:
    """Nothing when `slurmserve ARGS` succeeded there; else the error, with its fix."""
    if code == 0:
        return
    label, python = host.label, host.dest.python
    fix = (f"install it there (e.g. `{DEFAULT_PYTHON} -m venv /shared/venvs/slurmserve && "
           "/shared/venvs/slurmserve/bin/pip install slurmserve`) and point slurmserve at "
           "that Python: --remote-python /shared/venvs/slurmserve/bin/python, or `python:` "
           f"in the remote profile ({user_config_path()})")
    if code == 127:  # `env` found no such program
        raise RemoteError(f"slurmserve is not installed on {label}: there is no "
                          f"`{python}` there; {fix}")
    if _NOT_INSTALLED.search(err):
        raise RemoteError(f"slurmserve is not installed on {label} for `{python}`; {fix}")
    if AGENT in err and ("No module named" in err or "__path__" in err):
        raise RemoteError(f"the slurmserve on {label} is too old for remote mode (it has no "
                          f"{AGENT}); upgrade it there to this version")
    if "No such command" in err or "No such option" in err:
        raise RemoteError(f"the slurmserve on {label} is too old for remote mode "
                          f"(`slurmserve {args[0]}`: {err.strip().splitlines()[-1]}); "
                          "upgrade it there to this version")
    if code == -1:
        raise RemoteError(f"the connection to {label} was lost while running "
                          f"`slurmserve {args[0]}`")
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln.split("slurmserve: error: ", 1)[1] for ln in lines if "slurmserve: error: " in ln]
    message = errors[-1] if errors else " | ".join(lines[-3:]) or f"exit code {code}"
    raise RemoteCommandError(f"{label}: {message}", code)


def lines(host: Host, args: Sequence[str], *, env: Mapping[str, str] | None = None,
          on_stderr: Callable[[bytes], None] | None = None, module: str = "slurmserve"
          ) -> Iterator[str]:
    """Stream `slurmserve ARGS`'s stdout lines; closing the iterator ends the command there."""
    return host.stream(slurmserve_argv(host.dest, args, module), env=env, on_stderr=on_stderr,
                       on_exit=lambda code, err: check(host, args, code, err))


def agent(host: Host, args: Sequence[str], *, stdin: bytes = b"",
          env: Mapping[str, str] | None = None, timeout: float | None = 300.0
          ) -> list[wire.Record]:
    """Run the agent's command there; the records it answered, or the error."""
    result = host.run(slurmserve_argv(host.dest, args, AGENT), stdin=stdin, env=env,
                      timeout=timeout)
    check(host, args, result.code, result.err)
    return [wire.decode(line) for line in result.out.splitlines() if line.strip()]


def _one(host: Host, records: Sequence[wire.Record], kind: type[R], what: str) -> R:
    found = [r for r in records if isinstance(r, kind)]
    if len(found) != 1:
        raise RecordError(f"{host.label}: `{AGENT} {what}` answered {len(found)} "
                          f"{kind.__name__} records, not one")
    return found[0]


def submit(host: Host, spec: Mapping[str, Any], python: str | None = None) -> JobRecord:
    """sbatch the spec's fields there (the login host validates them); the pending record."""
    args = ["submit", *(["--python", python] if python else [])]
    # An `--api-key env:VAR` names a variable of this machine: it travels on stdin to the
    # login host, whose sbatch passes its environment on to the job.
    source, env = str(spec.get("api_key") or ""), None
    if source.startswith("env:") and os.environ.get(source[4:]):
        env = {source[4:]: os.environ[source[4:]]}
    records = agent(host, args, stdin=json.dumps(dict(spec)).encode(), env=env)
    return _one(host, records, JobRecord, "submit")


def wait_ready(host: Host, job: str, timeout: float, on_progress: Progress | None = None
               ) -> JobRecord:
    """Wait there until the job serves, passing its progress on; the ready record."""
    final: JobRecord | None = None
    for line in lines(host, ["wait", job, "--timeout", f"{timeout:g}"], module=AGENT):
        record = wire.decode(line)
        if isinstance(record, wire.Progress) and on_progress:
            on_progress(record.text)
        elif isinstance(record, JobRecord):
            final = record
    if final is None:
        raise LaunchError(f"{host.label}: `slurmserve wait {job}` ended without an answer")
    return final


def status(host: Host, jobs: Sequence[str] | None, health: bool, timeout: float = 120.0
           ) -> list[JobStatus]:
    args = ["status", *(jobs or []), *([] if health else ["--no-health"])]
    return [r for r in agent(host, args, timeout=timeout) if isinstance(r, JobStatus)]


def info(host: Host, job: str) -> JobRecord:
    """The job's record as its driver wrote it there."""
    return _one(host, agent(host, ["info", job]), JobRecord, "info")


def logs(host: Host, job: str, node: str | None, follow: bool) -> Iterator[str]:
    args = ["logs", job, *(["--node", node] if node else []), *(["--follow"] if follow else [])]
    return lines(host, args)


def stop(host: Host, job: str, timeout: float) -> JobRecord:
    records = agent(host, ["stop", job, "--timeout", f"{timeout:g}"], timeout=timeout + 120)
    return _one(host, records, JobRecord, "stop")


def bench(host: Host, job: str, options: BenchOptions, out: str, *,
          download: Callable[[str, str], int], api_key: str | None = None,
          on_line: Callable[[str], None] | None = None,
          on_stderr: Callable[[bytes], None] | None = None) -> int:
    """`slurmserve bench --job JOB` there (the engine image's client runs beside the server),
    then `download(remote_dir, out)` copies its result folder here. Returns bench's exit code
    (1 when a point failed)."""
    # A folder of its own there: an older run's results must never come back as this one's.
    remote_out = (f"slurmserve-bench/{os.path.basename(os.path.abspath(out))}-"
                  f"{secrets.token_hex(4)}")
    env, key_args = None, []
    if api_key:  # the key travels on stdin; argv names only the variable
        env, key_args = {CLIENT_KEY_VAR: api_key}, ["--api-key", f"env:{CLIENT_KEY_VAR}"]
    error: RemoteCommandError | None = None
    try:
        for line in lines(host, ["bench", "--job", job, *options.to_argv(), *key_args,
                                 "--out", remote_out], env=env, on_stderr=on_stderr):
            if on_line:
                on_line(line)
    except RemoteCommandError as exc:
        error = exc
    try:
        download(remote_out, out)
    except OSError:
        if error:
            raise error from None
        raise LaunchError(f"{host.label}: bench wrote no results in ~/{remote_out}") from None
    return error.exit_code if error else 0
