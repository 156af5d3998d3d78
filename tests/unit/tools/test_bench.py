"""`slurmserve bench`: client argv, parsing, goodput, tables, plots and compare.

tests/unit/data/vllm-*.json are RECORDED outputs of the real `vllm bench serve` (see
data/README.md and data/record_vllm_bench.py); the sglang/trtllm files are CONSTRUCTED from
those clients' source, and say so in their `_comment`.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from slurmserve.tools import bench
from slurmserve.tools.bench import BenchConfig, Point, Result, client_argv, parse_result, run_suite
from tests.unit.helpers import DATA  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


def raw(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def point(suite: str, label: str, **kw) -> Point:
    return Point(suite, label, **{"num_prompts": 4, **kw})


# ---- configuration and argv ---------------------------------------------------------------------


def test_default_sweeps() -> None:
    cfg = BenchConfig(suites=bench.SUITES)
    prefill = cfg.points("prefill")
    assert [p.input_len for p in prefill] == [128, 256, 512, 1024, 2048, 4096]
    assert {p.output_len for p in prefill} == {1}
    assert [p.max_concurrency for p in cfg.points("concurrency")] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert [p.num_prompts for p in cfg.points("concurrency")][:5] == [16, 16, 16, 32, 64]
    assert cfg.points("latency")[0].max_concurrency == 1
    assert cfg.points("throughput")[0].max_concurrency is None
    share = cfg.points("sharegpt")[0]
    assert (share.dataset, share.dataset_path) == ("sharegpt", str(bench.SAMPLE))
    names = [p.name for p in cfg.all_points()]
    assert len(names) == len(set(names))


def test_tiny_preset_fits_a_512_token_model() -> None:
    cfg = BenchConfig.tiny(suites=bench.SUITES)
    for p in cfg.all_points():
        assert (p.input_len or 0) + (p.output_len or 0) <= 512, p
        assert p.num_prompts <= 16


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown suite.*prefil.*choose from throughput"):
        BenchConfig(suites=("prefil",))
    with pytest.raises(ValueError, match="prefill_input_lens must be positive"):
        BenchConfig(prefill_input_lens=(128, 0))
    with pytest.raises(ValueError, match="engine must be one of"):
        client_argv("tgi", point("latency", "c1"), "http://h:1", "m", "/o/r.json")


def test_vllm_argv() -> None:
    cfg = BenchConfig(tokenizer="/models/tiny", slo_ttft_ms=200, slo_tpot_ms=25.5)
    p = point("concurrency", "c8", input_len=512, output_len=128, max_concurrency=8, num_prompts=32)
    assert client_argv("vllm", p, "http://10.0.0.1:8000/", "tiny", "/out/raw/concurrency-c8.json",
                       cfg) == [
        "vllm", "bench", "serve", "--backend", "openai", "--base-url", "http://10.0.0.1:8000",
        "--model", "tiny", "--tokenizer", "/models/tiny", "--num-prompts", "32", "--seed", "0",
        "--disable-tqdm", "--max-concurrency", "8", "--dataset-name", "random",
        "--random-input-len", "512", "--random-output-len", "128", "--random-range-ratio", "0",
        "--ignore-eos", "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles",
        "50,90,99", "--goodput", "ttft:200", "tpot:25.5", "--save-result", "--save-detailed",
        "--result-dir", "/out/raw", "--result-filename", "concurrency-c8.json",
        "--label", "slurmserve-concurrency-c8"]


def test_sglang_argv_uses_random_ids_and_output_file() -> None:
    p = point("prefill", "in128", input_len=128, output_len=1, max_concurrency=1)
    argv = client_argv("sglang", p, "http://h:30000", "org/m", "/o/prefill-in128.jsonl",
                       BenchConfig(slo_ttft_ms=100))
    assert argv[:5] == ["python3", "-m", "sglang.bench_serving", "--backend", "sglang"]
    text = " ".join(argv)
    assert "--dataset-name random-ids --random-input-len 128 --random-output-len 1 " \
           "--random-range-ratio 1" in text
    assert argv[-3:] == ["--output-file", "/o/prefill-in128.jsonl", "--output-details"]
    # sglang.bench_serving has no goodput or percentile flags: they come from the details.
    assert "--goodput" not in argv and "--percentile-metrics" not in argv
    assert bench.result_name("sglang", p) == "prefill-in128.jsonl"


def test_trtllm_argv_and_sharegpt_dataset() -> None:
    p = Point("sharegpt", "sample", 50, None, 16, 4, "sharegpt", "/o/sharegpt.json")
    argv = client_argv("trtllm", p, "http://h:8000", "org/m", "/o/raw/sharegpt-sample.json",
                       BenchConfig(slo_tpot_ms=30))
    assert argv[:5] == ["python3", "-m", "tensorrt_llm.serve.scripts.benchmark_serving",
                        "--backend", "openai"]
    text = " ".join(argv)
    assert "--dataset-name sharegpt --dataset-path /o/sharegpt.json --sharegpt-output-len 16" in text
    assert "--goodput tpot:30 --save-result --save-detailed --result-dir /o/raw " \
           "--result-filename sharegpt-sample.json" in text
    random_argv = client_argv("trtllm", point("latency", "c1", input_len=8, output_len=8),
                              "http://h:8000", "m", "/o/x.json")
    assert "--dataset-name random --random-ids --random-input-len 8" in " ".join(random_argv)
    assert bench.client_env("k") == {"OPENAI_API_KEY": "k"} and bench.client_env(None) == {}


# ---- parsing recorded and constructed client output --------------------------------------------


VLLM_RECORDED = sorted(p.name for p in DATA.glob("vllm-*.json"))


@pytest.mark.parametrize("name", VLLM_RECORDED)
def test_vllm_recorded_goodput_matches_the_client(name: str) -> None:
    """Recorded with --goodput ttft:50 tpot:20: our per-request goodput equals vLLM's own."""
    data = raw(name)
    result = parse_result("vllm", point("x", "y"), DATA / name, slo_ttft_ms=50, slo_tpot_ms=20)
    assert result.goodput_source == "per-request"
    assert result.goodput == pytest.approx(data["request_goodput"], rel=1e-9, abs=1e-9)
    assert (result.completed, result.failed) == (data["completed"], data["failed"])


