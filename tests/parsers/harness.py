"""Run checks through slurmserve's argument checker (slurmserve/node/argcheck.py) with each
engine's own Python: vLLM inside the vllm-cpu test image, Ray inside the stand-in image (both
on the private build dockerd of containers/testing/build, never a sandbox node's), SGLang in
the venv of containers/testing/parsers/sglang-venv, TRT-LLM with its recorded option sets.
One checker process per batch: importing vLLM costs ~9 s, each argv ~0.01 s.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cases import ROOT, Check

CHECKER_DIR = Path(os.environ.get("SLURMSERVE_ARGCHECK_DIR", ROOT / "slurmserve" / "node"))
BUILD_DOCKER_HOST = "unix:///run/slurmserve-build/docker.sock"
VLLM_IMAGE = os.environ.get("SLURMSERVE_PARSERS_VLLM_IMAGE", "slurmserve-testing/vllm-cpu:latest")
STANDIN_IMAGE = os.environ.get("SLURMSERVE_PARSERS_STANDIN_IMAGE", "slurmserve-testing/standin:latest")
IMAGE_MODEL = "/models/tiny"  # in the vllm-cpu image
SGLANG_VENV = ROOT / "containers" / "testing" / "parsers" / "sglang-venv"
VERSIONS_ENV = ROOT / "containers" / "testing" / "versions.env"
DATA = Path(__file__).resolve().parent / "data"
TIMEOUT_S = 600


class Unavailable(Exception):
    """A parser's runtime (image, venv, docker) is not there: the tests skip, naming the fix."""


@dataclass(frozen=True)
class Verdict:
    check: Check
    ok: bool
    error: str
    version: str
    source: str
    argv: tuple[str, ...]  # what the parser got (model and /slurmserve/ paths made local)


def pinned_versions() -> dict[str, str]:
    """KEY=VALUE lines of containers/testing/versions.env (the one place engine versions live)."""
    values: dict[str, str] = {}
    for line in VERSIONS_ENV.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            words = shlex.split(value)
            values[key.strip()] = " ".join(words)
    return values


# ---------------------------------------------------------------- argv as the parser sees it

def _model_index(parser: str, argv: Sequence[str]) -> int | None:
    if parser in ("vllm", "trtllm"):
        return 0 if argv and not argv[0].startswith("-") else None
    if parser == "sglang":
        for i, word in enumerate(argv[:-1]):
            if word in ("--model-path", "--model"):
                return i + 1
    return None


def localize(check: Check, files_root: str, model: str | None) -> list[str]:
    """The check's argv with the plan's files under `files_root` (in place of /slurmserve/) and
    the model replaced by a local tiny model: the checks run offline, and a hub ID is not
    something a parser can judge without the network."""
    argv = [_rebase(word, files_root) for word in check.argv]
    at = _model_index(check.parser, argv)
    if model and at is not None:
        argv[at] = model
    return argv


def _rebase(word: str, root: str) -> str:
    flag, sep, value = word.partition("=")
    if sep and flag.startswith("-") and value.startswith("/slurmserve/"):
        return f"{flag}={root}/{value.removeprefix('/slurmserve/')}"
    if word.startswith("/slurmserve/"):
        return f"{root}/{word.removeprefix('/slurmserve/')}"
    return word


def _write_files(checks: Sequence[Check], where: Path) -> None:
    for i, check in enumerate(checks):
        for plan_file in check.files:
            path = where / str(i) / plan_file.name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(plan_file.text)
    where.chmod(0o755)


# ---------------------------------------------------------------- running the checker

def _request(checks: Sequence[Check], argvs: Sequence[list[str]],
             trtllm_options: Mapping[str, Any] | None) -> str:
    body: dict[str, Any] = {"checks": [{"rank": i, "parser": c.parser, "argv": argv}
                                       for i, (c, argv) in enumerate(zip(checks, argvs, strict=True))]}
    if trtllm_options is not None:
        body["trtllm_options"] = trtllm_options
    return json.dumps(body)


