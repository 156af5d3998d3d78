"""Readiness probes (lifecycle/health.py) against a real local HTTP server playing an engine."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from slurmserve.lifecycle.health import Prober
from slurmserve.plan import Readiness

from ..httpstub import closed_url


class Engine:
    """/health, /v1/models and /v1/completions; `key`: the Bearer key it wants; `slow`:
    seconds before a completion answers."""

    def __init__(self, key: str | None = None, slow: float = 0.0, models: tuple = ("m",)):
        self.seen: list[tuple[str, str, str | None, dict | None]] = []
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError):  # the prober gave up waiting
                    self.wfile.write(data)

            def _authorized(self) -> bool:
                return key is None or self.headers.get("Authorization") == f"Bearer {key}"

            def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
                engine.seen.append(("GET", self.path, self.headers.get("Authorization"), None))
                if self.path == "/health":
                    self._answer(200, {})
                elif not self._authorized():
                    self._answer(401, {"error": "key"})
                elif self.path == "/v1/models":
                    self._answer(200, {"data": [{"id": m} for m in models]})
                else:
                    self._answer(404, {})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                engine.seen.append(("POST", self.path, self.headers.get("Authorization"), body))
                if not self._authorized():
                    self._answer(401, {"error": "key"})
                    return
                time.sleep(slow)
                self._answer(200, {"choices": [{"text": " world"}]})

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def serve() -> Iterator:
    started: list[Engine] = []

    def start(**kwargs: object) -> Engine:
        engine = Engine(**kwargs)  # type: ignore[arg-type]
        threading.Thread(target=engine.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        started.append(engine)
        return engine

    yield start
    for engine in started:
        engine.httpd.shutdown()
        engine.httpd.server_close()


def test_health_models_and_a_completion_with_the_key(serve):
    engine = serve(key="k1")
    prober = Prober(engine.url + "/", Readiness(), api_key="k1")
    assert prober.health().ok
    models, ids = prober.models()
    assert models.ok and ids == ["m"]
    generated = prober.generate("m")
    assert generated.ok and generated.detail == "' world'"
    post = next(s for s in engine.seen if s[0] == "POST")
    assert post[1:] == ("/v1/completions", "Bearer k1",
                        {"model": "m", "prompt": "Hello", "max_tokens": 1, "temperature": 0})


def test_a_wrong_key_is_an_http_status_not_readiness(serve):
    engine = serve(key="right")
    prober = Prober(engine.url, Readiness(), api_key="wrong")
    assert prober.health().ok  # /health wants no key, as the engines'
    assert prober.models()[0].detail == "HTTP 401, models []"
    assert prober.generate("m").detail == "HTTP 401"


def test_nothing_listening_and_no_models(serve):
    check = Prober(closed_url(), Readiness()).health(timeout=1.0)
    assert not check.ok and check.detail == "ConnectionRefusedError"
    engine = serve(models=())
    assert Prober(engine.url, Readiness()).models()[0].detail == "HTTP 200, models []"


def test_a_completion_that_does_not_answer_in_time(serve):
    engine = serve(slow=1.0)
    check = Prober(engine.url, Readiness()).generate("m", timeout=0.2)
    assert not check.ok and check.detail == "no answer to a 1-token completion in 0.2s"
