"""node/argcheck.py as the image runs it: a JSON request on stdin, one JSON line out.

The engines' real parsers are exercised by tests/parsers (vLLM in its image, SGLang from PyPI,
Ray's click command); here the program's own logic: entry-point parsers (what the stand-ins
use), the recorded trtllm-serve option sets, a missing parser, the offending flag.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slurmserve.node import argcheck

PROGRAM = Path(argcheck.__file__)
OPTIONS = json.loads((PROGRAM.parents[1] / "engines" / "trtllm-serve-options.json").read_text())


def fake_distribution(root: Path, name: str, version: str, entry_points: str = "",
                      module: str = "") -> None:
    """An installed distribution (dist-info on sys.path), as pip would leave it."""
    info = root / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if entry_points:
        (info / "entry_points.txt").write_text(entry_points)
    if module:
        (root / f"{name}.py").write_text(module)


def run(request: dict, path: Path | None = None) -> tuple[int, dict]:
    env = {"PYTHONPATH": str(path)} if path else {}
    proc = subprocess.run([sys.executable, str(PROGRAM)],
                          input=json.dumps(request), capture_output=True, text=True,
                          env={**env, "PATH": "/usr/bin:/bin"}, timeout=60)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    """A parser provided through the slurmserve.argcheck entry point, as the stand-ins do."""
    fake_distribution(tmp_path, "fakeengine", "1.0", "[slurmserve.argcheck]\n"
                      "vllm = fakeengine:VLLM\n", module='''
class _Check:
    VERSION = "9.9"
    def check(self, argv):
        bad = [a for a in argv if a.startswith("--bogus")]
        return f"unrecognized arguments: {bad[0]}" if bad else None
VLLM = _Check()
''')
    return tmp_path


def test_an_entry_point_parser_accepts_and_rejects(engine: Path) -> None:
    code, out = run({"checks": [
        {"rank": 0, "parser": "vllm", "argv": ["/m", "--port", "8000"]},
        {"rank": 1, "parser": "vllm", "argv": ["/m", "--bogus-flag=1"]}]}, engine)
    assert code == 0
    ok, bad = out["results"]
    assert ok["ok"] and ok["version"] == "9.9" and ok["source"] == "entry point fakeengine:VLLM"
    assert not bad["ok"] and bad["flag"] == "--bogus-flag"
    assert bad["error"] == "unrecognized arguments: --bogus-flag=1"


def test_no_parser_in_the_image_is_exit_3(tmp_path: Path) -> None:
    code, out = run({"checks": [{"rank": 0, "parser": "sglang", "argv": ["--tp", "8"]}]},
                    tmp_path)
    assert code == argcheck.UNAVAILABLE
    assert out["results"][0]["error"] == "no sglang parser in this image"


@pytest.mark.parametrize("version, argv, error", [
    ("1.1.0", ["/m", "--tp_size", "8", "--extra_llm_api_options", "x.yaml"], ""),
    ("1.1.0", ["/m", "--config", "x.yaml"], "No such option: --config"),
    ("1.1.0", ["/m", "--tensor_parallel_size=8"], "No such option: --tensor_parallel_size"),
    ("1.2.0", ["/m", "--config", "x.yaml", "--tensor_parallel_size", "8"], ""),
])
def test_trtllm_without_its_package_uses_the_recorded_option_set(tmp_path: Path, version: str,
                                                                 argv: list[str], error: str
                                                                 ) -> None:
    fake_distribution(tmp_path, "tensorrt_llm", version)  # installed, but not importable here
    code, out = run({"checks": [{"rank": 0, "parser": "trtllm", "argv": argv}],
                     "trtllm_options": OPTIONS["options"]}, tmp_path)
    result = out["results"][0]
    assert code == 0 and result["version"] == version
    assert result["source"] == "trtllm-serve's recorded option set"
    assert result["error"] == error and result["ok"] == (not error)


def test_the_recorded_option_sets_say_where_they_come_from() -> None:
    assert set(OPTIONS["options"]) == {"1.1.0", "1.2.0"}
    assert all(OPTIONS["sources"][v] for v in OPTIONS["options"])
    assert "--config" not in OPTIONS["options"]["1.1.0"]
    assert {"--config", "--extra_llm_api_options"} <= set(OPTIONS["options"]["1.2.0"])


def test_offending_flag_is_one_of_the_command_line() -> None:
    assert argcheck.offending_flag("unrecognized arguments: --foo 1", ["m", "--foo", "1"]) == \
        "--foo"
    assert argcheck.offending_flag("argument --tensor-parallel-size/-tp: invalid int value: 'x'",
                                   ["m", "--tensor-parallel-size", "x"]) == \
        "--tensor-parallel-size"
    assert argcheck.offending_flag("something else", ["m"]) == ""
    assert argcheck.offending_flag("no repo '/models/does-not-exist'", ["/models/does-not-exist"]
                                   ) == ""
