"""Live load of serving endpoints and of the router, read from their metrics endpoints.

Each engine names its metrics (`engines.<name>.LOAD`); this module fetches and reads them: a
`Load` per reading, tokens/s from two readings (`LiveLoad`, `measure` for many endpoints at
once), the router's requests per worker (`RouterLoad`), and /health.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

from . import engines
from .engines import LoadMetrics
from .errors import SpecError

TIMEOUT = 2.0  # seconds per request: a gone node must not hold `status` up for long
INTERVAL = 0.5  # seconds between the two readings of a tokens/s
MAX_THREADS = 32

# vllm-router's own (vllm-project/router src/metrics.rs), labelled worker="http://HOST:PORT".
ROUTER_PROCESSED = "vllm_router_processed_requests_total"
ROUTER_ACTIVE = "vllm_router_active_workers"
ROUTER_HEALTH = "vllm_router_worker_health"  # 1 healthy, 0 not
ROUTER_WORKER_LOAD = "vllm_router_worker_load"  # requests in flight
ROUTER_NAMES = frozenset({ROUTER_PROCESSED, ROUTER_ACTIVE, ROUTER_HEALTH, ROUTER_WORKER_LOAD})

Samples = dict[str, list[tuple[dict[str, str], float]]]

_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass(frozen=True)
class Load:
    """One reading of an engine's metrics; None where it reports no such value."""

    running: float | None = None
    waiting: float | None = None
    kv_cache: float | None = None  # the fraction (0..1) of the KV cache in use
    generation_tokens_total: float | None = None
    gen_throughput: float | None = None  # the engine's own tokens/s gauge (SGLang's)


@dataclass(frozen=True)
class LiveLoad:
    """An endpoint's load now: requests running and waiting, KV use, generated tokens/s."""

    running: float | None = None
    waiting: float | None = None
    kv_cache: float | None = None
    gen_tokens_per_s: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LiveLoad:
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})

    @classmethod
    def between(cls, first: Load, second: Load, seconds: float) -> LiveLoad:
        """The newer reading's gauges and the tokens/s from `first` to `second`."""
        return cls(second.running, second.waiting, second.kv_cache,
                   throughput(first, second, seconds))


@dataclass(frozen=True)
class Target:
    """An endpoint to read: its engine (None: any engine's names) and its key."""

    endpoint: str
    engine: str | None = None
    api_key: str | None = None


@dataclass(frozen=True)
class RouterLoad:
    """What the router's metrics say of its workers, each named by its URL."""

    active_workers: float | None
    processed: Mapping[str, float]  # requests each worker completed
    healthy: Mapping[str, bool]
    in_flight: Mapping[str, float]


def parse_text(text: str) -> Samples:
    """A Prometheus text exposition: metric name -> [(labels, value)]; NaN and junk skipped."""
    samples: Samples = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            continue
        name, labels, raw = match.groups()
        try:
            value = float(raw)
        except ValueError:
            continue
        if math.isnan(value):
            continue
        found = {k: re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group()], v)
                 for k, v in _LABEL.findall(labels or "")}
        samples.setdefault(name, []).append((found, value))
    return samples


def _values(samples: Samples, names: Sequence[str]) -> list[float] | None:
    """The values of the first of `names` present, over all its label sets."""
    for name in names:
        if name in samples:
            return [value for _, value in samples[name]]
    return None


def _sum(values: list[float] | None) -> float | None:
    return None if values is None else sum(values)


def _mean(values: list[float] | None) -> float | None:
    return sum(values) / len(values) if values else None


def load_from_samples(samples: Samples, names: LoadMetrics) -> Load:
    """Counts and counters add up over label sets (DP ranks, models); KV use is their mean."""
    return Load(running=_sum(_values(samples, names.running)),
                waiting=_sum(_values(samples, names.waiting)),
                kv_cache=_mean(_values(samples, names.kv_cache)),
                generation_tokens_total=_sum(_values(samples, names.generation_tokens)),
                gen_throughput=_sum(_values(samples, names.gen_throughput)))


def parse(body: str, names: LoadMetrics) -> Load:
    """A metrics answer, Prometheus text or (where the engine reads one) JSON."""
    if body.lstrip()[:1] in ("[", "{"):
        if names.from_json is None:
            return Load()
        try:
            data = json.loads(body)
        except ValueError:
            return Load()
        values = names.from_json(data)
        return Load(running=values.get("running"), waiting=values.get("waiting"),
                    kv_cache=values.get("kv_cache"))
    return load_from_samples(parse_text(body), names)


@lru_cache(maxsize=1)
def _any_engine() -> LoadMetrics:
    """Every engine's names at once, for an endpoint whose engine is unknown."""
    loads = [engines.get(name).LOAD for name in engines.ENGINES]

    def joined(attr: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for load in loads for n in getattr(load, attr)))

    return LoadMetrics(running=joined("running"), waiting=joined("waiting"),
                       kv_cache=joined("kv_cache"), generation_tokens=joined("generation_tokens"),
                       gen_throughput=joined("gen_throughput"), paths=joined("paths"),
                       from_json=next((load.from_json for load in loads if load.from_json), None))


