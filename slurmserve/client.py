"""The job client for scripts and notebooks, on the cluster or from a workstation over SSH.

    >>> from slurmserve import Cluster
    >>> cluster = Cluster.connect("me@login.cluster.org")       # or Cluster.local()
    >>> job = cluster.submit(engine="vllm", model="/fsx/models/qwen", image="/fsx/vllm.tar",
    ...                      nodes=2, tp=8, pp=2, on_progress=print)   # waits for READY
    >>> from openai import OpenAI
    >>> OpenAI(base_url=job.base_url, api_key="none")   # tunnelled through the login host
    >>> job.stop()

A `Cluster` talks to a `Backend`: `LocalBackend` calls the API here; `RemoteBackend` runs
slurmserve on the login host (`remote.commands`), which answers in the same typed records.
Remotely, paths in the spec (image tarball, env file, mounts, log dir) are paths on the cluster.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from . import api
from .errors import LaunchError, SpecError
from .slurm import ACTIVE_STATES
from .spec import ServeSpec
from .state import ENDED, JobRecord

if TYPE_CHECKING:
    from .remote.session import Session
    from .remote.tunnel import Tunnel

Progress = Callable[[str], None]
WAIT_MARGIN = 3600.0  # queueing time allowed on top of the spec's health timeout
_ACTIVE_SLURM = {s.value for s in ACTIVE_STATES}


def _number(value: Any, default: float) -> float:
    """A number from unvalidated spec data (the login host reports a bad one)."""
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def end_reason(status: api.JobStatus) -> str | None:
    """Why the job is over, or None while it runs."""
    if status.status in ENDED or status.slurm_state not in _ACTIVE_SLURM:
        return f"job {status.job} ended: SLURM {status.slurm_state}, {status.status}"
    return None


class Backend(Protocol):
    """Where a Cluster's jobs are handled: the API here, or slurmserve on a login host."""

    label: str

    def submit(self, spec: ServeSpec | Mapping[str, Any], python: str | None) -> JobRecord: ...

    def wait_ready(self, job: str, timeout: float, on_progress: Progress | None) -> JobRecord: ...

    def status(self, jobs: Sequence[str] | None, health: bool, timeout: float = ...
               ) -> list[api.JobStatus]: ...

    def info(self, job: str) -> JobRecord: ...

    def logs(self, job: str, node: str | None, follow: bool) -> Iterator[str]: ...

    def stop(self, job: str, timeout: float) -> JobRecord: ...

    def close(self) -> None: ...


class LocalBackend:
    """This machine is on the cluster: call the API directly."""

    label = "local"

    def submit(self, spec: ServeSpec | Mapping[str, Any], python: str | None) -> JobRecord:
        if not isinstance(spec, ServeSpec):
            spec = api.load_spec(**dict(spec))
        return api.submit(spec, python=python)

    def wait_ready(self, job: str, timeout: float, on_progress: Progress | None) -> JobRecord:
        return api.wait_ready(job, timeout=timeout, on_progress=on_progress)

    def status(self, jobs: Sequence[str] | None, health: bool, timeout: float = 0.0
               ) -> list[api.JobStatus]:
        return api.status(jobs, check_health=health)

    def info(self, job: str) -> JobRecord:
        return api.job_record(job, "--job")

    def logs(self, job: str, node: str | None, follow: bool) -> Iterator[str]:
        return api.logs(job, node, follow)

    def stop(self, job: str, timeout: float) -> JobRecord:
        return api.stop(job, timeout=timeout)

    def close(self) -> None:
        pass


class RemoteBackend:
    """A login host over SSH: slurmserve runs there and answers in typed records."""

    def __init__(self, session: Session) -> None:
        from .remote import commands

        self.session = session
        self.label = session.label
        self._commands = commands

    def submit(self, spec: ServeSpec | Mapping[str, Any], python: str | None) -> JobRecord:
        data = spec.to_dict() if isinstance(spec, ServeSpec) else dict(spec)
        return self._commands.submit(self.session, data, python)

    def wait_ready(self, job: str, timeout: float, on_progress: Progress | None) -> JobRecord:
        return self._commands.wait_ready(self.session, job, timeout, on_progress)

    def status(self, jobs: Sequence[str] | None, health: bool, timeout: float = 120.0
               ) -> list[api.JobStatus]:
        return self._commands.status(self.session, jobs, health, timeout)

    def info(self, job: str) -> JobRecord:
        return self._commands.info(self.session, job)

    def logs(self, job: str, node: str | None, follow: bool) -> Iterator[str]:
        return self._commands.logs(self.session, job, node, follow)

    def stop(self, job: str, timeout: float) -> JobRecord:
        return self._commands.stop(self.session, job, timeout)

    def bench(self, job: str, options: api.BenchOptions, out: str, api_key: str | None,
              on_line: Callable[[str], None] | None, on_stderr: Callable[[bytes], None] | None
              ) -> int:
        from .remote.session import download

        return self._commands.bench(
            self.session, job, options, out, api_key=api_key, on_line=on_line,
            on_stderr=on_stderr, download=lambda src, dst: download(self.session, src, dst))

    def close(self) -> None:
        self.session.close()


