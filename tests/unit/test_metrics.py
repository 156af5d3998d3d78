"""metrics.py: each engine's metrics (as their sources write them, tests/unit/data/metrics), the
stand-in's, the router's, and live readings from local HTTP servers."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from slurmserve import metrics
from slurmserve.metrics import LiveLoad, Load, Target
from tests.unit.helpers import DATA
from tests.unit.httpstub import Stub, closed_url, counting, serving

SAMPLES = DATA / "metrics"
STANDIN = Path(__file__).resolve().parents[2] / "containers" / "testing" / "standin"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


@pytest.mark.parametrize(("engine", "name", "expected"), [
    # DP engines: counts and counters add up, KV use is their mean, the newer KV name wins.
    ("vllm", "vllm.txt", Load(running=5, waiting=1, kv_cache=0.2, generation_tokens_total=2000)),
    ("vllm", "vllm-0.8.txt", Load(running=4, waiting=7, kv_cache=0.5,
                                  generation_tokens_total=300)),
    ("sglang", "sglang.txt", Load(running=312, waiting=5626, kv_cache=0.3,
                                  generation_tokens_total=7.557572e6, gen_throughput=4151)),
    ("trtllm", "trtllm.txt", Load(running=5, waiting=3, kv_cache=0.6,
                                  generation_tokens_total=4096)),
    ("trtllm", "trtllm-iteration-stats.json", Load(running=5, waiting=3, kv_cache=0.6)),
])
def test_each_engines_metrics(engine: str, name: str, expected: Load) -> None:
    assert_close(metrics.parse(sample(name), metrics.names_for(engine)), expected)


def assert_close(got: Load, expected: Load) -> None:
    for field in ("running", "waiting", "kv_cache", "generation_tokens_total", "gen_throughput"):
        a, b = getattr(got, field), getattr(expected, field)
        assert (a is None) == (b is None) and (a is None or a == pytest.approx(b)), (field, a, b)


def test_an_unknown_engine_is_read_with_every_engines_names() -> None:
    for name in ("vllm.txt", "sglang.txt", "trtllm.txt"):
        assert metrics.parse(sample(name), metrics.names_for(None)) == metrics.parse(
            sample(name), metrics.names_for(name.split(".")[0]))
    assert metrics.names_for("no-such-engine") == metrics.names_for(None)


def test_one_engines_names_do_not_read_another_engines_metrics() -> None:
    assert metrics.parse(sample("sglang.txt"), metrics.names_for("vllm")) == Load()
    assert metrics.parse(sample("trtllm-iteration-stats.json"), metrics.names_for("vllm")) == Load()


def test_iteration_stats_without_iterations_or_kv_stats() -> None:
    names = metrics.names_for("trtllm")
    assert metrics.parse("[]", names) == Load()
    assert metrics.parse('[{"numActiveRequests": 2}]', names) == Load(running=2)
    assert metrics.parse("[not json", names) == Load()


def test_text_format_details() -> None:
    text = "\n".join([
        "# HELP x a } in help",
        'vllm:num_requests_running{model_name="a} b, \\"c\\"",engine="0"} 2 1712345678000',
        "vllm:num_requests_waiting NaN",
        "vllm:kv_cache_usage_perc{} 1e-1",
        "garbage line",
        "vllm:generation_tokens_total +Inf",
    ])
    samples = metrics.parse_text(text)
    assert samples["vllm:num_requests_running"] == [({"model_name": 'a} b, "c"', "engine": "0"},
                                                     2.0)]
    assert "vllm:num_requests_waiting" not in samples
    load = metrics.load_from_samples(samples, metrics.names_for("vllm"))
    assert (load.running, load.waiting, load.kv_cache) == (2.0, None, 0.1)


def test_router_metrics_per_worker() -> None:
    router = metrics.parse_router(sample("vllm-router.txt"))
    assert router.active_workers == 2
    assert router.processed == {"http://10.77.0.2:8000": 120, "http://10.77.0.3:8000": 80}
    assert router.healthy == {"http://10.77.0.2:8000": True, "http://10.77.0.3:8000": False}
    assert router.in_flight == {"http://10.77.0.2:8000": 3, "http://10.77.0.3:8000": 0}
    assert metrics.parse_router("") == metrics.RouterLoad(None, {}, {}, {})


def test_throughput_from_two_readings() -> None:
    first, second = Load(generation_tokens_total=100), Load(generation_tokens_total=350)
    assert metrics.throughput(first, second, 0.5) == 500.0
    assert metrics.throughput(second, first, 0.5) is None  # the counter fell: a restart
    assert metrics.throughput(first, second, 0.0) is None
    assert metrics.throughput(Load(), Load(gen_throughput=42.0), 0.5) == 42.0  # SGLang's gauge
    assert metrics.throughput(Load(), Load(), 0.5) is None
    live = LiveLoad.between(first, Load(running=2, waiting=0, kv_cache=0.5,
                                        generation_tokens_total=150), 0.25)
    assert live == LiveLoad(running=2, waiting=0, kv_cache=0.5, gen_tokens_per_s=200.0)


def test_aggregate_adds_up_requests_and_averages_kv() -> None:
    total = metrics.aggregate([LiveLoad(2, 1, 0.2, 100.0), None, LiveLoad(3, None, 0.4, None)])
    assert total == LiveLoad(running=5, waiting=1, kv_cache=pytest.approx(0.3),
                             gen_tokens_per_s=100.0)
    assert metrics.aggregate([None]) is None


def test_fetch_sends_the_key_ignores_proxies_and_falls_back_to_json(monkeypatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", closed_url())  # trust_env=False: never used
    monkeypatch.setenv("NO_PROXY", "")
    trt = Stub({"/metrics": sample("trtllm-iteration-stats.json"), "/health": ""})
    vllm = Stub({"/metrics": sample("vllm.txt")})
    with serving(trt, vllm):
        load = metrics.fetch(trt.url, "trtllm", api_key="sk-1")
        assert load == Load(running=5, waiting=3, kv_cache=0.6)
        assert trt.paths() == ["/prometheus/metrics", "/metrics"]  # 404 first, then the JSON
        assert {auth for _, auth in trt.seen} == {"Bearer sk-1"}
        assert metrics.fetch(vllm.url + "/", "vllm") is not None
        assert metrics.healthy(trt.url) and not metrics.healthy(vllm.url)
    assert metrics.fetch(closed_url(), "vllm") is None
    assert not metrics.healthy(closed_url())


def test_measure_reads_every_target_at_once() -> None:
    body = counting(sample("vllm-0.8.txt").replace("300.0", "TOKENS"), step=50)
    slow = [Stub({"/metrics": body}, delay=0.3) for _ in range(4)]
    with serving(*slow):
        started = time.monotonic()
        loads = metrics.measure([Target(s.url, "vllm") for s in slow]
                                + [Target(closed_url(), "vllm")], interval=0.2)
        elapsed = time.monotonic() - started
    assert elapsed < 1.5  # one after another: 4 x 2 x 0.3 s + 0.2 s
    assert loads[-1] is None
    for load in loads[:-1]:
        assert load is not None and (load.running, load.waiting, load.kv_cache) == (4, 7, 0.5)
        assert load.gen_tokens_per_s is not None and load.gen_tokens_per_s > 0
    assert metrics.measure([]) == []
    assert metrics.measure([Target(closed_url())]) == [None]


@pytest.fixture
def standin_server():
    sys.path.append(str(STANDIN))  # last: the stand-in `sglang` must not shadow anything
    from standin import server

    started = []

    def start(engine: str) -> server.ApiServer:
        app = server.ApiServer(server.ServeConfig(engine=engine, model="/models/m",
                                                  served_names=["tiny"], host="127.0.0.1",
                                                  port=0))
        app.start()
        started.append(app)
        return app

    yield start
    for app in started:
        app.close()


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm"])
def test_the_standins_metrics_are_read(standin_server, engine: str) -> None:
    """The cluster tests serve the stand-in: its metrics must read like the real engine's."""
    import requests

    app = standin_server(engine)
    host, port = app._httpd.server_address[:2]
    url = f"http://{host}:{port}"
    before = metrics.fetch(url, engine)
    requests.post(f"{url}/v1/completions", json={"prompt": "a b", "max_tokens": 5}, timeout=10)
    after = metrics.fetch(url, engine)
    assert before is not None and after is not None
    assert (after.running, after.waiting, after.kv_cache) == (0, 0, 0)
    assert (after.generation_tokens_total or 0) - (before.generation_tokens_total or 0) == 5