def names_for(engine_name: str | None) -> LoadMetrics:
    """The engine's metric names; every engine's for None or a name this version does not know."""
    if engine_name:
        try:
            return engines.get(engine_name).LOAD
        except SpecError:
            pass
    return _any_engine()


def known_names() -> frozenset[str]:
    """Every metric name read here: the engines' and the router's."""
    return frozenset().union(*(engines.get(n).LOAD.names for n in engines.ENGINES), ROUTER_NAMES)


def _session(api_key: str | None) -> Any:
    import requests

    session = requests.Session()
    session.trust_env = False  # cluster-internal: never through a proxy
    if api_key:
        session.headers["Authorization"] = f"Bearer {api_key}"
    return session


def _get(url: str, api_key: str | None, timeout: float) -> str | None:
    """The body of a 200 answer, else None."""
    import requests

    try:
        with _session(api_key) as session:
            response = session.get(url, timeout=timeout)
    except requests.RequestException:
        return None
    return response.text if response.status_code == 200 else None


def healthy(endpoint: str, api_key: str | None = None, timeout: float = TIMEOUT) -> bool:
    """/health answers 200."""
    import requests

    try:
        with _session(api_key) as session:
            return bool(session.get(f"{endpoint}/health", timeout=timeout).status_code == 200)
    except requests.RequestException:
        return False


def fetch(endpoint: str, engine_name: str | None = None, api_key: str | None = None,
          timeout: float = TIMEOUT) -> Load | None:
    """One reading of the endpoint's load: from the first of the engine's paths that reports
    any; None when none answers."""
    names = names_for(engine_name)
    answered: Load | None = None
    for path in names.paths:
        body = _get(endpoint.rstrip("/") + path, api_key, timeout)
        if body is None:
            continue
        answered = parse(body, names)
        if answered != Load():
            return answered
    return answered


def throughput(first: Load, second: Load, seconds: float) -> float | None:
    """Generated tokens/s between two readings `seconds` apart, from the token counter; the
    engine's own gauge where it has no counter; None across a restart (the counter fell)."""
    before, after = first.generation_tokens_total, second.generation_tokens_total
    if before is not None and after is not None:
        if after < before or seconds <= 0:
            return None
        return (after - before) / seconds
    return second.gen_throughput


def _timed(target: Target | None) -> tuple[float, Load] | None:
    if target is None:
        return None
    load = fetch(target.endpoint, target.engine, target.api_key)
    return None if load is None else (time.monotonic(), load)


def measure(targets: Sequence[Target], interval: float = INTERVAL) -> list[LiveLoad | None]:
    """Each target's LiveLoad (None where its metrics do not answer): two readings `interval`
    apart, every target read at once."""
    if not targets:
        return []
    from concurrent.futures import ThreadPoolExecutor  # not on `run`'s start-up path

    with ThreadPoolExecutor(max_workers=min(MAX_THREADS, len(targets))) as pool:
        first = list(pool.map(_timed, targets))
        if not any(first):
            return [None] * len(targets)
        time.sleep(interval)
        second = list(pool.map(_timed, [t if f else None for t, f in zip(targets, first,
                                                                          strict=True)]))
    return [LiveLoad.between(a[1], b[1], b[0] - a[0]) if a and b else None
            for a, b in zip(first, second, strict=True)]


def aggregate(loads: Iterable[LiveLoad | None]) -> LiveLoad | None:
    """Several endpoints as one: requests and tokens/s add up, KV use is the mean."""
    present = [load for load in loads if load is not None]
    if not present:
        return None

    def values(attr: str) -> list[float] | None:
        found = [v for load in present if (v := getattr(load, attr)) is not None]
        return found or None

    return LiveLoad(running=_sum(values("running")), waiting=_sum(values("waiting")),
                    kv_cache=_mean(values("kv_cache")),
                    gen_tokens_per_s=_sum(values("gen_tokens_per_s")))


def parse_router(text: str) -> RouterLoad:
    """The router's metrics: active workers, and per worker URL its completed requests, health
    and requests in flight."""
    samples = parse_text(text)

    def per_worker(name: str) -> dict[str, float]:
        found: dict[str, float] = {}
        for labels, value in samples.get(name, []):
            if "worker" in labels:
                url = labels["worker"].rstrip("/")
                found[url] = found.get(url, 0.0) + value
        return found

    return RouterLoad(active_workers=_sum(_values(samples, (ROUTER_ACTIVE,))),
                      processed=per_worker(ROUTER_PROCESSED),
                      healthy={url: v > 0 for url, v in per_worker(ROUTER_HEALTH).items()},
                      in_flight=per_worker(ROUTER_WORKER_LOAD))


def fetch_router(metrics_url: str, timeout: float = TIMEOUT) -> RouterLoad | None:
    """The router's metrics (its own port, e.g. http://HEAD:PORT/metrics); None when down."""
    body = _get(metrics_url, None, timeout)
    return None if body is None else parse_router(body)
