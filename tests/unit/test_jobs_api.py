"""The job API (submit, wait_ready, status, logs, stop, bench, the salloc re-exec) over a fake
batch system behind the runner seam: no SLURM, no root."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from slurmserve import api, state
from slurmserve.cli import main
from slurmserve.errors import LaunchError, SpecError
from slurmserve.state import Status
from tests.unit.batch import Replaced, serve

IMG = "registry.example/vllm:1"


def _spec(tmp_path, **fields):
    return api.load_spec(engine="vllm", model="org/m", image=IMG, gpus_per_node=1,
                         log_dir=str(tmp_path / "logs"), **fields)


def test_submit_wait_status_logs_stop(batch, tmp_path):
    record = api.submit(_spec(tmp_path))
    assert (record.job, record.status, record.engine) == ("4242", Status.PENDING, "vllm")
    assert batch.calls[0][:2] == ["sbatch", "--parsable"]
    assert record.script and Path(record.script).read_text().startswith("#!")
    assert state.read("4242") == record

    progress: list[str] = []
    ready = api.wait_ready("4242", timeout=30, on_progress=progress.append)
    assert ready.status is Status.READY and ready.endpoint == "http://127.0.0.1:9"
    assert progress[-1] == "job 4242: running, ready"

    [row] = api.status(check_health=False)
    assert (row.job, row.slurm_state, row.status, row.nodes) == ("4242", "RUNNING", Status.READY,
                                                                 ("n1",))
    assert list(api.logs("4242", node="0")) == ["STAND-IN serving"]
    with pytest.raises(SpecError, match="--node: job 4242 has no node 'n9'"):
        api.logs("4242", node="n9")

    final = api.stop("4242", timeout=10)
    assert final.status is Status.STOPPED and final.cleanup_removed == 0
    assert not any(call[0] == "scancel" for call in batch.calls)  # the driver stopped it
    [row] = api.status(["4242"], check_health=False)
    assert (row.slurm_state, row.status) == ("COMPLETED", Status.STOPPED)


def test_a_job_gone_without_a_final_record_has_ended(batch, tmp_path):
    record = api.submit(_spec(tmp_path))
    batch.driver = lambda job: None
    batch.states[record.job] = "CANCELLED"
    [row] = api.status(check_health=False)
    assert row.status is Status.ENDED
    with pytest.raises(LaunchError, match="job 4242 ended before it was ready \\(CANCELLED, "
                                          "pending\\)"):
        api.wait_ready(record.job, timeout=5)
    assert api.stop(record.job).status is Status.PENDING  # nothing left to stop


def test_a_pending_job_is_cancelled_by_slurm(batch, tmp_path):
    record = api.submit(_spec(tmp_path))
    batch.driver = lambda job: None  # never starts
    api.stop(record.job, timeout=5)
    assert ["scancel", "--signal=TERM", "--full", record.job] in batch.calls


def test_unknown_jobs_name_the_field(batch):
    with pytest.raises(SpecError, match="JOB: no slurmserve job 77 is known here"):
        api.status(["77"])
    with pytest.raises(SpecError, match="--job: no slurmserve job 77"):
        api.job_record("77", field="--job")


def test_bench_runs_beside_the_server_with_the_jobs_engine_and_image(batch, tmp_path):
    record = api.submit(_spec(tmp_path))
    ready = dataclasses.replace(serve(record), image="registry.example/vllm:1")
    options = api.BenchOptions(suites="latency", tiny=True)
    run = api.bench(options, ready.endpoint or "", job=ready, out=str(tmp_path / "bench"))
    assert (run.engine, run.model, run.failures) == ("vllm", "org/m", 1)  # the fake has no client
    [srun] = [call for call in batch.calls if call[0] == "srun"]
    assert "--nodelist=n1" in srun and "registry.example/vllm:1" in srun
    with pytest.raises(SpecError, match="--engine/--image: unknown for a bare --url"):
        api.bench(options, "http://127.0.0.1:9")


def test_bench_options_become_the_same_flags():
    from slurmserve.cli.tools import bench

    options = api.BenchOptions(suites="latency,sharegpt", model="m", engine="sglang",
                               image="/x.tar", tokenizer="t", dataset="/d.json",
                               slo_ttft_ms=200.0, slo_tpot_ms=20.5, tiny=True, as_json=True,
                               replica=1)
    ctx = bench.make_context("bench", [*options.to_argv(), "--url", "http://h:1"])
    parsed = api.BenchOptions(**{f.name: ctx.params[f.name]
                                 for f in dataclasses.fields(api.BenchOptions)})
    assert parsed == options
    assert api.BenchOptions().to_argv() == ["--type", "latency,concurrency"]


def test_ensure_allocation_reexecs_under_salloc_with_the_given_argv(batch):
    api.ensure_allocation(2, ["doctor"], env={"SLURM_JOB_ID": "1"})  # inside: returns
    with pytest.raises(Replaced) as err:
        api.ensure_allocation(2, ["doctor", "vllm"], env={})
    assert err.value.argv == ["salloc", "--nodes=2", "--quiet", sys.executable, "-m",
                              "slurmserve", "doctor", "vllm"]


def test_doctor_outside_an_allocation_reruns_main_s_own_argv(batch, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    argv = ["doctor", "vllm", "org/m", "--image", IMG, "--nodes", "2", "--",
            "--max-model-len", "4096"]
    monkeypatch.setattr(sys, "argv", ["slurmserve", "status"])  # not what main() was given
    with pytest.raises(Replaced) as err:
        main(argv)
    assert err.value.argv == ["salloc", "--nodes=2", "--quiet", sys.executable, "-m",
                              "slurmserve", *argv]


def test_engine_facts_come_from_the_engines():
    facts = {e.name: e for e in api.engine_facts()}
    assert set(facts) == {"vllm", "sglang", "trtllm"}
    assert "ray" in facts["vllm"].modes and facts["sglang"].default_port == 30000


def test_cli_help_names_engine_facts_from_the_registry(run_cli):
    code, out, _ = run_cli("render", "--help")
    assert code == 0
    text = " ".join(out.split())
    for fact in api.engine_facts():
        assert f"{fact.name}: {'|'.join(fact.modes)}" in text
        assert f"{fact.name} {fact.default_port}" in text
    assert "vLLM and SGLang only" not in text
