"""`slurmserve bench`: sweep a running server with the engine's own benchmark client.

slurmserve generates no load. For each point of a suite it builds the argv of the engine's
client (`vllm bench serve`, `python3 -m sglang.bench_serving`, TRT-LLM's
`benchmark_serving`), hands it to an injected `execute(argv, result_path)`, and turns the JSON
the client leaves at `result_path` into one `Result`. The argv names paths under `out_dir`
(results, and the ShareGPT file copied there), so a containerised client needs `out_dir`
mounted at the same path.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from .. import engines
from ..engines import ENGINES

SUITES = ("throughput", "prefill", "decode", "latency", "concurrency", "sharegpt", "longctx")
METRICS = ("ttft", "tpot", "itl", "e2el")
PERCENTILES = (50, 90, 99)
RESULTS_FILE = "results.json"
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sharegpt_sample.json"


@dataclass(frozen=True)
class Point:
    """One client run: a suite's sweep value with its load shape."""

    suite: str
    label: str  # unique within the suite, e.g. "in512", "c16"
    num_prompts: int
    input_len: int | None = None  # None: lengths come from the dataset
    output_len: int | None = None
    max_concurrency: int | None = None  # None: every request at once
    dataset: str = "random"  # random | sharegpt
    dataset_path: str | None = None

    @property
    def name(self) -> str:
        return f"{self.suite}-{self.label}"


@dataclass
class BenchConfig:
    """What to run; every size and count has a per-suite default (`tiny()` for a 512-token model)."""

    suites: tuple[str, ...] = ("throughput",)
    tokenizer: str | None = None  # HF id or path, when the served name is not one
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    seed: int = 0
    throughput_input_len: int = 1024
    throughput_output_len: int = 256
    throughput_prompts: int = 500
    prefill_input_lens: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096)
    prefill_prompts: int = 32
    prefill_concurrency: int = 1
    decode_input_len: int = 128
    decode_output_lens: tuple[int, ...] = (128, 256, 512, 1024)
    decode_prompts: int = 32
    decode_concurrency: int = 8
    latency_input_len: int = 128
    latency_output_len: int = 128
    latency_prompts: int = 32
    concurrency_levels: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    concurrency_input_len: int = 512
    concurrency_output_len: int = 128
    concurrency_rounds: int = 4  # prompts per level: rounds x level, at least min_prompts
    concurrency_min_prompts: int = 16
    sharegpt_path: str | None = None  # None: the synthetic sample shipped with slurmserve
    sharegpt_prompts: int = 50
    sharegpt_output_len: int | None = None  # None: the dataset's answer lengths
    sharegpt_concurrency: int | None = 16
    longctx_input_lens: tuple[int, ...] = (8192, 16384, 32768)
    longctx_output_len: int = 128
    longctx_prompts: int = 8
    longctx_concurrency: int = 1

    def __post_init__(self) -> None:
        unknown = [s for s in self.suites if s not in SUITES]
        if unknown or not self.suites:
            raise ValueError(f"unknown suite(s) {', '.join(unknown) or '(none given)'}; "
                             f"choose from {', '.join(SUITES)}")
        for f in fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) and f.name != "suites" else (value,)
            if f.name != "seed" and any(isinstance(v, (int, float)) and not isinstance(v, bool)
                                        and v <= 0 for v in values):
                raise ValueError(f"{f.name} must be positive, got {value!r}")

    @classmethod
    def tiny(cls, **overrides: Any) -> BenchConfig:
        """Small sizes that fit a 512-token context and finish in seconds on a CPU."""
        sizes: dict[str, Any] = dict(
            throughput_input_len=64, throughput_output_len=32, throughput_prompts=16,
            prefill_input_lens=(32, 64, 128, 256), prefill_prompts=4,
            decode_input_len=32, decode_output_lens=(16, 32, 64, 128), decode_prompts=4,
            decode_concurrency=2, latency_input_len=32, latency_output_len=16, latency_prompts=4,
            concurrency_levels=(1, 2, 4), concurrency_input_len=64, concurrency_output_len=16,
            concurrency_rounds=2, concurrency_min_prompts=4, sharegpt_prompts=8,
            sharegpt_output_len=16, sharegpt_concurrency=4, longctx_input_lens=(384,),
            longctx_output_len=16, longctx_prompts=2)
        return cls(**{**sizes, **overrides})

    def points(self, suite: str) -> list[Point]:
        """The sweep of one suite, in run order."""
        if suite == "throughput":
            return [Point(suite, f"in{self.throughput_input_len}-out{self.throughput_output_len}",
                          self.throughput_prompts, self.throughput_input_len,
                          self.throughput_output_len)]
        if suite == "prefill":
            return [Point(suite, f"in{n}", self.prefill_prompts, n, 1, self.prefill_concurrency)
                    for n in self.prefill_input_lens]
        if suite == "decode":
            return [Point(suite, f"out{n}", self.decode_prompts, self.decode_input_len, n,
                          self.decode_concurrency) for n in self.decode_output_lens]
        if suite == "latency":
            return [Point(suite, "c1", self.latency_prompts, self.latency_input_len,
                          self.latency_output_len, 1)]
        if suite == "concurrency":
            return [Point(suite, f"c{c}", max(self.concurrency_rounds * c,
                                              self.concurrency_min_prompts),
                          self.concurrency_input_len, self.concurrency_output_len, c)
                    for c in self.concurrency_levels]
        if suite == "sharegpt":
            return [Point(suite, "sample", self.sharegpt_prompts, None, self.sharegpt_output_len,
                          self.sharegpt_concurrency, "sharegpt",
                          self.sharegpt_path or str(SAMPLE))]
        if suite == "longctx":
            return [Point(suite, f"in{n}", self.longctx_prompts, n, self.longctx_output_len,
                          self.longctx_concurrency) for n in self.longctx_input_lens]
        raise ValueError(f"unknown suite {suite!r}")

    def all_points(self) -> list[Point]:
        return [p for suite in self.suites for p in self.points(suite)]


