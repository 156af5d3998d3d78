"""OpenAI-compatible HTTP API of the stand-in engines (stdlib only)."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import __version__
from .common import Faults, log
from .textgen import Generation, count_tokens, generate, top_alternatives

OWNERS = {"vllm": "vllm", "sglang": "sglang", "trtllm": "tensorrt_llm"}
METRIC_PREFIX = {"vllm": "vllm:", "sglang": "sglang:", "trtllm": "trtllm_"}
#: The load gauges each engine serves (running, waiting, KV use), under its own names.
LOAD_GAUGES = {
    "vllm": ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"),
    "sglang": ("num_running_reqs", "num_queue_reqs", "token_usage"),
    "trtllm": ("num_requests_running", "num_requests_waiting", "kv_cache_utilization"),
}
KV_SEQS = 8  # the stand-in's KV cache holds this many sequences of max_model_len tokens


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass
class ServeConfig:
    engine: str
    model: str
    served_names: list[str]
    host: str | None = None
    port: int = 8000
    api_key: str | None = None
    max_model_len: int = 4096
    default_max_tokens: int = 16
    metrics_enabled: bool = True
    token_latency: float = 0.0
    max_seqs: int = 0  # requests served at once (an engine's batch slots); 0: no limit
    faults: Faults = field(default_factory=Faults)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: int = 0
    waiting: int = 0  # for one of max_seqs slots
    prompt_tokens: int = 0
    generation_tokens: int = 0
    kv_tokens: int = 0  # tokens of the requests in flight: what a KV cache would hold
    finished: Counter[str] = field(default_factory=Counter)

    def add(self, running: int = 0, prompt: int = 0, generated: int = 0,
            finished: str | None = None, kv: int = 0, waiting: int = 0) -> None:
        with self.lock:
            self.running += running
            self.waiting += waiting
            self.prompt_tokens += prompt
            self.generation_tokens += generated
            self.kv_tokens += kv
            if finished:
                self.finished[finished] += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # many clients connect at once (load tests); 5 would reset some
    allow_reuse_address = True
    app: ApiServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup, which hangs without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        # As uvicorn does: without TCP_NODELAY, a body written after its headers waits for the
        # client's delayed ACK (40 ms a response on keep-alive connections).
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


class _Server6(_Server):
    address_family = socket.AF_INET6


def _bind_host(host: str | None) -> str:
    if host in (None, "", "0.0.0.0"):
        return "0.0.0.0"
    if host == "::":
        return host
    try:
        return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror:
        return socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)[0][4][0]


class ApiServer:
    """Serves the API in a background thread; `start()` binds and returns (host, port)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.slots = threading.BoundedSemaphore(config.max_seqs) if config.max_seqs else None
        self.closing = threading.Event()
        self._httpd: _Server | None = None

    def start(self) -> tuple[str, int]:
        host = _bind_host(self.config.host)
        cls = _Server6 if ":" in host else _Server
        try:
            self._httpd = cls((host, self.config.port), _Handler)
        except OSError as e:
            raise OSError(f"[Errno {e.errno}] error while attempting to bind on address "
                          f"({host!r}, {self.config.port}): {e.strerror}") from e
        self._httpd.app = self
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True, name="http").start()
        bound = self._httpd.server_address
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        self.closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    # ---- route helpers -------------------------------------------------------------------

    def authorized(self, path: str, header: str | None) -> bool:
        key = self.config.api_key
        protected = path.startswith("/v1/") or (
            self.config.engine == "sglang" and path == "/generate")
        return not key or not protected or header == f"Bearer {key}"

    def check_model(self, body: dict[str, Any]) -> str:
        name = body.get("model")
        served = self.config.served_names
        if name in (None, "") or name in served or name == self.config.model:
            return served[0]
        raise ApiError(404, f"The model `{name}` does not exist.", "NotFoundError")

    def models(self) -> dict[str, Any]:
        now = int(time.time())
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": now,
             "owned_by": OWNERS[self.config.engine], "root": self.config.model,
             "parent": None, "max_model_len": self.config.max_model_len, "permission": []}
            for name in self.config.served_names]}

    def metrics(self) -> str:
        p = METRIC_PREFIX[self.config.engine]
        c = self.config
        s = self.stats
        labels = f'model_name="{c.served_names[0]}"'
        names = LOAD_GAUGES[c.engine]
        with s.lock:
            # Waiting: for one of max_seqs slots; KV use: the tokens in flight.
            kv_use = min(1.0, s.kv_tokens / max(1, c.max_model_len * KV_SEQS))
            gauges = (s.running, s.waiting, kv_use)
            lines = [f'standin_info{{engine="{c.engine}",version="{__version__}"}} 1']
            for name, value in zip(names, gauges, strict=True):
                lines += [f"# TYPE {p}{name} gauge", f"{p}{name}{{{labels}}} {float(value)}"]
            for name, value in (("prompt_tokens_total", s.prompt_tokens),
                                ("generation_tokens_total", s.generation_tokens)):
                lines += [f"# TYPE {p}{name} counter", f"{p}{name}{{{labels}}} {float(value)}"]
            lines.append(f"# TYPE {p}request_success_total counter")
            for reason in ("length", "stop"):
                lines.append(f'{p}request_success_total{{{labels},finished_reason="{reason}"}} '
                             f"{float(s.finished[reason])}")
        return "\n".join(lines) + "\n"

    def standin_info(self) -> dict[str, Any]:
        return {**self.config.info, "standin": True, "engine": self.config.engine,
                "model": self.config.model, "served_model_name": self.config.served_names,
                "faults": asdict(self.config.faults)}

    def wait_forever_or_close(self) -> None:
        self.closing.wait()