def _verdicts(checks: Sequence[Check], argvs: Sequence[list[str]],
              proc: subprocess.CompletedProcess[str], what: str) -> list[Verdict]:
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"results"')]
    if not lines:
        raise AssertionError(f"{what}: no result line (exit {proc.returncode})\n"
                             f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}")
    results = json.loads(lines[-1])["results"]
    assert len(results) == len(checks), f"{what}: {len(results)} results for {len(checks)} checks"
    if proc.returncode == 3 and not any(r["version"] for r in results):
        raise Unavailable(f"{what}: {results[0]['error']}")
    out = []
    for i, (check, argv, result) in enumerate(zip(checks, argvs, results, strict=True)):
        assert result["rank"] == i and result["parser"] == check.parser, (what, i, result)
        out.append(Verdict(check, bool(result["ok"]), result.get("error") or "",
                           result.get("version") or "", result.get("source") or "", tuple(argv)))
    return out


def docker_env() -> dict[str, str]:
    """The private build dockerd (containers/testing/build), never a sandbox node's."""
    host = os.environ.get("SLURMSERVE_PARSERS_DOCKER_HOST", BUILD_DOCKER_HOST)
    return {**os.environ, "DOCKER_HOST": host, "DOCKER_API_VERSION": "1.41"}


def require_image(image: str) -> None:
    try:
        proc = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image],
                              env=docker_env(), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"docker: {exc}") from None
    if proc.returncode:
        raise Unavailable(f"{image} not on {docker_env()['DOCKER_HOST']} ({proc.stderr.strip()[:200]}); "
                          "build or load it: containers/testing/parsers/prepare")