# ---- client command lines -----------------------------------------------------------------------


def _engine(name: str) -> ModuleType:
    """The engine module that knows its client (engines/<name>.py); unknown names are a ValueError."""
    try:
        return engines.get(name)
    except ValueError:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}") from None


def result_name(engine: str, point: Point) -> str:
    return f"{point.name}.jsonl" if _engine(engine).BENCH_JSONL else f"{point.name}.json"


def client_argv(engine: str, point: Point, base_url: str, model: str, out_path: str,
                config: BenchConfig | None = None) -> list[str]:
    """The engine's own benchmark client for one point, writing its JSON to `out_path`.

    The API key is not on the command line: all three clients read OPENAI_API_KEY
    (`client_env`).
    """
    cfg = config or BenchConfig()
    adapter = _engine(engine)
    argv = [*adapter.BENCH_CLIENT, "--base-url", base_url.rstrip("/"), "--model", model]
    if cfg.tokenizer:
        argv += ["--tokenizer", cfg.tokenizer]
    argv += ["--num-prompts", str(point.num_prompts), "--seed", str(cfg.seed), "--disable-tqdm"]
    if point.max_concurrency is not None:
        argv += ["--max-concurrency", str(point.max_concurrency)]
    if point.dataset == "sharegpt":
        argv += ["--dataset-name", "sharegpt", "--dataset-path", str(point.dataset_path)]
        if point.output_len is not None:
            argv += ["--sharegpt-output-len", str(point.output_len)]
    else:
        argv += adapter.bench_random_args(point.input_len, point.output_len)
    slos = [f"{k}:{v:g}" for k, v in (("ttft", cfg.slo_ttft_ms), ("tpot", cfg.slo_tpot_ms))
            if v is not None]
    return argv + adapter.bench_output_args(point.name, Path(out_path), METRICS, PERCENTILES, slos)


def client_env(api_key: str | None) -> dict[str, str]:
    """Environment for the client: the clients send OPENAI_API_KEY as a Bearer token."""
    return {"OPENAI_API_KEY": api_key} if api_key else {}


# ---- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


