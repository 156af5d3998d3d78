"""`--replicas N` on the sandbox, each figure measured side by side in one run.

- throughput: 1 deployment (direct, no router), 2 and 4 replicas behind the router, under
  the same closed-loop load; the stand-in with a fixed per-token delay and a fixed number of
  batch slots (SLURMSERVE_STANDIN_TOKEN_LATENCY, SLURMSERVE_STANDIN_MAX_SEQS), and the real
  vLLM CPU build at 1 and 2
- router overhead: the same request to one replica directly and through the router,
  alternating, p50 and p99
- failover: a replica's container killed -> out of the router's worker list -> back in it
  (polled on the router's own /list_workers every 20 ms)

The stand-in is a test engine, not an engine; the router is the real vllm-router. Usage (root,
sandbox up with >= 4 nodes):
    python benchmarks/replicas.py [--seconds 12] [--no-vllm] [--out benchmarks/results/replicas.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
SANDBOX = str(REPO / "tests/cluster/sandbox")
TOKEN_LATENCY_S = 0.02  # the stand-in's per-token delay
MAX_SEQS = 4  # the stand-in's batch slots per replica
CONCURRENCY = 16  # closed-loop clients: enough to fill 4 replicas' slots
MAX_TOKENS = 16


def sh(*argv: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check,
                          timeout=timeout)


def build(name: str) -> str:
    return sh(str(REPO / "containers/testing/build"), name).stdout.strip().splitlines()[-1]


class Run:
    """`salloc -N n slurmserve run ...` in the background, until READY (and its state)."""

    def __init__(self, nodes: int, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_dir = Path(tempfile.mkdtemp(prefix="ss-bench-replicas-"))
        cut = args.index("--") if "--" in args else len(args)  # engine args stay last
        argv = ["salloc", f"--nodes={nodes}", "--oversubscribe", "slurmserve", "run",
                *args[:cut], "--nodes", str(nodes), "--log-dir", str(self.log_dir),
                "--quiet-logs", "--runtime", "docker",
                *(f"--env={k}={v}" for k, v in (env or {}).items()), *args[cut:]]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.err: list[str] = []
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()
        self.endpoint = ""
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if line.startswith("READY "):
                self.endpoint = line.split()[1]
                break
        if not self.endpoint:
            raise SystemExit("no READY:\n" + "".join(self.err[-40:]))
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def state(self) -> dict:
        return json.loads(next(self.log_dir.glob("*/state.json")).read_text())

    def wait_all_ready(self, count: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.state().get("replicas", [])
            if len(rows) == count and all(r["status"] == "ready" for r in rows):
                return
            time.sleep(0.2)
        raise SystemExit(f"not every replica ready in {timeout}s")

    def stop(self) -> None:
        state = self.state()
        os.kill(int(state["driver_pid"]), signal.SIGINT)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            sh("scancel", state["job"], check=False)


def load(endpoint: str, model: str, seconds: float, concurrency: int = CONCURRENCY) -> dict:
    """Closed loop: `concurrency` clients, each sending the next request when one returns."""
    done: list[tuple[float, int]] = []  # (latency, completion tokens)
    failed = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    body = {"model": model, "prompt": "bench", "max_tokens": MAX_TOKENS,
            "ignore_eos": True, "min_tokens": MAX_TOKENS}

    def client() -> None:
        session = requests.Session()
        session.trust_env = False
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            try:
                r = session.post(f"{endpoint}/v1/completions", json=body, timeout=120)
                ok = r.status_code == 200
                tokens = r.json()["usage"]["completion_tokens"] if ok else 0
            except (requests.RequestException, ValueError, KeyError):
                ok, tokens = False, 0
            with lock:
                if ok:
                    done.append((time.monotonic() - t0, tokens))
                else:
                    failed[0] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    return {"requests_per_s": len(done) / elapsed,
            "tokens_per_s": sum(n for _, n in done) / elapsed,
            "completed": len(done), "failed": failed[0],
            "p50_s": statistics.median(x for x, _ in done) if done else None}


def throughput(engine_args: list[str], replicas: list[int], seconds: float,
               env: dict[str, str] | None, model: str, concurrency: int) -> list[dict]:
    rows = []
    for n in replicas:
        extra = ["--replicas", str(n), "--ready-replicas", str(n), "--route",
                 "least-load"] if n > 1 else []
        cut = engine_args.index("--") if "--" in engine_args else len(engine_args)
        run = Run(n, *engine_args[:cut], *extra, *engine_args[cut:], env=env)
        try:
            load(run.endpoint, model, 2, concurrency)  # warm-up
            result = load(run.endpoint, model, seconds, concurrency)
        finally:
            run.stop()
        rows.append({"replicas": n, "via": "router" if n > 1 else "direct", **result})
        print(f"  {n} replica(s): {result['requests_per_s']:.1f} req/s, "
              f"{result['tokens_per_s']:.0f} tok/s, {result['failed']} failed", flush=True)
    base = rows[0]["tokens_per_s"] or 1.0
    for row in rows:
        row["scaling"] = row["tokens_per_s"] / base
    return rows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def router_overhead(run: Run, model: str, count: int = 200) -> dict:
    """The same 1-token request to replica 0 and through the router, alternating."""
    direct_url = run.state()["replicas"][0]["endpoint"]
    session = requests.Session()
    session.trust_env = False
    body = {"model": model, "prompt": "x", "max_tokens": 1}
    times: dict[str, list[float]] = {"direct": [], "router": []}
    for i in range(2 * count):
        arm = ("direct", "router")[i % 2]
        url = direct_url if arm == "direct" else run.endpoint
        t0 = time.perf_counter()
        session.post(f"{url}/v1/completions", json=body, timeout=30).raise_for_status()
        times[arm].append(time.perf_counter() - t0)
    out = {f"{arm}_{name}_ms": 1000 * f(v) for arm, v in times.items()
           for name, f in (("p50", statistics.median), ("p99", lambda x: percentile(x, 0.99)))}
    out["overhead_p50_ms"] = out["router_p50_ms"] - out["direct_p50_ms"]
    out["overhead_p99_ms"] = out["router_p99_ms"] - out["direct_p99_ms"]
    out["requests_per_arm"] = count
    return out


def failover(run: Run) -> dict:
    """Kill replica 1's container; the router's worker list, polled every 20 ms."""
    state = run.state()
    victim = state["replicas"][1]
    node = next(n for n in state["nodes"] if n["host"] == victim["nodes"][0])
    admin = f"{run.endpoint}/list_workers"

    def members() -> list[str]:
        try:
            return requests.get(admin, timeout=2).json().get("urls", [])
        except (requests.RequestException, ValueError):
            return []

    sh(SANDBOX, "exec", node["host"], "docker", "kill", node["container"])
    killed = time.monotonic()
    removed = back = None
    while time.monotonic() - killed < 120:
        inside = victim["endpoint"] in members()
        if removed is None and not inside:
            removed = time.monotonic() - killed
        if removed is not None and inside:
            back = time.monotonic() - killed
            break
        time.sleep(0.02)
    return {"removed_s": removed, "back_s": back}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--no-vllm", action="store_true")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/replicas.json"))
    args = parser.parse_args()
    standin = build("standin")
    env = {"SLURMSERVE_STANDIN_TOKEN_LATENCY": str(TOKEN_LATENCY_S),
           "SLURMSERVE_STANDIN_MAX_SEQS": str(MAX_SEQS)}
    standin_args = ["sglang", "org/bench", "--image", standin, "--gpus", "none",
                    "--gpus-per-node", "1", "--health-timeout", "120"]
    results: dict = {"machine": f"sandbox, {os.cpu_count()} CPU cores shared by every node",
                     "runtime": "docker", "router": "vllm-router " + _router_version(),
                     "standin": {"token_latency_s": TOKEN_LATENCY_S, "max_seqs": MAX_SEQS,
                                 "concurrency": CONCURRENCY, "max_tokens": MAX_TOKENS,
                                 "seconds": args.seconds, "engine": "sglang stand-in, 1 node "
                                 "per replica"}}
    print("stand-in throughput", flush=True)
    results["standin"]["throughput"] = throughput(standin_args, [1, 2, 4], args.seconds, env,
                                                  "org/bench", CONCURRENCY)
    print("router overhead and failover (2 stand-in replicas)", flush=True)
    run = Run(2, *standin_args, "--replicas", "2", "--ready-replicas", "2", "--route",
              "round-robin")
    try:
        results["router_overhead"] = router_overhead(run, "org/bench")
        results["failover"] = failover(run)
    finally:
        run.stop()
    print(f"  {results['router_overhead']}\n  {results['failover']}", flush=True)
    if not args.no_vllm:
        print("real vLLM CPU throughput", flush=True)
        vllm_args = ["vllm", "/models/tiny", "--image", build("vllm-cpu"), "--served-model-name",
                     "tiny", "--gpus", "none", "--gpus-per-node", "1", "--health-timeout", "900",
                     "--", "--max-model-len", "512"]
        results["vllm"] = {"concurrency": 8, "max_tokens": MAX_TOKENS, "seconds": args.seconds,
                           "engine": "vLLM CPU build, tiny random Qwen2, 1 node per replica",
                           "throughput": throughput(vllm_args, [1, 2], args.seconds, None,
                                                    "tiny", 8)}
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


def _router_version() -> str:
    try:
        from importlib.metadata import version

        return version("vllm-router")
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    main()
