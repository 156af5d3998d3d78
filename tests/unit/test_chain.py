"""`submit --serve-for`: the chain's record, its scripts, who submits which job when, and the
bad input it refuses, over the fake batch system (the handovers run on the cluster:
tests/cluster/test_chain.py)."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path

import pytest

from slurmserve import api, chain, router, state
from slurmserve.errors import SpecError
from slurmserve.spec import slurm_seconds
from slurmserve.state import Status

IMG = "registry.example/vllm:1"
CHAIN = ["vllm", "org/m", "--image", IMG, "--gpus-per-node", "1"]


def _spec(tmp_path, **fields):
    base = dict(engine="vllm", model="org/m", image=IMG, gpus_per_node=1, name="chat",
                serve_for="2h", time="00:30:00", log_dir=str(tmp_path / "logs"))
    return api.load_spec(**{**base, **fields})


@pytest.mark.parametrize("text,seconds", [
    ("30", 1800), ("5:30", 330), ("01:02:03", 3723), ("2-0", 172800), ("1-02:30", 95400),
    ("1-00:00:10", 86410), ("UNLIMITED", None)])
def test_slurm_times_in_seconds(text, seconds):
    assert slurm_seconds(text) == seconds


def test_hold_retries_cover_the_hold_and_only_the_chain_router_backs_off():
    assert router.hold_retries(60) == 33  # 0.2+0.4+0.8+1.6 s, then 2 s each: >= 60 s
    assert router.hold_retries(0.1) == router.RETRIES
    held = router.RouterPlan.for_job("4242", "10.0.0.1", "prefix", hold_s=60).argv()
    assert held[held.index("--retry-max-retries") + 1] == "33"
    assert held[held.index("--retry-max-backoff-ms") + 1] == "2000"
    own = router.RouterPlan.for_job("4242", "10.0.0.1", "prefix").argv()
    assert own[own.index("--retry-max-retries") + 1] == str(router.RETRIES)
    assert "--retry-initial-backoff-ms" not in own  # a failover retry goes out at once


def test_the_serving_script_hands_over_on_the_time_limit_warning(tmp_path):
    script = api.render_sbatch(_spec(tmp_path, handover="5m"))
    assert "#SBATCH --signal=B:USR1@300\n" in script
    assert "kill -USR1 \"$driver\"" in script
    plain = api.render_sbatch(_spec(tmp_path, serve_for=None, name=None))
    assert "--signal" not in plain and "USR1" not in plain
    for text in (script, plain):
        assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_default_lead_is_a_third_of_the_job_at_most_ten_minutes(tmp_path):
    assert chain.lead_s(_spec(tmp_path, time="00:03:00", serve_for="1h")) == 60
    assert chain.lead_s(_spec(tmp_path, time="04:00:00", serve_for="1d")) == 600
    assert chain.lead_s(_spec(tmp_path, handover="90s")) == 90


def test_submit_starts_the_router_job_then_the_serving_job(batch, tmp_path):
    batch.driver = lambda job: None
    record = api.submit(_spec(tmp_path, router_partition="cpu", router_time="2-00:00:00"))
    sbatches = [c for c in batch.calls if c[0] == "sbatch"]
    assert len(sbatches) == 2
    router_script = Path(sbatches[0][-1]).read_text()
    assert "#SBATCH --partition=cpu\n" in router_script
    assert "#SBATCH --time=2-00:00:00\n" in router_script
    assert "#SBATCH --cpus-per-task=1\n" in router_script
    assert "#SBATCH --signal=B:USR1@600\n" in router_script
    assert "-m slurmserve.lifecycle.router_job" in router_script
    assert subprocess.run(["bash", "-n", sbatches[0][-1]]).returncode == 0
    assert sbatches[1][-1] == record.script
    router_job = record.router["job"]
    assert state.read(router_job).role == chain.ROUTER
    assert record.role is None and record.name == "chat" and record.status is Status.PENDING
    assert state.deployment_jobs("chat") == [router_job, record.job]
    made = chain.load("chat")
    assert made.script == record.script and made.router_script == sbatches[0][-1]
    assert made.job_s == 1800 and made.handover_s == 600 and made.stopping is None
    assert 7190 < made.serve_until - time.time() <= 7200


def test_one_successor_however_many_ask(batch, tmp_path):
    batch.driver = lambda job: None
    first = api.submit(_spec(tmp_path))
    batch.states[first.job] = "RUNNING"
    assert chain.submit_job("chat", chain.SERVE) is None  # the first job still serves
    successor = chain.submit_job("chat", chain.SERVE, besides={first.job})
    assert successor is not None
    assert chain.submit_job("chat", chain.SERVE, besides={first.job}) is None  # already there
    assert chain.active_jobs("chat", chain.SERVE) == [first.job, successor]


def test_replacements_stop_after_max_in_a_row(batch, tmp_path):
    batch.driver = lambda job: None
    first = api.submit(_spec(tmp_path, max_restarts=2))
    batch.states[first.job] = "FAILED"
    for _ in range(2):
        job = chain.submit_job("chat", chain.SERVE, replacing=True)
        assert job is not None
        batch.states[job] = "NODE_FAIL"
    assert chain.submit_job("chat", chain.SERVE, replacing=True) is None
    assert "2 serving jobs in a row ended before they were ready" in chain.load("chat").stopping
    chain.update("chat", stopping=None, replacements=0)  # a job got ready: the count restarts
    assert chain.submit_job("chat", chain.SERVE, replacing=True) is not None


def test_nothing_is_submitted_once_the_deployment_ends(batch, tmp_path):
    batch.driver = lambda job: None
    first = api.submit(_spec(tmp_path))
    batch.states[first.job] = "COMPLETED"
    chain.end("chat", "idle for 60s")
    chain.end("chat", "a later reason")  # the first reason stays
    assert chain.load("chat").stopping == "idle for 60s"
    assert chain.submit_job("chat", chain.SERVE) is None
    chain.update("chat", stopping=None, serve_until=0.0)
    assert chain.submit_job("chat", chain.SERVE) is None  # --serve-for is over


def test_url_is_the_router_jobs_and_stop_ends_the_router_last(batch, tmp_path):
    record = api.submit(_spec(tmp_path))
    router_job = record.router["job"]
    for job in (router_job, record.job):
        api.wait_ready(job, timeout=30)
    on_router = state.read(router_job)
    state.write(on_router.run_dir, dataclasses.replace(on_router, endpoint="http://10.0.0.9:7"))
    assert api.url("chat") == "http://10.0.0.9:7"
    assert api.current_job("chat") == record.job  # logs, test, bench: the serving job
    stopped = api.stop("chat", timeout=10)
    assert stopped.job == record.job and stopped.status is Status.STOPPED
    assert chain.load("chat").stopping == "slurmserve stop"
    assert state.read(router_job).status is Status.STOPPED
    markers = [c for c in batch.calls if c[0] == "squeue"]
    assert markers  # both were asked until they ended
    assert chain.submit_job("chat", chain.SERVE) is None


CHAIN_CASES = [
    ("serve-for-shorter-than-time", ["--name", "c1", "--serve-for", "1m", "--time", "3"],
     ["--serve-for", "60s is shorter than one --time 3 (180s)"]),
    ("handover-longer-than-time",
     ["--name", "c1", "--serve-for", "1h", "--time", "3", "--handover", "5m"],
     ["--handover", "300s is not shorter than --time 3 (180s)"]),
    ("serve-for-without-name", ["--serve-for", "1h", "--time", "3"],
     ["--serve-for", "add --name NAME"]),
    ("serve-for-without-time", ["--name", "c1", "--serve-for", "1h"],
     ["--serve-for", "needs a finite --time"]),
    ("serve-for-unlimited-time", ["--name", "c1", "--serve-for", "1h", "--time", "UNLIMITED"],
     ["--serve-for", "needs a finite --time"]),
    ("handover-without-serve-for", ["--handover", "5m"], ["--handover", "--serve-for"]),
    ("router-time-not-a-time", ["--name", "c1", "--serve-for", "1h", "--time", "3",
                                "--router-time", "soon"], ["--router-time", "not a SLURM time"]),
    ("serve-for-not-a-duration", ["--name", "c1", "--serve-for", "forever", "--time", "3"],
     ["--serve-for", "not a duration"]),
    ("drain-grace-zero", ["--name", "c1", "--serve-for", "1h", "--time", "3",
                          "--drain-grace", "0"], ["--drain-grace", "not a duration"]),
]


@pytest.mark.parametrize("case,argv,words", CHAIN_CASES, ids=[c[0] for c in CHAIN_CASES])
def test_bad_chain_input_exits_2_with_one_line_and_submits_nothing(case, argv, words, batch,
                                                                     run_cli):
    code, out, err = run_cli("submit", *CHAIN, *argv, "--no-wait")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, err)
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not [c for c in batch.calls if c[0] == "sbatch"]


def test_a_name_still_serving_is_refused(batch, run_cli, tmp_path):
    batch.driver = lambda job: None
    api.submit(_spec(tmp_path))
    before = len(batch.calls)
    code, _, err = run_cli("submit", *CHAIN, "--name", "chat", "--serve-for", "2h", "--time",
                           "30", "--no-wait", "--log-dir", str(tmp_path / "logs"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--name: deployment chat is still serving" in err and "slurmserve stop chat" in err
    assert not [c for c in batch.calls[before:] if c[0] == "sbatch"]


@pytest.mark.parametrize("command", [["url"], ["stop"], ["status"], ["logs"]])
def test_an_unknown_name_exits_2_with_one_line(command, batch, run_cli):
    code, _, err = run_cli(*command, "nosuchdeployment")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "nosuchdeployment" in err


def test_run_with_serve_for_outside_a_chain_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with pytest.raises(SpecError, match="serve_for: a chain of jobs is started by `slurmserve "
                                        "submit`"):
        api.run(_spec(tmp_path))
