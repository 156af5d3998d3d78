"""api.status for `--replicas N` jobs: their records, probed live (/health, load, the router's
counts) from local HTTP servers, through JSON and the remote wire unchanged."""

from __future__ import annotations

import json
import time

import pytest

from slurmserve import api, runner, state
from slurmserve.api import JobStatus, ReplicaStatus
from slurmserve.errors import SpecError
from slurmserve.metrics import LiveLoad
from slurmserve.remote import commands, wire
from slurmserve.state import JobRecord, NodeRecord, ReplicaRecord, Status
from tests.unit.batch import FakeBatch
from tests.unit.helpers import DATA
from tests.unit.httpstub import Stub, closed_url, counting, serving

VLLM = (DATA / "metrics" / "vllm-0.8.txt").read_text().replace("300.0", "TOKENS")


@pytest.fixture
def batch(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("JOB_KEY", "sk-job")
    fake = FakeBatch()
    with runner.use(fake):
        yield fake


@pytest.fixture
def replicas():
    """Replica 0 serves, 1 answers metrics but not /health, 2 is gone; the router counts."""
    engines = [Stub({"/health": "", "/metrics": counting(VLLM, step=100)}),
               Stub({"/metrics": VLLM.replace("TOKENS", "5")})]
    gone = closed_url()
    router_text = (f'vllm_router_active_workers 2\n'
                   f'vllm_router_processed_requests_total{{worker="{engines[0].url}"}} 120\n'
                   f'vllm_router_processed_requests_total{{worker="{engines[1].url}/"}} 80\n')
    router = Stub({"/health": "", "/metrics": router_text})
    with serving(*engines, router):
        yield engines, gone, router


def job(tmp_path, batch: FakeBatch, job_id: str, endpoint: str, **fields) -> JobRecord:
    run_dir = tmp_path / job_id
    run_dir.mkdir()
    record = JobRecord(job=job_id, status=Status.READY, engine="vllm", model="org/m",
                       run_dir=str(run_dir), endpoint=endpoint, api_key="env:JOB_KEY",
                       nodes=(NodeRecord(rank=0, host="n1"),), **fields)
    state.write(str(run_dir), record)
    batch.states[job_id] = "RUNNING"
    return record


def replica_job(tmp_path, batch, engines, gone, router, job_id="4242") -> JobRecord:
    return job(tmp_path, batch, job_id, router.url, replicas=(
        ReplicaRecord(0, ("n1",), engines[0].url, "ready"),
        ReplicaRecord(1, ("n2",), engines[1].url, "ready", restarts=1),
        ReplicaRecord(2, ("n3",), gone, "restarting", restarts=2,
                      last_error="exit code 137 on n3")),
        router={"endpoint": router.url, "metrics": f"{router.url}/metrics",
                "policy": "cache_aware", "log": "/logs/router.log"})


def test_a_running_replica_job_is_probed_live(tmp_path, batch, replicas) -> None:
    engines, gone, router = replicas
    replica_job(tmp_path, batch, engines, gone, router)
    started = time.monotonic()
    [row] = api.status(["4242"])
    assert time.monotonic() - started < 2.0
    assert row.healthy is True
    r0, r1, r2 = row.replicas
    assert (r0.index, r0.nodes, r0.status, r0.healthy, r0.requests) == (0, ("n1",), "ready",
                                                                         True, 120)
    assert r0.load is not None and (r0.load.running, r0.load.waiting, r0.load.kv_cache) == (
        4, 7, 0.5)
    assert r0.load.gen_tokens_per_s is not None and r0.load.gen_tokens_per_s > 50
    assert (r1.healthy, r1.requests, r1.restarts) == (False, 80, 1)
    assert r1.load is not None and r1.load.gen_tokens_per_s == 0.0  # its counter stands still
    assert (r2.healthy, r2.load, r2.requests, r2.last_error) == (False, None, None,
                                                                 "exit code 137 on n3")
    assert row.load == LiveLoad(running=8, waiting=14, kv_cache=0.5,
                                gen_tokens_per_s=r0.load.gen_tokens_per_s)
    assert row.router == {"endpoint": router.url, "metrics": f"{router.url}/metrics",
                          "policy": "cache_aware", "active_workers": 2}
    assert {auth for _, auth in engines[0].seen} == {"Bearer sk-job"}  # the job's own key
    assert engines[0].paths().count("/metrics") == 2  # two readings for tokens/s


def test_without_health_or_while_not_running_nothing_is_probed(tmp_path, batch, replicas
                                                               ) -> None:
    engines, gone, router = replicas
    replica_job(tmp_path, batch, engines, gone, router)
    [row] = api.status(["4242"], check_health=False)
    assert [(r.index, r.healthy, r.load) for r in row.replicas] == [(0, None, None),
                                                                   (1, None, None),
                                                                   (2, None, None)]
    assert row.router == {"endpoint": router.url, "metrics": f"{router.url}/metrics",
                          "policy": "cache_aware"}
    batch.states["4242"] = "PENDING"
    [row] = api.status(["4242"])
    assert row.healthy is None and row.load is None
    assert engines[0].seen == engines[1].seen == router.seen == []


def test_a_job_without_replicas_gets_its_own_load(tmp_path, batch, replicas) -> None:
    engines, _, _ = replicas
    job(tmp_path, batch, "12", engines[0].url)
    [row] = api.status(["12"])
    assert row.replicas == () and row.router == {} and row.healthy is True
    assert row.load is not None and row.load.running == 4
    data = row.to_dict()
    assert data["replicas"] == [] and data["router"] == {} and data["load"]["running"] == 4


def test_status_rows_round_trip_through_json_and_the_remote_wire(tmp_path, batch, replicas
                                                                 ) -> None:
    engines, gone, router = replicas
    replica_job(tmp_path, batch, engines, gone, router)
    [row] = api.status(["4242"])
    data = json.loads(json.dumps(row.to_dict()))
    assert [r["index"] for r in data["replicas"]] == [0, 1, 2]
    assert set(data["replicas"][0]) == {
        "index", "nodes", "endpoint", "status", "restarts", "last_error", "healthy", "requests",
        "running", "waiting", "kv_cache", "gen_tokens_per_s"}
    assert data["replicas"][2]["running"] is None and data["replicas"][0]["nodes"] == ["n1"]
    assert data["router"]["metrics"] == f"{router.url}/metrics"
    assert JobStatus.from_dict(data) == row
    assert wire.decode(wire.encode(row)) == row
    old = {k: v for k, v in data.items() if k not in ("replicas", "router", "load")}
    assert JobStatus.from_dict(old).replicas == ()  # a row from a slurmserve without replicas
    assert ReplicaStatus.from_dict({"index": 0, "nodes": [], "endpoint": None,
                                    "status": "starting"}).load is None


def test_remote_status_carries_the_replicas(tmp_path, batch, replicas) -> None:
    from tests.unit.remote.test_contract import FakeSession

    engines, gone, router = replicas
    replica_job(tmp_path, batch, engines, gone, router)
    [local] = api.status(["4242"], check_health=False)
    [remote] = commands.status(FakeSession(), ["4242"], health=False)  # type: ignore[arg-type]
    assert remote == local and len(remote.replicas) == 3
    [live] = commands.status(FakeSession(), ["4242"], health=True)  # type: ignore[arg-type]
    assert live.replicas[0].healthy is True and live.replicas[0].requests == 120


def test_replica_record_names_the_flag_and_the_fix(tmp_path, batch, replicas) -> None:
    engines, gone, router = replicas
    record = replica_job(tmp_path, batch, engines, gone, router)
    assert api.replica_record(record, 1).endpoint == engines[1].url
    with pytest.raises(SpecError, match=r"--replica: job 4242 has no replica 7; give one "
                                            r"of 0, 1, 2 \(see `slurmserve status 4242`\)"):
        api.replica_record(record, 7)
    plain = job(tmp_path, batch, "12", engines[0].url)
    with pytest.raises(SpecError, match="--replica: job 12 has no replicas .*drop --replica"):
        api.replica_record(plain, 0)
    starting = job(tmp_path, batch, "13", router.url,
                   replicas=(ReplicaRecord(0, ("n1",), None, "starting"),))
    with pytest.raises(SpecError, match="replica 0 of job 13 has no endpoint yet "
                                            r"\(starting\)"):
        api.replica_record(starting, 0)
