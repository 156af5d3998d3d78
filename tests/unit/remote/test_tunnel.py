"""The tunnel without SSH: a fake session whose forwards are plain TCP connections, and
`supervise` over a connection that drops and comes back."""

from __future__ import annotations

import socket
import threading

import pytest

from slurmserve.errors import SpecError
from slurmserve.remote.errors import HostKeyError, RemoteError
from slurmserve.remote.tunnel import Tunnel, free_port, supervise


class Echo:
    """A TCP server on loopback that sends back what it gets, upper-cased."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data.upper())


class FakeSession:
    """Forwards are direct TCP connections; `alive` follows a script of True/False."""

    label = "hpc"

    def __init__(self, alive: list[bool] | None = None, fail_ensure: int = 0) -> None:
        self.script = list(alive or [])
        self.fail_ensure = fail_ensure
        self.resets = 0

    def open_forward(self, host: str, port: int, origin: tuple[str, int] = ("127.0.0.1", 0),
                     retry_for: float = 0.0) -> socket.socket:
        if port == 1:
            raise RemoteError("hpc cannot open a connection to 127.0.0.1:1")
        return socket.create_connection((host, port))

    def alive(self) -> bool:
        return self.script.pop(0) if self.script else True

    def ensure(self, retry_for: float = 0.0) -> None:
        if self.fail_ensure:
            self.fail_ensure -= 1
            raise RemoteError("no route to hpc")

    def reset(self) -> None:
        self.resets += 1


def _roundtrip(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(data)
        return conn.recv(65536)


def test_a_local_port_reaches_the_endpoint_through_the_session():
    echo = Echo()
    with Tunnel(FakeSession(), "127.0.0.1", echo.port) as tun:  # type: ignore[arg-type]
        assert tun.url == f"http://127.0.0.1:{tun.local_port}"
        assert _roundtrip(tun.local_port, b"hello") == b"HELLO"
        assert _roundtrip(tun.local_port, b"again") == b"AGAIN"  # a connection each
    echo.sock.close()


class Answering(Echo):
    """Answers each whole line (a request) with its tag and the line upper-cased, as an HTTP
    server answers only a whole request."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        self.connected = threading.Event()
        super().__init__()

    def _serve(self, conn: socket.socket) -> None:  # type: ignore[override]
        self.connected.set()
        pending = b""
        with conn:
            while data := conn.recv(65536):
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    conn.sendall(self.tag + line.upper() + b"\n")


def test_a_kept_alive_connection_moves_to_the_new_endpoint_between_requests():
    old, new = Answering(b"old:"), Answering(b"new:")
    with Tunnel(FakeSession(), "127.0.0.1", old.port) as tun, \
            socket.create_connection(("127.0.0.1", tun.local_port), timeout=5) as conn:
        conn.sendall(b"first\n")
        assert conn.recv(65536) == b"old:FIRST\n"
        tun.retarget("127.0.0.1", new.port)
        conn.sendall(b"second\n")  # the next request on the same client connection
        assert conn.recv(65536) == b"new:SECOND\n"
    old.sock.close()
    new.sock.close()


def test_a_request_under_way_finishes_where_it_started():
    old, new = Answering(b"old:"), Answering(b"new:")
    with Tunnel(FakeSession(), "127.0.0.1", old.port) as tun, \
            socket.create_connection(("127.0.0.1", tun.local_port), timeout=5) as conn:
        conn.sendall(b"part one ")
        assert old.connected.wait(5)  # forwarded to the old endpoint before the retarget
        tun.retarget("127.0.0.1", new.port)
        conn.sendall(b"part two\n")  # the client spoke last: the same request, not moved
        assert conn.recv(65536) == b"old:PART ONE PART TWO\n"
    old.sock.close()
    new.sock.close()


def test_a_forward_the_login_host_refuses_is_reported_and_closed():
    events: list[str] = []
    tun = Tunnel(FakeSession(), "127.0.0.1", 1, on_event=events.append)  # type: ignore[arg-type]
    with tun, socket.create_connection(("127.0.0.1", tun.local_port), timeout=5) as conn:
        assert conn.recv(10) == b""
    assert events == ["cannot forward a connection: hpc cannot open a connection to 127.0.0.1:1"]


def test_a_taken_local_port_is_bad_input():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert free_port(port) == 0 and free_port(None) == 0
        with pytest.raises(SpecError, match=f"--local-port: cannot listen on 127.0.0.1:{port}"):
            Tunnel(FakeSession(), "127.0.0.1", 80, port)  # type: ignore[arg-type]


def test_supervise_reconnects_and_returns_why_the_job_ended():
    session = FakeSession(alive=[True, False, False], fail_ensure=1)
    answers = iter([None, RemoteError("no answer"), None, "job 1 ended: SLURM COMPLETED"])

    def job_ended() -> str | None:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    events: list[str] = []
    reason = supervise(session, job_ended, poll=0.01, on_event=events.append)  # type: ignore[arg-type]
    assert reason == "job 1 ended: SLURM COMPLETED"
    assert events == ["connection to hpc lost; reconnecting", "still reconnecting: no route to hpc",
                      "connection to hpc lost; reconnecting", "cannot check the job: no answer"]
    assert session.resets == 1


def test_supervise_stops_on_request_and_never_retries_a_host_key():
    stop = threading.Event()
    stop.set()
    assert supervise(FakeSession(), lambda: None, stop=stop) is None

    class BadKey(FakeSession):
        def ensure(self, retry_for: float = 0.0) -> None:
            raise HostKeyError("changed")

    with pytest.raises(HostKeyError):
        supervise(BadKey(alive=[False]), lambda: None, poll=0.01)  # type: ignore[arg-type]
