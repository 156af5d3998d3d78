"""Orchestration overhead (issue 18), in paired rounds: at each N, R rounds of a repeated job
through `slurmserve run` -> READY against the same stand-ins started by hand with the same
runtime -> /health 200, each arm first in turn, every arm settled (the previous
job ended, writes on disk, the page cache dropped, as benchmarks/runtimes.py does). --warm
keeps the cache: under pyxis an arm started so ran up to 4x slower (6.2 s against 1.6 s at 1
node), the previous job's unpacked container still being freed.

By hand, docker has two arms: `docker run` on every node straight from the host (the sandbox's
shortcut into each node: no SLURM at all, the physical floor), and through one srun step in an
allocation already granted, as a run.sbatch does it (pyxis's by-hand arm is that one already).

Per cell: the medians of both arms, the median of the paired differences (slurmserve's time
from the driver's start, and from the interpreter's start), and the driver's timeline per
phase (medians). A least-squares slope of the paired differences over N says how flat it is.
Usage (root, sandbox up with >= max(N) nodes):
    python benchmarks/overhead.py [--nodes 1,2,4,8,16] [--runtimes docker,pyxis] [--rounds 4]
        [--warm] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import cluster as bench
import runtimes

SPANS = (("process", "driver"), ("driver", "preflight"), ("preflight", "preflight facts"),
         ("preflight facts", "image load"), ("driver", "image load"), ("image load", "launch"),
         ("launch", "containers started"), ("containers started", "health"), ("health", "ready"))


def slurmserve_arm(names: list[str], path: str) -> dict:
    run = bench.Run(names, path)
    run.wait_ready()
    timeline = run.state().get("timeline", {})
    run.stop()
    return timeline


def by_hand_arm(runtime: str, nodes, image: str, sqsh: str | None) -> float:
    return bench.by_hand(nodes, image) if runtime == "docker" else \
        runtimes.by_hand_pyxis(nodes, sqsh)


def by_hand_srun_arm(runtime: str, nodes, image: str, sqsh: str | None) -> float:
    """docker through one srun step, as a run.sbatch starts it (pyxis's arm is that already)."""
    return runtimes.by_hand_docker_srun(nodes, image)


def settle(cold: bool) -> None:
    if cold:
        runtimes.flush()  # and the page cache dropped
    else:
        runtimes.flush(drop_caches=False)


def cell(runtime: str, all_nodes, path: str, n: int, rounds: int, cold: bool) -> dict:
    nodes = all_nodes[:n]
    names = [name for name, _ in nodes]
    image = bench.image_id(path)
    settle(cold)
    first = bench.Run(names, path)  # loads or converts the image, checks the arguments
    first.wait_ready()
    sqsh = first.state().get("image")
    first.stop()
    timelines, hand, hand_srun = [], [], []
    arms = ["slurmserve", "by hand"] + (["by hand, one srun step"] if runtime == "docker" else [])
    order = []
    for k in range(rounds):
        turn = arms[k % len(arms):] + arms[:k % len(arms)]  # each arm first in turn
        order.append(" > ".join(turn))
        for arm in turn:
            settle(cold)
            if arm == "slurmserve":
                timelines.append(slurmserve_arm(names, path))
            elif arm == "by hand":
                hand.append(by_hand_arm(runtime, nodes, image, sqsh))
            else:
                hand_srun.append(by_hand_srun_arm(runtime, nodes, image, sqsh))
    ready = [t["ready"] - t["driver"] for t in timelines]
    from_process = [t["ready"] - t["process"] for t in timelines]

    def paired(ours: list[float], theirs: list[float]) -> float:
        return statistics.median(r - h for r, h in zip(ours, theirs, strict=True))

    row = {"runtime": runtime, "nodes": n, "rounds": rounds, "page_cache": "dropped" if cold
           else "warm", "order": order,
           "ready_s": ready, "ready_from_process_s": from_process, "by_hand_s": hand,
           "median_ready_s": statistics.median(ready),
           "median_by_hand_s": statistics.median(hand),
           "median_paired_overhead_s": paired(ready, hand),
           "median_paired_overhead_from_process_s": paired(from_process, hand),
           "spans": {f"{a} -> {b}": statistics.median(t[b] - t[a] for t in timelines)
                     for a, b in SPANS if all(a in t and b in t for t in timelines)}}
    if hand_srun:
        row.update(by_hand_srun_s=hand_srun, median_by_hand_srun_s=statistics.median(hand_srun),
                   median_paired_overhead_vs_srun_s=paired(ready, hand_srun))
    print(f"{runtime} N={n}: READY {row['median_ready_s']:.2f}s, by hand "
          f"{row['median_by_hand_s']:.2f}s, paired overhead "
          f"{row['median_paired_overhead_s']:+.2f}s (from the interpreter's start "
          f"{row['median_paired_overhead_from_process_s']:+.2f}s)" + (
              f"; by hand in one srun step {row['median_by_hand_srun_s']:.2f}s, paired "
              f"{row['median_paired_overhead_vs_srun_s']:+.2f}s" if hand_srun else ""),
          flush=True)
    return row


def slope(rows: list[dict], key: str) -> float:
    """Least-squares seconds per node of `key` over N."""
    xs = [r["nodes"] for r in rows]
    ys = [r[key] for r in rows]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", default="1,2,4,8,16")
    parser.add_argument("--runtimes", default="docker,pyxis")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warm", action="store_true",
                        help="keep the page cache between arms (default: drop it)")
    parser.add_argument("--out", default=str(bench.REPO / "benchmarks/results/overhead.json"))
    args = parser.parse_args()
    counts = [int(x) for x in args.nodes.split(",")]
    all_nodes = bench.nodes_for(counts)
    path = bench.tarball()
    results: dict = {"machine": {"cpus": os.cpu_count()}, "rows": [], "slopes": {}}
    for runtime in args.runtimes.split(","):
        bench.RUNTIME = runtime  # Run passes it as --runtime
        rows = [cell(runtime, all_nodes, path, n, args.rounds, not args.warm) for n in counts]
        results["rows"] += rows
        results["slopes"][runtime] = {
            "overhead_s_per_node": slope(rows, "median_paired_overhead_s"),
            "by_hand_s_per_node": slope(rows, "median_by_hand_s")}
        if runtime == "docker":
            results["slopes"][runtime]["overhead_vs_srun_s_per_node"] = slope(
                rows, "median_paired_overhead_vs_srun_s")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
