"""SSH to a cluster's login host with paramiko, to run slurmserve there and forward ports.

Honours the OpenSSH client config (HostName, User, Port, IdentityFile, IdentitiesOnly,
ProxyJump, ProxyCommand, UserKnownHostsFile, ConnectTimeout, ServerAliveInterval), the SSH
agent and key files. Host keys are checked against known_hosts: an unknown key is refused
unless the user passes --accept-new-host-key (then it is saved); a changed key is always
refused. The remote side runs `PYTHON -m slurmserve ... --json`, so it needs slurmserve there.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SlurmserveError, SpecError

if TYPE_CHECKING:
    import paramiko

DEFAULT_TIMEOUT = 10.0
DEFAULT_PYTHON = "python3"
PROFILE_KEYS = ("host", "user", "port", "python", "ssh_config", "connect_timeout")
_TARGET = re.compile(r"^(?:(?P<user>[^@\s/]+)@)?(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^@\s:/\[\]]+))"
                     r"(?::(?P<port>\d{1,5}))?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Runs on the login host: exports KEY=VALUE lines read from stdin up to an empty line (secrets
# travel there, never in argv), then runs the command. With --hangup the command is ended
# when our side closes the channel (EOF on stdin), so `logs -f` does not outlive Ctrl+C.
_WRAPPER = ('while IFS= read -r kv && [ -n "$kv" ]; do export "$kv"; done; '
            'if [ "$1" = --hangup ]; then shift; exec 3<&0; "$@" </dev/null 3<&- & p=$!; '
            '{ cat >/dev/null; kill -TERM "$p"; } <&3 >/dev/null 2>&1 & wait "$p"; '
            'else exec "$@"; fi')

Notice = Callable[[str], None]


class RemoteError(SlurmserveError):
    """The login host cannot be reached, refused us, or lacks slurmserve; says how to fix it."""


class HostKeyError(RemoteError):
    """The login host's key is unknown or changed: never accepted silently."""


class RemoteCommandError(SlurmserveError):
    """slurmserve on the login host failed; carries its exit code (2 = bad input)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code if exit_code in (1, 2) else 1


@dataclass(frozen=True)
class Target:
    """`[user@]host[:port]` as typed (host may be an alias from the SSH config)."""

    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")


def parse_target(text: str, what: str = "--remote") -> Target:
    match = _TARGET.match(text.strip())
    port = int(match["port"]) if match and match["port"] else None
    if not match or (port is not None and not 0 < port < 65536):
        raise SpecError(what, f"'{text}' is not [user@]host[:port] or a profile name",
                        "e.g. --remote me@login.cluster.org, --remote login:2222, or a name under "
                        f"`remotes:` in {user_config_path()}")
    return Target(host=match["v6"] or match["host"], user=match["user"], port=port)


@dataclass(frozen=True)
class Profile:
    """A named remote from the user config: `remotes: {NAME: {host: ..., python: ...}}`."""

    name: str
    host: str
    user: str | None = None
    port: int | None = None
    python: str | None = None
    ssh_config: str | None = None
    connect_timeout: float | None = None


def user_config_path() -> Path:
    if os.environ.get("SLURMSERVE_CONFIG"):
        return Path(os.environ["SLURMSERVE_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(base) / "slurmserve" / "config.yaml"


def load_profiles(path: str | os.PathLike[str] | None = None) -> dict[str, Profile]:
    """The `remotes:` of the user config (none when the file does not exist)."""
    import yaml

    path = Path(path) if path else user_config_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError("config", f"cannot read {path}: {exc}", "fix or remove the file") from None
    remotes = data.get("remotes") if isinstance(data, dict) else None
    if not isinstance(remotes, dict):
        return {}
    profiles = {}
    for name, entry in remotes.items():
        if not isinstance(entry, dict) or not entry.get("host"):
            raise SpecError(f"remotes.{name}", f"needs at least `host:` in {path}",
                            "e.g. remotes: {mycluster: {host: login.example.org}}")
        unknown = sorted(set(entry) - set(PROFILE_KEYS))
        if unknown:
            raise SpecError(f"remotes.{name}.{unknown[0]}", f"unknown key in {path}",
                            "valid keys: " + ", ".join(PROFILE_KEYS))
        port = entry.get("port")
        timeout = entry.get("connect_timeout")
        profiles[str(name)] = Profile(
            name=str(name), host=str(entry["host"]),
            user=None if entry.get("user") is None else str(entry["user"]),
            port=None if port is None else int(port),
            python=None if entry.get("python") is None else str(entry["python"]),
            ssh_config=None if entry.get("ssh_config") is None else str(entry["ssh_config"]),
            connect_timeout=None if timeout is None else float(timeout))
    return profiles


@dataclass(frozen=True)
class Hop:
    """One SSH connection, fully resolved from the target and the SSH config."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    use_agent: bool = True
    known_hosts: tuple[str, ...] = ()  # user files; new keys go to the first
    global_known_hosts: tuple[str, ...] = ()
    proxy_command: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    keepalive: int = 15

    def __str__(self) -> str:
        return f"{self.user}@{self.hostname}" + ("" if self.port == 22 else f":{self.port}")