@dataclass
class Result:
    """One client run in engine-neutral terms (latencies in ms, throughputs per second)."""

    suite: str
    label: str
    engine: str
    num_prompts: int
    input_len: int | None = None
    output_len: int | None = None
    max_concurrency: int | None = None
    completed: int = 0
    failed: int = 0
    duration_s: float = 0.0
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    request_throughput: float = 0.0
    output_throughput: float = 0.0
    total_token_throughput: float = 0.0
    ttft: Stat = field(default_factory=Stat)
    tpot: Stat = field(default_factory=Stat)
    itl: Stat = field(default_factory=Stat)
    e2el: Stat = field(default_factory=Stat)
    goodput: float | None = None  # requests/s meeting every SLO
    goodput_source: str | None = None  # "per-request" | "client"
    error: str | None = None
    raw_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.completed > 0 and self.failed == 0

    @classmethod
    def for_point(cls, engine: str, point: Point, **values: Any) -> Result:
        return cls(point.suite, point.label, engine, point.num_prompts, point.input_len,
                   point.output_len, point.max_concurrency, **values)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for m in METRICS:
            values[m] = Stat(**(values.get(m) or {}))
        return cls(**values)


@dataclass(frozen=True)
class _Request:
    ok: bool
    ttft: float  # seconds
    latency: float
    output_len: int
    itl: tuple[float, ...]

    @property
    def tpot(self) -> float:
        """As the clients define it; 0 for one output token (counts as meeting a TPOT SLO)."""
        return (self.latency - self.ttft) / (self.output_len - 1) if self.output_len > 1 else 0.0


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks, as numpy.percentile by default."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def load_raw(engine: str, path: str | Path) -> dict[str, Any]:
    """The client's JSON; a client that appends JSON lines (SGLang) has this run on its last line."""
    text = Path(path).read_text(encoding="utf-8")
    if _engine(engine).BENCH_JSONL:
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"{path} is empty")
        text = lines[-1]
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def _requests(raw: dict[str, Any]) -> list[_Request] | None:
    """Per-request data when the client saved it (--save-detailed / --output-details)."""
    ttfts, output_lens = raw.get("ttfts"), raw.get("output_lens")
    if not isinstance(ttfts, list) or not isinstance(output_lens, list):
        return None
    itls = raw.get("itls") or [[] for _ in ttfts]
    errors = raw.get("errors") or [""] * len(ttfts)
    latencies = raw.get("latencies")
    out = []
    for i, ttft in enumerate(ttfts):
        itl = tuple(itls[i] or ())
        # No per-request latency saved (SGLang): the last token arrives after TTFT + all ITLs.
        latency = latencies[i] if latencies else ttft + sum(itl)
        out.append(_Request(not errors[i] and output_lens[i] > 0, ttft or 0.0, latency or 0.0,
                            output_lens[i], itl))
    return out


def _stat(raw: dict[str, Any], metric: str, values: list[float] | None) -> Stat:
    def key(*candidates: str) -> float | None:
        for c in candidates:
            value = raw.get(c.format(metric))
            if isinstance(value, (int, float)):
                return float(value)
        return None

    def from_values(p: float | None) -> float | None:
        if not values:
            return None
        return 1000 * (sum(values) / len(values) if p is None else percentile(values, p))

    mean = key("mean_{}_ms")
    p50 = key("p50_{}_ms", "median_{}_ms")
    p90, p99 = key("p90_{}_ms"), key("p99_{}_ms")
    return Stat(mean if mean is not None else from_values(None),
                p50 if p50 is not None else from_values(50),
                p90 if p90 is not None else from_values(90),
                p99 if p99 is not None else from_values(99))


