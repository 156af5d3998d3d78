"""The job record in state.json: enums, the round trip, reading today's (schema 0) files."""

from __future__ import annotations

import json
import threading

import pytest

from slurmserve import state
from slurmserve.api import JobStatus
from slurmserve.state import SCHEMA, JobRecord, NodeRecord, Phase, RecordError, Status

#: What `submit` wrote before schema 1 (no "schema" key: version 0).
PENDING_V0 = {"job": "4242", "status": "pending", "engine": "vllm", "model": "org/m",
              "run_dir": "/logs/4242", "script": "/logs/slurmserve-1.sbatch", "updated": 1.5}
#: What the driver wrote before schema 1, once serving and after a stop.
STOPPED_V0 = {
    "job": "4242", "status": "stopped", "engine": "sglang", "model": "org/m",
    "run_dir": "/logs/4242", "driver_pid": 77, "driver_host": "n1", "api_key": "env:KEY",
    "image": "sha256:abc", "endpoint": "http://10.0.0.1:30000", "head": "10.0.0.1",
    "port": 30000, "mode": "auto",
    "nodes": [{"rank": 0, "host": "n1", "address": "10.0.0.1", "ifname": "ens5", "role": "head",
               "container": "slurmserve-4242-0", "log": "/logs/4242/n1.log"},
              {"rank": 1, "host": "n2", "address": "10.0.0.2", "ifname": "ens5",
               "role": "worker", "container": "slurmserve-4242-1", "log": "/logs/4242/n2.log"}],
    "cleanup_removed": 0, "cleanup_unchecked": ["n2"],
    "distribution": {"stage": "direct", "seconds": 1.25}, "updated": 2.5}


def test_status_and_phase_are_the_strings_used_in_messages():
    assert [s.value for s in Status] == ["pending", "starting", "ready", "stopping", "stopped",
                                         "failed", "ended", "unknown"]
    assert [p.value for p in Phase] == ["start", "preflight", "image load", "argument check",
                                        "model download", "launch", "waiting for ready",
                                        "serving"]
    assert f"{Status.READY}, during {Phase.WAITING_FOR_READY}" == "ready, during waiting for ready"
    assert Status("stopped") is Status.STOPPED and Status.STOPPED == "stopped"
    assert {Status.STOPPED, Status.FAILED} == state.TERMINAL
    assert state.TERMINAL | {Status.ENDED} == state.ENDED


@pytest.mark.parametrize("v0", [PENDING_V0, STOPPED_V0], ids=["pending", "stopped"])
def test_schema_0_files_read_and_write_back_the_same_keys(v0):
    record = JobRecord.from_dict(v0)
    assert record.schema == SCHEMA and record.status == Status(v0["status"])
    assert record.to_dict() == {**v0, "schema": SCHEMA}
    assert JobRecord.from_dict(record.to_dict()) == record


def test_typed_fields():
    record = JobRecord.from_dict(STOPPED_V0)
    assert record.nodes[1] == NodeRecord(rank=1, host="n2", address="10.0.0.2", ifname="ens5",
                                         role="worker", container="slurmserve-4242-1",
                                         log="/logs/4242/n2.log")
    assert record.hosts == ["n1", "n2"] and record.cleanup_unchecked == ("n2",)
    assert record.distribution["stage"] == "direct"


def test_unset_fields_are_left_out():
    assert JobRecord(job="1", status=Status.STARTING).to_dict() == {
        "job": "1", "status": "starting", "schema": SCHEMA}
    assert JobRecord(job="1", status=Status.STOPPED, cleanup_removed=0).to_dict()[
        "cleanup_removed"] == 0


def test_unknown_status_and_keys_of_older_writers_are_tolerated():
    record = JobRecord.from_dict({"job": 7, "status": "warming", "legacy": True})
    assert record.job == "7" and record.status is Status.UNKNOWN


@pytest.mark.parametrize("schema", [SCHEMA + 1, "1"])
def test_a_newer_schema_is_refused_clearly(schema):
    with pytest.raises(RecordError, match=f"job 4242: its record has schema {schema!r}, this "
                                          f"slurmserve reads up to {SCHEMA}; upgrade"):
        JobRecord.from_dict({**PENDING_V0, "schema": schema})
    with pytest.raises(RecordError, match="upgrade slurmserve here"):
        JobStatus.from_dict({"job": "4242", "schema": schema})


def test_write_is_atomic_indexed_and_stamped(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    run_dir = tmp_path / "logs" / "4242"
    run_dir.mkdir(parents=True)
    path = state.write(str(run_dir), JobRecord.from_dict(PENDING_V0))
    assert path == str(run_dir / "state.json") and state.find("4242") == path
    data = json.loads((run_dir / "state.json").read_text())
    assert data["schema"] == SCHEMA and data["updated"] > PENDING_V0["updated"]
    assert not list(run_dir.glob("*.tmp"))
    again = state.read("4242")
    assert again is not None and again.status is Status.PENDING and again.run_dir == "/logs/4242"
    assert state.known_jobs() == ["4242"] and state.read("1") is None


def test_known_jobs_in_numeric_order(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    for job in ("100", "9", "12"):
        state.write(str(tmp_path), JobRecord(job=job, status=Status.PENDING))
    assert state.known_jobs() == ["9", "12", "100"]


def test_a_v0_state_file_on_disk_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    (tmp_path / "state.json").write_text(json.dumps(STOPPED_V0))
    index = tmp_path / "state" / "slurmserve" / "jobs"
    index.mkdir(parents=True)
    (index / "4242.path").write_text(f"{tmp_path / 'state.json'}\n")
    record = state.read("4242")
    assert record is not None and record.endpoint == "http://10.0.0.1:30000"


def test_job_status_round_trip_and_v0_rows():
    row = JobStatus(job="5", slurm_state="RUNNING", status=Status.READY, endpoint="http://h:1",
                    model="m", nodes=("n1", "n2"), healthy=True, run_dir="/r", engine="vllm")
    data = row.to_dict()
    assert data["status"] == "ready" and data["nodes"] == ["n1", "n2"] and data["schema"] == 1
    assert json.loads(json.dumps(data)) == data
    assert JobStatus.from_dict(data) == row
    v0 = {k: v for k, v in data.items() if k != "schema"}
    assert JobStatus.from_dict(v0) == row

def test_a_reader_never_sees_a_known_job_vanish_while_its_record_is_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = JobRecord(job="905", status=Status.PENDING, engine="sglang", model="m",
                       run_dir=str(run_dir))
    state.write(str(run_dir), record)
    done = threading.Event()
    def rewrite():
        for _ in range(2000):
            state.write(str(run_dir), record)
        done.set()
    threading.Thread(target=rewrite).start()
    misses = 0
    while not done.is_set():
        misses += state.find("905") is None
    assert misses == 0
