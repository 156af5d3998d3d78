"""Render benchmarks/REPORT.md from the JSON results (targets and ratios side by side).

    python benchmarks/cli_startup.py && python benchmarks/cluster.py && python benchmarks/report.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(name: str) -> dict:
    path = HERE / "results" / name
    return json.loads(path.read_text()) if path.exists() else {}


def _by_order(d: dict) -> str:
    """Median paired ratio for each order of the arms: the second arm pays the first's writeback."""
    parts = []
    for order in dict.fromkeys(d["order"]):
        ratios = [o / h for o, h, r in zip(d["slurmserve_s"], d["by_hand_parallel_s"], d["order"],
                                           strict=True) if r == order]
        parts.append(f"{order}: median ratio {statistics.median(ratios):.2f} "
                     f"({', '.join(f'{x:.2f}' for x in ratios)})")
    return " By order: " + "; ".join(parts) + "."


def main() -> None:
    cli = _load("cli_startup.json")
    cluster = _load("cluster.json")
    lines = ["# slurmserve benchmarks", "",
             "Measured on the sandbox (2 CPU cores shared by every node, no GPU; the stand-in "
             "engine, so these are orchestration numbers, not engine numbers).",
             "Reproduce: `make bench` (runs the three commands at the top of "
             "`benchmarks/report.py`).", ""]
    if cli:
        lines += ["## CLI start-up (target: `render` under 0.3 s)", "",
                  "| command | min s | median s | x `python -c pass` |", "|---|---|---|---|"]
        for name, row in cli["commands"].items():
            lines.append(f"| `{name}` | {row['min_s']:.3f} | {row['median_s']:.3f} | "
                         f"{row['ratio_to_python']:.2f} |")
        lines += ["", "In-process plan + render: " + ", ".join(
            f"{k} {v:.2f} ms" for k, v in cli["in_process_ms"].items()), ""]
    if cluster:
        lines += ["## Orchestration overhead (target <= 1 s, flat in N)", "",
                  "`slurmserve run` -> READY, next to the same containers started by hand on "
                  "every node at once -> `/health` 200 (image already on the nodes).", "",
                  "| nodes | slurmserve s | by hand s | overhead s | overhead, --no-check-args s |",
                  "|---|---|---|---|---|"]
        big = _load("cluster-8nodes.json")
        unchecked = {r["nodes"]: r for r in cluster.get("overhead_no_check_args", [])}
        for row in cluster["overhead"]:
            other = unchecked.get(row["nodes"])
            lines.append(f"| {row['nodes']} | {row['slurmserve_ready_s']:.2f} | "
                         f"{row['by_hand_health_s']:.2f} | {row['overhead_s']:+.2f} | "
                         + (f"{other['overhead_s']:+.2f} |" if other else "- |"))
        for row in [r for r in big.get("overhead", []) if r["nodes"] > 3]:
            lines.append(f"| {row['nodes']} (earlier 8-node run, before the argument check) | "
                         f"{row['slurmserve_ready_s']:.2f} | {row['by_hand_health_s']:.2f} | "
                         f"- | {row['overhead_s']:+.2f} |")
        lines += ["", "The argument check (every rank's command line through the engine's own "
                  "parser in one container on the head) is part of `run` since issue 13; the "
                  "last column is the same lifecycle without it. One sample per cell, both "
                  "columns in one run (about +/-0.2 s between runs on this 2-core machine)."]
        d = cluster["distribution"]
        size = d["tarball_bytes"] / 1e9
        lines += ["", f"## Image distribution ({d['nodes']} nodes, {size:.2f} GB tarball)", "",
                  "| measure | slurmserve | by hand / reference | ratio | target |",
                  "|---|---|---|---|---|",
                  f"| parallel load, median of {d['rounds']} rounds (s) | "
                  f"{statistics.median(d['slurmserve_s']):.1f} | "
                  f"{statistics.median(d['by_hand_parallel_s']):.1f} | "
                  f"{d['ratio_of_medians']:.2f} | <= 1.1 |",
                  *([f"| same, median of the paired rounds (difference, ratio) | "
                     f"{d['median_paired_difference_s']:+.1f} s | - | "
                     f"{d['median_paired_ratio']:.2f} | <= 1.1 |"]
                    if "median_paired_ratio" in d else []),
                  f"| image already present (s per node) | {d['already_present_s_per_node']:.2f}"
                  " | - | - | < 1 |",
                  f"| bytes the nodes read from the shared path, direct | "
                  f"{d['node_reads_from_shared_path_direct'] / 1e9:.2f} GB | "
                  f"{d['nodes']} x {size:.2f} GB | - | - |",
                  f"| same with `--stage sbcast` | "
                  f"{d.get('node_reads_from_shared_path_sbcast', 0) / 1e9:.2f} GB (+ sbcast's one "
                  f"pass, {size:.2f} GB) | - | - | - |", "",
                  f"Rounds (s): slurmserve {[round(x, 1) for x in d['slurmserve_s']]}, by hand "
                  f"{[round(x, 1) for x in d['by_hand_parallel_s']]}"
                  + (f"; order {', '.join(d['order'])}. The slurmserve arm is timed over the "
                     "loads only (from its `loading` line to the last node's `loaded` line), "
                     "like the by-hand arm." + _by_order(d) if "order" in d else "."), ""]
        f = cluster["failure"]
        t = cluster["teardown"]
        lines += ["## Failure detection and teardown", "",
                  "| measure | measured s | target s |", "|---|---|---|",
                  f"| worker container killed during startup -> driver exit (code "
                  f"{f['exit_code']}) | {f['kill_to_exit_s']:.2f} | <= 5 |",
                  f"| Ctrl+C -> no container of ours on {t['nodes']} nodes | "
                  f"{t['sigint_to_no_container_s']:.2f} | <= 10 |",
                  f"| Ctrl+C -> driver exited | {t['sigint_to_exit_s']:.2f} | - |"]
        if big.get("teardown"):
            bt = big["teardown"]
            lines.append(f"| Ctrl+C -> no container of ours on {bt['nodes']} nodes | "
                         f"{bt['sigint_to_no_container_s']:.2f} | <= 10 |")
        lines += ["", "8-node rows: `sandbox up --nodes 8`, then `bench_overhead(..., [1, 4, 8])` "
                  "and `bench_teardown` from benchmarks/cluster.py.", ""]
        if cluster.get("stop_modes"):
            lines += ["## Ctrl+C per engine mode (stand-in engines, target ~1 s)", "",
                      "SIGINT to the driver -> no container of ours on any node.", "",
                      "| mode | nodes | s |", "|---|---|---|"]
            lines += [f"| {m['mode']} | {m['nodes']} | {m['sigint_to_no_container_s']:.2f} |"
                      for m in cluster["stop_modes"]]
            lines.append("")
    lines += _replicas(_load("replicas.json"))
    (HERE / "REPORT.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _replicas(r: dict) -> list[str]:
    """`--replicas N` (benchmarks/replicas.py): scaling, the router's cost, failover."""
    if not r:
        return []
    s = r["standin"]
    lines = ["## Replicas behind the router (`--replicas N`)", "",
             f"{r['machine']}; runtime {r['runtime']}; {r['router']}. Throughput: a closed "
             f"loop of {s['concurrency']} clients for {s['seconds']:g} s, {s['max_tokens']} "
             "tokens per request; 1 replica is one deployment answered directly (no router), "
             "2 and more go through the router (`--route least-load`).", "",
             "| engine | replicas | via | req/s | tok/s | x 1 replica | failed |",
             "|---|---|---|---|---|---|---|"]
    stand = (f"stand-in ({s['token_latency_s'] * 1000:g} ms/token, {s['max_seqs']} slots per "
             "replica)")
    real = r.get("vllm") or {}
    for name, block in ((stand, s), (f"vLLM CPU (tiny Qwen2; {real.get('concurrency')} "
                                     "clients)", real)):
        for row in block.get("throughput", []):
            lines.append(f"| {name} | {row['replicas']} | {row['via']} | "
                         f"{row['requests_per_s']:.1f} | {row['tokens_per_s']:.0f} | "
                         f"{row['scaling']:.2f} | {row['failed']} |")
    o, f = r["router_overhead"], r["failover"]
    if real:
        lines += ["", "The real vLLM is CPU-bound, and every sandbox node shares the same 2 "
                  "cores: its replicas compete for them, so its row measures that contention, "
                  "not the router; the stand-in's slots are time, not CPU, so its rows measure "
                  "what the router and the replicas add."]
    lines += ["", f"Router overhead (2 stand-in replicas, {o['requests_per_arm']} 1-token "
              "requests per arm, alternating): "
              f"p50 {o['direct_p50_ms']:.1f} ms direct vs {o['router_p50_ms']:.1f} ms through "
              f"the router ({o['overhead_p50_ms']:+.1f} ms); p99 {o['direct_p99_ms']:.1f} vs "
              f"{o['router_p99_ms']:.1f} ms ({o['overhead_p99_ms']:+.1f} ms).", "",
              "Failover (a replica's container killed; the router's /list_workers polled every "
              f"20 ms): out of the router after {f['removed_s']:.2f} s (target 1 s), back in "
              f"it after {f['back_s']:.1f} s (2 s backoff, then its restart and readiness).",
              ""]
    return lines


if __name__ == "__main__":
    main()
