"""`slurmserve test` checks against the stand-in engines run as local processes on 127.0.0.1.

The stand-ins (containers/testing/standin) speak the engines' HTTP APIs with deterministic
text and can break on purpose (SLURMSERVE_STANDIN_FAULT), so every check must pass on a
healthy one and exactly the broken feature must fail on a faulty one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from slurmserve.tools import apicheck
from slurmserve.tools.apicheck import FAIL, PASS, SKIP, Context, run_checks

STANDIN = Path(__file__).resolve().parents[3] / "containers" / "testing" / "standin"
ALL_CHECKS = [name for name, _ in apicheck.CHECKS + apicheck.ENGINE_CHECKS]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, *args, "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(argv, cwd=STANDIN, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONPATH": str(STANDIN), **(env or {})})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()[0]
            try:
                if requests.get(self.url + "/health", timeout=0.5).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"stand-in {args} did not become healthy")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Server]]:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    started: list[Server] = []

    class Tracked(Server):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            started.append(self)

    yield Tracked
    for server in started:
        server.stop()


def statuses(report: apicheck.Report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def vllm_args(*extra: str) -> list[str]:
    return ["-m", "standin.vllm_cli", "serve", "org/m", "--served-model-name", "tiny", *extra]


def test_healthy_vllm_standin_passes_every_check_it_supports(standin) -> None:
    server = standin(vllm_args())
    report = run_checks(server.url, timeout=10)
    assert (report.engine, report.model) == ("vllm", "tiny")
    assert report.engine_source == "detected: /v1/models owned_by=vllm"
    assert statuses(report) == {**dict.fromkeys(ALL_CHECKS, PASS), "auth": SKIP,
                                "sglang-generate": SKIP}
    assert report.failures == 0
    details = {c.name: c.detail for c in report.checks}
    assert details["sglang-generate"] == "SGLang-only endpoint (engine is vllm)"
    assert details["completion"] == "8 tokens, finish_reason=length"
    assert details["sampling"].endswith("same seed -> same text")


def test_break_streaming_fails_exactly_the_streaming_check(standin) -> None:
    server = standin(vllm_args(), {"SLURMSERVE_STANDIN_FAULT": "break-streaming"})
    report = run_checks(server.url, timeout=10)
    failed = [c for c in report.checks if c.status == FAIL]
    assert [c.name for c in failed] == ["streaming"]
    assert report.failures == 1
    assert "is not JSON" in failed[0].detail


def test_no_metrics_fails_exactly_the_metrics_check(standin) -> None:
    server = standin(vllm_args(), {"SLURMSERVE_STANDIN_FAULT": "no-metrics"})
    report = run_checks(server.url, engine="vllm", model="tiny", timeout=10)
    assert report.engine_source == "given"
    assert [c.name for c in report.checks if c.status == FAIL] == ["metrics"]


def test_api_key_required_and_sent_as_bearer(standin, monkeypatch: pytest.MonkeyPatch) -> None:
    server = standin(vllm_args("--api-key", "s3cret"))
    without = run_checks(server.url, timeout=10)
    without_status = statuses(without)
    assert without.failures >= 5
    assert without_status["health"] == PASS and without_status["auth"] == SKIP
    assert without_status["models"] == without_status["completion"] == FAIL
    models = next(c for c in without.checks if c.name == "models")
    assert models.detail.startswith("HTTP 401 (the server wants an API key")

    with_key = run_checks(server.url, api_key="s3cret", timeout=10)
    assert with_key.failures == 0
    assert statuses(with_key)["auth"] == PASS
    assert statuses(with_key)["completion"] == PASS

    wrong = run_checks(server.url, api_key="nope", model="tiny", timeout=10)
    assert statuses(wrong)["completion"] == FAIL

    monkeypatch.setenv("OPENAI_API_KEY", "s3cret")
    from_env = run_checks(server.url, timeout=10)
    assert from_env.failures == 0 and statuses(from_env)["auth"] == PASS


def test_sglang_standin_native_generate_and_metrics_flag(standin) -> None:
    args = ["-m", "sglang.launch_server", "--model-path", "org/m"]
    with_metrics = run_checks(standin([*args, "--enable-metrics"]).url, timeout=10)
    assert with_metrics.engine == "sglang"
    assert statuses(with_metrics) == {**dict.fromkeys(ALL_CHECKS, PASS), "auth": SKIP}
    assert "seed reproducibility not asserted for sglang" in next(
        c.detail for c in with_metrics.checks if c.name == "sampling")

    # As in SGLang, /metrics needs --enable-metrics: the check fails and says so.
    plain = run_checks(standin(args).url, timeout=10)
    metrics = next(c for c in plain.checks if c.name == "metrics")
    assert (metrics.status, plain.failures) == (FAIL, 1)
    assert "--enable-metrics" in metrics.detail


def test_trtllm_standin_detected_and_checked(standin) -> None:
    serve = "from standin.trtllm_cli import serve_main; serve_main()"  # trtllm-serve
    report = run_checks(standin(["-c", serve, "org/m"]).url, timeout=10)
    assert report.engine == "trtllm"
    assert report.failures == 0
    assert next(c.detail for c in report.checks if c.name == "metrics").endswith("trtllm_ metrics")


def test_nothing_listening_fails_without_crashing() -> None:
    report = run_checks(f"http://127.0.0.1:{free_port()}", timeout=2)
    assert (report.engine, report.model) == (None, None)
    st = statuses(report)
    assert st["health"] == FAIL and st["metrics"] == SKIP and st["sglang-generate"] == SKIP
    assert next(c.detail for c in report.checks if c.name == "completion") == (
        "no model to ask for: none given and /v1/models gave none (see models)")


def test_only_runs_the_named_checks(standin) -> None:
    server = standin(vllm_args())
    report = run_checks(server.url, only=["health", "stop"], timeout=10)
    assert [c.name for c in report.checks] == ["health", "stop"]
    with pytest.raises(ValueError, match="engine must be one of"):
        run_checks(server.url, engine="tgi")


def test_report_table_and_dict() -> None:
    report = apicheck.Report("http://h:1", "vllm", "given", "m", [
        apicheck.Check("health", PASS, "/health 200", 0.01),
        apicheck.Check("streaming", FAIL, "stream ended after 1 event(s) without `data: [DONE]`"),
        apicheck.Check("sglang-generate", SKIP, "SGLang-only endpoint (engine is vllm)")])
    lines = report.table().splitlines()
    assert lines[0] == "http://h:1  engine=vllm (given)  model=m"
    assert lines[1].split() == ["CHECK", "RESULT", "TIME", "DETAIL"]
    assert lines[2].split()[:3] == ["health", "PASS", "0.01s"]
    # Columns line up: every RESULT starts at the same offset.
    assert len({line.index(word) for line, word in zip(lines[1:5], ["RESULT", "PASS", "FAIL",
                                                                     "SKIP"], strict=True)}) == 1
    assert lines[-1] == "3 checks: 1 passed, 1 failed, 1 skipped"
    data = report.to_dict()
    assert (data["pass"], data["fail"], data["skip"], report.failures) == (1, 1, 1, 1)
    assert json.loads(json.dumps(data))["checks"][1]["name"] == "streaming"


class _TrtllmMetrics(BaseHTTPRequestHandler):
    """TensorRT-LLM's /metrics answers JSON iteration stats, not Prometheus text."""

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps([{"iter": 3, "numActiveRequests": 0}]).encode()
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_trtllm_metrics_json_iteration_stats_pass() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _TrtllmMetrics)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        ctx = Context(requests.Session(), f"http://127.0.0.1:{httpd.server_address[1]}", "trtllm",
                      "m", None, 5)
        assert apicheck.check_metrics(ctx) == "iteration stats JSON (1 entries)"
        ctx.engine = "vllm"
        with pytest.raises(apicheck.Fail, match="no 'vllm:' metric"):
            apicheck.check_metrics(ctx)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_stop_string_choice() -> None:
    assert apicheck._stop_string(" alpha bravo charlie") == "o c"
    assert apicheck._stop_string(" alpha bravo  charlie") == "cha"
    assert apicheck._stop_string("ab\ufffd\ufffd\x0f\x0f") is None


def test_engine_checks_come_from_the_engines_and_skip_for_the_others() -> None:
    from slurmserve import engines

    owned = {extra.name: name for name in engines.ENGINES
             for extra in engines.get(name).API.extra_checks}
    assert owned == {"sglang-generate": "sglang"}
    assert [name for name, _ in apicheck.ENGINE_CHECKS] == list(owned)
    assert not {name for name, _ in apicheck.CHECKS} & set(owned)  # generic ones name no engine

    answers = {"/generate": {"text": "x", "meta_info": {"completion_tokens": 3}}}
    ctx = Context(requests.Session(), "http://h:1", "sglang", "m", None, 1.0)
    ctx.call = lambda path, body: answers[path]  # type: ignore[method-assign]
    check = dict(apicheck.ENGINE_CHECKS)["sglang-generate"]
    with pytest.raises(apicheck.Fail, match="completion_tokens 3, asked 8"):
        check(ctx)
    answers["/generate"]["meta_info"]["completion_tokens"] = apicheck.TOKENS
    assert check(ctx) == "/generate 8 tokens"
    ctx.engine = "trtllm"
    with pytest.raises(apicheck.Skip, match=r"SGLang-only endpoint \(engine is trtllm\)"):
        check(ctx)
