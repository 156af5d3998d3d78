"""Per-deployment state: the typed job record in state.json, and the index that finds it.

The state file lives in the job's log dir; an index entry under the user's state dir points to
it, so `slurmserve status JOB` works from any directory. This is the one module that reads and
writes state.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import SlurmserveError

SCHEMA = 1  # the JobRecord layout written here; files without "schema" are version 0
STOP_MARKER = "stop-requested"  # `slurmserve stop` creates it in the run dir; the driver polls it


class Status(str, Enum):
    """Where a deployment is, as slurmserve (not SLURM) sees it."""

    PENDING = "pending"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    ENDED = "ended"  # SLURM ended the job but its driver never wrote a final status
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, value: Any) -> Status:
        """The status called `value`; UNKNOWN for one this version does not know."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


TERMINAL = frozenset({Status.STOPPED, Status.FAILED})  # the driver wrote its final status
ENDED = TERMINAL | {Status.ENDED}  # over, either way


class Phase(str, Enum):
    """The driver's phase: stop messages name the one a signal interrupted."""

    START = "start"
    PREFLIGHT = "preflight"
    IMAGE_LOAD = "image load"
    ARGUMENT_CHECK = "argument check"
    MODEL_DOWNLOAD = "model download"
    LAUNCH = "launch"
    WAITING_FOR_READY = "waiting for ready"
    SERVING = "serving"

    def __str__(self) -> str:
        return self.value


class RecordError(SlurmserveError):
    """A state record this version cannot read (written by a newer slurmserve, or damaged)."""