class Cluster:
    """Jobs on a SLURM cluster: here (`local()`) or through a login host (`connect()`)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._tunnelled: list[Job] = []  # jobs with a tunnel, closed with the cluster
        self._forwards: list[Tunnel] = []

    @classmethod
    def local(cls) -> Cluster:
        return cls(LocalBackend())

    @classmethod
    def connect(cls, remote: str, *, accept_new_host_key: bool = False,
                ssh_config: str | None = None, connect_timeout: float | None = None,
                python: str | None = None, notice: Callable[[str], None] | None = None
                ) -> Cluster:
        """SSH to a login host: `[user@]host[:port]`, an alias from ~/.ssh/config, or a profile
        name from ~/.config/slurmserve/config.yaml. `python` is the login host's Python with
        slurmserve (default: the profile's, else python3)."""
        from .remote import config
        from .remote.session import Session

        dest = config.resolve(remote, ssh_config=ssh_config, connect_timeout=connect_timeout,
                              python=python)
        session = Session(dest, accept_new_host_key=accept_new_host_key,
                          notice=notice or (lambda text: None))
        return cls(RemoteBackend(session.connect()))

    @property
    def remote(self) -> bool:
        return isinstance(self.backend, RemoteBackend)

    @property
    def label(self) -> str:
        return self.backend.label

    @property
    def session(self) -> Session | None:
        return self.backend.session if isinstance(self.backend, RemoteBackend) else None

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
        record = self.backend.submit(spec, python)
        job = Job(self, record.job, run_dir=record.run_dir, default_timeout=health + WAIT_MARGIN,
                  record=record)
        if wait:
            job.wait_ready(timeout=timeout, on_progress=on_progress)
        return job

    def job(self, job_id: str) -> Job:
        """A job by its ID, or the job that serves a deployment now (by its --name)."""
        return Job(self, str(job_id))

    def url(self, target: str) -> str:
        """The endpoint that serves a deployment (or job) right now, wherever it runs."""
        return api.serving_endpoint(target, self.status([target], health=False))

    def deployment(self, name: str) -> Deployment:
        """A named deployment (`--name`): whichever of its jobs serves it."""
        return Deployment(self, name)

    def endpoint(self, name: str) -> str:
        """A URL for deployment `name` from here: on the cluster its serving endpoint now;
        remotely a local one that follows it from job to job (closed with the cluster)."""
        if not self.remote:
            return self.url(name)
        return self.deployment(name).tunnel().url

    def status(self, job_ids: Sequence[str] | None = None, health: bool = True
               ) -> list[api.JobStatus]:
        return self.backend.status(job_ids, health)

    def watch_status(self, job_ids: Sequence[str] | None = None, health: bool = True,
                     interval: float = 2.0) -> Iterator[list[api.JobStatus]]:
        """`status` again every `interval` seconds, until the caller stops (or Ctrl+C)."""
        while True:
            yield self.status(job_ids, health)
            time.sleep(interval)

    def forward(self, url: str, local_port: int = 0) -> Tunnel:
        """A tunnel to any URL on the cluster network (no job to watch); close() it."""
        from .remote.tunnel import Tunnel

        parts = urlsplit(url)
        session = self.session
        if session is None or not parts.hostname:
            raise SpecError("--url", f"cannot forward {url}", "give --remote and http://HOST:PORT")
        tun = Tunnel(session, parts.hostname, parts.port or 80, local_port).start()
        self._forwards.append(tun)
        return tun

    def keep_tunnel(self, job: Job) -> None:
        """Close `job`'s tunnel together with the cluster."""
        self._tunnelled.append(job)

    def close(self) -> None:
        for job in self._tunnelled:
            job.close()
        for tun in self._forwards:
            tun.close()
        self.backend.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_tunnel(session: Session, endpoint: str, local_port: int | None,
                on_event: Callable[[str], None] | None) -> Tunnel:
    """A started tunnel to `endpoint`, on its own port here when that is free (else any)."""
    from .remote.tunnel import Tunnel, free_port

    parts = urlsplit(endpoint)
    assert parts.hostname and parts.port
    port = free_port(parts.port) if local_port is None else local_port
    return Tunnel(session, parts.hostname, parts.port, port, on_event).start()


def current_row(rows: Sequence[api.JobStatus]) -> api.JobStatus:
    """Of a job's status rows (a deployment's, oldest first): the newest serving, else the
    newest (what `current_job` picks on the cluster)."""
    return api.serving_row(rows) or rows[-1]


def is_deployment_name(target: str) -> bool:
    """Deployment names start with a letter (spec); job IDs are numbers."""
    return target[:1].isalpha()


@dataclass
class Deployment:
    """A named deployment: the jobs started with `--name`, one of which serves it at a time.
    Its tunnel keeps one local URL and moves to whichever job serves the name now."""

    cluster: Cluster
    name: str
    _tunnel: Tunnel | None = field(default=None, repr=False)
    _watch: threading.Event | None = field(default=None, repr=False)

    def serving(self) -> str | None:
        """The endpoint serving it now; None while none does (e.g. between two jobs)."""
        try:
            return self.cluster.url(self.name)
        except LaunchError:
            return None

    def end_reason(self) -> str | None:
        """Why it is over (every job of it ended), None while any job of it is active."""
        rows = self.cluster.backend.status([self.name], False, timeout=20.0)
        if any(end_reason(row) is None for row in rows):
            return None
        return f"deployment {self.name} ended: " + ", ".join(
            f"job {r.job} {r.slurm_state} {r.status}" for r in rows)

    def tunnel(self, local_port: int | None = None, on_event: Callable[[str], None] | None = None,
               watch: bool = True) -> Tunnel:
        """A local port forwarded to the serving job's endpoint, moved to the next job when
        another one serves the name; kept up in the background unless `watch=False`."""

        if self._tunnel is not None:
            return self._tunnel
        session = self.cluster.session
        if session is None:
            raise SpecError("--remote", "a tunnel is only needed from outside the cluster",
                            f"here `slurmserve url {self.name}` is reachable directly")
        endpoint = self.serving()
        if endpoint is None:
            raise LaunchError(f"deployment {self.name} has no serving job to tunnel to; "
                              f"`slurmserve status {self.name}` shows its jobs")
        self._tunnel = tun = open_tunnel(session, endpoint, local_port, on_event)
        self._watch = threading.Event()
        self.cluster._forwards.append(tun)
        if watch:
            threading.Thread(target=self.follow, args=(on_event,), daemon=True).start()
        return tun

    def follow(self, on_event: Callable[[str], None] | None = None) -> str | None:
        """Keep the tunnel on the serving job until the deployment ends; returns why."""
        from .remote.tunnel import supervise

        session = self.cluster.session
        assert session is not None and self._tunnel is not None
        return supervise(session, lambda: self._retarget(on_event), on_event=on_event,
                         stop=self._watch)

    def _retarget(self, on_event: Callable[[str], None] | None) -> str | None:
        reason = self.end_reason()
        endpoint = self.serving()
        tun = self._tunnel
        parts = urlsplit(endpoint or "")
        if tun is not None and parts.hostname and parts.port and \
                (parts.hostname, parts.port) != (tun.host, tun.port):
            tun.retarget(parts.hostname, parts.port)
            if on_event:
                on_event(f"{self.name} is served by {endpoint} now; new connections go there")
        return reason

    def close(self) -> None:
        if self._watch is not None:
            self._watch.set()
        if self._tunnel is not None:
            self._tunnel.close()


@dataclass
class Job:
    """One slurmserve job: wait for it, reach it, read its logs, stop it."""

    cluster: Cluster
    id: str
    run_dir: str | None = None
    default_timeout: float = 1800.0 + WAIT_MARGIN
    record: JobRecord | None = None  # the driver's record once ready
    _tunnel: Tunnel | None = field(default=None, repr=False)
    _watch: threading.Event | None = field(default=None, repr=False)
    ended: str | None = field(default=None, repr=False)  # why the tunnel's job ended

    def status(self, health: bool = True) -> api.JobStatus:
        rows = self.cluster.status([self.id], health=health)
        if not rows:
            raise SpecError("JOB", f"no slurmserve job {self.id} is known on {self.cluster.label}",
                            "see `slurmserve status`")
        return current_row(rows)

    def wait_ready(self, timeout: float | None = None, on_progress: Progress | None = None
                   ) -> Job:
        """Block until the job serves; `on_progress(text)` sees each change of state."""
        self.record = self.cluster.backend.wait_ready(
            self.id, timeout or self.default_timeout, on_progress)
        self.run_dir = self.record.run_dir or self.run_dir
        return self

    @property
    def endpoint(self) -> str:
        """The server's URL on the cluster network (`http://HEAD:PORT`)."""
        endpoint = (self.record and self.record.endpoint) or self.status(health=False).endpoint
        if not endpoint:
            raise LaunchError(f"job {self.id} has no endpoint yet; wait_ready() first")
        return endpoint

    @property
    def model(self) -> str | None:
        return (self.record and self.record.model) or self.status(health=False).model

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

    def info(self) -> JobRecord:
        """The job's record as its driver wrote it (endpoint, engine, model, image, nodes)."""
        return self.cluster.backend.info(self.id)

    def tunnel(self, local_port: int | None = None, on_event: Callable[[str], None] | None = None,
               watch: bool = True) -> Tunnel:
        """Start (once) a local port forwarded to the endpoint through the login host, kept up
        in the background (reconnecting after drops) until the job ends or close();
        `watch=False` leaves that to the caller (`tunnel.supervise`)."""

        if self._tunnel is not None:
            return self._tunnel
        session = self.cluster.session
        if session is None:
            raise SpecError("--remote", "a tunnel is only needed from outside the cluster",
                            f"here the endpoint is reachable directly: {self.endpoint}")
        tun = open_tunnel(session, self.endpoint, local_port, on_event)
        self._tunnel, self._watch = tun, threading.Event()
        self.cluster.keep_tunnel(self)
        if watch:
            threading.Thread(target=self._supervise, args=(tun, on_event), daemon=True).start()
        return tun

    def _supervise(self, tun: Tunnel, on_event: Callable[[str], None] | None) -> None:
        from .remote.errors import RemoteError
        from .remote.tunnel import supervise

        session = self.cluster.session
        assert session is not None and self._watch is not None
        try:
            self.ended = supervise(session, self.end_reason, on_event=on_event, stop=self._watch)
        except RemoteError as exc:
            self.ended = str(exc)
        if self.ended:
            if on_event:
                on_event(self.ended)
            tun.close()

    def watch(self, on_event: Callable[[str], None] | None = None) -> str | None:
        """Keep the connection to the login host up (reconnecting after drops) and watch the
        job; returns why it ended. Remote only; Ctrl+C ends it."""
        from .remote.tunnel import supervise

        session = self.cluster.session
        if session is None:
            raise SpecError("--remote", "watching a job's tunnel needs a login host",
                            "give --remote HOST")
        return supervise(session, self.end_reason, on_event=on_event)

    def end_reason(self) -> str | None:
        """Why the job is over (None while it runs); checked without a health probe."""
        rows = self.cluster.backend.status([self.id], False, timeout=20.0)
        return end_reason(current_row(rows)) if rows else f"job {self.id} is no longer known"

    def logs(self, node: str | None = None, follow: bool = False) -> Iterator[str]:
        """The containers' log lines (all nodes prefixed by host, or one node)."""
        return self.cluster.backend.logs(self.id, node, follow)

    def bench(self, options: api.BenchOptions, out: str, api_key: str | None = None,
              on_line: Callable[[str], None] | None = None,
              on_stderr: Callable[[bytes], None] | None = None) -> int:
        """Remote only: `slurmserve bench --job ID` on the login host (the engine image's own
        client runs beside the server, as on the cluster), then its result folder is copied to
        `out` here. Returns bench's exit code (1 when a point failed)."""
        backend = self.cluster.backend
        if not isinstance(backend, RemoteBackend):
            raise SpecError("--remote", "Job.bench runs benchmarks from a workstation",
                            "on the cluster use `slurmserve bench --job ID`")
        return backend.bench(self.id, options, out, api_key, on_line, on_stderr)

    def stop(self, timeout: float = 90.0) -> dict[str, Any]:
        """Stop gracefully, verified; returns the final record as state.json has it
        (`status` stopped or failed); `stop_record()` gives it typed."""
        return self.stop_record(timeout).to_dict()

    def stop_record(self, timeout: float = 90.0) -> JobRecord:
        """Stop gracefully, verified; returns the final record (status stopped/failed)."""
        self.close()
        return self.cluster.backend.stop(self.id, timeout)

    def close(self) -> None:
        """Close this job's tunnel (the job keeps running)."""
        if self._watch is not None:
            self._watch.set()
        if self._tunnel is not None:
            self._tunnel.close()
        self._tunnel = self._watch = None