def test_vllm_recorded_success_parses_every_metric() -> None:
    data = raw("vllm-concurrency-c4.json")
    r = parse_result("vllm", point("concurrency", "c4", max_concurrency=4, num_prompts=8),
                     DATA / "vllm-concurrency-c4.json")
    assert r.ok and r.error is None and (r.completed, r.failed) == (8, 0)
    assert r.request_throughput == data["request_throughput"]
    assert r.output_throughput == data["output_throughput"]
    assert r.total_token_throughput == data["total_token_throughput"]
    for m in bench.METRICS:
        stat = getattr(r, m)
        assert (stat.mean, stat.p50, stat.p90, stat.p99) == (
            data[f"mean_{m}_ms"], data[f"p50_{m}_ms"], data[f"p90_{m}_ms"], data[f"p99_{m}_ms"])
    assert r.goodput is None and r.goodput_source is None  # no SLO asked


def test_vllm_recorded_total_failure_exits_zero_but_fails_the_run() -> None:
    r = parse_result("vllm", point("prefill", "in600", input_len=600, output_len=1),
                     DATA / "vllm-prefill-in600.json")
    assert not r.ok
    assert (r.completed, r.failed) == (0, 4)
    assert r.error == "no request completed: Bad Request"
    assert r.ttft == bench.Stat()  # the client's zeros are not latencies


def test_vllm_recorded_partial_failure() -> None:
    r = parse_result("vllm", Point("sharegpt", "sample", 8, dataset="sharegpt"),
                     DATA / "vllm-sharegpt-sample.json")
    assert not r.ok
    assert (r.completed, r.failed) == (2, 6)
    assert r.error == "6 of 8 requests failed: Bad Request"
    assert r.ttft.p50 is not None and r.ttft.p50 > 0


def test_goodput_under_other_slos_from_per_request_data() -> None:
    data = raw("vllm-decode-out128.json")
    p = point("decode", "out128")
    loose = parse_result("vllm", p, DATA / "vllm-decode-out128.json", slo_ttft_ms=1e6)
    assert loose.goodput == pytest.approx(data["completed"] / data["duration"])
    tight = parse_result("vllm", p, DATA / "vllm-decode-out128.json", slo_tpot_ms=0.001)
    assert tight.goodput == 0
    # One request meets a TTFT SLO set between the fastest and the second fastest.
    ttfts = sorted(data["ttfts"])
    one = parse_result("vllm", p, DATA / "vllm-decode-out128.json",
                       slo_ttft_ms=1000 * (ttfts[0] + ttfts[1]) / 2)
    assert one.goodput == pytest.approx(1 / data["duration"])


