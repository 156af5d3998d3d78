"""`slurmserve status` with replicas: the tables, --json, --watch; `bench --replica`."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from slurmserve import api, runner, state
from slurmserve.api import JobStatus, ReplicaStatus
from slurmserve.cli import cli, output
from slurmserve.cli.common import Invocation
from slurmserve.client import LocalBackend
from slurmserve.metrics import LiveLoad
from slurmserve.state import JobRecord, NodeRecord, ReplicaRecord, Status
from tests.unit.batch import FakeBatch

ROUTER = {"endpoint": "http://10.77.0.1:20020", "metrics": "http://10.77.0.1:20021/metrics",
          "policy": "cache_aware", "active_workers": 1}
ROWS = [
    JobStatus(job="4242", slurm_state="RUNNING", status=Status.READY,
              endpoint="http://10.77.0.1:20020", model="org/m", nodes=("n1", "n2"), healthy=True,
              run_dir="/r", engine="vllm", router=ROUTER,
              load=LiveLoad(running=3, waiting=0, kv_cache=0.125, gen_tokens_per_s=812.44),
              replicas=(
                  ReplicaStatus(0, ("n1",), "http://10.77.0.2:8000", "ready", healthy=True,
                                load=LiveLoad(3, 0, 0.125, 812.44), requests=120),
                  ReplicaStatus(1, ("n2",), "http://10.77.0.3:8000", "restarting", restarts=1,
                                last_error="exit code 137 on n2", healthy=False))),
    JobStatus(job="12", slurm_state="RUNNING", status=Status.READY,
              endpoint="http://10.77.0.9:8000", model="org/s", nodes=("n9",), healthy=True,
              run_dir="/s", engine="sglang", load=LiveLoad(1, 2, 0.5, 40.0)),
]
JOB_TABLE = [
    "JOB   SLURM    STATUS  HEALTH  ENDPOINT                MODEL  NODES",
    "4242  RUNNING  ready   ok      http://10.77.0.1:20020  org/m  n1,n2",
    "12    RUNNING  ready   ok      http://10.77.0.9:8000   org/s  n9",
]
REPLICAS_4242 = [
    "job 4242 (vllm org/m): ready, 2 replicas behind http://10.77.0.1:20020 (cache_aware, "
    "1/2 in the router), metrics http://10.77.0.1:20021/metrics",
    "REPLICA  NODES  ENDPOINT               STATUS      HEALTH  RESTARTS  RUNNING  WAITING  KV%"
    "   TOK/S",
    "0        n1     http://10.77.0.2:8000  ready       ok      0         3        0        12.5"
    "  812.4",
    "1        n2     http://10.77.0.3:8000  restarting  down    1         -        -        -"
    "     -",
    "  replica 1: exit code 137 on n2",
]
ONE_ROW_12 = [
    "job 12 (sglang org/s): ready",
    "REPLICA  NODES  ENDPOINT               STATUS  HEALTH  RESTARTS  RUNNING  WAITING  KV%   "
    "TOK/S",
    "-        n9     http://10.77.0.9:8000  ready   ok      -         1        2        50.0  "
    "40.0",
]


@pytest.fixture
def rows(monkeypatch):
    asked: list[tuple[object, bool]] = []

    def status(self, jobs, health, timeout=0.0):
        asked.append((jobs, health))
        return ROWS

    monkeypatch.setattr(LocalBackend, "status", status)
    return asked


def invoke(*argv: str):
    return CliRunner().invoke(cli, list(argv), obj=Invocation(tuple(argv), ()))


def test_status_prints_a_replica_table_after_the_job_table(rows) -> None:
    result = invoke("status", "4242", "12")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [*JOB_TABLE, "", *REPLICAS_4242]
    assert rows == [(["4242", "12"], True)]


def test_status_json_has_replicas_as_a_list_of_objects(rows) -> None:
    result = invoke("status", "--json", "--no-health")
    data = json.loads(result.output)
    assert rows == [(None, False)]
    assert [r["index"] for r in data[0]["replicas"]] == [0, 1]
    assert data[0]["replicas"][0] == {
        "index": 0, "nodes": ["n1"], "endpoint": "http://10.77.0.2:8000", "status": "ready",
        "restarts": 0, "last_error": None, "healthy": True, "requests": 120, "running": 3,
        "waiting": 0, "kv_cache": 0.125, "gen_tokens_per_s": 812.44}
    assert data[0]["router"] == ROUTER and data[1]["replicas"] == [] and data[1]["router"] == {}
    assert data[1]["load"] == {"running": 1, "waiting": 2, "kv_cache": 0.5,
                               "gen_tokens_per_s": 40.0}


def _stop_after(monkeypatch, refreshes: int) -> list[float]:
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) >= refreshes:
            raise KeyboardInterrupt

    monkeypatch.setattr("slurmserve.client.time.sleep", sleep)
    return slept


def test_watch_redraws_until_ctrl_c_and_exits_0(rows, monkeypatch) -> None:
    slept = _stop_after(monkeypatch, 3)
    result = invoke("status", "--watch", "--interval", "7")
    assert result.exit_code == 0 and "Aborted" not in result.output
    assert slept == [7.0, 7.0, 7.0] and len(rows) == 3
    # Not a terminal: each refresh after a blank line.
    frames = re.split(r"\n\n(?=\d\d:\d\d:\d\d every)", result.output)
    assert len(frames) == 3 and output.CLEAR not in result.output
    for frame in frames:
        header, *sections = frame.strip("\n").split("\n\n")
        assert re.fullmatch(r"\d\d:\d\d:\d\d every 7s, Ctrl\+C ends", header)
        assert sections == ["\n".join(REPLICAS_4242), "\n".join(ONE_ROW_12)]


def test_watch_json_prints_one_line_per_refresh(rows, monkeypatch) -> None:
    _stop_after(monkeypatch, 2)
    result = invoke("status", "-w", "--json", "--no-health")
    lines = result.output.splitlines()
    assert result.exit_code == 0 and len(lines) == 2
    assert [[r["job"] for r in json.loads(line)] for line in lines] == [["4242", "12"]] * 2


def test_watch_on_a_terminal_clears_and_redraws(capsys) -> None:
    output.watch_frame(ROWS[1:], 3, 2.0, as_json=False, tty=True)
    out = capsys.readouterr().out
    assert out.startswith(output.CLEAR) and not out.startswith(output.CLEAR + "\n")
    assert out.splitlines()[-3:] == ONE_ROW_12
    output.watch_frame([], 0, 2.0, as_json=False, tty=False)
    assert capsys.readouterr().out.splitlines()[1:] == ["no slurmserve jobs known here"]


def test_a_bad_interval_is_one_line_naming_it(rows) -> None:
    result = invoke("status", "--watch", "--interval", "0")
    assert result.exit_code == 2 and "--interval" in result.output


# ---- bench --replica ---------------------------------------------------------------------------

@pytest.fixture
def replica_job(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake = FakeBatch()
    fake.states["4242"] = "RUNNING"
    run_dir = tmp_path / "4242"
    run_dir.mkdir()
    record = JobRecord(
        job="4242", status=Status.READY, engine="vllm", model="org/m", run_dir=str(run_dir),
        image="registry.example/vllm:1", endpoint="http://127.0.0.1:9",
        nodes=(NodeRecord(0, "n1"), NodeRecord(1, "n2")),
        replicas=(ReplicaRecord(0, ("n1",), "http://127.0.0.1:10", "ready"),
                  ReplicaRecord(1, ("n2",), "http://127.0.0.1:11", "ready")),
        router={"endpoint": "http://127.0.0.1:9"})
    state.write(str(run_dir), record)
    with runner.use(fake):
        yield fake, state.read("4242")


def test_bench_replica_targets_its_endpoint_from_its_node(replica_job, tmp_path) -> None:
    fake, record = replica_job
    options = api.BenchOptions(suites="latency", tiny=True, replica=1)
    run = api.bench(options, record.endpoint, job=record, out=str(tmp_path / "bench"))
    [srun] = [call for call in fake.calls if call[0] == "srun"]
    assert "--nodelist=n2" in srun and "http://127.0.0.1:11" in " ".join(srun)
    assert run.failures == 1  # the fake has no client
    argv = options.to_argv()
    assert argv[argv.index("--replica") + 1] == "1"


def test_bench_without_such_a_replica_is_one_line_exit_2(replica_job) -> None:
    result = invoke("bench", "--job", "4242", "--replica", "5", "--tiny")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "slurmserve: error: --replica: job 4242 has no replica 5; give one of 0, 1 (see "
        "`slurmserve status 4242`)"]
    result = invoke("bench", "--url", "http://127.0.0.1:9", "--replica", "0", "--engine", "vllm",
                    "--image", "x:1", "--model", "m")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "slurmserve: error: --replica: picks a replica of a job; give --job JOB with it"]
