"""The parser tier: engine argvs through the engines' own parsers (see README.md here).

Each parser runs once per session on one batch holding every check for it. Without a parser's
runtime (the test image on the build dockerd, the SGLang venv) its tests skip and say how to
prepare it; with SLURMSERVE_PARSERS_REQUIRED=1 (as `make test` sets) they fail instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from . import harness
from .cases import Check, bad_checks, bad_layout_checks, golden_checks, matrix_checks

HERE = Path(__file__).resolve().parent
GOOD = golden_checks() + matrix_checks()[0]
BAD = bad_checks()
BAD_LAYOUT = bad_layout_checks()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.parsers)


def for_parser(parser: str) -> list[Check]:
    return [c for c in GOOD + BAD if c.parser == parser]


Batch = dict[str, harness.Verdict]


class Batches:
    """Verdicts per parser (and per recorded TRT-LLM version), computed on first use."""

    def __init__(self) -> None:
        self._done: dict[str, Batch | str] = {}
        self._broken: dict[str, str] = {}  # a batch that ran but gave no verdicts: run once only
        self.seconds: dict[str, float] = {}

    def versions(self) -> list[str]:
        """e.g. "vllm 0.32.0+cpu (vllm's serve argument parser)", one per batch that ran."""
        return sorted({f"{v.check.parser} {v.version} ({v.source})" for batch in self._done.values()
                       if not isinstance(batch, str) for v in batch.values()})

    def get(self, key: str, run: Callable[[], Sequence[harness.Verdict]]) -> Batch:
        if key not in self._done and key not in self._broken:
            start = time.monotonic()
            try:
                self._done[key] = {v.check.id: v for v in run()}
            except harness.Unavailable as exc:
                self._done[key] = str(exc)
            except Exception as exc:  # noqa: BLE001 - reported by every test of the batch
                self._broken[key] = f"{type(exc).__name__}: {exc}"
            self.seconds[key] = time.monotonic() - start
        if key in self._broken:
            pytest.fail(f"the {key} batch gave no verdicts: {self._broken[key]}")
        found = self._done[key]
        if isinstance(found, str):
            if os.environ.get("SLURMSERVE_PARSERS_REQUIRED") == "1":
                pytest.fail(f"{key} parser unavailable: {found}")
            pytest.skip(f"{key} parser unavailable: {found}")
        return found


@pytest.fixture(scope="session")
def batches() -> Batches:
    return Batches()


def _sglang() -> Sequence[harness.Verdict]:
    return harness.in_venv(harness.sglang_venv(), for_parser("sglang"))


def _sglang_resolve() -> Sequence[harness.Verdict]:
    return harness.in_venv(harness.sglang_venv(), for_parser("sglang") + BAD_LAYOUT,
                           HERE / "sglang_resolve.py")


RUNS: dict[str, Callable[[], Sequence[harness.Verdict]]] = {
    "vllm": lambda: harness.in_image(harness.VLLM_IMAGE, for_parser("vllm")),
    "ray": lambda: harness.in_image(harness.STANDIN_IMAGE, for_parser("ray"), model=None),
    "sglang": _sglang,
}


@pytest.fixture(scope="session")
def verdict_of(batches: Batches) -> Callable[[Check], harness.Verdict]:
    """The real parser's verdict on one check (its whole batch runs on first use)."""

    def verdict(check: Check) -> harness.Verdict:
        return batches.get(check.parser, RUNS[check.parser])[check.id]

    return verdict


@pytest.fixture(scope="session")
def resolved_of(batches: Batches) -> Callable[[Check], harness.Verdict]:
    """SGLang's verdict on one check after its own resolution (tests/parsers/sglang_resolve.py)."""

    def verdict(check: Check) -> harness.Verdict:
        return batches.get("sglang-resolve", _sglang_resolve)[check.id]

    return verdict


@pytest.fixture(scope="session")
def recorded_of(batches: Batches) -> Callable[[str, Check], harness.Verdict]:
    """The checker's verdict on a TRT-LLM check against the option set recorded for a version."""

    def verdict(version: str, check: Check) -> harness.Verdict:
        return batches.get(f"trtllm-{version}", lambda: harness.recorded_trtllm(
            version, for_parser("trtllm")))[check.id]

    return verdict


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    found = getattr(terminalreporter.config, "_parser_batches", None)
    if found:
        terminalreporter.write_line("parser batches: " + ", ".join(
            f"{k} {s:.1f} s" for k, s in found.seconds.items()))
        if found.versions():
            terminalreporter.write_line("checked against: " + ", ".join(found.versions()))


@pytest.fixture(scope="session", autouse=True)
def _report_batches(request: pytest.FixtureRequest, batches: Batches) -> None:
    request.config._parser_batches = batches  # type: ignore[attr-defined]
