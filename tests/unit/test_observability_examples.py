"""examples/grafana-dashboard.json and examples/prometheus-scrape.yml: valid, and every query
names metrics that slurmserve itself reads (metrics.known_names, from the engines' LOAD)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from slurmserve import metrics

EXAMPLES = Path(__file__).parents[2] / "examples"
DASHBOARD = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
QUERIES = [(p["title"], t["expr"]) for p in DASHBOARD["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: neither functions, nor labels, nor ranges."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    tokens = re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", expr)
    return {name for name, call in tokens if not call} - {"or", "and", "unless"}


def test_the_detector_sees_metric_names_only() -> None:
    assert metric_names('sum by (worker) (rate(vllm_router_processed_requests_total'
                        '{worker=~"http://.*"}[1m]))') == {"vllm_router_processed_requests_total"}
    assert metric_names("avg(vllm:kv_cache_usage_perc or vllm:gpu_cache_usage_perc)") == {
        "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"}


def test_the_dashboard_has_a_prometheus_datasource_variable() -> None:
    [variable] = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    for panel in DASHBOARD["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${" + variable["name"] + "}", panel["title"]
            assert panel["targets"], panel["title"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("title", "expr"), QUERIES, ids=[f"{t}: {e}" for t, e in QUERIES])
def test_every_query_names_metrics_slurmserve_reads(title: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{title}: no metric in {expr!r}"
    assert names <= metrics.known_names(), f"{title}: unknown {names - metrics.known_names()}"


def test_the_dashboard_covers_the_router_and_every_engines_load() -> None:
    used = set().union(*(metric_names(expr) for _, expr in QUERIES))
    assert {metrics.ROUTER_PROCESSED, metrics.ROUTER_ACTIVE, metrics.ROUTER_HEALTH} <= used
    for engine in ("vllm", "sglang"):
        load = metrics.names_for(engine)
        for field in (load.running, load.waiting, load.kv_cache, load.generation_tokens):
            assert field[0] in used, (engine, field)


def test_the_scrape_config_scrapes_the_router_and_the_replicas() -> None:
    config = yaml.safe_load((EXAMPLES / "prometheus-scrape.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"slurmserve-router", "slurmserve-replicas"}
    for job in jobs.values():
        assert job["metrics_path"] == "/metrics"
        for static in job["static_configs"]:
            assert all(re.fullmatch(r"[\w.-]+:\d+", t) for t in static["targets"]), static