@dataclass(frozen=True)
class Destination:
    """Where remote commands run: the hops (jump hosts, then the login host) and its Python."""

    label: str
    hops: tuple[Hop, ...]
    python: str = DEFAULT_PYTHON

    @property
    def login(self) -> Hop:
        return self.hops[-1]


def default_ssh_config() -> str:
    return os.environ.get("SLURMSERVE_SSH_CONFIG") or os.path.join(Path.home(), ".ssh", "config")


def resolve(remote: str, *, ssh_config: str | None = None, connect_timeout: float | None = None,
            python: str | None = None, profiles: Mapping[str, Profile] | None = None
            ) -> Destination:
    """`--remote` (a profile name or [user@]host[:port]) resolved through the SSH config."""
    profiles = load_profiles() if profiles is None else profiles
    profile = profiles.get(remote)
    if profile is not None:
        target = Target(profile.host, profile.user, profile.port)
        ssh_config = ssh_config or profile.ssh_config
        connect_timeout = connect_timeout or profile.connect_timeout
        python = python or profile.python
    else:
        target = parse_target(remote)
    config = _read_ssh_config(os.path.expanduser(ssh_config or default_ssh_config()))
    hops = tuple(_chain(target, config, None, connect_timeout, 0))
    return Destination(label=remote, hops=hops, python=python or DEFAULT_PYTHON)


def _read_ssh_config(path: str) -> paramiko.SSHConfig:
    import paramiko

    if not os.path.exists(path):
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(path)
    except Exception as exc:  # paramiko raises several types for a malformed file
        raise SpecError("--ssh-config", f"cannot parse {path}: {exc}", "fix the file") from None


def _chain(target: Target, config: paramiko.SSHConfig, jumps: list[str] | None,
           timeout: float | None, depth: int) -> list[Hop]:
    """OpenSSH's ProxyJump: `a,b` for t means t through b, and b through a (b's own jump
    setting is replaced by the rest of the list; a keeps its own)."""
    if depth > 8:
        raise SpecError("ProxyJump", f"more than 8 jumps to reach {target}", "check for a loop")
    hop, own_jumps = _resolve_hop(target, config, timeout)
    jumps = own_jumps if jumps is None else jumps
    if not jumps:
        return [hop]
    *rest, last = jumps
    return [*_chain(parse_target(last, "ProxyJump"), config, rest or None, timeout, depth + 1), hop]


def _resolve_hop(target: Target, config: paramiko.SSHConfig, timeout: float | None
                 ) -> tuple[Hop, list[str]]:
    entry = config.lookup(target.host)
    jump = str(entry.get("proxyjump", "")).strip()
    jumps = [] if jump.lower() in ("", "none") else [j.strip() for j in jump.split(",") if j.strip()]
    proxy_command = entry.get("proxycommand")
    if proxy_command and proxy_command.lower() == "none":
        proxy_command = None
    files = entry.get("userknownhostsfile", "~/.ssh/known_hosts ~/.ssh/known_hosts2")
    global_files = entry.get("globalknownhostsfile",
                             "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2")
    agent = str(entry.get("identityagent", "")).lower() != "none"
    if timeout is None:
        timeout = float(entry["connecttimeout"]) if "connecttimeout" in entry else DEFAULT_TIMEOUT
    hop = Hop(
        alias=target.host,
        hostname=entry.get("hostname", target.host),
        port=target.port or int(entry.get("port", 22)),
        user=target.user or entry.get("user") or getpass.getuser(),
        identity_files=tuple(os.path.expanduser(p) for p in entry.get("identityfile", [])),
        identities_only=str(entry.get("identitiesonly", "no")).lower() == "yes",
        use_agent=agent,
        known_hosts=tuple(os.path.expanduser(p) for p in str(files).split()),
        global_known_hosts=tuple(os.path.expanduser(p) for p in str(global_files).split()),
        proxy_command=proxy_command if not jumps else None,
        timeout=timeout,
        keepalive=int(entry.get("serveraliveinterval", 15)) or 15,
    )
    return hop, jumps


# ---- host keys ---------------------------------------------------------------------------------

def known_hosts_name(hop: Hop) -> str:
    """The host name known_hosts uses for this hop (OpenSSH's `[host]:port` off port 22)."""
    return hop.hostname if hop.port == 22 else f"[{hop.hostname}]:{hop.port}"


