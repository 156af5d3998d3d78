"""A real TCP rendezvous of several ranks, in the spirit of torch's TCPStore.

Rank 0 (the leader) listens on ADDR:PORT; every other participant connects, says which
ranks it holds and a fingerprint of its configuration. Once every rank in range(total) has
arrived the leader sends the member list to all. Connections stay open afterwards: the
leader learns when a participant dies (like a NCCL failure), participants learn when the
leader goes away. Newline-delimited JSON messages.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RETRY_SECONDS = 0.3


class RendezvousError(Exception):
    pass


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


class _Lines:
    """Reads newline-delimited JSON from a socket, honouring a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def read(self, deadline: float | None) -> dict[str, Any] | None:
        """Next message, or None at EOF; socket.timeout past the deadline."""
        while b"\n" not in self.buf:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.sock.settimeout(min(left, 0.5))
            else:
                self.sock.settimeout(None)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return None
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


@dataclass
class _Peer:
    sock: socket.socket
    lines: _Lines
    ranks: list[int]
    info: dict[str, Any]


def resolve(host: str) -> str:
    return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]


@dataclass
class Leader:
    """Rank 0: listens, collects `total` ranks, then watches the connections."""

    host: str
    port: int
    total: int
    ranks: list[int]
    info: dict[str, Any]
    fingerprint: dict[str, Any]
    timeout: float
    what: str = "rank"
    peers: list[_Peer] = field(default_factory=list)
    _closing: threading.Event = field(default_factory=threading.Event)
    _listener: socket.socket | None = None

    def run(self) -> list[dict[str, Any]]:
        """Wait for all ranks; returns one entry per participant, sorted by first rank."""
        addr = resolve(self.host)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((addr, self.port))
        except OSError as e:
            listener.close()
            raise RendezvousError(
                f"cannot listen on {self.host}:{self.port} ({e.strerror}); rank 0 must run on "
                f"the node that owns {self.host}") from e
        listener.listen(64)
        listener.settimeout(0.5)
        self._listener = listener
        held = {r: "rank 0 (this node)" for r in self.ranks}
        deadline = time.monotonic() + self.timeout
        try:
            while set(held) != set(range(self.total)):
                if time.monotonic() > deadline:
                    missing = sorted(set(range(self.total)) - set(held))
                    raise RendezvousError(
                        f"timed out after {self.timeout:g}s at {self.host}:{self.port} waiting "
                        f"for {self.what}s {missing} of {self.total}; arrived: {sorted(held)}")
                try:
                    conn, peer_addr = listener.accept()
                except TimeoutError:
                    continue
                self._admit(conn, peer_addr[0], held, deadline)
        except RendezvousError as e:
            self._abort(str(e))
            raise
        finally:
            listener.close()
            self._listener = None
        me = {"ranks": self.ranks, **self.info, "ip": self.info.get("ip") or addr}
        members = [me] + [{"ranks": p.ranks, **p.info} for p in self.peers]
        members.sort(key=lambda m: m["ranks"][0])
        for p in self.peers:
            _send(p.sock, {"type": "ready", "members": members})
        return members

    def _admit(self, conn: socket.socket, peer_ip: str, held: dict[int, str],
               deadline: float) -> None:
        lines = _Lines(conn)
        try:
            hello = lines.read(deadline)
        except TimeoutError:
            conn.close()
            return
        if not hello or hello.get("type") != "hello":
            conn.close()
            return
        ranks = [int(r) for r in hello["ranks"]]
        who = f"{self.what} {ranks} from {peer_ip}"
        for key, mine in self.fingerprint.items():
            theirs = hello["fingerprint"].get(key)
            if theirs != mine:
                _send(conn, {"type": "error", "message": f"{key}={mine!r} on rank 0"})
                conn.close()
                raise RendezvousError(
                    f"{who} disagrees with rank 0: {key}={theirs!r} there, {mine!r} here")
        for r in ranks:
            if r in held or not 0 <= r < self.total:
                msg = (f"{self.what} {r} claimed twice ({held[r]} and {peer_ip})" if r in held
                       else f"{self.what} {r} out of range 0..{self.total - 1}")
                _send(conn, {"type": "error", "message": msg})
                conn.close()
                raise RendezvousError(msg)
        for r in ranks:
            held[r] = peer_ip
        info = {**hello.get("info", {}), "ip": peer_ip}
        self.peers.append(_Peer(conn, lines, ranks, info))

    def _abort(self, message: str) -> None:
        for p in self.peers:
            with contextlib.suppress(OSError):
                _send(p.sock, {"type": "error", "message": message})
                p.sock.close()

    def watch(self, on_lost: Callable[[str], None]) -> None:
        """Call on_lost(description) when any participant disconnects."""
        for p in self.peers:
            threading.Thread(target=self._watch_one, args=(p, on_lost), daemon=True,
                             name=f"watch-{p.ranks[0]}").start()

    def _watch_one(self, peer: _Peer, on_lost: Callable[[str], None]) -> None:
        while True:
            message = peer.lines.read(None)
            if message is None:
                break
        if not self._closing.is_set():
            on_lost(f"{self.what} {peer.ranks} ({peer.info.get('ip')}) disconnected")

    def shutdown(self) -> None:
        """Tell participants this is a clean stop, then close."""
        self._closing.set()
        for p in self.peers:
            with contextlib.suppress(OSError):
                _send(p.sock, {"type": "bye"})
                p.sock.close()


@dataclass
class Follower:
    """Any rank but 0: connects (retrying until the deadline), registers, waits for all."""

    host: str
    port: int
    ranks: list[int]
    info: dict[str, Any]
    fingerprint: dict[str, Any]
    timeout: float
    sock: socket.socket | None = None
    _lines: _Lines | None = None

    def run(self) -> list[dict[str, Any]]:
        deadline = time.monotonic() + self.timeout
        last_error = ""
        while self.sock is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RendezvousError(
                    f"could not reach rank 0 at {self.host}:{self.port} within "
                    f"{self.timeout:g}s ({last_error})")
            try:
                self.sock = socket.create_connection((self.host, self.port),
                                                     timeout=min(left, 5))
            except OSError as e:
                last_error = e.strerror or str(e)
                time.sleep(min(RETRY_SECONDS, max(left, 0)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._lines = _Lines(self.sock)
        local_ip = self.sock.getsockname()[0]
        _send(self.sock, {"type": "hello", "ranks": self.ranks,
                          "info": {**self.info, "ip": local_ip},
                          "fingerprint": self.fingerprint})
        try:
            message = self._lines.read(deadline)
        except TimeoutError:
            raise RendezvousError(
                f"timed out after {self.timeout:g}s waiting at {self.host}:{self.port} for "
                "the other ranks") from None
        if message is None:
            raise RendezvousError(f"rank 0 at {self.host}:{self.port} closed the connection")
        if message["type"] == "error":
            raise RendezvousError(f"rank 0 refused: {message['message']}")
        return list(message["members"])

    def watch(self, on_gone: Callable[[bool], None]) -> None:
        """Call on_gone(clean) when rank 0 says bye (clean) or disappears."""

        def loop() -> None:
            assert self._lines is not None
            while True:
                message = self._lines.read(None)
                if message is None:
                    on_gone(False)
                    return
                if message.get("type") == "bye":
                    on_gone(True)
                    return

        threading.Thread(target=loop, daemon=True, name="watch-leader").start()

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
