"""The preflight's pyxis probe (templates/runtimes/probe/pyxis.sh.j2): enroot run once, `list`,
its version read from its own script. Real bash and sed, a fake enroot that logs each run."""

from __future__ import annotations

import subprocess
from pathlib import Path

from slurmserve import runtimes
from slurmserve.render import render_template
from slurmserve.slurm.steps import parse

FAKE_ENROOT = """#!/usr/bin/env bash
echo "$1" >>"$RUNS"
{version_line}
[[ -n "${{ENROOT_BROKEN:-}}" ]] && {{ echo "mkdir: cannot create directory: Read-only" >&2; exit 1; }}
case "$1" in
  version) echo "3.9-run" ;;
  list) printf '%s\\n' pyxis_43_slurmserve-43 pyxis_slurmserve-7 pyxis_9_other base ;;
esac
"""


def node(tmp_path: Path, version_line: str = 'export ENROOT_VERSION="4.1.2"') -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "enroot"
    exe.write_text(FAKE_ENROOT.format(version_line=version_line))
    exe.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "RUNS": str(tmp_path / "runs"),
            "SLURMD_NODENAME": "no-such-node"}  # marked_jobs: nothing runs on it


def probe(env: dict[str, str], image: str) -> dict[str, str]:
    script = ("rank=0\n" + render_template("_facts.sh.j2")
              + render_template("runtimes/probe/_marked.sh.j2", **runtimes.shell_context("", "43"))
              + render_template("runtimes/probe/pyxis.sh.j2", **runtimes.shell_context("", "43"))
              + f"\nprobe_pyxis {image!r}\n")
    out = subprocess.run(["/bin/bash", "-c", script], env=env, capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return parse(out).of(0)


def runs(env: dict[str, str]) -> list[str]:
    path = Path(env["RUNS"])
    return path.read_text().split() if path.exists() else []


def test_enroot_runs_once_and_its_containers_of_ours_are_found(tmp_path):
    env = node(tmp_path)
    sqsh = tmp_path / "engine.sqsh"
    sqsh.write_bytes(b"hsqs")
    facts = probe(env, str(sqsh))
    assert facts == {"runtime.pyxis": "ok enroot 4.1.2", "image.pyxis": "present",
                     "ours.pyxis": "pyxis_43_slurmserve-43=43 pyxis_slurmserve-7=7",
                     "named.pyxis": "1"}  # job 43's own container: its launch looks again
    assert runs(env) == ["list"]


def test_a_script_without_the_version_line_is_asked(tmp_path):
    env = node(tmp_path, version_line="")
    facts = probe(env, "/no/such.sqsh")
    assert facts["runtime.pyxis"] == "ok enroot 3.9-run" and facts["image.pyxis"] == "absent"
    assert runs(env) == ["version", "list"]


def test_an_enroot_that_cannot_run_is_an_error_naming_its_words(tmp_path):
    env = {**node(tmp_path), "ENROOT_BROKEN": "1"}
    facts = probe(env, "/no/such.sqsh")
    assert facts == {"runtime.pyxis": "error: enroot list: mkdir: cannot create directory: "
                                      "Read-only"}


def test_no_enroot(tmp_path):
    assert probe({"PATH": str(tmp_path), "SLURMD_NODENAME": "no-such-node"}, "x.sqsh") == {
        "runtime.pyxis": "absent"}