def parse_result(engine: str, point: Point, path: str | Path, slo_ttft_ms: float | None = None,
                 slo_tpot_ms: float | None = None) -> Result:
    """One client JSON -> Result; failed requests or none completed make a failed run."""
    raw = _engine(engine).bench_unify(load_raw(engine, path))
    reqs = _requests(raw)
    completed = int(raw.get("completed") or 0)
    expected = int(raw.get("num_prompts") or (len(reqs) if reqs else 0) or point.num_prompts)
    failed = int(raw["failed"]) if isinstance(raw.get("failed"), int) else max(0, expected - completed)
    duration = float(raw.get("duration") or 0.0)
    good = [r for r in reqs or [] if r.ok]
    per_metric: dict[str, list[float] | None] = {
        "ttft": [r.ttft for r in good], "tpot": [r.tpot for r in good if r.output_len > 1],
        "itl": [x for r in good for x in r.itl], "e2el": [r.latency for r in good],
    } if reqs else dict.fromkeys(METRICS)
    total_in, total_out = int(raw.get("total_input_tokens") or 0), int(raw.get("total_output_tokens") or 0)
    total_tps = raw.get("total_token_throughput")
    if total_tps is None and duration:
        total_tps = (total_in + total_out) / duration
    goodput, source = _goodput(raw, reqs, duration, slo_ttft_ms, slo_tpot_ms)
    error = None
    if completed == 0:
        error = "no request completed"
    elif failed:
        error = f"{failed} of {completed + failed} requests failed"
    if error:
        first = next((e for e in raw.get("errors") or [] if e), None)
        if first:
            error += f": {' '.join(str(first).split())[:200]}"
    # With nothing completed the clients report zeros, which are no latencies at all.
    stats = {m: _stat(raw, m, per_metric[m]) if completed else Stat() for m in METRICS}
    return Result.for_point(
        engine, point, completed=completed, failed=failed, duration_s=duration,
        total_input_tokens=total_in, total_output_tokens=total_out,
        request_throughput=float(raw.get("request_throughput") or 0.0),
        output_throughput=float(raw.get("output_throughput") or 0.0),
        total_token_throughput=float(total_tps or 0.0),
        **stats,
        goodput=goodput, goodput_source=source, error=error, raw_path=str(path))


def _goodput(raw: dict[str, Any], reqs: list[_Request] | None, duration: float,
             slo_ttft_ms: float | None, slo_tpot_ms: float | None) -> tuple[float | None, str | None]:
    """Requests/s meeting every SLO: from per-request data, else the client's own number."""
    if slo_ttft_ms is None and slo_tpot_ms is None:
        return None, None
    if reqs is not None and duration > 0:
        good = sum(r.ok and (slo_ttft_ms is None or r.ttft * 1000 <= slo_ttft_ms)
                   and (slo_tpot_ms is None or r.tpot * 1000 <= slo_tpot_ms) for r in reqs)
        return good / duration, "per-request"
    value = raw.get("request_goodput")
    return (float(value), "client") if isinstance(value, (int, float)) else (None, None)


# ---- tables -------------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def _stat_cell(stat: Stat) -> str:
    return "/".join(_num(v) for v in (stat.mean, stat.p50, stat.p90, stat.p99))


def _align(rows: list[list[str]], right_from: int = 1) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i >= right_from else c.ljust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in rows]


def render_table(results: list[Result], title: str | None = None) -> str:
    """A plain-text table of results (one suite's run), latencies as mean/p50/p90/p99 ms."""
    goodput = any(r.goodput is not None for r in results)
    head = ["POINT", "IN", "OUT", "CONC", "OK/N", "REQ/S", "OUT TOK/S", "TOT TOK/S",
            "TTFT ms", "TPOT ms", "ITL ms", "E2E ms"] + (["GOODPUT"] if goodput else [])
    rows = [head]
    for r in results:
        row = [r.label, str(r.input_len or "data"), str(r.output_len or "data"),
               str(r.max_concurrency) if r.max_concurrency else "all",
               f"{r.completed}/{r.completed + r.failed}",
               _num(r.request_throughput), _num(r.output_throughput),
               _num(r.total_token_throughput), *(_stat_cell(getattr(r, m)) for m in METRICS)]
        rows.append(row + ([_num(r.goodput)] if goodput else []))
    lines = ([title] if title else []) + _align(rows)
    lines += [f"  FAILED {r.label}: {r.error}" for r in results if not r.ok]
    return "\n".join(lines)


# ---- the run ------------------------------------------------------------------------------------

