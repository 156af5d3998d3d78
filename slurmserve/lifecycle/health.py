"""Readiness: the health path answers, the model is listed, and one tiny generation succeeds.

Health alone is not readiness (field failure 10): engines answer /health before the first
request can be served, and SGLang's non-head ranks answer it with a dummy server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..plan import Readiness


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


class Prober:
    """HTTP probes against one endpoint, with a short per-request timeout."""

    def __init__(self, endpoint: str, readiness: Readiness, api_key: str | None = None) -> None:
        import requests

        self.endpoint = endpoint.rstrip("/")
        self.readiness = readiness
        self.session = requests.Session()
        self.session.trust_env = False  # never route cluster-internal probes through a proxy
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def _get(self, path: str, timeout: float) -> Any:
        return self.session.get(self.endpoint + path, timeout=timeout)

    def health(self, timeout: float = 2.0) -> Check:
        import requests

        try:
            response = self._get(self.readiness.health_path, timeout)
        except requests.RequestException as exc:
            return Check(False, type(exc).__name__)
        return Check(response.status_code == 200, f"HTTP {response.status_code}")

    def models(self, timeout: float = 5.0) -> tuple[Check, list[str]]:
        import requests

        try:
            response = self._get(self.readiness.models_path, timeout)
            ids = [m["id"] for m in response.json().get("data", [])]
        except (requests.RequestException, ValueError, KeyError, TypeError, AttributeError) as exc:
            return Check(False, f"bad /v1/models answer: {exc}"), []
        if response.status_code != 200 or not ids:
            return Check(False, f"HTTP {response.status_code}, models {ids}"), ids
        return Check(True, ", ".join(ids)), ids

    def generate(self, model: str, timeout: float = 60.0) -> Check:
        import requests

        body = {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0}
        try:
            response = self.session.post(self.endpoint + self.readiness.generate_path, json=body,
                                         timeout=timeout)
            if response.status_code != 200:  # e.g. 401: the key is wrong
                return Check(False, f"HTTP {response.status_code}")
            text = response.json()["choices"][0].get("text")
        except requests.Timeout:
            return Check(False, f"no answer to a 1-token completion in {timeout:g}s")
        except (requests.RequestException, ValueError, KeyError, IndexError, TypeError) as exc:
            return Check(False, f"bad completion answer: {exc}")
        if response.status_code != 200 or text is None:
            return Check(False, f"HTTP {response.status_code}")
        return Check(True, repr(text))
