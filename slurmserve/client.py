"""The job client for scripts and notebooks, on the cluster or from a workstation over SSH.

    >>> from slurmserve.client import Cluster
    >>> cluster = Cluster.connect("me@login.cluster.org")       # or Cluster.local()
    >>> job = cluster.submit(engine="vllm", model="/fsx/models/qwen", image="/fsx/vllm.tar",
    ...                      nodes=2, tp=8, pp=2, on_progress=print)   # waits for READY
    >>> from openai import OpenAI
    >>> OpenAI(base_url=job.base_url, api_key="none")   # tunnelled through the login host
    >>> job.stop()

The `slurmserve` CLI's submit, wait, status, logs, stop, tunnel, test and bench use this
module. Remotely, the login host runs the same commands (`slurmserve ... --json`); paths in the
spec (image tarball, env file, mounts, log dir) are paths on the cluster.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from . import remote as remote_mod
from .errors import LaunchError, SpecError
from .jobs import TERMINAL, JobStatus
from .spec import ServeSpec

Progress = Callable[[str], None]
WAIT_MARGIN = 3600.0  # queueing time allowed on top of the spec's health timeout
ENDED = TERMINAL | {"ended"}
ACTIVE_SLURM = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING"}
CLIENT_KEY_VAR = "SLURMSERVE_CLIENT_KEY"


def _number(value: Any, default: float) -> float:
    """A number from unvalidated spec data (the login host reports a bad one)."""
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _status_from(data: Mapping[str, Any]) -> JobStatus:
    known = {f.name for f in fields(JobStatus)}
    return JobStatus(**{k: v for k, v in data.items() if k in known})


def end_reason(status: JobStatus) -> str | None:
    """Why the job is over, or None while it runs."""
    if status.status in ENDED or status.slurm_state not in ACTIVE_SLURM:
        return f"job {status.job} ended: SLURM {status.slurm_state}, {status.status}"
    return None


class _Local:
    """This machine is on the cluster: call the job functions directly."""

    label = "local"

    def submit(self, spec: ServeSpec | Mapping[str, Any], python: str | None) -> tuple[str, str]:
        from . import jobs
        from .spec import load_spec

        if not isinstance(spec, ServeSpec):
            spec = load_spec(**dict(spec))
        return jobs.submit(spec, python=python)

    def wait_ready(self, job: str, timeout: float, on_progress: Progress | None
                   ) -> dict[str, Any]:
        from . import jobs

        return jobs.wait_ready(job, timeout=timeout, on_progress=on_progress)

    def status(self, jobs_: list[str] | None, health: bool, timeout: float = 0.0
               ) -> list[JobStatus]:
        from . import jobs

        return jobs.status(jobs_, check_health=health)

    def logs(self, job: str, node: str | None, follow: bool) -> Iterator[str]:
        from . import jobs

        return jobs.follow(jobs.log_paths(job, node), job, follow)

    def stop(self, job: str, timeout: float) -> dict[str, Any]:
        from . import jobs

        return jobs.stop(job, timeout=timeout)

    def close(self) -> None:
        pass


class _Remote:
    """A login host over SSH: run `slurmserve ... --json` there and read its answers."""

    def __init__(self, session: remote_mod.Session) -> None:
        self.session = session
        self.label = session.label

    def submit(self, spec: ServeSpec | Mapping[str, Any], python: str | None) -> tuple[str, str]:
        data = spec.to_dict() if isinstance(spec, ServeSpec) else dict(spec)
        args = ["submit", "--config", "-", "--no-wait", "--json"]
        if python:
            args += ["--python", python]
        # An `--api-key env:VAR` names a variable of this machine: it travels on stdin to the
        # login host, whose sbatch passes its environment on to the job.
        source, env = str(data.get("api_key") or ""), None
        if source.startswith("env:") and os.environ.get(source[4:]):
            env = {source[4:]: os.environ[source[4:]]}
        out = self.session.slurmserve(args, stdin=json.dumps(data).encode(), env=env)
        info = json.loads(out.strip().splitlines()[-1])
        return str(info["job"]), str(info["run_dir"])

    def wait_ready(self, job: str, timeout: float, on_progress: Progress | None
                   ) -> dict[str, Any]:
        final: dict[str, Any] = {}
        for line in self.session.slurmserve_lines(
                ["wait", job, "--timeout", f"{timeout:g}", "--json"]):
            event = json.loads(line)
            if "progress" in event and on_progress:
                on_progress(event["progress"])
            final = event.get("ready", final)
        if not final:
            raise LaunchError(f"{self.label}: `slurmserve wait {job}` ended without an answer")
        return final

    def status(self, jobs_: list[str] | None, health: bool, timeout: float = 120.0
               ) -> list[JobStatus]:
        args = ["status", *(jobs_ or []), "--json", *([] if health else ["--no-health"])]
        return [_status_from(row) for row in
                json.loads(self.session.slurmserve(args, timeout=timeout))]

    def logs(self, job: str, node: str | None, follow: bool) -> Iterator[str]:
        args = ["logs", job, *(["--node", node] if node else []), *(["--follow"] if follow else [])]
        return self.session.slurmserve_lines(args)

    def stop(self, job: str, timeout: float) -> dict[str, Any]:
        out = self.session.slurmserve(["stop", job, "--timeout", f"{timeout:g}", "--json"],
                                      timeout=timeout + 120)
        return json.loads(out)

    def close(self) -> None:
        self.session.close()


class Cluster:
    """Jobs on a SLURM cluster: here (`local()`) or through a login host (`connect()`)."""

    def __init__(self, backend: _Local | _Remote) -> None:
        self._backend = backend
        self._jobs: list[Job] = []  # those with a tunnel, closed with the cluster
        self._forwards: list[Any] = []

    @classmethod
    def local(cls) -> Cluster:
        return cls(_Local())

    @classmethod
    def connect(cls, remote: str, *, accept_new_host_key: bool = False,
                ssh_config: str | None = None, connect_timeout: float | None = None,
                python: str | None = None, notice: Callable[[str], None] | None = None
                ) -> Cluster:
        """SSH to a login host: `[user@]host[:port]`, an alias from ~/.ssh/config, or a profile
        name from ~/.config/slurmserve/config.yaml. `python` is the login host's Python with
        slurmserve (default: the profile's, else python3)."""
        dest = remote_mod.resolve(remote, ssh_config=ssh_config, connect_timeout=connect_timeout,
                                  python=python)
        session = remote_mod.Session(dest, accept_new_host_key=accept_new_host_key,
                                     notice=notice or (lambda text: None))
        return cls(_Remote(session.connect()))

    @property
    def remote(self) -> bool:
        return isinstance(self._backend, _Remote)

    @property
    def label(self) -> str:
        return self._backend.label

    @property
    def session(self) -> remote_mod.Session | None:
        return self._backend.session if isinstance(self._backend, _Remote) else None

    def submit(self, spec: ServeSpec | Mapping[str, Any] | None = None, *,
               python: str | None = None, wait: bool = True, on_progress: Progress | None = None,
               timeout: float | None = None, **fields_: Any) -> Job:
        """Submit a spec (a ServeSpec, or its fields as a mapping and/or keywords) and, unless
        `wait=False`, wait until it serves. Remotely the login host validates the fields."""
        if spec is None or fields_:
            base = spec.to_dict() if isinstance(spec, ServeSpec) else dict(spec or {})
            spec = {**base, **{k: v for k, v in fields_.items() if v is not None}}
        health = spec.health_timeout if isinstance(spec, ServeSpec) else _number(
            spec.get("health_timeout"), 1800.0)
        job_id, run_dir = self._backend.submit(spec, python)
        job = Job(self, job_id, run_dir=run_dir, default_timeout=health + WAIT_MARGIN)
        if wait:
            job.wait_ready(timeout=timeout, on_progress=on_progress)
        return job

    def job(self, job_id: str) -> Job:
        return Job(self, str(job_id))

    def status(self, job_ids: list[str] | None = None, health: bool = True) -> list[JobStatus]:
        return self._backend.status(job_ids, health)

    def forward(self, url: str, local_port: int = 0) -> Any:
        """A tunnel to any URL on the cluster network (no job to watch); close() it."""
        from .remote import tunnel as tunnel_mod

        parts = urlsplit(url)
        session = self.session
        if session is None or not parts.hostname:
            raise SpecError("--url", f"cannot forward {url}", "give --remote and http://HOST:PORT")
        tun = tunnel_mod.Tunnel(session, parts.hostname, parts.port or 80, local_port).start()
        self._forwards.append(tun)
        return tun

    def close(self) -> None:
        for job in self._jobs:
            job.close()
        for tun in self._forwards:
            tun.close()
        self._backend.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class Job:
    """One slurmserve job: wait for it, reach it, read its logs, stop it."""

    cluster: Cluster
    id: str
    run_dir: str | None = None
    default_timeout: float = 1800.0 + WAIT_MARGIN
    state: dict[str, Any] = field(default_factory=dict)  # the driver's state once ready
    _tunnel: Any = field(default=None, repr=False)
    _watch: threading.Event | None = field(default=None, repr=False)
    ended: str | None = field(default=None, repr=False)  # why the tunnel's job ended

    def status(self, health: bool = True) -> JobStatus:
        rows = self.cluster.status([self.id], health=health)
        if not rows:
            raise SpecError("JOB", f"no slurmserve job {self.id} is known on {self.cluster.label}",
                            "see `slurmserve status`")
        return rows[0]

    def wait_ready(self, timeout: float | None = None, on_progress: Progress | None = None
                   ) -> Job:
        """Block until the job serves; `on_progress(text)` sees each change of state."""
        self.state = self.cluster._backend.wait_ready(
            self.id, timeout or self.default_timeout, on_progress)
        self.run_dir = self.state.get("run_dir", self.run_dir)
        return self

    @property
    def endpoint(self) -> str:
        """The server's URL on the cluster network (`http://HEAD:PORT`)."""
        endpoint = self.state.get("endpoint") or self.status(health=False).endpoint
        if not endpoint:
            raise LaunchError(f"job {self.id} has no endpoint yet; wait_ready() first")
        return endpoint

    @property
    def model(self) -> str | None:
        return self.state.get("model") or self.status(health=False).model

    @property
    def url(self) -> str:
        """Where this machine reaches the server: the endpoint, or a tunnel to it when remote."""
        if not self.cluster.remote:
            return self.endpoint
        return self.tunnel().url

    @property
    def base_url(self) -> str:
        """For OpenAI clients: `OpenAI(base_url=job.base_url, api_key=...)`."""
        return f"{self.url}/v1"

    def info(self) -> dict[str, Any]:
        """The job's state as its driver recorded it (endpoint, engine, model, image, nodes)."""
        if not self.cluster.remote:
            from . import state

            data = state.read(self.id)
            if data is None:
                raise SpecError("--job", f"no slurmserve job {self.id} is known here",
                                "see `slurmserve status`")
            return data
        st = self.status(health=False)
        return {"job": st.job, "status": st.status, "endpoint": st.endpoint, "model": st.model,
                "engine": st.engine, "image": st.image, "api_key": st.api_key,
                "run_dir": st.run_dir, "nodes": [{"host": host} for host in st.nodes]}

    def tunnel(self, local_port: int | None = None, on_event: Callable[[str], None] | None = None,
               watch: bool = True) -> Any:
        """Start (once) a local port forwarded to the endpoint through the login host, kept up
        in the background (reconnecting after drops) until the job ends or close();
        `watch=False` leaves that to the caller (`tunnel.supervise`)."""
        from .remote import tunnel as tunnel_mod

        if self._tunnel is not None:
            return self._tunnel
        session = self.cluster.session
        if session is None:
            raise SpecError("--remote", "a tunnel is only needed from outside the cluster",
                            f"here the endpoint is reachable directly: {self.endpoint}")
        parts = urlsplit(self.endpoint)
        assert parts.hostname and parts.port
        port = tunnel_mod.free_port(parts.port) if local_port is None else local_port
        tun = tunnel_mod.Tunnel(session, parts.hostname, parts.port, port, on_event).start()
        self._tunnel, self._watch = tun, threading.Event()
        self.cluster._jobs.append(self)
        if watch:
            threading.Thread(target=self._supervise, args=(tun, on_event), daemon=True).start()
        return tun

    def _supervise(self, tun: Any, on_event: Callable[[str], None] | None) -> None:
        from .remote import tunnel as tunnel_mod

        session = self.cluster.session
        assert session is not None and self._watch is not None
        try:
            self.ended = tunnel_mod.supervise(session, self.end_reason, on_event=on_event,
                                              stop=self._watch)
        except remote_mod.RemoteError as exc:
            self.ended = str(exc)
        if self.ended:
            if on_event:
                on_event(self.ended)
            tun.close()

    def end_reason(self) -> str | None:
        """Why the job is over (None while it runs); checked without a health probe."""
        rows = self.cluster._backend.status([self.id], False, timeout=20.0)
        return end_reason(rows[0]) if rows else f"job {self.id} is no longer known"

    def logs(self, node: str | None = None, follow: bool = False) -> Iterator[str]:
        """The containers' log lines (all nodes prefixed by host, or one node)."""
        return self.cluster._backend.logs(self.id, node, follow)

    def bench(self, options: list[str], out: str, api_key: str | None = None,
              on_line: Callable[[str], None] | None = None,
              on_stderr: Callable[[bytes], None] | None = None) -> int:
        """Remote only: `slurmserve bench --job ID OPTIONS` on the login host (the engine image's
        own client runs beside the server, as on the cluster), then its result folder is
        copied to `out` here. Returns bench's exit code (1 when a point failed)."""
        session = self.cluster.session
        if session is None:
            raise SpecError("--remote", "Job.bench runs benchmarks from a workstation",
                            "on the cluster use `slurmserve bench --job ID`")
        # A folder of its own there: an older run's results must never come back as this one's.
        remote_out = (f"slurmserve-bench/{os.path.basename(os.path.abspath(out))}-"
                      f"{secrets.token_hex(4)}")
        env, key_args = None, []
        if api_key:  # the key travels on stdin; argv names only the variable
            env, key_args = {CLIENT_KEY_VAR: api_key}, ["--api-key", f"env:{CLIENT_KEY_VAR}"]
        error: remote_mod.RemoteCommandError | None = None
        try:
            for line in session.slurmserve_lines(
                    ["bench", "--job", self.id, *options, *key_args, "--out", remote_out],
                    env=env, on_stderr=on_stderr):
                if on_line:
                    on_line(line)
        except remote_mod.RemoteCommandError as exc:
            error = exc
        try:
            download(session, remote_out, out)
        except OSError:
            if error:
                raise error from None
            raise LaunchError(f"{session.label}: bench wrote no results in ~/{remote_out}") from None
        return error.exit_code if error else 0

    def stop(self, timeout: float = 90.0) -> dict[str, Any]:
        """Stop gracefully, verified; returns the final state (status stopped/failed)."""
        self.close()
        return self.cluster._backend.stop(self.id, timeout)

    def close(self) -> None:
        """Close this job's tunnel (the job keeps running)."""
        if self._watch is not None:
            self._watch.set()
        if self._tunnel is not None:
            self._tunnel.close()
        self._tunnel = self._watch = None


def download(session: remote_mod.Session, remote_dir: str, local_dir: str) -> int:
    """Copy a directory tree from the login host (SFTP); returns the number of files."""
    sftp = session.sftp()
    count = 0
    try:
        todo = [(remote_dir, local_dir)]
        while todo:
            src, dst = todo.pop()
            entries = sftp.listdir_attr(src)
            os.makedirs(dst, exist_ok=True)
            for entry in entries:
                path, target = f"{src}/{entry.filename}", os.path.join(dst, entry.filename)
                if stat.S_ISDIR(entry.st_mode or 0):
                    todo.append((path, target))
                elif stat.S_ISREG(entry.st_mode or 0):
                    sftp.get(path, target)
                    count += 1
    finally:
        sftp.close()
    return count
