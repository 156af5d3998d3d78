"""`slurmserve test`: check a running server's OpenAI-compatible API, engine by engine.

Every check ends PASS, FAIL or SKIP with a reason; a check the engine does not support is
SKIP, never a silent pass. Random-weight models stop at EOS early, so length checks ask for
`ignore_eos` from the engines whose API takes it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .. import engines
from ..engines import ENGINES

if TYPE_CHECKING:
    import requests

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
PROMPT = "The capital of France is"
TOKENS = 8


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS | FAIL | SKIP
    detail: str
    seconds: float = 0.0


@dataclass
class Report:
    base_url: str
    engine: str | None
    engine_source: str  # "given", or how it was detected
    model: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(c.status == FAIL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        counts = {s.lower(): sum(c.status == s for c in self.checks) for s in (PASS, FAIL, SKIP)}
        return {"base_url": self.base_url, "engine": self.engine,
                "engine_source": self.engine_source, "model": self.model,
                "checks": [asdict(c) for c in self.checks], **counts}

    def table(self) -> str:
        head = (f"{self.base_url}  engine={self.engine or 'unknown'} ({self.engine_source})  "
                f"model={self.model or '?'}")
        rows = [("CHECK", "RESULT", "TIME", "DETAIL")] + [
            (c.name, c.status, f"{c.seconds:.2f}s", c.detail) for c in self.checks]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [head] + ["  ".join([*(r[i].ljust(widths[i]) for i in range(3)), r[3]]).rstrip()
                          for r in rows]
        d = self.to_dict()
        lines.append(f"{len(self.checks)} checks: {d['pass']} passed, {d['fail']} failed, "
                     f"{d['skip']} skipped")
        return "\n".join(lines)


class Fail(Exception):
    """The check ran and the server got it wrong."""


class Skip(Exception):
    """The check does not apply to this engine or setup."""


@dataclass
class Context:
    session: requests.Session
    base_url: str
    engine: str | None
    model: str | None
    api_key: str | None
    timeout: float

    @property
    def adapter(self) -> engines.ApiTraits | None:
        """What the engine's API does (engines/<name>.py `API`); None when the engine is unknown."""
        return engines.get(self.engine).API if self.engine else None

    @property
    def fixed_length(self) -> bool:
        return bool(self.adapter and self.adapter.fixed_length_fields)

    @property
    def seeded(self) -> bool:
        """A per-request seed is documented to reproduce a sampled output."""
        return bool(self.adapter and self.adapter.seed_reproducible)

    def url(self, path: str) -> str:
        return self.base_url + path

    def headers(self, auth: bool = True) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if auth and self.api_key else {}

    def get(self, path: str, auth: bool = True) -> requests.Response:
        return self.session.get(self.url(path), headers=self.headers(auth), timeout=self.timeout)

    def post(self, path: str, body: dict[str, Any], stream: bool = False) -> requests.Response:
        return self.session.post(self.url(path), json=body, headers=self.headers(), stream=stream,
                                 timeout=self.timeout)

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST and return the JSON answer; anything but a 200 JSON object fails the check."""
        return _json(self.post(path, body))

    def body(self, **fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "max_tokens": TOKENS, **fields}
        if self.adapter:
            out.update(self.adapter.fixed_length_fields)
        return out

    def expect_tokens(self, usage: dict[str, Any] | None, wanted: int) -> str:
        got = (usage or {}).get("completion_tokens")
        if not isinstance(got, int):
            raise Fail(f"no usage.completion_tokens in the answer: {usage!r}")
        if got > wanted or (self.fixed_length and got != wanted):
            raise Fail(f"max_tokens not honoured: asked {wanted}, got {got} completion tokens")
        return f"{got} tokens"


def _json(response: requests.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise Fail(_http_error(response))
    try:
        data = response.json()
    except ValueError as exc:
        raise Fail(f"answer is not JSON: {response.text[:120]!r}") from exc
    if not isinstance(data, dict):
        raise Fail(f"answer is not a JSON object: {str(data)[:120]}")
    return data


def _http_error(response: requests.Response) -> str:
    text = " ".join(response.text.split())[:160]
    hint = ""
    if response.status_code in (401, 403):
        hint = " (the server wants an API key: pass --api-key or set OPENAI_API_KEY)"
    return f"HTTP {response.status_code}{hint}: {text}"


def _choices(data: dict[str, Any], count: int) -> list[dict[str, Any]]:
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) != count:
        raise Fail(f"expected {count} choice(s), got {choices!r:.160}")
    if sorted(c.get("index") for c in choices) != list(range(count)):
        raise Fail(f"choice indices {[c.get('index') for c in choices]}, expected 0..{count - 1}")
    return sorted(choices, key=lambda c: c["index"])


def _text(choice: dict[str, Any]) -> str:
    text = choice.get("text")
    if not isinstance(text, str):
        raise Fail(f"choice has no text: {choice!r:.160}")
    return text


# ---- checks -------------------------------------------------------------------------------------


def check_health(ctx: Context) -> str:
    response = ctx.get("/health", auth=False)
    if response.status_code != 200:
        raise Fail(f"/health answered HTTP {response.status_code}")
    return "/health 200"


def check_models(ctx: Context) -> str:
    data = _json(ctx.get("/v1/models"))
    ids = [m.get("id") for m in data.get("data") or [] if isinstance(m, dict)]
    if not ids:
        raise Fail(f"/v1/models lists no model: {data!r:.160}")
    if ctx.model not in ids:
        raise Fail(f"model {ctx.model!r} not served; /v1/models lists {ids}")
    return f"{len(ids)} model(s): {', '.join(map(str, ids))}"


def check_completion(ctx: Context) -> str:
    data = ctx.call("/v1/completions", ctx.body(prompt=PROMPT))
    choice = _choices(data, 1)[0]
    _text(choice)
    tokens = ctx.expect_tokens(data.get("usage"), TOKENS)
    if ctx.fixed_length and choice.get("finish_reason") != "length":
        raise Fail(f"finish_reason {choice.get('finish_reason')!r}, expected 'length'")
    return f"{tokens}, finish_reason={choice.get('finish_reason')}"


def check_batch(ctx: Context) -> str:
    prompts = [PROMPT, "Once upon a time", "def fibonacci(n):"]
    data = ctx.call("/v1/completions", ctx.body(prompt=prompts))
    for choice in _choices(data, len(prompts)):
        _text(choice)
    ctx.expect_tokens(data.get("usage"), TOKENS * len(prompts))
    return f"{len(prompts)} prompts -> {len(prompts)} choices"


def check_chat(ctx: Context) -> str:
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Name a colour."}]
    data = ctx.call("/v1/chat/completions", ctx.body(messages=messages))
    message = _choices(data, 1)[0].get("message") or {}
    if message.get("role") != "assistant" or not isinstance(message.get("content"), str):
        raise Fail(f"bad message: {message!r:.160}")
    return ctx.expect_tokens(data.get("usage"), TOKENS)


def check_sampling(ctx: Context) -> str:
    wanted = 5
    body = ctx.body(prompt=PROMPT, max_tokens=wanted, temperature=0.8, top_p=0.9, seed=1234)
    first, second = (ctx.call("/v1/completions", body) for _ in range(2))
    tokens = ctx.expect_tokens(first.get("usage"), wanted)
    texts = [_text(_choices(d, 1)[0]) for d in (first, second)]
    if ctx.seeded:
        if texts[0] != texts[1]:
            raise Fail(f"same seed, different text: {texts[0]!r} vs {texts[1]!r}")
        return f"temperature/top_p/seed accepted, {tokens}, same seed -> same text"
    same = "same" if texts[0] == texts[1] else "different"
    return (f"temperature/top_p/seed accepted, {tokens}; seed reproducibility not asserted for "
            f"{ctx.engine or 'an unknown engine'} ({same} text)")


def _sse(response: requests.Response) -> Iterator[dict[str, Any]]:
    """Yield the JSON events of an SSE stream; fail unless it ends with `data: [DONE]`."""
    if response.status_code != 200:
        raise Fail(_http_error(response))
    kind = response.headers.get("content-type", "")
    if not kind.startswith("text/event-stream"):
        raise Fail(f"content-type {kind!r}, expected text/event-stream")
    done, count = False, 0
    for raw in response.iter_lines():
        line = raw.decode("utf-8", "replace").strip()
        if not line or line.startswith(":"):
            continue
        if not line.startswith("data:"):
            raise Fail(f"not an SSE data line: {line[:120]!r}")
        payload = line[5:].strip()
        if done:
            raise Fail(f"data after [DONE]: {payload[:120]!r}")
        if payload == "[DONE]":
            done = True
            continue
        count += 1
        try:
            event = json.loads(payload)
        except ValueError as exc:
            raise Fail(f"event {count} is not JSON: {payload[:120]!r}") from exc
        if not isinstance(event, dict) or "error" in event:
            raise Fail(f"event {count} is an error: {payload[:160]!r}")
        yield event
    if not done:
        raise Fail(f"stream ended after {count} event(s) without `data: [DONE]`")


def _stream_text(ctx: Context, path: str, body: dict[str, Any], key: str) -> tuple[str, int]:
    parts: list[str] = []
    usage: dict[str, Any] | None = None
    with ctx.post(path, {**body, "stream": True, "stream_options": {"include_usage": True}},
                  stream=True) as response:
        for event in _sse(response):
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                piece = choice.get("text") if key == "text" else (choice.get("delta") or {}).get(
                    "content")
                parts.append(piece or "")
    if not any(parts):
        raise Fail(f"{path}: no text arrived in the stream")
    ctx.expect_tokens(usage, TOKENS)
    return "".join(parts), sum(bool(p) for p in parts)


def check_streaming(ctx: Context) -> str:
    _, n1 = _stream_text(ctx, "/v1/completions", ctx.body(prompt=PROMPT), "text")
    messages = [{"role": "user", "content": "Count to five."}]
    _, n2 = _stream_text(ctx, "/v1/chat/completions", ctx.body(messages=messages), "content")
    return f"completions {n1} and chat {n2} text events, JSON chunks, ends with [DONE]"


def check_logprobs(ctx: Context) -> str:
    data = ctx.call("/v1/completions", ctx.body(prompt=PROMPT, logprobs=2))
    logprobs = _choices(data, 1)[0].get("logprobs") or {}
    values = logprobs.get("token_logprobs")
    if not isinstance(values, list) or not values or not all(
            isinstance(v, (int, float)) and v <= 0 for v in values):
        raise Fail(f"completions: bad token_logprobs {values!r:.160}")
    top = logprobs.get("top_logprobs") or []
    if not top or not all(isinstance(t, dict) and t for t in top):
        raise Fail(f"completions: bad top_logprobs {top!r:.160}")
    chat = ctx.call("/v1/chat/completions", ctx.body(
        messages=[{"role": "user", "content": "Hi"}], logprobs=True, top_logprobs=2))
    content = (_choices(chat, 1)[0].get("logprobs") or {}).get("content")
    if not isinstance(content, list) or not content or not all(
            isinstance(c.get("logprob"), (int, float)) for c in content):
        raise Fail(f"chat: bad logprobs.content {content!r:.160}")
    return f"completions {len(values)} token logprobs (top {len(top[0])}); chat {len(content)}"


def _stop_string(text: str) -> str | None:
    """A short printable piece from the second half of `text`, to stop on."""
    for start in range(len(text) // 2, len(text) - 1):
        piece = text[start:start + 3]
        if len(piece) >= 2 and piece.isprintable() and piece.strip() == piece and "\ufffd" not in piece:
            return piece
    return None


def check_stop(ctx: Context) -> str:
    # A seeded sample gives varied text on any model; greedy random models repeat one token.
    body = ctx.body(prompt="Write a story", max_tokens=16, temperature=0.8, seed=11)
    if not ctx.seeded:
        body = ctx.body(prompt="Write a story", max_tokens=16, temperature=0)
    original = _text(_choices(ctx.call("/v1/completions", body), 1)[0])
    stop = _stop_string(original)
    if stop is None:
        raise Skip(f"no printable piece to stop on in {original!r:.80}")
    choice = _choices(ctx.call("/v1/completions", {**body, "stop": [stop]}), 1)[0]
    text = _text(choice)
    expected = original[:original.find(stop)]
    if choice.get("finish_reason") != "stop" or stop in text or text != expected:
        raise Fail(f"stop={stop!r}: got {text!r:.80} finish_reason={choice.get('finish_reason')!r}, "
                   f"expected {expected!r:.80} and 'stop'")
    return f"stopped on {stop!r} after {len(text)} chars"


def check_echo(ctx: Context) -> str:
    data = ctx.call("/v1/completions", ctx.body(prompt=PROMPT, echo=True))
    text = _text(_choices(data, 1)[0])
    if not text.startswith(PROMPT) or len(text) <= len(PROMPT):
        raise Fail(f"echo: text does not start with the prompt plus more: {text!r:.120}")
    return "prompt echoed before the completion"


def check_n(ctx: Context) -> str:
    # Sampled, because vLLM refuses n>1 with greedy decoding.
    data = ctx.call("/v1/completions", ctx.body(prompt=PROMPT, n=2, temperature=0.8, seed=5))
    for choice in _choices(data, 2):
        _text(choice)
    return "2 choices, " + ctx.expect_tokens(data.get("usage"), 2 * TOKENS)


def check_metrics(ctx: Context) -> str:
    adapter = ctx.adapter
    if adapter is None:
        raise Skip("engine unknown: cannot tell which metrics to expect")
    response = ctx.get("/metrics", auth=False)
    if response.status_code != 200:
        raise Fail(f"/metrics answered HTTP {response.status_code}{adapter.metrics_hint}")
    text = response.text
    if adapter.metrics_json:
        try:
            stats = json.loads(text)
        except ValueError:
            stats = None
        if isinstance(stats, list):
            return f"iteration stats JSON ({len(stats)} entries)"
    prefix = adapter.metrics_prefix
    names = {line.split("{")[0].split()[0] for line in text.splitlines()
             if line.startswith(prefix)}
    if not names:
        raise Fail(f"/metrics has no {prefix!r} metric")
    return f"{len(names)} {prefix} metrics"


def check_auth(ctx: Context) -> str:
    if not ctx.api_key:
        raise Skip("no API key given")
    response = ctx.get("/v1/models", auth=False)
    if response.status_code not in (401, 403):
        raise Fail(f"/v1/models without the key answered HTTP {response.status_code}, expected 401")
    return f"HTTP {response.status_code} without the key, 200 with it"


CHECKS: tuple[tuple[str, Callable[[Context], str]], ...] = (
    ("health", check_health), ("models", check_models), ("auth", check_auth),
    ("completion", check_completion), ("batch", check_batch), ("chat", check_chat),
    ("sampling", check_sampling), ("streaming", check_streaming), ("logprobs", check_logprobs),
    ("stop", check_stop), ("echo", check_echo), ("n", check_n), ("metrics", check_metrics),
)
NEEDS_MODEL = frozenset(name for name, _ in CHECKS) - {"health", "models", "metrics", "auth"}


def engine_check(owner: str, extra: engines.ApiCheck) -> Callable[[Context], str]:
    """A check of an endpoint only the engine `owner` serves; SKIP for every other engine."""

    def check(ctx: Context) -> str:
        if not (ctx.adapter and extra in ctx.adapter.extra_checks):
            label = engines.get(owner).PROFILE.label
            raise Skip(f"{label}-only endpoint (engine is {ctx.engine or 'unknown'})")
        try:
            return extra.run(ctx.call, PROMPT, TOKENS)
        except engines.ApiCheckFailed as exc:
            raise Fail(str(exc)) from None

    return check


#: The engines' own checks (of endpoints beyond the OpenAI API), after the common ones.
ENGINE_CHECKS: tuple[tuple[str, Callable[[Context], str]], ...] = tuple(
    (extra.name, engine_check(name, extra)) for name in ENGINES
    for extra in engines.get(name).API.extra_checks)


# ---- detection and the runner -------------------------------------------------------------------


def detect_engine(ctx: Context) -> tuple[str | None, str]:
    """(engine, how it was told) from /v1/models, SGLang's /get_model_info, then /metrics."""
    import requests

    adapters = [(name, engines.get(name).API) for name in ENGINES]
    try:
        data = ctx.get("/v1/models").json()
        for m in data.get("data") or []:
            for name, adapter in adapters:
                if str(m.get("owned_by")) == adapter.owned_by:
                    return name, f"detected: /v1/models owned_by={m['owned_by']}"
    except (requests.RequestException, ValueError, AttributeError):
        pass
    try:
        for name, adapter in adapters:
            for path in adapter.detect_paths:
                if ctx.get(path).status_code == 200:
                    return name, f"detected: {path}"
        response = ctx.get("/metrics", auth=False)
        if response.status_code == 200:
            for name, adapter in adapters:
                prefix = adapter.metrics_prefix
                if any(line.startswith(prefix) for line in response.text.splitlines()):
                    return name, f"detected: /metrics {prefix}"
    except requests.RequestException:
        pass
    return None, "not detected"