def test_sglang_constructed_jsonl_last_line_and_details() -> None:
    lines = (DATA / "sglang-random-ids.jsonl").read_text().splitlines()
    data = json.loads(lines[-1])
    r = parse_result("sglang", point("decode", "out4", input_len=128, output_len=4),
                     DATA / "sglang-random-ids.jsonl", slo_ttft_ms=30)
    assert (r.completed, r.failed) == (3, 1)  # not the first line's run; failed from the details
    assert r.error == "1 of 4 requests failed: Internal Server Error"
    assert r.ttft.mean == data["mean_ttft_ms"] and r.ttft.p50 == data["median_ttft_ms"]
    assert r.e2el.p99 == data["p99_e2e_latency_ms"]
    # No p90 in this client version: computed from the per-request details.
    ok_ttfts = [t for t, e in zip(data["ttfts"], data["errors"], strict=True) if not e]
    p90 = statistics.quantiles(ok_ttfts, n=10, method="inclusive")[-1]
    assert r.ttft.p90 == pytest.approx(1000 * p90)
    assert r.total_token_throughput == pytest.approx(
        (data["total_input_tokens"] + data["total_output_tokens"]) / data["duration"])
    # TTFTs 21, 34, 27 ms (one request failed): two meet 30 ms.
    assert (r.goodput, r.goodput_source) == (pytest.approx(2 / data["duration"]), "per-request")


def test_trtllm_constructed_goodput_client_fallback_and_details_agree() -> None:
    summary = raw("trtllm-random-summary.json")
    p = point("latency", "c1")
    from_client = parse_result("trtllm", p, DATA / "trtllm-random-summary.json",
                               slo_ttft_ms=30, slo_tpot_ms=6)
    assert (from_client.goodput, from_client.goodput_source) == (summary["request_goodput:"],
                                                                 "client")
    assert from_client.ok and (from_client.completed, from_client.failed) == (3, 0)
    assert from_client.tpot.p90 == summary["p90_tpot_ms"]
    detailed = parse_result("trtllm", p, DATA / "trtllm-random-detailed.json",
                            slo_ttft_ms=30, slo_tpot_ms=6)
    assert detailed.goodput_source == "per-request"
    assert detailed.goodput == pytest.approx(from_client.goodput)


def test_unreadable_results(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        bench.load_raw("sglang", empty)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(ValueError, match="does not hold a JSON object"):
        bench.load_raw("vllm", listing)


def test_percentile_matches_numpy_linear() -> None:
    values = [5.0, 1.0, 3.0, 2.0]
    assert bench.percentile(values, 50) == 2.5
    assert bench.percentile(values, 90) == pytest.approx(4.4)
    assert bench.percentile([7.0], 99) == 7.0


# ---- tables ------------------------------------------------------------------------------------


def test_table_rows_and_failures() -> None:
    results = [parse_result("vllm", point("prefill", f"in{n}", input_len=n, output_len=1,
                                          max_concurrency=1),
                            DATA / f"vllm-prefill-in{n}.json", slo_ttft_ms=50)
               for n in (32, 128, 600)]
    lines = bench.render_table(results, "prefill").splitlines()
    assert lines[0] == "prefill"
    assert lines[1].split()[:8] == ["POINT", "IN", "OUT", "CONC", "OK/N", "REQ/S", "OUT", "TOK/S"]
    assert lines[1].rstrip().endswith("GOODPUT")
    row = lines[2].split()
    assert row[:5] == ["in32", "32", "1", "1", "4/4"]
    mean, p50, p90, p99 = row[8].split("/")
    assert float(p50) == pytest.approx(results[0].ttft.p50, abs=0.05)
    assert lines[4].split()[:5] == ["in600", "600", "1", "1", "0/4"]
    assert "-/-/-/-" in lines[4]
    assert lines[5] == "  FAILED in600: no request completed: Bad Request"
    # Right-aligned numeric columns end at the same offset.
    assert len({len(line) for line in lines[1:5]}) == 1


# ---- the whole run, with a fake client that replays recordings -----------------------------------


def replay(calls: list[list[str]], missing: set[str] = frozenset(), broken: set[str] = frozenset()):
    def execute(argv: list[str], result_path: str) -> None:
        calls.append(argv)
        name = Path(result_path).name
        if name in broken:
            raise subprocess.CalledProcessError(1, argv[:3])
        if name not in missing:
            shutil.copyfile(DATA / f"vllm-{name}", result_path)
    return execute


def test_run_suite_writes_results_table_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    cfg = BenchConfig.tiny(suites=("prefill", "decode", "concurrency", "sharegpt"),
                           prefill_input_lens=(32, 128, 256), slo_ttft_ms=50, slo_tpot_ms=20,
                           tokenizer="/models/tiny")
    calls: list[list[str]] = []
    seen: list[tuple[int, int, str, bool]] = []
    run = run_suite(cfg, replay(calls), engine="vllm", base_url="http://127.0.0.1:18000",
                    model="tiny", out_dir=tmp_path,
                    progress=lambda d, t, p, r: seen.append((d, t, p.name, r is not None)))
    assert len(calls) == 3 + 4 + 3 + 1
    assert seen[:2] == [(0, 11, "prefill-in32", False), (1, 11, "prefill-in32", True)]
    assert seen[-1] == (11, 11, "sharegpt-sample", True)
    # The dataset is copied under out_dir, so one mount serves a containerised client.
    share_argv = calls[-1]
    assert share_argv[share_argv.index("--dataset-path") + 1] == str(tmp_path / "sharegpt.json")
    assert (tmp_path / "sharegpt.json").read_bytes() == bench.SAMPLE.read_bytes()
    assert run.failures == 1  # the recorded sharegpt run had 6 failed requests
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["label"] for r in saved["results"]][:3] == ["in32", "in128", "in256"]
    assert saved["results"][0]["goodput_source"] == "per-request"
    summary = (tmp_path / "summary.txt").read_text()
    assert summary.startswith("prefill (vllm, tiny)") and "concurrency (vllm, tiny)" in summary
    assert {p.name for p in run.plots} == {"prefill-ttft.png", "decode-itl.png",
                                           "concurrency-throughput-latency.png"}
    for plot in run.plots:
        data = plot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_without_matplotlib_there_are_no_plots_and_a_note_names_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    cfg = BenchConfig.tiny(suites=("prefill",), prefill_input_lens=(32,))
    run = run_suite(cfg, replay([]), engine="vllm", base_url="http://127.0.0.1:18000",
                    model="tiny", out_dir=tmp_path)
    assert run.plots == [] and run.failures == 0
    assert run.notes == ["matplotlib is not installed: no plots (pip install 'slurmserve[bench]')"]


