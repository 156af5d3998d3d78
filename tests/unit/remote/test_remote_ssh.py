"""Remote mode without a cluster: targets, profiles, SSH config, host-key policy against a real
paramiko SSH server on loopback, error messages, and the login-host wrapper script."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from slurmserve.errors import SpecError
from slurmserve.remote import commands
from slurmserve.remote import config as remote_config
from slurmserve.remote.config import Destination, Hop, Target, parse_target
from slurmserve.remote.errors import HostKeyError, RemoteCommandError, RemoteError
from slurmserve.remote.session import WRAPPER, Session


@pytest.mark.parametrize(("text", "target"), [
    ("login", Target("login")),
    ("me@login.example.org", Target("login.example.org", "me")),
    ("me@10.0.0.5:2222", Target("10.0.0.5", "me", 2222)),
    ("[fe80::1]:22", Target("fe80::1", None, 22)),
    ("me@[::1]", Target("::1", "me")),
])
def test_parse_target(text, target):
    assert parse_target(text) == target
    assert parse_target(str(target)) == target


@pytest.mark.parametrize("text", ["", "a b", "me@", "@host", "host:0", "host:70000", "host:x",
                                  "user@host/path", "h;rm -rf"])
def test_parse_target_rejects(text):
    with pytest.raises(SpecError, match="--remote: .* is not \\[user@\\]host\\[:port\\]"):
        parse_target(text)


def test_profiles(tmp_path):
    path = tmp_path / "config.yaml"
    assert remote_config.load_profiles(path) == {}
    path.write_text("remotes:\n  hpc: {host: login.hpc.org, user: me, port: 2222, "
                    "python: /shared/venv/bin/python, connect_timeout: 4}\n")
    hpc = remote_config.load_profiles(path)["hpc"]
    assert (hpc.host, hpc.user, hpc.port, hpc.python, hpc.connect_timeout) == (
        "login.hpc.org", "me", 2222, "/shared/venv/bin/python", 4.0)
    path.write_text("remotes:\n  hpc: {host: h, pyhton: /x}\n")
    with pytest.raises(SpecError, match="remotes.hpc.pyhton: unknown key"):
        remote_config.load_profiles(path)
    path.write_text("remotes:\n  hpc: {user: me}\n")
    with pytest.raises(SpecError, match="remotes.hpc: needs at least `host:`"):
        remote_config.load_profiles(path)


def test_resolve_through_ssh_config(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host login\n  HostName 10.1.2.3\n  User alice\n  Port 2200\n"
        "  IdentityFile ~/.ssh/cluster_key\n  IdentitiesOnly yes\n  ProxyJump bastion,gw:2022\n"
        "  UserKnownHostsFile /k/one /k/two\n  ConnectTimeout 4\n"
        "Host bastion\n  HostName bastion.example.org\n  User bob\n"
        "Host gw\n  HostName gw.internal\n  ProxyJump nowhere\n"
        "Host direct\n  ProxyJump none\n")
    dest = remote_config.resolve("login", ssh_config=str(config), profiles={})
    bastion, gw, login = dest.hops
    assert (login.hostname, login.port, login.user) == ("10.1.2.3", 2200, "alice")
    assert login.identity_files == (str(Path.home() / ".ssh" / "cluster_key"),)
    assert login.identities_only and login.known_hosts == ("/k/one", "/k/two")
    assert login.timeout == 4.0 and dest.python == "python3"
    # `ProxyJump bastion,gw:2022`: gw is reached through bastion (its own ProxyJump replaced).
    assert (bastion.hostname, bastion.user, bastion.port) == ("bastion.example.org", "bob", 22)
    assert (gw.hostname, gw.port) == ("gw.internal", 2022)
    # What the command line says wins over the config, like ssh's `user@host -p`.
    only = remote_config.resolve("root@direct:2022", ssh_config=str(config), connect_timeout=2.5,
                          python="/venv/bin/python", profiles={})
    assert [(h.hostname, h.user, h.port, h.timeout) for h in only.hops] == [
        ("direct", "root", 2022, 2.5)]
    assert only.python == "/venv/bin/python"
    profile = remote_config.Profile(name="hpc", host="login", python="/p/python", connect_timeout=7)
    via = remote_config.resolve("hpc", ssh_config=str(config), profiles={"hpc": profile})
    assert via.label == "hpc" and via.python == "/p/python" and via.login.timeout == 7
    assert via.login.hostname == "10.1.2.3"


# ---- a real SSH server on loopback --------------------------------------------------------------

def _key_file(path: Path) -> paramiko.Ed25519Key:
    private = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
    path.chmod(0o600)
    return paramiko.Ed25519Key.from_private_key_file(str(path))


class _Server(paramiko.ServerInterface):
    def __init__(self, user_key: paramiko.PKey) -> None:
        self.user_key = user_key

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == "me" and key == self.user_key
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED


class SSHServer:
    """Accepts connections on 127.0.0.1 with one host key and one authorized user key."""

    def __init__(self, host_key: paramiko.PKey, user_key: paramiko.PKey) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.host_key, self.user_key = host_key, user_key
        self.transports: list[paramiko.Transport] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            self.transports.append(transport)
            threading.Thread(target=self._serve, args=(transport,), daemon=True).start()

    def _serve(self, transport: paramiko.Transport) -> None:
        # Clients that refuse our key hang up mid-handshake: that is the point of some tests.
        with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
            transport.start_server(server=_Server(self.user_key))

    def close(self) -> None:
        self.sock.close()
        for transport in self.transports:
            transport.close()


@pytest.fixture
def keys(tmp_path):
    return {"host": _key_file(tmp_path / "host_key"), "user": _key_file(tmp_path / "id_user"),
            "other": _key_file(tmp_path / "id_other"), "dir": tmp_path}


@pytest.fixture
def server(keys):
    srv = SSHServer(keys["host"], keys["user"])
    yield srv
    srv.close()


def _session(keys, server, known_hosts: Path, identity: str = "id_user",
             accept_new: bool = False, notices: list[str] | None = None) -> Session:
    hop = Hop(alias="testhost", hostname="127.0.0.1", port=server.port, user="me",
              identity_files=(str(keys["dir"] / identity),), identities_only=True,
              use_agent=False, known_hosts=(str(known_hosts),), timeout=5)
    notes = notices if notices is not None else []
    return Session(Destination("testhost", (hop,)), accept_new_host_key=accept_new,
                   notice=notes.append)


def test_unknown_host_key_refused_with_its_fingerprint(keys, server, tmp_path):
    known = tmp_path / "known_hosts"
    with pytest.raises(HostKeyError) as err:
        _session(keys, server, known).connect()
    text = str(err.value)
    assert f"host key of testhost ([127.0.0.1]:{server.port}) is not in {known}" in text
    assert keys["host"].fingerprint in text and "--accept-new-host-key" in text
    assert not known.exists()


def test_accept_new_host_key_saves_it_then_it_is_known(keys, server, tmp_path):
    known = tmp_path / "ssh" / "known_hosts"
    notices: list[str] = []
    session = _session(keys, server, known, accept_new=True, notices=notices).connect()
    assert session.alive()
    session.close()
    line = f"[127.0.0.1]:{server.port} ssh-ed25519 {keys['host'].get_base64()}\n"
    assert known.read_text() == line
    assert oct(known.stat().st_mode & 0o777) == "0o600"
    assert notices == [f"added the host key of testhost ([127.0.0.1]:{server.port}, ssh-ed25519 "
                       f"{keys['host'].fingerprint}) to {known}"]
    again = _session(keys, server, known).connect()  # no flag needed now
    again.close()
    assert known.read_text() == line


def test_changed_host_key_refused_even_with_accept_new(keys, server, tmp_path):
    known = tmp_path / "known_hosts"
    old = _key_file(tmp_path / "old_host_key")
    content = (f"# keep me\n[127.0.0.1]:{server.port} ssh-ed25519 {old.get_base64()}\n")
    known.write_text(content)
    for accept_new in (False, True):
        with pytest.raises(HostKeyError, match="has CHANGED") as err:
            _session(keys, server, known, accept_new=accept_new).connect()
        assert old.fingerprint in str(err.value) and keys["host"].fingerprint in str(err.value)
        assert "ssh-keygen -R" in str(err.value)
    assert known.read_text() == content


def test_wrong_user_key_refused(keys, server, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} ssh-ed25519 {keys['host'].get_base64()}\n")
    with pytest.raises(RemoteError, match="refused the login .*authorized_keys"):
        _session(keys, server, known, identity="id_other").connect()


def test_closed_port_is_a_clear_error(keys, tmp_path):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    hop = Hop(alias="gone", hostname="127.0.0.1", port=port, user="me", timeout=2)
    start = time.monotonic()
    with pytest.raises(RemoteError, match=f"cannot reach 127.0.0.1:{port} \\(gone\\): "
                                          "Connection refused"):
        Session(Destination("gone", (hop,))).connect()
    assert time.monotonic() - start < 2


def test_remote_failures_become_one_line_with_the_fix():
    session = Session(Destination("hpc", (Hop("h", "h", 22, "me"),), python="/venv/bin/python"))
    with pytest.raises(RemoteError, match="not installed on hpc: there is no `/venv/bin/python`"):
        commands.check(session, ["status"], 127,
                       "env: '/venv/bin/python': No such file or directory")
    with pytest.raises(RemoteError, match="not installed on hpc for `/venv/bin/python`.*"
                                          "--remote-python"):
        commands.check(session, ["status"], 1, "/venv/bin/python: No module named slurmserve")
    with pytest.raises(RemoteError, match="too old for remote mode"):
        commands.check(session, ["wait"], 2,
                       "Usage: ...\nslurmserve: error: No such command 'wait'.")
    with pytest.raises(RemoteCommandError) as err:
        commands.check(session, ["submit"], 2,
                       "slurmserve: error: image: tarball not found: /x.tar; check the path")
    assert str(err.value) == "hpc: image: tarball not found: /x.tar; check the path"
    assert err.value.exit_code == 2
    assert commands.slurmserve_argv(session.dest, ["status"])[:4] == [
        "env", "-u", "SLURMSERVE_REMOTE", "/venv/bin/python"]
    home = Session(Destination("hpc", (Hop("h", "h", 22, "me"),), python="~/venv/bin/python"))
    assert commands.slurmserve_argv(home.dest, [])[3] == "./venv/bin/python"


# ---- the wrapper the login host runs -----------------------------------------------------------

def test_wrapper_exports_secrets_from_stdin_and_passes_the_rest():
    script = 'printf "%s|" "$API_KEY" "$1"; cat'
    proc = subprocess.run(["sh", "-c", WRAPPER, "sh", "sh", "-c", script, "sh", "arg 1"],
                          input="API_KEY=k=1 2\n\nbody\n", capture_output=True, text=True,
                          timeout=10)
    assert proc.stdout == "k=1 2|arg 1|body\n"


def test_wrapper_hangup_ends_the_command_when_stdin_closes():
    proc = subprocess.Popen(["sh", "-c", WRAPPER, "sh", "--hangup", "sh", "-c",
                             "echo $$; exec sleep 60"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin and proc.stdout
    proc.stdin.write("\n")
    proc.stdin.flush()
    child = int(proc.stdout.readline())
    proc.stdin.close()  # what closing the SSH channel does
    assert proc.wait(10) == 128 + 15
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists()
    proc.stdout.close()


def test_wrapper_hangup_keeps_the_exit_code():
    proc = subprocess.Popen(["sh", "-c", WRAPPER, "sh", "--hangup", "sh", "-c", "exit 3"],
                            stdin=subprocess.PIPE, text=True)
    assert proc.stdin
    proc.stdin.write("\n")
    proc.stdin.flush()  # stdin stays open, as the channel does while the command runs
    assert proc.wait(10) == 3
    proc.stdin.close()


def test_bad_remote_is_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "slurmserve", "status", "--remote", "a b"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("slurmserve: error: --remote: 'a b' is not [user@]host[:port]")
    assert "Traceback" not in proc.stderr
