"""A local port forwarded through the login host to a job's endpoint, surviving reconnects.

Each local connection gets its own SSH "direct-tcpip" channel to HEAD:PORT over the session's
one connection. After a retarget (the deployment's endpoint moved), a connection moves to
the new endpoint between two HTTP requests: when the client speaks after the endpoint did.
`supervise` keeps that connection up (reconnecting with backoff after a drop)
and watches the job, returning the reason once it ends.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

from ..errors import SpecError
from .errors import HostKeyError, RemoteError
from .session import Session

Event = Callable[[str], None]
RECONNECT_FOR = 30.0  # a new local connection waits this long for a dropped SSH connection


def free_port(preferred: int | None) -> int:
    """`preferred` when it is free on 127.0.0.1, else any free port."""
    if preferred:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the tunnel binds
            try:
                probe.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    return 0


class Tunnel:
    """127.0.0.1:local_port -> (SSH via the login host) -> host:port."""

    def __init__(self, session: Session, host: str, port: int, local_port: int = 0,
                 on_event: Event | None = None) -> None:
        self.session = session
        self.host = host
        self.port = port
        self.on_event = on_event or (lambda text: None)
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._server.bind(("127.0.0.1", local_port))
        except OSError as exc:
            self._server.close()
            raise SpecError("--local-port", f"cannot listen on 127.0.0.1:{local_port}: "
                            f"{exc.strerror}", "choose another port, or omit --local-port") from None
        self._server.listen(64)
        self.local_port: int = self._server.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tunnel-accept", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def start(self) -> Tunnel:
        self._thread.start()
        return self

    def retarget(self, host: str, port: int) -> None:
        """New connections go to host:port (a deployment's next job), and so does the next
        request of a kept-alive one; a request under way finishes where it started."""
        self.host, self.port = host, port

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.close()

    def __enter__(self) -> Tunnel:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, origin = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client, origin), daemon=True).start()

    def _serve(self, client: socket.socket, origin: tuple[str, int]) -> None:
        target = (self.host, self.port)
        chan = self._open(target, origin)
        if chan is None:
            client.close()
            return
        answered = False  # the endpoint spoke last: the connection is between two requests
        try:
            while not self._closed.is_set():
                ready, _, _ = select.select([client, chan], [], [], 1.0)
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        return
                    if answered and (self.host, self.port) != target:
                        # A kept-alive connection starts its next request after a retarget:
                        # it goes to the new endpoint, before the old one ends and drops it.
                        chan.close()
                        target = (self.host, self.port)
                        chan = self._open(target, origin)
                        if chan is None:
                            return
                        ready = []
                    chan.sendall(data)
                    answered = False
                if chan in ready:
                    data = chan.recv(65536)
                    if not data:
                        return
                    client.sendall(data)
                    answered = True
        except (OSError, EOFError):
            return
        finally:
            if chan is not None:
                chan.close()
            client.close()

    def _open(self, target: tuple[str, int], origin: tuple[str, int]) -> Any:
        try:
            return self.session.open_forward(*target, origin, retry_for=RECONNECT_FOR)
        except RemoteError as exc:
            self.on_event(f"cannot forward a connection: {exc}")
            return None


def supervise(session: Session, job_ended: Callable[[], str | None], *, poll: float = 3.0,
              on_event: Event | None = None, stop: threading.Event | None = None) -> str | None:
    """Keep the SSH connection up and watch the job; return why it ended (None when stopped).

    A dropped connection is re-established with backoff (0.5 s doubling to 5 s, for as long
    as it takes); an unknown or changed host key ends supervision.
    """
    event = on_event or (lambda text: None)
    stop = stop or threading.Event()
    while not stop.is_set():
        if not session.alive():
            event(f"connection to {session.label} lost; reconnecting")
            try:
                session.ensure(retry_for=10.0)  # the session says when it is back
            except HostKeyError:
                raise
            except RemoteError as exc:
                event(f"still reconnecting: {exc}")
                continue
        try:
            reason = job_ended()
        except RemoteError as exc:  # e.g. no answer: a silently dead connection
            event(f"cannot check the job: {exc}")
            session.reset()
            stop.wait(poll)
            continue
        if reason:
            return reason
        stop.wait(poll)
    return None
