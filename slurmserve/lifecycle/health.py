"""Readiness: the health path answers, the model is listed, and one tiny generation succeeds.

Health alone is not readiness (field failure 10): engines answer /health before the first
request can be served, and SGLang's non-head ranks answer it with a dummy server.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ..plan import Readiness

# A probe that fails on the way: no connection, a timeout, a broken or non-JSON answer.
PROBE_ERRORS = (OSError, http.client.HTTPException, ValueError)


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


class Prober:
    """HTTP probes against one endpoint, with a short per-request timeout. The standard
    library's client: a run starts polling without importing `requests` (0.2 s here), and
    never routes cluster-internal probes through a proxy."""

    def __init__(self, endpoint: str, readiness: Readiness, api_key: str | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.readiness = readiness
        url = urllib.parse.urlsplit(self.endpoint)
        self._connection = http.client.HTTPSConnection if url.scheme == "https" \
            else http.client.HTTPConnection
        self._host, self._port, self._base = url.hostname or "", url.port, url.path
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _request(self, method: str, path: str, timeout: float,
                 body: dict[str, Any] | None = None) -> tuple[int, bytes]:
        conn = self._connection(self._host, self._port, timeout=timeout)
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, self._base + path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def health(self, timeout: float = 2.0) -> Check:
        try:
            status, _ = self._request("GET", self.readiness.health_path, timeout)
        except PROBE_ERRORS as exc:
            return Check(False, type(exc).__name__)
        return Check(status == 200, f"HTTP {status}")

    def models(self, timeout: float = 5.0) -> tuple[Check, list[str]]:
        try:
            status, body = self._request("GET", self.readiness.models_path, timeout)
            ids = [m["id"] for m in json.loads(body).get("data", [])]
        except (*PROBE_ERRORS, KeyError, TypeError, AttributeError) as exc:
            return Check(False, f"bad /v1/models answer: {exc}"), []
        if status != 200 or not ids:
            return Check(False, f"HTTP {status}, models {ids}"), ids
        return Check(True, ", ".join(ids)), ids

    def generate(self, model: str, timeout: float = 60.0) -> Check:
        body = {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0}
        try:
            status, answer = self._request("POST", self.readiness.generate_path, timeout, body)
            if status != 200:  # e.g. 401: the key is wrong
                return Check(False, f"HTTP {status}")
            text = json.loads(answer)["choices"][0].get("text")
        except TimeoutError:
            return Check(False, f"no answer to a 1-token completion in {timeout:g}s")
        except (*PROBE_ERRORS, KeyError, IndexError, TypeError, AttributeError) as exc:
            return Check(False, f"bad completion answer: {exc}")
        if text is None:
            return Check(False, f"HTTP {status}")
        return Check(True, repr(text))