def add_known_host(path: str, name: str, key: paramiko.PKey) -> None:
    """Append one line (the file's other lines, comments and markers stay as they are)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(f"{name} {key.get_name()} {key.get_base64()}\n")


def _host_key_policy(hop: Hop, accept_new: bool, notice: Notice) -> paramiko.MissingHostKeyPolicy:
    import paramiko

    class Policy(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                             key: paramiko.PKey) -> None:
            where = hop.known_hosts[0] if hop.known_hosts else "~/.ssh/known_hosts"
            if not accept_new:
                raise HostKeyError(
                    f"the host key of {hop.alias} ({hostname}) is not in {where}: its "
                    f"{key.get_name()} key is {key.fingerprint}. Check that fingerprint with "
                    "your cluster's admins, then either run `ssh "
                    f"{hop.alias}` once and answer yes, or pass --accept-new-host-key")
            add_known_host(where, hostname, key)
            client.get_host_keys().add(hostname, key.get_name(), key)
            notice(f"added the host key of {hop.alias} ({hostname}, {key.get_name()} "
                   f"{key.fingerprint}) to {where}")

    return Policy()


def _changed_key_error(hop: Hop, exc: paramiko.BadHostKeyException) -> HostKeyError:
    files = " ".join(hop.known_hosts) or "~/.ssh/known_hosts"
    return HostKeyError(
        f"the host key of {hop.alias} ({known_hosts_name(hop)}) has CHANGED: known_hosts has "
        f"{exc.expected_key.get_name()} {exc.expected_key.fingerprint}, the host offers "
        f"{exc.key.get_name()} {exc.key.fingerprint}. Someone may be intercepting the connection; "
        "refused (--accept-new-host-key never replaces a key). If the host was really "
        f"re-installed, remove the old key (`ssh-keygen -R '{known_hosts_name(hop)}' -f FILE` "
        f"for {files}) and connect again")


# ---- connection --------------------------------------------------------------------------------

@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Session:
    """A (re)connectable SSH connection to the login host, and slurmserve run on it."""

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
        import paramiko

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
        import paramiko

        client = paramiko.SSHClient()
        for path in (*hop.global_known_hosts, *hop.known_hosts):
            if os.path.isfile(path):
                client.load_system_host_keys(path)
        client.set_missing_host_key_policy(
            _host_key_policy(hop, self.accept_new_host_key, self.notice))
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
        import paramiko

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

    # ---- commands on the login host ------------------------------------------------------------

    def slurmserve_argv(self, args: Sequence[str]) -> list[str]:
        python = self.dest.python
        if python.startswith("~/"):  # sessions start in the home directory
            python = "./" + python[2:]
        # A SLURMSERVE_REMOTE in the login host's environment must not send it further.
        return ["env", "-u", "SLURMSERVE_REMOTE", python, "-m", "slurmserve", *args]

    def _exec(self, argv: Sequence[str], stdin: bytes, env: Mapping[str, str] | None,
              hangup: bool, timeout: float | None) -> paramiko.Channel:
        import paramiko

        lines = ""
        for key, value in (env or {}).items():
            if not _ENV_NAME.match(key) or "\n" in value or "\0" in value:
                raise SpecError(key, "cannot be sent to the login host", "no newlines in values")
            lines += f"{key}={value}\n"
        command = shlex.join(["sh", "-c", _WRAPPER, "sh", *(["--hangup"] if hangup else []),
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

    def slurmserve(self, args: Sequence[str], *, stdin: bytes = b"",
                   env: Mapping[str, str] | None = None, timeout: float | None = 300.0) -> str:
        """Run `slurmserve ARGS` on the login host; its stdout, or a RemoteCommandError."""
        result = self.run(self.slurmserve_argv(args), stdin=stdin, env=env, timeout=timeout)
        self._check(args, result.code, result.err)
        return result.out

    def slurmserve_lines(self, args: Sequence[str], *, env: Mapping[str, str] | None = None,
                         on_stderr: Callable[[bytes], None] | None = None) -> Iterator[str]:
        """Stream `slurmserve ARGS`'s stdout lines; closing the iterator ends the remote command."""
        chan = self._exec(self.slurmserve_argv(args), b"", env, True, None)
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
            self._check(args, code, b"".join(err).decode(errors="replace"))
        finally:
            chan.close()

    def _check(self, args: Sequence[str], code: int, err: str) -> None:
        if code == 0:
            return
        python = self.dest.python
        fix = (f"install it there (e.g. `{DEFAULT_PYTHON} -m venv /shared/venvs/slurmserve && "
               "/shared/venvs/slurmserve/bin/pip install slurmserve`) and point slurmserve at "
               "that Python: --remote-python /shared/venvs/slurmserve/bin/python, or `python:` "
               f"in the remote profile ({user_config_path()})")
        if code == 127:  # `env` found no such program
            raise RemoteError(f"slurmserve is not installed on {self.label}: there is no "
                              f"`{python}` there; {fix}")
        if "No module named slurmserve" in err:
            raise RemoteError(f"slurmserve is not installed on {self.label} for `{python}`; {fix}")
        if "No such command" in err or "No such option" in err:
            raise RemoteError(f"the slurmserve on {self.label} is too old for remote mode "
                              f"(`slurmserve {args[0]}`: {err.strip().splitlines()[-1]}); "
                              "upgrade it there to this version")
        if code == -1:
            raise RemoteError(f"the connection to {self.label} was lost while running "
                              f"`slurmserve {args[0]}`")
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        errors = [ln.split("slurmserve: error: ", 1)[1] for ln in lines if "slurmserve: error: " in ln]
        message = errors[-1] if errors else " | ".join(lines[-3:]) or f"exit code {code}"
        raise RemoteCommandError(f"{self.label}: {message}", code)


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
    import paramiko

    if isinstance(exc, (HostKeyError, KeyboardInterrupt)):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return _changed_key_error(hop, exc)
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