# ---- request parsing -------------------------------------------------------------------------


def _int(body: dict[str, Any], name: str, default: int, minimum: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ApiError(400, f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _stop_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ApiError(400, "stop must be a string or a list of strings")


def _prompts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return value
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise ApiError(400, "prompt must be a string, a list of strings or token ids")


def _chat_prompt(messages: Any) -> str:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list")
    parts = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise ApiError(400, "each message needs a role")
        content = m.get("content") or ""
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"<|{m['role']}|>{content}\n")
    return "".join(parts) + "<|assistant|>"


@dataclass
class _Request:
    model: str
    prompts: list[str]
    max_tokens: int
    n: int
    stop: list[str]
    stream: bool
    include_usage: bool


def _common(app: ApiServer, body: dict[str, Any], prompts: list[str],
            max_tokens_keys: tuple[str, ...]) -> _Request:
    model = app.check_model(body)
    max_tokens = app.config.default_max_tokens
    for key in max_tokens_keys:
        if body.get(key) is not None:
            max_tokens = _int(body, key, max_tokens, 1)
    n = _int(body, "n", 1, 1)
    for p in prompts:
        total = count_tokens(p) + max_tokens
        if total > app.config.max_model_len:
            raise ApiError(400, (
                f"This model's maximum context length is {app.config.max_model_len} tokens. "
                f"However, you requested {total} tokens ({count_tokens(p)} in the messages, "
                f"{max_tokens} in the completion). Please reduce the length of the messages "
                "or completion."))
    options = body.get("stream_options") or {}
    return _Request(model, prompts, max_tokens, n, _stop_list(body.get("stop")),
                    bool(body.get("stream")), bool(options.get("include_usage")))


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _completion_logprobs(gen: Generation, k: int, offset: int) -> dict[str, Any]:
    offsets, pos = [], offset
    for t in gen.tokens:
        offsets.append(pos)
        pos += len(t)
    return {"tokens": gen.tokens, "token_logprobs": gen.logprobs,
            "top_logprobs": [top_alternatives(t, lp, k) for t, lp in
                             zip(gen.tokens, gen.logprobs, strict=True)] if k else None,
            "text_offset": offsets}


def _chat_logprobs(gen: Generation, k: int) -> dict[str, Any]:
    return {"content": [
        {"token": t, "logprob": lp, "bytes": list(t.encode()),
         "top_logprobs": [{"token": a, "logprob": alp, "bytes": list(a.encode())}
                          for a, alp in top_alternatives(t, lp, k).items()] if k else []}
        for t, lp in zip(gen.tokens, gen.logprobs, strict=True)]}


# ---- handler ---------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "standin"
    _held = 0  # tokens the current request holds (Stats.kv_tokens)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if not self.path.startswith("/health"):
            log(f'{self.client_address[0]} "{self.command} {self.path}" {code}')

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log(f"{self.client_address[0]} {format % args}")

    @property
    def app(self) -> ApiServer:
        return self.server.app

    # -- plumbing --

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, e: ApiError) -> None:
        self._send(e.status, {"error": {"message": str(e), "type": e.kind, "param": None,
                                        "code": e.status}})

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _event(self, payload: Any) -> None:
        self._chunk("data: " + (payload if isinstance(payload, str) else json.dumps(payload))
                    + "\n\n")

    def _end_stream(self) -> None:
        self._chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _broken_end(self) -> None:
        """Fault break-streaming: a malformed event and no [DONE]."""
        self._chunk('data: {"id": "broken", "choices": [{"text": \n\n')
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True

    def _raw_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _body(self, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as e:
            raise ApiError(400, f"invalid JSON body: {e}") from e
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body

    def _sleep_tokens(self, count: int) -> None:
        if self.app.config.token_latency > 0:
            time.sleep(self.app.config.token_latency * count)

    # -- dispatch --

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        path = self.path.split("?", 1)[0]
        app = self.app
        if not app.authorized(path, self.headers.get("Authorization")):
            self._send(401, {"error": "Unauthorized"})
        elif path in ("/health", "/health_generate", "/ping"):
            self._send(200, b"")
        elif path == "/v1/models":
            self._send(200, app.models())
        elif path in ("/metrics", "/prometheus/metrics"):
            if app.config.faults.no_metrics or not app.config.metrics_enabled:
                self._send(404, {"detail": "Not Found"})
            else:
                self._send(200, app.metrics(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/version":
            self._send(200, {"version": f"{__version__}+standin"})
        elif path == "/standin/info":
            self._send(200, app.standin_info())
        elif path in ("/get_model_info", "/model_info") and app.config.engine == "sglang":
            self._send(200, {"model_path": app.config.model, "is_generation": True})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802 (stdlib naming)
        path = self.path.split("?", 1)[0]
        app = self.app
        routes = {"/v1/completions": self._completions,
                  "/v1/chat/completions": self._chat}
        if app.config.engine == "sglang":
            routes["/generate"] = self._generate
        route = routes.get(path)
        try:
            # Read the body first, even for a refusal: left unread, it would be taken for the
            # next request on this keep-alive connection (HTTP 400).
            raw = self._raw_body()
            if route is None:
                self._send(404, {"detail": "Not Found"})
                return
            if not app.authorized(path, self.headers.get("Authorization")):
                self._send(401, {"error": "Unauthorized"})
                return
            body = self._body(raw)
            if app.config.faults.hang_generation:
                app.wait_forever_or_close()
                self.close_connection = True
                return
            self._held = 0
            app.stats.add(waiting=1)
            with app.slots or contextlib.nullcontext():
                app.stats.add(waiting=-1, running=1)
                try:
                    route(body)
                finally:
                    app.stats.add(running=-1, kv=-self._held)
        except ApiError as e:
            self._error(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- endpoints --

    def _hold(self, prompt: int = 0, generated: int = 0, finished: str | None = None) -> None:
        """Count tokens; they stay in the KV cache until the request ends."""
        self._held += prompt + generated
        self.app.stats.add(prompt=prompt, generated=generated, finished=finished,
                           kv=prompt + generated)

    def _run(self, req: _Request, prompt: str, index: int) -> Generation:
        gen = generate(prompt, req.max_tokens, index, req.stop)
        self._hold(generated=len(gen.tokens), finished=gen.finish_reason)
        return gen

    def _completions(self, body: dict[str, Any]) -> None:
        req = _common(self.app, body, _prompts(body.get("prompt")), ("max_tokens",))
        echo = bool(body.get("echo"))
        k = _int(body, "logprobs", 0, 0) if body.get("logprobs") is not None else None
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        prompt_tokens = sum(count_tokens(p) for p in req.prompts)
        self._hold(prompt=prompt_tokens)
        jobs = [(i * req.n + j, p, j) for i, p in enumerate(req.prompts) for j in range(req.n)]
        if not req.stream:
            choices, completion_tokens = [], 0
            for index, prompt, j in jobs:
                gen = self._run(req, prompt, j)
                completion_tokens += len(gen.tokens)
                prefix = prompt if echo else ""
                choices.append({
                    "index": index, "text": prefix + gen.text, "finish_reason": gen.finish_reason,
                    "stop_reason": None,
                    "logprobs": None if k is None else _completion_logprobs(gen, k, len(prefix))})
            self._sleep_tokens(completion_tokens)
            self._send(200, {"id": rid, "object": "text_completion", "created": created,
                             "model": req.model, "choices": choices,
                             "usage": _usage(prompt_tokens, completion_tokens)})
            return
        self._start_stream()
        sent, completion_tokens = 0, 0
        base = {"id": rid, "object": "text_completion", "created": created, "model": req.model}
        for index, prompt, j in jobs:
            gen = self._run(req, prompt, j)
            completion_tokens += len(gen.tokens)
            pieces = ([prompt] if echo else []) + gen.tokens
            for pos, piece in enumerate(pieces):
                last = pos == len(pieces) - 1
                self._event({**base, "choices": [{
                    "index": index, "text": piece, "logprobs": None,
                    "finish_reason": gen.finish_reason if last else None, "stop_reason": None}]})
                sent += 1
                if self.app.config.faults.break_streaming and sent >= 2:
                    self._broken_end()
                    return
                self._sleep_tokens(1)
            if not pieces:
                self._event({**base, "choices": [{"index": index, "text": "", "logprobs": None,
                                                  "finish_reason": gen.finish_reason}]})
        if req.include_usage:
            self._event({**base, "choices": [], "usage": _usage(prompt_tokens, completion_tokens)})
        self._end_stream()

    def _chat(self, body: dict[str, Any]) -> None:
        prompt = _chat_prompt(body.get("messages"))
        req = _common(self.app, body, [prompt], ("max_tokens", "max_completion_tokens"))
        want_logprobs = bool(body.get("logprobs"))
        k = _int(body, "top_logprobs", 0, 0)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        prompt_tokens = count_tokens(prompt)
        self._hold(prompt=prompt_tokens)
        if not req.stream:
            choices, completion_tokens = [], 0
            for j in range(req.n):
                gen = self._run(req, prompt, j)
                completion_tokens += len(gen.tokens)
                choices.append({
                    "index": j, "message": {"role": "assistant", "content": gen.text},
                    "logprobs": _chat_logprobs(gen, k) if want_logprobs else None,
                    "finish_reason": gen.finish_reason, "stop_reason": None})
            self._sleep_tokens(completion_tokens)
            self._send(200, {"id": rid, "object": "chat.completion", "created": created,
                             "model": req.model, "choices": choices,
                             "usage": _usage(prompt_tokens, completion_tokens)})
            return
        self._start_stream()
        base = {"id": rid, "object": "chat.completion.chunk", "created": created,
                "model": req.model}
        sent, completion_tokens = 0, 0
        for j in range(req.n):
            gen = self._run(req, prompt, j)
            completion_tokens += len(gen.tokens)
            self._event({**base, "choices": [{"index": j, "delta": {"role": "assistant",
                                                                     "content": ""},
                                              "logprobs": None, "finish_reason": None}]})
            for token in gen.tokens:
                self._event({**base, "choices": [{"index": j, "delta": {"content": token},
                                                  "logprobs": None, "finish_reason": None}]})
                sent += 1
                if self.app.config.faults.break_streaming and sent >= 2:
                    self._broken_end()
                    return
                self._sleep_tokens(1)
            self._event({**base, "choices": [{"index": j, "delta": {}, "logprobs": None,
                                              "finish_reason": gen.finish_reason}]})
        if req.include_usage:
            self._event({**base, "choices": [], "usage": _usage(prompt_tokens, completion_tokens)})
        self._end_stream()

    def _generate(self, body: dict[str, Any]) -> None:
        """SGLang's native endpoint: text + sampling_params -> text + meta_info."""
        texts = body.get("text")
        single = isinstance(texts, str)
        prompts = _prompts(texts if texts is not None else body.get("input_ids"))
        params = body.get("sampling_params") or {}
        req = _common(self.app, {"model": None, **params,
                                 "max_tokens": params.get("max_new_tokens", 128)},
                      prompts, ("max_tokens",))
        results = []
        for prompt in prompts:
            gen = self._run(req, prompt, 0)
            self._hold(prompt=count_tokens(prompt))
            finish: dict[str, Any] = {"type": gen.finish_reason}
            if gen.finish_reason == "length":
                finish["length"] = len(gen.tokens)
            results.append((gen, {"id": uuid.uuid4().hex, "finish_reason": finish,
                                  "prompt_tokens": count_tokens(prompt),
                                  "completion_tokens": len(gen.tokens), "cached_tokens": 0}))
        if not body.get("stream"):
            out = [{"text": gen.text, "meta_info": meta} for gen, meta in results]
            self._sleep_tokens(sum(len(g.tokens) for g, _ in results))
            self._send(200, out[0] if single else out)
            return
        self._start_stream()
        sent = 0
        for gen, meta in results:
            text = ""
            for pos, token in enumerate(gen.tokens):
                text += token
                last = pos == len(gen.tokens) - 1
                self._event({"text": text, "meta_info": {
                    **meta, "finish_reason": meta["finish_reason"] if last else None,
                    "completion_tokens": pos + 1}})
                sent += 1
                if self.app.config.faults.break_streaming and sent >= 2:
                    self._broken_end()
                    return
                self._sleep_tokens(1)
        self._end_stream()