def test_run_suite_survives_client_failures(tmp_path: Path) -> None:
    cfg = BenchConfig.tiny(suites=("concurrency",))
    calls: list[list[str]] = []
    run = run_suite(cfg, replay(calls, missing={"concurrency-c2.json"},
                                broken={"concurrency-c4.json"}),
                    engine="vllm", base_url="http://h:1", model="tiny", out_dir=tmp_path,
                    plots=False)
    assert len(calls) == 3 and run.failures == 2
    errors = [r.error for r in run.results]
    assert errors[0] is None
    assert errors[1] == "the client wrote no result file"
    assert errors[2].startswith("client failed: Command '['vllm', 'bench', 'serve']'")


def test_compare_two_runs(tmp_path: Path) -> None:
    cfg = BenchConfig.tiny(suites=("concurrency",))
    run_suite(cfg, replay([]), engine="vllm", base_url="http://h:1", model="tiny",
              out_dir=tmp_path / "a", plots=False)

    def shifted(argv: list[str], result_path: str) -> None:  # B's c1 is A's c2, and so on
        nxt = {"concurrency-c1.json": "c2", "concurrency-c2.json": "c4"}.get(Path(result_path).name)
        if nxt:
            shutil.copyfile(DATA / f"vllm-concurrency-{nxt}.json", result_path)

    run_suite(cfg, shifted, engine="vllm", base_url="http://h:1", model="tiny",
              out_dir=tmp_path / "b", plots=False)
    text = bench.compare(tmp_path / "a", tmp_path / "b")
    lines = text.splitlines()
    assert lines[0].startswith("A: ") and lines[1].startswith("B: ")
    assert lines[2].split() == ["POINT", "METRIC", "A", "B", "B/A"]
    c1 = next(line for line in lines if line.startswith("concurrency-c1  output tok/s"))
    a, b = raw("vllm-concurrency-c1.json"), raw("vllm-concurrency-c2.json")
    assert c1.split()[-1] == f"{b['output_throughput'] / a['output_throughput']:.2f}x"
    c4 = next(line for line in lines if line.startswith("concurrency-c4  output tok/s"))
    assert c4.split()[-1] == "-"  # B's c4 failed: no ratio


# ---- the shipped ShareGPT sample -----------------------------------------------------------------


def test_sharegpt_sample_is_shipped_and_reproducible(tmp_path: Path) -> None:
    data = json.loads(bench.SAMPLE.read_text())
    assert len(data) == 50
    for conv in data:
        turns = conv["conversations"]
        assert len(turns) >= 2 and turns[0]["from"] == "human" and turns[1]["from"] == "gpt"
        assert len(turns[0]["value"].split()) <= 60
    out = tmp_path / "sample.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_sharegpt_sample.py"),
                    str(out)], check=True, capture_output=True)
    assert out.read_bytes() == bench.SAMPLE.read_bytes()


def test_result_round_trip() -> None:
    r = parse_result("vllm", point("latency", "c1"), DATA / "vllm-latency-c1.json")
    assert Result.from_dict(json.loads(json.dumps(asdict(r)))) == r
