"""What the CLI prints for jobs: the shapes users and the cluster tests read."""

from __future__ import annotations

from slurmserve.api import JobStatus
from slurmserve.cli import output
from slurmserve.state import JobRecord, Status


def _row(job: str, healthy: bool | None, **kw: object) -> JobStatus:
    base = dict(job=job, slurm_state="RUNNING", status=Status.READY, endpoint="http://10.0.0.1:8000",
                model="org/m", nodes=("n1", "n2"), healthy=healthy, run_dir="/r")
    return JobStatus(**{**base, **kw})  # type: ignore[arg-type]


def test_status_table(capsys):
    output.status_table([_row("12", True), _row("1234", None, slurm_state="PENDING",
                                                status=Status.PENDING, endpoint=None, nodes=())])
    assert capsys.readouterr().out.splitlines() == [
        "JOB   SLURM    STATUS   HEALTH  ENDPOINT              MODEL  NODES",
        "12    RUNNING  ready    ok      http://10.0.0.1:8000  org/m  n1,n2",
        "1234  PENDING  pending  -       -                     org/m  -",
    ]
    output.status_table([])
    assert capsys.readouterr().out == "no slurmserve jobs known here\n"


def test_ready_and_stopped_lines(capsys):
    output.ready("http://10.0.0.1:8000", "org/m", "12", None)
    output.ready("http://10.0.0.1:8000", "org/m", "12", "hpc")
    output.stopped("12", JobRecord(job="12", status=Status.STOPPED, run_dir="/r",
                                   cleanup_removed=2))
    output.stopped("12", JobRecord(job="12", status=Status.FAILED, run_dir="/r",
                                   cleanup_removed=0))
    assert capsys.readouterr().out.splitlines() == [
        "READY http://10.0.0.1:8000 model=org/m job=12",
        "  OPENAI_BASE_URL=http://10.0.0.1:8000/v1",
        "READY http://10.0.0.1:8000 model=org/m job=12",
        "  from here: slurmserve tunnel 12 --remote hpc",
        "job 12: stopped; final cleanup removed 2 container(s); logs in /r",
        "job 12: failed; logs in /r",
    ]


def test_remote_stderr_drops_the_error_line_it_re_raises(capsys):
    output.remote_stderr(b"[####] 1/2 latency-in128 ok\nslurmserve: error: boom\n")
    assert capsys.readouterr().err == "[####] 1/2 latency-in128 ok\n"