def detect_model(ctx: Context) -> str | None:
    import requests

    try:
        data = ctx.get("/v1/models").json()
        ids = [m["id"] for m in data.get("data") or []]
    except (requests.RequestException, ValueError, AttributeError, KeyError, TypeError):
        return None
    return ids[0] if ids else None


def run_checks(base_url: str, engine: str | None = None, model: str | None = None,
               api_key: str | None = None, timeout: float = 60.0,
               only: list[str] | None = None) -> Report:
    """Run every check (or those named in `only`) against `base_url` and report each one."""
    import requests

    if engine is not None:
        try:
            engines.get(engine)
        except ValueError:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}") from None
    session = requests.Session()
    session.trust_env = False  # never send cluster-internal traffic through a proxy
    ctx = Context(session, base_url.rstrip("/"), engine, model,
                  api_key or os.environ.get("OPENAI_API_KEY") or None, timeout)
    source = "given"
    if engine is None:
        ctx.engine, source = detect_engine(ctx)
    if model is None:
        ctx.model = detect_model(ctx)
    report = Report(ctx.base_url, ctx.engine, source, ctx.model)
    for name, check in CHECKS + ENGINE_CHECKS:
        if only and name not in only:
            continue
        start = time.monotonic()
        try:
            if ctx.model is None and name in NEEDS_MODEL:
                raise Fail("no model to ask for: none given and /v1/models gave none (see models)")
            status, detail = PASS, check(ctx)
        except Fail as exc:
            status, detail = FAIL, str(exc)
        except Skip as exc:
            status, detail = SKIP, str(exc)
        except requests.RequestException as exc:
            status, detail = FAIL, f"{type(exc).__name__}: {exc}"[:200]
        report.checks.append(Check(name, status, detail, round(time.monotonic() - start, 3)))
    session.close()
    return report