def in_image(image: str, checks: Sequence[Check], model: str | None = IMAGE_MODEL) -> list[Verdict]:
    """One throwaway container, no network, the checker mounted read-only."""
    require_image(image)
    with tempfile.TemporaryDirectory(prefix="slurmserve-parsers-") as tmp:
        _write_files(checks, Path(tmp))
        argvs = [localize(c, f"/slurmserve-files/{i}", model) for i, c in enumerate(checks)]
        command = ["docker", "run", "--rm", "-i", "--network", "none",
                   "-v", f"{CHECKER_DIR}:/slurmserve-check:ro", "-v", f"{tmp}:/slurmserve-files:ro",
                   "-e", "HF_HUB_OFFLINE=1", "--entrypoint", "python3", image,
                   "/slurmserve-check/argcheck.py"]
        proc = subprocess.run(command, input=_request(checks, argvs, None), env=docker_env(),
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    return _verdicts(checks, argvs, proc, f"argcheck in {image}")


def sglang_venv() -> Path:
    """The venv containers/testing/parsers/sglang-venv built (content-addressed)."""
    given = os.environ.get("SLURMSERVE_SGLANG_VENV")
    if given:
        venv = Path(given)
    else:
        proc = subprocess.run([str(SGLANG_VENV), "--path"], capture_output=True, text=True, timeout=60)
        if proc.returncode:
            raise Unavailable(f"{SGLANG_VENV} --path: {proc.stderr.strip()[-300:]}")
        venv = Path(proc.stdout.strip().splitlines()[-1])
    if not (venv / ".complete").exists() and not given:
        raise Unavailable(f"no SGLang venv at {venv}; build it: {SGLANG_VENV.relative_to(ROOT)} "
                          "(or containers/testing/parsers/prepare)")
    return venv


def in_venv(venv: Path, checks: Sequence[Check], program: Path = CHECKER_DIR / "argcheck.py"
            ) -> list[Verdict]:
    """SGLang's parser on the host, in its venv (torchvision stubbed, see the venv script)."""
    model = venv / "models" / "tiny"
    with tempfile.TemporaryDirectory(prefix="slurmserve-parsers-") as tmp:
        _write_files(checks, Path(tmp))
        argvs = [localize(c, f"{tmp}/{i}", str(model) if model.exists() else None)
                 for i, c in enumerate(checks)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
        env.pop("PYTHONPATH", None)
        proc = subprocess.run([str(venv / "bin" / "python"), str(program)],
                              input=_request(checks, argvs, None), env=env, cwd=tmp,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
        return _verdicts(checks, argvs, proc, f"{program.name} in {venv}")


# ---------------------------------------------------------------- TRT-LLM: recorded option sets

def trtllm_versions() -> list[str]:
    return sorted(p.name.removeprefix("trtllm-serve-options-").removesuffix(".json")
                  for p in DATA.glob("trtllm-serve-options-*.json"))


def trtllm_record(version: str) -> dict[str, Any]:
    return json.loads((DATA / f"trtllm-serve-options-{version}.json").read_text())


def option_names(record: Mapping[str, Any]) -> list[str]:
    """Every option string trtllm-serve accepts in a recorded set (names and their aliases)."""
    names = set(record["options"])
    for spec in record["options"].values():
        aliases = spec.get("aliases")
        if isinstance(aliases, list):
            names.update(aliases)
    return sorted(names)


def recorded_trtllm(version: str, checks: Sequence[Check]) -> list[Verdict]:
    """The checker as it runs in a TRT-LLM image whose tensorrt_llm does not import without a GPU:
    a distribution named tensorrt_llm of `version` is installed (metadata only, here a stand-in
    dist-info), so it checks against the recorded option set of that version."""
    import sys

    with tempfile.TemporaryDirectory(prefix="slurmserve-parsers-") as tmp:
        dist = Path(tmp) / "site" / f"tensorrt_llm-{version}.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tensorrt_llm\nVersion: {version}\n")
        _write_files(checks, Path(tmp) / "files")
        argvs = [localize(c, f"{tmp}/files/{i}", None) for i, c in enumerate(checks)]
        env = {**os.environ, "PYTHONPATH": str(dist.parent), "PYTHONNOUSERSITE": "1"}
        options = {version: option_names(trtllm_record(version))}
        proc = subprocess.run([sys.executable, "-S", str(CHECKER_DIR / "argcheck.py")],
                              input=_request(checks, argvs, options), env=env, cwd=tmp,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
        return _verdicts(checks, argvs, proc, f"argcheck with trtllm-serve {version}'s recorded options")


def typed_trtllm_error(argv: Sequence[str], record: Mapping[str, Any]) -> str | None:
    """click's parse of trtllm-serve's argv against a recorded option set, with the value types
    and choices recorded (the checker itself knows names only): exact long names (click folds
    neither '-' into '_' nor abbreviations), MODEL as the one argument."""
    spec_of: dict[str, Mapping[str, Any]] = {}
    for name, spec in record["options"].items():
        aliases = spec.get("aliases")
        for alias in [name, *(aliases if isinstance(aliases, list) else [])]:
            spec_of[alias] = spec
    positional: list[str] = []
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not word.startswith("-") or word == "-":
            positional.append(word)
            continue
        name, eq, value = word.partition("=")
        spec = spec_of.get(name)
        if spec is None:
            return f"No such option: {name}"
        if spec.get("type") == "flag":
            if eq:
                return f"Option '{name}' does not take a value."
            continue
        if not eq:
            if i >= len(words):
                return f"Option '{name}' requires an argument."
            value = words[i]
            i += 1
        error = _typed_value(name, value, spec)
        if error:
            return error
    if len(positional) != 1:
        return f"expected one MODEL argument, got {positional}"
    return None


def _typed_value(name: str, value: str, spec: Mapping[str, Any]) -> str | None:
    kind = spec.get("type")
    try:
        if kind == "int":
            int(value)
        elif kind == "float":
            float(value)
    except ValueError:
        return f"Invalid value for '{name}': '{value}' is not a valid {kind}."
    choices = spec.get("choices")
    aliases = spec.get("aliases")
    if kind == "choice" and choices and value not in choices and not (
            isinstance(aliases, dict) and value in aliases):
        return f"Invalid value for '{name}': '{value}' is not one of {', '.join(choices)}."
    return None
