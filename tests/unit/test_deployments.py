"""Named deployments (`--name`): which jobs a name means, which one serves it now, and the
commands that take a name (`url`, `status`, `logs`, `stop`), over the fake batch system."""

from __future__ import annotations

import pytest

from slurmserve import api, state
from slurmserve.cli import main
from slurmserve.errors import LaunchError, SpecError
from slurmserve.state import Status

IMG = "registry.example/vllm:1"


def _submit(tmp_path, **fields):
    spec = api.load_spec(engine="vllm", model="org/m", image=IMG, gpus_per_node=1,
                         log_dir=str(tmp_path / "logs"), **fields)
    return api.submit(spec)


def test_a_name_means_its_jobs_in_order_and_a_job_id_itself(batch, tmp_path):
    first = _submit(tmp_path, name="chat")
    _submit(tmp_path)  # unnamed: not part of it
    second = _submit(tmp_path, name="chat")
    assert state.deployment_jobs("chat") == [first.job, second.job]
    assert api.jobs_of("chat") == [first.job, second.job]
    assert api.jobs_of(first.job) == [first.job]
    assert state.read(second.job).name == "chat"
    with pytest.raises(SpecError, match="JOB: no slurmserve deployment or job 'nope' is known"):
        api.jobs_of("nope")


def test_the_serving_job_answers_for_the_name(batch, tmp_path):
    old = _submit(tmp_path, name="chat")
    api.wait_ready(old.job, timeout=30)
    new = _submit(tmp_path, name="chat")  # queued: the old one still serves
    assert api.current_job("chat") == old.job
    assert api.url("chat") == "http://127.0.0.1:9"
    api.wait_ready(new.job, timeout=30)
    assert api.current_job("chat") == new.job  # the newest serving one
    assert api.job_record("chat").job == new.job
    assert [r.job for r in api.status(["chat"], check_health=False)] == [old.job, new.job]


def test_a_name_with_nothing_serving_has_no_url(batch, tmp_path):
    job = _submit(tmp_path, name="chat")
    batch.states[job.job] = "PENDING"
    batch.driver = lambda j: None
    with pytest.raises(LaunchError, match=rf"chat is not serving now \(job {job.job}: SLURM "
                                          "PENDING, pending\\)"):
        api.url("chat")


def test_stop_by_name_stops_every_job_of_it(batch, tmp_path):
    jobs = [_submit(tmp_path, name="chat").job for _ in range(2)]
    for job in jobs:
        api.wait_ready(job, timeout=30)
    final = api.stop("chat", timeout=10)
    assert final.job == jobs[-1] and final.status is Status.STOPPED
    assert all(state.read(j).status is Status.STOPPED for j in jobs)
    assert all(batch.states[j] == "COMPLETED" for j in jobs)


def test_url_command_prints_the_endpoint_and_an_unknown_name_exits_2(batch, tmp_path, capsys):
    job = _submit(tmp_path, name="chat")
    api.wait_ready(job.job, timeout=30)
    with pytest.raises(SystemExit) as done:
        main(["url", "chat"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == "http://127.0.0.1:9"
    with pytest.raises(SystemExit) as done:
        main(["url", "other"])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deployment or job 'other'" in err[0]


@pytest.mark.parametrize("bad", ["123", "chat bot", "-x", "a/b", "x" * 64])
def test_a_name_is_never_a_job_id_nor_a_path(bad):
    with pytest.raises(SpecError, match="--name"):
        api.load_spec(engine="vllm", model="m", image=IMG, name=bad)


class RowsBackend:
    """A backend whose `status` answers from a script of rows."""

    label = "fake"

    def __init__(self) -> None:
        self.rows: list = []

    def status(self, jobs, health, timeout=0.0):
        return list(self.rows)


def _row(job: str, endpoint: str, slurm_state: str = "RUNNING", status: Status = Status.READY):
    return api.JobStatus(job=job, slurm_state=slurm_state, status=status, endpoint=endpoint,
                         model="m", nodes=("n1",), healthy=None, run_dir=None)


class StubTunnel:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def retarget(self, host: str, port: int) -> None:
        self.host, self.port = host, port


def test_a_deployments_tunnel_moves_to_the_job_serving_it_and_ends_with_it() -> None:
    from slurmserve.client import Cluster, Deployment, is_deployment_name

    backend = RowsBackend()
    deployment = Deployment(Cluster(backend), "chat")  # type: ignore[arg-type]
    deployment._tunnel = StubTunnel("10.77.0.1", 30000)  # type: ignore[assignment]
    events: list[str] = []
    backend.rows = [_row("7", "http://10.77.0.1:30000")]
    assert deployment._retarget(events.append) is None and not events
    backend.rows.append(_row("8", "http://10.77.0.2:30000", status=Status.STARTING))
    deployment._retarget(events.append)
    assert (deployment._tunnel.host, deployment._tunnel.port) == ("10.77.0.1", 30000)
    backend.rows[1] = _row("8", "http://10.77.0.2:30000")  # the successor serves
    assert deployment._retarget(events.append) is None
    assert (deployment._tunnel.host, deployment._tunnel.port) == ("10.77.0.2", 30000)
    assert events == ["chat is served by http://10.77.0.2:30000 now; new connections go there"]
    backend.rows = [_row("7", "http://10.77.0.1:30000", "COMPLETED", Status.STOPPED),
                    _row("8", "http://10.77.0.2:30000", "COMPLETED", Status.STOPPED)]
    assert "deployment chat ended: job 7 COMPLETED stopped" in deployment._retarget(None)
    assert is_deployment_name("chat") and not is_deployment_name("4242")
