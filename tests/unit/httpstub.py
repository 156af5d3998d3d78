"""A local HTTP server in a thread that plays an engine's or the router's /health and metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Stub:
    """Answers GET `path` with its body (text, or a callable called per request); every request
    is recorded as (path, Authorization header); `delay` seconds before each metrics answer."""

    def __init__(self, routes: Mapping[str, str | Callable[[], str]], delay: float = 0.0) -> None:
        self.routes = dict(routes)
        self.delay = delay
        self.seen: list[tuple[str, str | None]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
                stub.seen.append((self.path, self.headers.get("Authorization")))
                body = stub.routes.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path != "/health" and stub.delay:
                    time.sleep(stub.delay)
                data = (body() if callable(body) else body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]


@contextmanager
def serving(*stubs: Stub) -> Iterator[tuple[Stub, ...]]:
    threads = [threading.Thread(target=s.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                daemon=True) for s in stubs]
    for thread in threads:
        thread.start()
    try:
        yield stubs
    finally:
        for stub in stubs:
            stub.httpd.shutdown()
            stub.httpd.server_close()


def counting(template: str, step: float) -> Callable[[], str]:
    """A metrics body whose TOKENS grows by `step` on every read."""
    reads = [0]

    def body() -> str:
        reads[0] += 1
        return template.replace("TOKENS", str(step * reads[0]))

    return body


def closed_url() -> str:
    """A URL nothing listens on (connection refused at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