Execute = Callable[[list[str], str], None]
Progress = Callable[[int, int, Point, Result | None], None]


@dataclass
class BenchRun:
    engine: str
    base_url: str
    model: str
    out_dir: Path
    config: BenchConfig
    results: list[Result] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(not r.ok for r in self.results)

    def table(self) -> str:
        by_suite = [(s, [r for r in self.results if r.suite == s]) for s in self.config.suites]
        return "\n\n".join(render_table(rs, f"{s} ({self.engine}, {self.model})")
                           for s, rs in by_suite if rs)

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "base_url": self.base_url, "model": self.model,
                "config": asdict(self.config), "results": [asdict(r) for r in self.results],
                "plots": [str(p) for p in self.plots], "notes": self.notes}


def run_suite(config: BenchConfig, execute: Execute, *, engine: str, base_url: str, model: str,
              out_dir: str | Path, progress: Progress | None = None,
              plots: bool = True) -> BenchRun:
    """Run every point of the configured suites through `execute` and summarise them.

    `execute(argv, result_path)` must run the client (locally, or `docker run` of the engine
    image with `out_dir` mounted at the same path) and leave its JSON at `result_path`; an
    exception from it marks that point failed and the sweep goes on. Writes
    `out_dir/results.json`, `out_dir/summary.txt` and PNG plots.
    """
    out = Path(out_dir).resolve()
    (out / "raw").mkdir(parents=True, exist_ok=True)
    points = config.all_points()
    if "sharegpt" in config.suites:
        source = Path(config.sharegpt_path) if config.sharegpt_path else SAMPLE
        shutil.copyfile(source, out / "sharegpt.json")
        points = [replace(p, dataset_path=str(out / "sharegpt.json")) if p.dataset == "sharegpt"
                  else p for p in points]
    run = BenchRun(engine, base_url, model, out, config)
    for i, point in enumerate(points):
        if progress:
            progress(i, len(points), point, None)
        result = _run_point(config, execute, engine, base_url, model, point,
                            out / "raw" / result_name(engine, point))
        run.results.append(result)
        if progress:
            progress(i + 1, len(points), point, result)
    if plots:
        run.plots, run.notes = plot_results(run.results, out)
    (out / RESULTS_FILE).write_text(json.dumps(run.to_dict(), indent=1) + "\n", encoding="utf-8")
    (out / "summary.txt").write_text(run.table() + "\n", encoding="utf-8")
    return run


def _run_point(config: BenchConfig, execute: Execute, engine: str, base_url: str, model: str,
               point: Point, path: Path) -> Result:
    path.unlink(missing_ok=True)  # SGLang appends; a stale file must not pass for this run
    argv = client_argv(engine, point, base_url, model, str(path), config)
    try:
        execute(argv, str(path))
    except Exception as exc:  # any runner failure fails this point only
        return Result.for_point(engine, point, error=f"client failed: {exc}"[:300],
                                raw_path=str(path))
    if not path.is_file():
        return Result.for_point(engine, point, error="the client wrote no result file",
                                raw_path=str(path))
    try:
        return parse_result(engine, point, path, config.slo_ttft_ms, config.slo_tpot_ms)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return Result.for_point(engine, point, error=f"unreadable result: {exc}"[:300],
                                raw_path=str(path))


def load_run(out_dir: str | Path) -> tuple[dict[str, Any], list[Result]]:
    data = json.loads((Path(out_dir) / RESULTS_FILE).read_text(encoding="utf-8"))
    return data, [Result.from_dict(r) for r in data["results"]]


# ---- comparison ---------------------------------------------------------------------------------

COMPARED: tuple[tuple[str, Callable[[Result], float | None], bool], ...] = (
    ("output tok/s", lambda r: r.output_throughput, True),
    ("requests/s", lambda r: r.request_throughput, True),
    ("TTFT p50 ms", lambda r: r.ttft.p50, False),
    ("TPOT p50 ms", lambda r: r.tpot.p50, False),
    ("ITL p50 ms", lambda r: r.itl.p50, False),
    ("E2E p50 ms", lambda r: r.e2el.p50, False),
)


