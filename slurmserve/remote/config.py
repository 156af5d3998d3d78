"""Where remote commands go: `--remote` resolved through profiles and the OpenSSH client config.

Honours HostName, User, Port, IdentityFile, IdentitiesOnly, ProxyJump, ProxyCommand,
UserKnownHostsFile, ConnectTimeout and ServerAliveInterval. Host keys are checked against
known_hosts: an unknown key is refused unless the user passes --accept-new-host-key (then it is
saved); a changed key is always refused.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SpecError
from .errors import HostKeyError, paramiko_module

if TYPE_CHECKING:
    import paramiko

DEFAULT_TIMEOUT = 10.0
DEFAULT_PYTHON = "python3"
PROFILE_KEYS = ("host", "user", "port", "python", "ssh_config", "connect_timeout")
_TARGET = re.compile(r"^(?:(?P<user>[^@\s/]+)@)?(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^@\s:/\[\]]+))"
                     r"(?::(?P<port>\d{1,5}))?$")

Notice = Callable[[str], None]


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
    paramiko = paramiko_module()

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


def host_key_policy(hop: Hop, accept_new: bool, notice: Notice) -> paramiko.MissingHostKeyPolicy:
    paramiko = paramiko_module()

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


def changed_key_error(hop: Hop, exc: paramiko.BadHostKeyException) -> HostKeyError:
    files = " ".join(hop.known_hosts) or "~/.ssh/known_hosts"
    return HostKeyError(
        f"the host key of {hop.alias} ({known_hosts_name(hop)}) has CHANGED: known_hosts has "
        f"{exc.expected_key.get_name()} {exc.expected_key.fingerprint}, the host offers "
        f"{exc.key.get_name()} {exc.key.fingerprint}. Someone may be intercepting the connection; "
        "refused (--accept-new-host-key never replaces a key). If the host was really "
        f"re-installed, remove the old key (`ssh-keygen -R '{known_hosts_name(hop)}' -f FILE` "
        f"for {files}) and connect again")