@dataclass(frozen=True)
class NodeRecord:
    """One node of a launched job: where its container runs and logs."""

    rank: int
    host: str
    address: str | None = None
    ifname: str | None = None
    role: str | None = None
    container: str | None = None
    log: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ReplicaRecord:
    """One replica of a `--replicas N` job: its nodes, its own endpoint, how it is doing.

    `status` is one of REPLICA_STATES; `restarts` counts the watchdog's restarts so far.
    """

    index: int
    nodes: tuple[str, ...]
    endpoint: str | None = None
    status: str = "starting"
    restarts: int = 0
    last_error: str | None = None
    run_dir: str | None = None  # its node logs

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["nodes"] = list(self.nodes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReplicaRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        fields_ = {k: v for k, v in data.items() if k in known}
        fields_["nodes"] = tuple(data.get("nodes") or ())
        return cls(**fields_)


# starting: launched, not ready yet; ready: in the router; draining: out of the router, its
# requests finishing (a chain's handover); restarting: out of the router, waiting for its
# backoff; failed: out of restarts (or --restart never); stopped: by the job.
REPLICA_STATES = ("starting", "ready", "draining", "restarting", "failed", "stopped")


@dataclass(frozen=True)
class JobRecord:
    """What state.json holds: written by `submit` (pending) and the driver, read by the rest.

    `api_key` is where the endpoint's key comes from (env:VAR, file:PATH), never the key.
    """

    job: str
    status: Status
    schema: int = SCHEMA
    name: str | None = None  # the deployment it serves (--name), when named
    role: str | None = None  # in a chain (--serve-for): "router" for its router job, else serving
    engine: str | None = None
    model: str | None = None
    run_dir: str | None = None
    driver_pid: int | None = None
    driver_host: str | None = None
    api_key: str | None = None
    image: str | None = None
    endpoint: str | None = None
    head: str | None = None
    port: int | None = None
    mode: str | None = None
    runtime: str | None = None  # the container runtime that ran it (docker, pyxis, ...)
    engine_version: str | None = None  # what the argument check found, e.g. "vllm 0.32.0"
    nodes: tuple[NodeRecord, ...] = ()
    replicas: tuple[ReplicaRecord, ...] = ()  # with --replicas N > 1; `endpoint` is the router's
    router: Mapping[str, Any] = field(default_factory=dict)  # endpoint, metrics, policy, log
    cleanup_removed: int | None = None
    cleanup_unchecked: tuple[str, ...] = ()
    distribution: Mapping[str, Any] = field(default_factory=dict)
    timeline: Mapping[str, float] = field(default_factory=dict)  # event -> s after process start
    script: str | None = None
    updated: float | None = None

    @property
    def hosts(self) -> list[str]:
        return [n.host for n in self.nodes]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of state.json: the keys written before schema 1, plus "schema".

        Optional fields that are unset are left out, as the writers always did.
        """
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or (f.name in _EMPTY_OMITTED and not value):
                continue
            data[f.name] = value
        data["status"] = self.status.value
        if self.nodes:
            data["nodes"] = [n.to_dict() for n in self.nodes]
        if self.cleanup_unchecked:
            data["cleanup_unchecked"] = list(self.cleanup_unchecked)
        if self.distribution:
            data["distribution"] = dict(self.distribution)
        if self.replicas:
            data["replicas"] = [r.to_dict() for r in self.replicas]
        if self.router:
            data["router"] = dict(self.router)
        if self.timeline:
            data["timeline"] = dict(self.timeline)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRecord:
        """Read a record of this schema or an older one; refuse a newer one."""
        schema = data.get("schema", 0)
        if not isinstance(schema, int) or schema > SCHEMA:
            raise RecordError(f"job {data.get('job', '?')}: its record has schema {schema!r}, "
                              f"this slurmserve reads up to {SCHEMA}; upgrade slurmserve here")
        if "job" not in data:
            raise RecordError("a job record without a job ID")
        known = {f.name for f in dataclasses.fields(cls)}
        fields_ = {k: v for k, v in data.items() if k in known}
        fields_["job"] = str(data["job"])
        fields_["schema"] = SCHEMA
        fields_["status"] = Status.of(data.get("status"))
        fields_["nodes"] = tuple(NodeRecord.from_dict(n) for n in data.get("nodes") or ())
        fields_["cleanup_unchecked"] = tuple(data.get("cleanup_unchecked") or ())
        fields_["distribution"] = dict(data.get("distribution") or {})
        fields_["replicas"] = tuple(ReplicaRecord.from_dict(r) for r in data.get("replicas") or ())
        fields_["router"] = dict(data.get("router") or {})
        # state.json sorts its keys: the events' order is their times'
        fields_["timeline"] = dict(sorted((data.get("timeline") or {}).items(),
                                          key=lambda item: item[1]))
        return cls(**fields_)


_EMPTY_OMITTED = ("nodes", "cleanup_unchecked", "distribution", "replicas", "router",
                  "timeline")


def index_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "slurmserve" / "jobs"


def write(run_dir: str, record: JobRecord) -> str:
    """Atomically write run_dir/state.json (stamped `updated`) and index it by job ID."""
    data = dataclasses.replace(record, updated=time.time()).to_dict()
    path = os.path.join(run_dir, "state.json")
    _replace(path, json.dumps(data, indent=2, sort_keys=True))
    index = index_dir()
    index.mkdir(parents=True, exist_ok=True)
    # Readers (`submit` waiting, `status`) poll the index while the driver rewrites it.
    _replace(str(index / f"{record.job}.path"), os.path.abspath(path) + "\n")
    if record.name:
        _join_deployment(record.name, record.job)
    return path


def _replace(path: str, text: str) -> None:
    """Write `path` so that a reader sees the old text or the new, never a part: a temporary
    file of this process and thread (the driver and `submit` write the same records), then
    rename."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def deployments_dir() -> Path:
    return index_dir().parent / "deployments"


def deployment_jobs(name: str) -> list[str]:
    """The jobs of deployment `name`, in the order they joined it ([] when unknown here)."""
    path = deployments_dir() / name
    if not path.exists():
        return []
    return list(dict.fromkeys(path.read_text().split()))


def _join_deployment(name: str, job_id: str) -> None:
    if job_id not in deployment_jobs(name):
        directory = deployments_dir()
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / name, "a", encoding="utf-8") as fh:
            fh.write(f"{job_id}\n")


def find(job_id: str) -> str | None:
    """The path of the job's state.json, when this machine knows the job."""
    entry = index_dir() / f"{job_id}.path"
    if entry.exists():
        path = entry.read_text().strip()
        if os.path.exists(path):
            return path
    return None


def read(job_id: str) -> JobRecord | None:
    """The job's record, or None when no state of it is known here."""
    path = find(job_id)
    if path is None:
        return None
    with open(path, encoding="utf-8") as fh:
        return JobRecord.from_dict(json.load(fh))


def known_jobs() -> list[str]:
    """Job IDs in the index, in numeric order."""
    index = index_dir()
    if not index.exists():
        return []
    return sorted((p.stem for p in index.glob("*.path")), key=lambda j: (len(j), j))