def compare(dir_a: str | Path, dir_b: str | Path) -> str:
    """Two runs side by side, point by point, with B/A ratios (higher-is-better marked)."""
    meta_a, results_a = load_run(dir_a)
    meta_b, results_b = load_run(dir_b)
    b_by_key = {(r.suite, r.label): r for r in results_b}
    rows = [["POINT", "METRIC", "A", "B", "B/A"]]
    missing = []
    for a in results_a:
        b = b_by_key.pop((a.suite, a.label), None)
        if b is None:
            missing.append(f"{a.suite}-{a.label} only in A")
            continue
        for name, get, higher_better in COMPARED:
            va, vb = get(a), get(b)
            ratio = f"{vb / va:.2f}x" if va and vb is not None and a.ok and b.ok else "-"
            arrow = " (higher is better)" if higher_better else ""
            rows.append([f"{a.suite}-{a.label}", name + arrow, _num(va), _num(vb), ratio])
    missing += [f"{s}-{label} only in B" for s, label in b_by_key]
    head = [f"A: {dir_a} ({meta_a.get('engine')}, {meta_a.get('model')})",
            f"B: {dir_b} ({meta_b.get('engine')}, {meta_b.get('model')})"]
    return "\n".join(head + _align(rows, right_from=2) + [f"  {m}" for m in missing])


# ---- plots --------------------------------------------------------------------------------------


def plot_results(results: Iterable[Result], out_dir: str | Path) -> tuple[list[Path], list[str]]:
    """PNG plots of the sweeps present: (files written, notes on what was not plotted)."""
    ok = [r for r in results if r.ok]
    conc = sorted((r for r in ok if r.suite == "concurrency"), key=lambda r: r.max_concurrency or 0)
    prefill = sorted((r for r in ok if r.suite in ("prefill", "longctx")),
                     key=lambda r: r.input_len or 0)
    decode = sorted((r for r in ok if r.suite == "decode"), key=lambda r: r.output_len or 0)
    if not (conc or prefill or decode):
        return [], []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], ["matplotlib is not installed: no plots (pip install 'slurmserve[bench]')"]
    out = Path(out_dir)
    written = []
    if conc:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        levels = [r.max_concurrency or 0 for r in conc]
        left.plot(levels, [r.output_throughput for r in conc], "o-")
        _log2_axis(left, levels)
        left.set(xlabel="max concurrency", ylabel="output tokens/s", title="throughput vs concurrency")
        right.plot([r.e2el.p50 for r in conc], [r.output_throughput for r in conc], "o-",
                   label="p50 E2E")
        right.plot([r.e2el.p99 for r in conc], [r.output_throughput for r in conc], "s--",
                   label="p99 E2E", alpha=0.6)
        for r in conc:
            right.annotate(f"c={r.max_concurrency}", (r.e2el.p50 or 0, r.output_throughput),
                           textcoords="offset points", xytext=(4, 4), fontsize=8)
        right.set(xlabel="end-to-end latency (ms)", ylabel="output tokens/s",
                  title="throughput vs latency")
        right.legend()
        written.append(_save(plt, fig, out / "concurrency-throughput-latency.png"))
    for suites, data, xattr, stat, xlabel, name in (
            ("prefill", prefill, "input_len", "ttft", "input length (tokens)",
             "prefill-ttft.png"),
            ("decode", decode, "output_len", "itl", "output length (tokens)", "decode-itl.png")):
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.2))
        xs = [getattr(r, xattr) for r in data]
        for p, style in (("mean", "o-"), ("p50", "s-"), ("p99", "^--")):
            ax.plot(xs, [getattr(getattr(r, stat), p) for r in data], style, label=p)
        _log2_axis(ax, xs)
        ax.set(xlabel=xlabel, ylabel=f"{stat.upper()} (ms)",
               title=f"{stat.upper()} vs {xlabel.split(' (')[0]} ({suites})")
        ax.legend()
        written.append(_save(plt, fig, out / name))
    return written, []


def _log2_axis(ax: Any, ticks: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
