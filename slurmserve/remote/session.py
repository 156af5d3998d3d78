"""A (re)connectable SSH connection to the login host, with paramiko: channels, commands, SFTP.

Commands run through `wrapper.sh` (shipped beside this module): it exports the KEY=VALUE lines
sent first on stdin (secrets travel there, never in argv) and, for streamed commands, ends the
command when our side closes the channel.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SpecError
from .config import Destination, Hop, Notice, changed_key_error, host_key_policy
from .errors import HostKeyError, RemoteError, paramiko_module

if TYPE_CHECKING:
    import paramiko


def _wrapper() -> str:
    """wrapper.sh as one line: its comments dropped, its lines joined by spaces."""
    text = Path(__file__).with_name("wrapper.sh").read_text(encoding="utf-8")
    return " ".join(line.strip() for line in text.splitlines()
                    if line.strip() and not line.lstrip().startswith("#"))


WRAPPER = _wrapper()
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Exit = Callable[[int, str], None]  # (exit code, stderr) of a finished command


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Session:
    """A (re)connectable SSH connection to the login host."""

    dest: Destination
    accept_new_host_key: bool = False
    notice: Notice = field(default=lambda text: None)
    _clients: list[Any] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _closed: bool = False
    _lost_at: float | None = None  # when a dropped connection was noticed

    @property
    def label(self) -> str:
        return self.dest.label

    def connect(self) -> Session:
        self.ensure()
        return self

    def alive(self) -> bool:
        transport = self._clients[-1].get_transport() if self._clients else None
        return bool(transport and transport.is_active())

    def ensure(self, retry_for: float = 0.0) -> paramiko.Transport:
        """The live transport: reconnects when needed, retrying with backoff for `retry_for`
        seconds (an unknown host key or a refused login is never retried)."""
        with self._lock:
            if self._closed:
                raise RemoteError(f"the connection to {self.label} was closed")
            if self.alive():
                return self._clients[-1].get_transport()
            if self._clients:
                self._lost_at = self._lost_at or time.monotonic()
            self._drop()
            deadline = time.monotonic() + retry_for
            delay = 0.5
            while True:
                try:
                    self._clients = self._open()
                    if self._lost_at is not None:
                        self.notice(f"reconnected to {self.label} after "
                                    f"{time.monotonic() - self._lost_at:.1f}s")
                        self._lost_at = None
                    return self._clients[-1].get_transport()
                except (HostKeyError, SpecError):
                    raise
                except RemoteError:
                    if self._closed or time.monotonic() + delay > deadline:
                        raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()

    def reset(self) -> None:
        """Drop the connection (e.g. it stopped answering); the next use reconnects."""
        with self._lock:
            if self._clients:
                self._lost_at = self._lost_at or time.monotonic()
            self._drop()

    def _drop(self) -> None:
        for client in reversed(self._clients):
            client.close()
        self._clients = []

    def _open(self) -> list[paramiko.SSHClient]:
        paramiko = paramiko_module()

        _quiet_paramiko()
        clients: list[paramiko.SSHClient] = []
        sock: Any = None
        try:
            for i, hop in enumerate(self.dest.hops):
                if sock is None and hop.proxy_command:
                    sock = paramiko.ProxyCommand(hop.proxy_command)
                clients.append(self._connect_hop(hop, sock))
                if i + 1 < len(self.dest.hops):
                    nxt = self.dest.hops[i + 1]
                    sock = self._channel(clients[-1].get_transport(), hop, nxt.hostname, nxt.port)
        except BaseException:
            for client in reversed(clients):
                client.close()
            raise
        return clients

    def _connect_hop(self, hop: Hop, sock: Any) -> paramiko.SSHClient:
        paramiko = paramiko_module()

        client = paramiko.SSHClient()
        for path in (*hop.global_known_hosts, *hop.known_hosts):
            if os.path.isfile(path):
                client.load_system_host_keys(path)
        client.set_missing_host_key_policy(
            host_key_policy(hop, self.accept_new_host_key, self.notice))
        try:
            client.connect(
                hop.hostname, hop.port, hop.user, sock=sock, timeout=hop.timeout,
                banner_timeout=hop.timeout, auth_timeout=max(hop.timeout, 15.0),
                channel_timeout=max(hop.timeout, 15.0),
                key_filename=[p for p in hop.identity_files if os.path.exists(p)] or None,
                look_for_keys=not hop.identity_files,
                allow_agent=hop.use_agent and not hop.identities_only)
        except BaseException as exc:
            client.close()
            raise _connect_error(hop, exc) from None
        client.get_transport().set_keepalive(hop.keepalive)
        return client

    def _channel(self, transport: paramiko.Transport, via: Any, host: str, port: int,
                 origin: tuple[str, int] = ("127.0.0.1", 0)) -> paramiko.Channel:
        paramiko = paramiko_module()

        try:
            return transport.open_channel("direct-tcpip", (host, port), origin,
                                          timeout=max(self.dest.login.timeout, 15.0))
        except paramiko.ChannelException as exc:
            raise RemoteError(f"{via} cannot open a connection to {host}:{port} "
                              f"({exc.text or exc.code})") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise RemoteError(f"the connection to {via} failed: {exc or type(exc).__name__}") from None

    def open_forward(self, host: str, port: int, origin: tuple[str, int] = ("127.0.0.1", 0),
                     retry_for: float = 0.0) -> paramiko.Channel:
        """A channel from the login host to host:port (what a tunnel carries)."""
        transport = self.ensure(retry_for)
        return self._channel(transport, self.label, host, port, origin)

    def sftp(self) -> paramiko.SFTPClient:
        self.ensure()
        return self._clients[-1].open_sftp()

    def _exec(self, argv: Sequence[str], stdin: bytes, env: Mapping[str, str] | None,
              hangup: bool, timeout: float | None) -> paramiko.Channel:
        paramiko = paramiko_module()

        lines = ""
        for key, value in (env or {}).items():
            if not _ENV_NAME.match(key) or "\n" in value or "\0" in value:
                raise SpecError(key, "cannot be sent to the login host", "no newlines in values")
            lines += f"{key}={value}\n"
        command = shlex.join(["sh", "-c", WRAPPER, "sh", *(["--hangup"] if hangup else []),
                              *argv])
        transport = self.ensure()
        try:
            chan = transport.open_session(timeout=max(self.dest.login.timeout, 15.0))
            chan.settimeout(timeout)
            chan.exec_command(command)
            chan.sendall((lines + "\n").encode() + stdin)
            if not hangup:
                chan.shutdown_write()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise RemoteError(f"the connection to {self.label} failed: "
                              f"{exc or type(exc).__name__}") from None
        return chan

    def run(self, argv: Sequence[str], *, stdin: bytes = b"", env: Mapping[str, str] | None = None,
            timeout: float | None = 300.0) -> Result:
        """Run argv on the login host and collect its output."""
        chan = self._exec(argv, stdin, env, False, timeout)
        err: list[bytes] = []
        reader = threading.Thread(target=_drain, args=(chan, err, None), daemon=True)
        reader.start()
        out = []
        try:
            while data := chan.recv(65536):
                out.append(data)
            code = chan.recv_exit_status()
        except TimeoutError:
            raise RemoteError(f"{self.label}: `{shlex.join(argv[:6])}` did not answer within "
                              f"{timeout:g}s") from None
        finally:
            reader.join(5)
            chan.close()
        return Result(code, b"".join(out).decode(errors="replace"),
                      b"".join(err).decode(errors="replace"))

    def stream(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
               on_stderr: Callable[[bytes], None] | None = None, on_exit: Exit | None = None
               ) -> Iterator[str]:
        """Stream argv's stdout lines; `on_exit(code, stderr)` runs once it has ended. Closing
        the iterator ends the remote command."""
        chan = self._exec(argv, b"", env, True, None)
        err: list[bytes] = []
        reader = threading.Thread(target=_drain, args=(chan, err, on_stderr), daemon=True)
        reader.start()
        try:
            buf = b""
            while data := chan.recv(65536):
                *lines, buf = (buf + data).split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if buf:
                yield buf.decode(errors="replace")
            code = chan.recv_exit_status()
            reader.join(5)
            if on_exit:
                on_exit(code, b"".join(err).decode(errors="replace"))
        finally:
            chan.close()


def download(session: Session, remote_dir: str, local_dir: str) -> int:
    """Copy a directory tree from the login host (SFTP); returns the number of files."""
    sftp = session.sftp()
    count = 0
    try:
        todo = [(remote_dir, local_dir)]
        while todo:
            src, dst = todo.pop()
            entries = sftp.listdir_attr(src)
            os.makedirs(dst, exist_ok=True)
            for entry in entries:
                path, target = f"{src}/{entry.filename}", os.path.join(dst, entry.filename)
                if stat.S_ISDIR(entry.st_mode or 0):
                    todo.append((path, target))
                elif stat.S_ISREG(entry.st_mode or 0):
                    sftp.get(path, target)
                    count += 1
    finally:
        sftp.close()
    return count


def _drain(chan: paramiko.Channel, sink: list[bytes], forward: Callable[[bytes], None] | None
           ) -> None:
    try:
        while data := chan.recv_stderr(65536):
            sink.append(data)
            if forward:
                forward(data)
    except (OSError, EOFError):
        pass


def _connect_error(hop: Hop, exc: BaseException) -> BaseException:
    """A paramiko/socket failure as one line that says what to do."""
    paramiko = paramiko_module()

    if isinstance(exc, (HostKeyError, KeyboardInterrupt)):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return changed_key_error(hop, exc)
    if isinstance(exc, paramiko.PasswordRequiredException):
        return RemoteError(f"a private key for {hop} needs its passphrase: load it into your "
                           "ssh-agent (`ssh-add KEYFILE`), slurmserve never asks for it")
    no_method = isinstance(exc, paramiko.SSHException) and "No authentication methods" in str(exc)
    if isinstance(exc, paramiko.AuthenticationException) or no_method:
        keys = ", ".join(hop.identity_files) or "~/.ssh/id_*"
        agent = "the ssh-agent and " if hop.use_agent and not hop.identities_only else ""
        return RemoteError(f"{hop} refused the login (tried {agent}keys {keys}); slurmserve logs "
                           "in with keys only: add your public key to ~/.ssh/authorized_keys "
                           "there, or set IdentityFile for this host in ~/.ssh/config")
    if isinstance(exc, socket.gaierror):
        return RemoteError(f"cannot resolve {hop.hostname} ({hop.alias}): {exc.strerror}; check "
                           "the name, your VPN, or HostName in ~/.ssh/config")
    if isinstance(exc, TimeoutError):
        return RemoteError(f"cannot reach {hop.hostname}:{hop.port} ({hop.alias}): no answer "
                           f"within {hop.timeout:g}s; check the address, your VPN, or ProxyJump")
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        reasons = "; ".join(sorted({e.strerror or str(e) for e in exc.errors.values()}))
        return RemoteError(f"cannot reach {hop.hostname}:{hop.port} ({hop.alias}): {reasons}; "
                           "check the address and port, your VPN, or ProxyJump")
    if isinstance(exc, OSError):
        return RemoteError(f"cannot reach {hop.hostname}:{hop.port} ({hop.alias}): "
                           f"{exc.strerror or exc}; check the address and port, your VPN, or "
                           "ProxyJump")
    if isinstance(exc, (paramiko.SSHException, EOFError)):
        return RemoteError(f"SSH with {hop.hostname}:{hop.port} ({hop.alias}) failed: "
                           f"{exc or type(exc).__name__}")
    return exc


def _quiet_paramiko() -> None:
    """paramiko logs tracebacks of dropped connections through logging's last resort (stderr):
    our errors say it in one line instead."""
    logger = logging.getLogger("paramiko")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
