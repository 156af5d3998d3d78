"""The preflight's docker probe (templates/runtimes/probe/docker.sh.j2): the daemon's API on
its local socket in one curl, and the CLI when that cannot answer. Real bash, a fake curl that
answers with what docker 20.10 answered (tests/unit/data/docker-api), a fake docker CLI."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from slurmserve import runtimes
from slurmserve.render import render_template

DATA = Path(__file__).parent / "data" / "docker-api"
IMAGE = "sha256:a43c8d1ecc85e20359fdf6444251693121c87fc62156768c3964c6242c61dbf8"

FAKE_CURL = """#!/usr/bin/env bash
# Answers each http://docker/ URL from $API_DIR as curl -w '\\n@@%{http_code}\\n' would.
[[ -n "${CURL_FAILS:-}" ]] && { echo "curl: (7) Couldn't connect to server" >&2; exit 7; }
for arg in "$@"; do
  case "$arg" in
    http://docker/version) cat "$API_DIR/version.json"; printf '\\n@@200\\n' ;;
    http://docker/containers/json*%22name%22*)  # this job's names: $NAMED, or none
      printf '%s\\n@@200\\n' "${NAMED:-[]}" ;;
    http://docker/containers/json*) cat "$API_DIR/containers.json"; printf '\\n@@200\\n' ;;
    http://docker/images/*/json)
      name=${arg#http://docker/images/}; name=${name%/json}
      if [[ "$name" == "$KNOWN_IMAGE" ]]; then cat "$API_DIR/image.json"; printf '\\n@@200\\n'
      else printf '{"message":"No such image: %s"}\\n\\n@@404\\n' "$name"; fi ;;
  esac
done
"""

FAKE_DOCKER = """#!/usr/bin/env bash
case "$1" in
  version) echo "99.0-cli" ;;
  image) exit 1 ;;
  ps) echo "slurmserve-5-0=5" ;;
esac
"""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A node's environment: a socket file where DOCKER_HOST points, the fakes first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("curl", FAKE_CURL), ("docker", FAKE_DOCKER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    sock = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(sock))
        yield {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "API_DIR": str(DATA),
               "KNOWN_IMAGE": IMAGE, "DOCKER_HOST": f"unix://{sock}"}


def probe(env: dict[str, str], image: str) -> dict[str, str]:
    script = ("fact() { printf '%s\\t%s\\n' \"$1\" \"$2\"; }\n"
              + render_template("runtimes/probe/docker.sh.j2",
                                **runtimes.shell_context("", "43"))
              + f"\nprobe_docker {image!r}\n")
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return dict(line.split("\t", 1) for line in out.splitlines())


def test_the_api_answers_all_three_in_one_call(node):
    facts = probe(node, IMAGE)
    assert facts == {"runtime.docker": "ok 20.10.24+dfsg1", "image.docker": "present",
                     "held_id.docker": IMAGE, "ours.docker": "slurmserve-43-0=43 slurmserve-7-1=7",
                     "named.docker": "0"}


def test_containers_bearing_the_jobs_names_are_counted(node):
    """Anyone's container named slurmserve-JOB-*: the launch looks at those nodes again."""
    two = ('[{"Id":"a1","Names":["/slurmserve-43-0"],"Labels":{}},'
           '{"Id":"b2","Names":["/slurmserve-43-1"],"Labels":{"slurmserve.job":"43"}}]')
    assert probe({**node, "NAMED": two}, IMAGE)["named.docker"] == "2"


def test_an_image_the_daemon_does_not_hold(node):
    facts = probe(node, "engine:2")
    assert facts["image.docker"] == "absent" and "held_id.docker" not in facts
    assert facts["runtime.docker"] == "ok 20.10.24+dfsg1"


def test_no_answer_on_the_socket_falls_back_to_the_cli(node):
    facts = probe({**node, "CURL_FAILS": "1"}, IMAGE)
    assert facts == {"runtime.docker": "ok 99.0-cli", "image.docker": "absent",
                     "ours.docker": "slurmserve-5-0=5"}


@pytest.mark.parametrize("where", ["tcp", "context", "config context"])
def test_a_daemon_elsewhere_is_asked_through_the_cli(node, tmp_path, where):
    env = dict(node)
    if where == "tcp":
        env["DOCKER_HOST"] = "tcp://10.0.0.1:2375"
    elif where == "context":
        env["DOCKER_CONTEXT"] = "remote"
    else:
        (tmp_path / ".docker").mkdir()
        (tmp_path / ".docker" / "config.json").write_text('{"currentContext": "remote"}')
    assert probe(env, IMAGE)["runtime.docker"] == "ok 99.0-cli"
