"""The remote wire, end to end in-process: RemoteBackend -> remote.commands -> a fake SSH
session that runs the login host's side (`slurmserve.remote.agent`, and the CLI for logs)
here, over the fake batch system. A change on either side that breaks the other fails here."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence

import pytest

from slurmserve import runner
from slurmserve.cli import main as cli_main
from slurmserve.client import Cluster, RemoteBackend
from slurmserve.remote import agent, commands, wire
from slurmserve.remote.config import Destination, Hop
from slurmserve.remote.errors import RemoteCommandError, RemoteError
from slurmserve.remote.session import Result
from slurmserve.state import JobRecord, RecordError, Status
from tests.unit.batch import FakeBatch, playing_driver

IMG = "registry.example/vllm:1"
LAPTOP_ONLY = "SERVE_KEY"  # a variable of the workstation: the login host has it only if sent


class FakeSession:
    """A login host in this process: argv after `PYTHON -m` runs the agent or the CLI."""

    def __init__(self) -> None:
        self.dest = Destination("hpc", (Hop("login", "login", 22, "me"),), python=sys.executable)
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    @property
    def label(self) -> str:
        return self.dest.label

    def run(self, argv: Sequence[str], *, stdin: bytes = b"",
            env: Mapping[str, str] | None = None, timeout: float | None = 300.0) -> Result:
        argv = list(argv)
        assert argv[:5] == ["env", "-u", "SLURMSERVE_REMOTE", sys.executable, "-m"]
        module, args = argv[5], argv[6:]
        self.calls.append((argv, dict(env or {})))
        out, err = io.StringIO(), io.StringIO()
        saved = dict(os.environ)
        os.environ.pop(LAPTOP_ONLY, None)
        os.environ.update(env or {})
        stdin_was = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                if module == commands.AGENT:
                    code = agent.main(args)
                else:
                    assert module == "slurmserve"
                    try:
                        cli_main(args)
                        code = 0
                    except SystemExit as exc:
                        code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdin = stdin_was
            os.environ.clear()
            os.environ.update(saved)
        return Result(code, out.getvalue(), err.getvalue())

    def stream(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
               on_stderr: Callable[[bytes], None] | None = None,
               on_exit: Callable[[int, str], None] | None = None) -> Iterator[str]:
        result = self.run(argv, env=env)
        if on_stderr and result.err:
            on_stderr(result.err.encode())
        yield from result.out.splitlines()
        if on_exit:
            on_exit(result.code, result.err)

    def close(self) -> None:
        pass


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv(LAPTOP_ONLY, "sk-from-the-laptop-123")
    batch = FakeBatch()
    batch.driver = playing_driver(batch)
    session = FakeSession()
    with runner.use(batch), Cluster(RemoteBackend(session)) as c:  # type: ignore[arg-type]
        yield c, session


def test_submit_wait_status_info_logs_stop_speak_records(cluster, tmp_path):
    c, session = cluster
    progress: list[str] = []
    job = c.submit(engine="vllm", model="org/m", image=IMG, gpus_per_node=1,
                   log_dir=str(tmp_path / "logs"), api_key=f"env:{LAPTOP_ONLY}",
                   on_progress=progress.append)
    assert job.id == "4242" and progress[-1] == "job 4242: running, ready"
    assert isinstance(job.record, JobRecord) and job.record.status is Status.READY
    assert job.endpoint == "http://127.0.0.1:9" and job.model == "org/m"
    submit_argv, submit_env = session.calls[0]
    assert submit_argv[5:7] == [commands.AGENT, "submit"]
    assert submit_env == {LAPTOP_ONLY: "sk-from-the-laptop-123"}  # sent on stdin, not argv
    assert "sk-from-the-laptop" not in " ".join(submit_argv)

    [row] = c.status(["4242"], health=False)
    assert (row.slurm_state, row.status, row.nodes) == ("RUNNING", Status.READY, ("n1",))
    info = job.info()
    assert info.nodes[0].log and info.nodes[0].host == "n1" and info.run_dir == job.run_dir
    assert list(job.logs(node="0")) == ["STAND-IN serving"]
    assert job.stop() == {**job.cluster.backend.info("4242").to_dict()}
    assert c.job("4242").info().status is Status.STOPPED


def test_login_host_errors_come_back_as_one_line_with_their_exit_code(cluster):
    c, _ = cluster
    with pytest.raises(RemoteCommandError) as err:
        c.job("999").info()
    assert str(err.value).startswith("hpc: --job: no slurmserve job 999 is known here")
    assert err.value.exit_code == 2
    with pytest.raises(RemoteCommandError, match="hpc: JOB: no slurmserve job 999"):
        list(c.job("999").logs(node="x"))


def test_the_wire_tags_each_line_with_its_record_type():
    record = JobRecord(job="1", status=Status.READY, endpoint="http://h:1")
    line = wire.encode(record)
    assert line.startswith('{"data": {') and '"type": "JobRecord"' in line
    assert wire.decode(line) == record
    assert wire.decode(wire.encode(wire.Progress("job 1: running, ready"))) == wire.Progress(
        "job 1: running, ready")
    with pytest.raises(RecordError, match="not a slurmserve record: 'READY http"):
        wire.decode("READY http://h:1 model=m job=1")


def test_an_old_or_missing_slurmserve_on_the_login_host():
    host = FakeSession()
    with pytest.raises(RemoteError, match="not installed on hpc for"):
        commands.check(host, ["status"], 1, "python: Error while finding module specification "
                       "for 'slurmserve.remote.agent' (ModuleNotFoundError: No module named "
                       "'slurmserve')")
    with pytest.raises(RemoteError, match="too old for remote mode .*slurmserve.remote.agent"):
        commands.check(host, ["status"], 1, "python: No module named slurmserve.remote.agent")
    with pytest.raises(RemoteError, match="too old"):
        commands.check(host, ["status"], 1, "python: Error while finding module specification "
                       "for 'slurmserve.remote.agent' (ModuleNotFoundError: __path__ attribute "
                       "not found on 'slurmserve.remote' while trying to find "
                       "'slurmserve.remote.agent')")


def test_without_paramiko_remote_mode_names_the_extra(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURMSERVE_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("SLURMSERVE_SSH_CONFIG", str(tmp_path / "no_ssh_config"))
    monkeypatch.setitem(sys.modules, "paramiko", None)
    code, out, err = run_cli("status", "--remote", "me@login.example.org")
    assert code == 1 and not out
    assert err == ("slurmserve: error: remote mode needs paramiko, which is not installed: "
                   "pip install 'slurmserve[remote]'\n")


def test_the_cli_prints_what_the_cluster_tests_read(cluster, run_cli, tmp_path, monkeypatch):
    import json

    c, _ = cluster
    monkeypatch.setattr(Cluster, "connect", classmethod(lambda cls, remote, **kw: c))
    monkeypatch.setattr(c, "close", lambda: None)  # the fixture closes it
    code, out, err = run_cli("submit", "vllm", "org/m", "--image", IMG, "--gpus-per-node", "1",
                             "--log-dir", str(tmp_path / "logs"), "--remote", "hpc", "--json")
    assert code == 0, err
    info = json.loads(out.strip().splitlines()[-1])
    assert info == {"job": "4242", "run_dir": str(tmp_path / "logs" / "4242"),
                    "endpoint": "http://127.0.0.1:9", "model": "org/m", "status": "ready"}
    code, out, err = run_cli("status", "4242", "--json", "--no-health", "--remote", "hpc")
    [row] = json.loads(out)
    assert (row["slurm_state"], row["status"], row["nodes"]) == ("RUNNING", "ready", ["n1"])
    code, out, err = run_cli("wait", "4242", "--json", "--remote", "hpc")
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0] == {"progress": "job 4242: running, ready"}
    assert lines[-1]["ready"]["endpoint"] == "http://127.0.0.1:9"
    code, out, err = run_cli("logs", "4242", "--node", "0", "--remote", "hpc")
    assert out == "STAND-IN serving\n"
    code, out, err = run_cli("stop", "4242", "--json", "--remote", "hpc")
    assert code == 0 and json.loads(out)["status"] == "stopped"
    code, out, err = run_cli("stop", "4242", "--remote", "hpc")
    assert out == f"job 4242: stopped; logs in {tmp_path / 'logs' / '4242'}\n"
