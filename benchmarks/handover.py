"""`submit --serve-for` on the sandbox: what a handover costs, against the job length.

For each job length L, one chain (`--time L --handover 100s`, the stand-in engine, the real
vllm-router in its own job) serves a fixed open-loop load through the router while its jobs
hand over twice. From the deployment's record (wall-clock handover events) and the jobs'
records it reports per handover:
- successor submitted -> its driver started (queue wait) -> READY (its replicas passed their
  readiness check, one generation each, and joined the router: its first served request);
- the overlap: the successor's start to the old job's end, when both jobs hold their nodes
  (the price of zero downtime), and that overlap as a share of L;
- requests failed from the time-limit warning to the old job's end.

The stand-in is a test engine: start times here are orchestration plus image load, not a
model load. Usage (root, sandbox up):
    python benchmarks/handover.py [--lengths 3,5] [--rate 20] [--out benchmarks/results/handover.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
LEAD_S = 100  # --handover
HANDOVERS = 2  # per job length


def sh(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)


def build(name: str) -> str:
    out = sh(str(REPO / "containers/testing/build"), name, timeout=1800)
    return out.stdout.strip().splitlines()[-1]


class Load:
    """`rate` chat requests a second through the router, each on its own timer thread."""

    def __init__(self, base_url: str, rate: float) -> None:
        self.base_url, self.rate = base_url, rate
        self.outcomes: list[tuple[float, float, bool]] = []  # started, ended, ok
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._pace, daemon=True)

    def _one(self) -> None:
        body = {"model": "org/tiny", "messages": [{"role": "user", "content": "Hello"}],
                "max_tokens": 8}
        t0 = time.time()
        try:
            ok = requests.post(f"{self.base_url}/v1/chat/completions", json=body,
                               timeout=90).ok
        except requests.RequestException:
            ok = False
        self.outcomes.append((t0, time.time(), ok))

    def _pace(self) -> None:
        tick = time.monotonic()
        while not self.stop.is_set():
            threading.Thread(target=self._one, daemon=True).start()
            tick += 1 / self.rate
            self.stop.wait(max(0.0, tick - time.monotonic()))

    def failed_between(self, start: float, end: float) -> int:
        return sum(1 for t0, _, ok in self.outcomes if not ok and start <= t0 <= end)


def chain_record(name: str) -> dict:
    from slurmserve import chain

    found = chain.load(name)
    return found.to_dict() if found else {}


def ended_at(job: str, log_dir: Path) -> float | None:
    """When the old job's driver wrote its final record (its teardown done)."""
    state = log_dir / job / "state.json"
    data = json.loads(state.read_text()) if state.exists() else {}
    return data.get("updated") if data.get("status") in ("stopped", "failed") else None


def one_length(minutes: int, rate: float, image: str) -> dict:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    log_dir = Path(tempfile.mkdtemp(prefix="ss-bench-handover-"))
    submit = sh("slurmserve", "submit", "sglang", "org/tiny", "--image", image,
                "--runtime", "docker", "--gpus", "none", "--gpus-per-node", "1",
                "--health-timeout", "120", "--log-dir", str(log_dir), "--name", name,
                "--serve-for", "60m", "--time", str(minutes), "--handover", f"{LEAD_S}s",
                "--drain-grace", "10s", "--router-time", "60", "--json")
    assert submit.returncode == 0, submit.stderr
    info = json.loads(submit.stdout.strip().splitlines()[-1])
    load = Load(info["endpoint"], rate)
    load.thread.start()
    try:
        deadline = time.monotonic() + minutes * 60 * (HANDOVERS + 1)
        while time.monotonic() < deadline:
            events = chain_record(name).get("handovers", [])
            done = [e for e in events[:HANDOVERS] if ended_at(e["from"], log_dir)]
            if len(done) >= HANDOVERS:
                break
            time.sleep(2)
        time.sleep(3)
    finally:
        load.stop.set()
        sh("slurmserve", "stop", name, timeout=300)
    rows = []
    for event in chain_record(name).get("handovers", [])[:HANDOVERS]:
        end = ended_at(event["from"], log_dir) or event["drained"]
        rows.append({
            "from": event["from"], "to": event["to"],
            "queue_s": round(event["started"] - event["submitted"], 2),
            "submit_to_ready_s": round(event["ready"] - event["submitted"], 2),
            "drain_s": round(event["drain_s"], 2),
            "overlap_s": round(end - event["started"], 2),
            "overlap_share": round((end - event["started"]) / (minutes * 60), 4),
            "failed": load.failed_between(event["warned"], end + 2),
        })
    return {"job_minutes": minutes, "lead_s": LEAD_S, "rate_per_s": rate,
            "requests": len(load.outcomes), "failed": sum(not ok for *_, ok in load.outcomes),
            "handovers": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="3,5", help="job lengths in minutes")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/handover.json"))
    args = parser.parse_args()
    image = build("standin")
    runs = [one_length(int(m), args.rate, image) for m in args.lengths.split(",")]
    for run in runs:
        cost = statistics.median(h["submit_to_ready_s"] for h in run["handovers"])
        print(f"--time {run['job_minutes']}m: {len(run['handovers'])} handovers, submit->ready "
              f"median {cost:.1f}s, overlap {[h['overlap_s'] for h in run['handovers']]}s, "
              f"failed {run['failed']} of {run['requests']}")
    machine = "sandbox: 2 CPU cores shared by every node, stand-in engine, docker runtime"
    Path(args.out).write_text(json.dumps({"machine": machine, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
