"""Render benchmarks/REPORT.md from the JSON results (targets and ratios side by side).

    python benchmarks/cli_startup.py && python benchmarks/cluster.py && python benchmarks/report.py

The last section comes from results/simulate.json (`python benchmarks/simulate.py`, no cluster).
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
        lines += ["## Orchestration overhead (target <= 0.3 s, flat in N: issue 18)", "",
                  "`slurmserve run` -> READY (a repeated job: the image on the nodes, the argument "
                  "check's verdict kept from the first run of the layout), next to the same "
                  "containers started by hand on every node at once -> `/health` 200.", "",
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
        firsts = [f"{r['nodes']}: {r['first_run_ready_s']:.1f} s" for r in cluster["overhead"]
                  if "first_run_ready_s" in r]
        lines += ["", "The argument check (every rank's command line through the engine's own "
                  "parser in one container on the head) runs on the first job of a layout and "
                  "image; later ones reuse its verdict. The last column is the lifecycle "
                  "without it. One sample per cell, both columns in one run (about +/-0.2 s "
                  "between runs on this 2-core machine)."
                  + (" First run of each layout, to READY: " + ", ".join(firsts) + "."
                     if firsts else "")]
        lines += _timeline(cluster["overhead"])
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
                  f"pass, {size:.2f} GB) | - | - | - |",
                  *_staging(cluster.get("staging")), "",
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
    lines += _overhead(_load("overhead.json"))
    lines += _runtimes(_load("runtimes.json"))
    lines += _replicas(_load("replicas.json"))
    lines += _handovers(_load("handover.json"))
    lines += _simulated(_load("simulate.json"))
    (HERE / "REPORT.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _staging(st: dict | None) -> list[str]:
    """The `--stage sbcast` row: its copy plus the node-local loads, against direct loads."""
    if not st:
        return []
    return [f"| `--stage sbcast` (copy + loads) against `--stage direct`, median of the "
            f"paired rounds ({st['rounds']}, order swapped, settled; s) | "
            f"{statistics.median(st['sbcast_s']):.1f} | "
            f"{statistics.median(st['direct_s']):.1f} (direct) | "
            f"{st['median_paired_ratio']:.2f} | <= 1.1 |",
            "| (on this one machine sbcast's copies land on the same disk the shared path is "
            "on, so staging is pure extra I/O here: the shared-path reads it saves cost nothing "
            "on this machine) | | | | |"]


def _overhead(r: dict) -> list[str]:
    """Issue 18's overhead in paired rounds per runtime and N (benchmarks/overhead.py)."""
    if not r:
        return []
    rounds = r["rows"][0]["rounds"]
    cold = r["rows"][0].get("page_cache") == "dropped"
    lines = [f"## Orchestration overhead in paired rounds, 1-16 nodes, page cache "
             f"{'dropped before every arm' if cold else 'warm (--warm)'} (issue 18)", "",
             f"`benchmarks/overhead.py{'' if cold else ' --warm'}`: at each N, {rounds} rounds "
             "of a repeated job (`slurmserve run` -> READY) and the same stand-ins started by "
             "hand with the same runtime (-> `/health` 200), each arm first in turn, every arm "
             "settled (the previous job ended, its writes on disk"
             + (", the page cache dropped" if cold else "") + "). Medians; an overhead is the "
             "median of the paired differences, timed from the driver's start (\"from the "
             "interpreter\": Python start-up and imports included). By hand, docker: `docker "
             "run` on each node straight from the host (no SLURM: the floor), and in one srun "
             "step of a granted allocation, as a run.sbatch does; pyxis: one srun step. "
             f"{r['machine']['cpus']} cores shared by every node; stand-in engine.", "",
             "| runtime | nodes | READY s | by hand s | overhead s | from the interpreter s "
             "| by hand, one srun step s | overhead vs that s | preflight step s "
             "| launch -> engines started s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        spans = row["spans"]
        srun = row.get("median_by_hand_srun_s")
        preflight = spans.get("preflight -> preflight facts", spans.get("driver -> image load", 0))
        lines.append(
            f"| {row['runtime']} | {row['nodes']} | {row['median_ready_s']:.2f} | "
            f"{row['median_by_hand_s']:.2f} | {row['median_paired_overhead_s']:+.2f} | "
            f"{row['median_paired_overhead_from_process_s']:+.2f} | "
            + (f"{srun:.2f} | {row['median_paired_overhead_vs_srun_s']:+.2f} | " if srun
               else "- | - | ")
            + f"{preflight:.2f} | {spans.get('launch -> containers started', 0):.2f} |")
    slopes = "; ".join(
        f"{rt}: overhead {v['overhead_s_per_node'] * 1000:+.0f} ms/node"
        + (f" ({v['overhead_vs_srun_s_per_node'] * 1000:+.0f} ms/node against one srun step)"
           if "overhead_vs_srun_s_per_node" in v else "")
        + f", by hand {v['by_hand_s_per_node'] * 1000:+.0f} ms/node"
        for rt, v in r["slopes"].items())
    return lines + ["", f"Least-squares slopes over N (target <= 10 ms/node): {slopes}.", ""]


def _runtimes(r: dict) -> list[str]:
    """Per container runtime at 1-16 nodes (benchmarks/runtimes.py), side by side."""
    if not r:
        return []
    lines = ["## Per container runtime, 1-16 nodes (issue 15)", "",
             "One run of `benchmarks/runtimes.py`: for each runtime and N, a first job (nothing "
             "in place: docker loads the tarball on every node, sbcast from 4 nodes; pyxis reads "
             "the squashfs converted once before, from the shared path), the same job again "
             "(-> READY), Ctrl+C on it, and the same stand-ins started by hand with that runtime "
             "(docker: `docker run` on every node at once; pyxis: one `srun --container-image` "
             "step in a granted allocation) -> `/health` 200. Stand-in engine, SGLang's command "
             f"line; {r['tarball_bytes'] / 1e9:.2f} GB tarball; "
             f"{r['machine']['cpus']} cores shared by every node.", "",
             "| runtime | nodes | READY s (repeated job) | by hand s | overhead s | "
             "launch -> engines started s | first job s | its image phase s | by hand load s | "
             "Ctrl+C -> nothing left s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        t = row["timeline"]
        started = t.get("containers started", 0) - t.get("launch", 0)
        image = row.get("first_run_image_s")
        hand_load = row.get("by_hand_load_s")
        lines.append(
            f"| {row['runtime']} | {row['nodes']} | {row['ready_s']:.2f} | "
            f"{row['by_hand_ready_s']:.2f} | {row['overhead_s']:+.2f} | {started:.2f} | "
            f"{row['first_run_ready_s']:.1f} | {'-' if image is None else f'{image:.1f}'} | "
            f"{'-' if hand_load is None else f'{hand_load:.1f}'} | "
            f"{row['sigint_to_nothing_left_s']:.2f} |")
    return lines + ["", "Under pyxis each job's first step on a node unpacks the squashfs into "
                    "the job's named container (pyxis's `container_scope=job`), so launch -> "
                    "engines started grows with N on these 2 shared cores, by hand as well. "
                    "Conversion of the tarball (once per image ID, cached) is in the README: "
                    "22 s for this image.", ""]


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


def _timeline(rows: list[dict]) -> list[str]:
    """Where the time to READY goes: the driver's own timeline (state.json), per phase."""
    rows = [r for r in rows if r.get("timeline")]
    if not rows:
        return []
    order = ("process", "driver", "preflight", "image load", "argument check", "model download",
             "launch", "waiting for ready", "containers started", "health", "ready")
    seen = {e for r in rows for e in r["timeline"]}
    events = [e for e in order if e in seen]  # the phases' order (times tie at 1 ms)
    spans = [f"{a} -> {b}" for a, b in zip(events, events[1:], strict=False)]
    lines = ["", "Per phase (s), from the driver's timeline in its record (`timeline` in "
             "state.json: each event's seconds after the process started; `process` is the "
             "interpreter's start, so the first span is Python start-up and imports):", "",
             "| nodes | " + " | ".join(spans) + " | process -> ready | by hand |",
             "|---" * (len(spans) + 3) + "|"]
    for r in rows:
        t = r["timeline"]
        cells = [f"{t[b] - t[a]:.3f}" if a in t and b in t else "-"
                 for a, b in zip(events, events[1:], strict=False)]
        lines.append(f"| {r['nodes']} | " + " | ".join(cells) +
                     f" | {t.get('ready', 0):.2f} | {r['by_hand_health_s']:.2f} |")
    return lines


def _handovers(h: dict) -> list[str]:
    """`submit --serve-for` (benchmarks/handover.py): what a handover costs per job length."""
    if not h:
        return []
    lines = ["## Handovers (`submit --serve-for`)", "",
             f"{h['machine']}; the real vllm-router in its own job. Each chain served an open "
             "loop of chat requests through the router while its jobs handed over. Queue: the "
             "successor's submission to its driver's start. Submit -> ready: to its replicas "
             "passing their own readiness check (one generation each) inside the router. "
             "Overlap: the successor's start to the old job's end, while both hold their nodes "
             "(the price of zero downtime), also as a share of the job length.", "",
             "| job length | lead | handover | queue s | submit -> ready s | drain s | "
             "overlap s | overlap / length | failed requests |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in h["runs"]:
        for k in run["handovers"]:
            lines.append(f"| {run['job_minutes']} min | {run['lead_s']} s | job {k['from']} -> "
                         f"{k['to']} | {k['queue_s']:.1f} | {k['submit_to_ready_s']:.1f} | "
                         f"{k['drain_s']:.1f} | {k['overlap_s']:.1f} | "
                         f"{k['overlap_share']:.1%} | {k['failed']} |")
    total = sum(r["requests"] for r in h["runs"])
    failed = sum(r["failed"] for r in h["runs"])
    rate = h["runs"][0]["rate_per_s"]
    lines += ["", f"Load: {rate:g} requests/s; {total} requests in all, {failed} failed. The "
              "overlap is the successor's start-up (image load included where its node lacked "
              "the image) plus the drain, and does not grow with the job length, so its share "
              "falls as jobs get longer: with a real model's start of minutes it is that start "
              "over the job length.", ""]
    return lines


def _count(nodes: int | None) -> str:
    return f"{nodes:,}" if nodes else "none up to 10,000"


def _simulated(s: dict) -> list[str]:
    """benchmarks/simulate.py: the lifecycle modelled to 1,000 nodes, checked on the sandbox."""
    if not s:
        return []
    modes = s["modes"]
    cluster = s["scenarios"]["cluster"]
    params = cluster["params"]
    by = {(r["mode"], r["nodes"]): r for r in cluster["predictions"]}
    lines = ["## Beyond the machine: simulated to 1,000 nodes", "",
             "`benchmarks/simulate.py` models each phase of `slurmserve run` as a sum of terms "
             "(CLI start, scontrol, the preflight srun step, the image, the argument check, the "
             "launch (docker: in the preflight's held tasks; pyxis: a step of its own), the "
             "engine's start, readiness polling; teardown with its cleanup "
             "step), fed with this sandbox's measured figures (the per-phase ones from the "
             "driver's timeline) and SLURM's documented fan-out: "
             f"srun's steps go down a tree of TreeWidth {params['tree_width']} (one hop reaches "
             "16 nodes, two 272, three 4,368); sbcast uses its own tree of width "
             f"{params['sbcast_width']} and sends each 8 MiB block down it before the next. "
             f"Cluster parameters: {cluster['about']}; the rest, and the source of every "
             "default, are in `Params`. First run: the image is on no node (pyxis: not "
             "converted yet) and the argument check runs; warm: a repeated job of the layout, "
             "docker finds the image on every node, pyxis finds it converted (each job still "
             "unpacks it on every node), and the argument check's verdict is kept.", "",
             "Predicted seconds to READY (first run / warm) and for teardown:", "",
             "| nodes | " + " | ".join(modes) + " | teardown docker | teardown pyxis |",
             "|---" * (len(modes) + 3) + "|"]
    for n in s["nodes"]:
        cells = [f"{by[m, n]['ready_s']:.1f} / {by[m, n]['ready_warm_s']:.1f}" for m in modes]
        lines.append(f"| {n:,} | " + " | ".join(cells) + f" | "
                     f"{by['docker direct', n]['teardown_s']:.1f} | "
                     f"{by['pyxis direct', n]['teardown_s']:.1f} |")
    lines += ["", "The largest term of the first run:", "",
              "| nodes | " + " | ".join(modes) + " |", "|---" * (len(modes) + 1) + "|"]
    for n in s["nodes"]:
        lines.append(f"| {n:,} | " + " | ".join(by[m, n]["dominant"] for m in modes) + " |")
    tol = s["check"]["tolerance"]
    lines += ["", "Checked against the sandbox (the model with the sandbox's parameters; "
              f"tolerance {tol['relative']:.0%} or {tol['absolute_s']} s, whichever is larger):",
              "", "| measured | nodes | measured s | model s | error | |", "|---|---|---|---|---|---|"]
    for r in s["check"]["rows"]:
        note = "; ".join(x for x in ("fitted" if r["fitted"] else "",
                                     "" if r["within"] else "outside",
                                     "" if r["asserted"] else "not asserted") if x)
        lines.append(f"| {r['what']} | {r['nodes']} | {r['measured_s']:.2f} | "
                     f"{r['model_s']:.2f} | {r['error']:+.0%} | {note} |")
    held = [r for r in s["check"].get("phases", []) if not r["fitted"]]
    if held:
        counts = sorted({r["nodes"] for r in held})
        cell = {(r["span"], r["nodes"]): r for r in held}
        lines += ["", "The driver's timeline of the held-out runs (a repeated job, the verdict "
                  "kept), span by span, measured / model ms:", "",
                  "| span | " + " | ".join(f"{n} node{'s' if n > 1 else ''}" for n in counts)
                  + " |",
                  "|---" * (len(counts) + 1) + "|"]
        for span in dict.fromkeys(r["span"] for r in held):
            lines.append(f"| {span} | " + " | ".join(
                f"{cell[span, n]['measured_s'] * 1e3:.0f} / {cell[span, n]['model_s'] * 1e3:.0f}"
                for n in counts) + " |")
    dd, ds = s["at_1000"]["docker direct"], s["at_1000"]["docker sbcast"]
    pd, ps = s["at_1000"]["pyxis direct"], s["at_1000"]["pyxis sbcast"]
    pays = s["sbcast_pays_from"]
    load = next((r for r in s["check"]["rows"] if r["what"].startswith(
        "docker load through slurmserve")), None)
    args = sum(v for k, v in by["docker direct", 1000]["ready_terms"].items()
               if k.startswith("args:"))
    lines += ["", "Fitted rows set a default, so they show consistency rather than skill "
              "(`python benchmarks/simulate.py --check` recomputes each FITTED default from its "
              "figures): the per-phase terms come from the timelines of the `--no-check-args` "
              "runs, the argument check from the first runs at 1 and 2 nodes. Held out: the "
              "runs with the verdict kept, the other first runs, the earlier 8-node run (READY "
              "was polled every 0.25 s then, not 50 ms) and slurmserve's own load. The load "
              "term is the cold-cache by-hand figure (both arms now start after `sync` with the "
              "page cache dropped)"
              + (f", and the load through slurmserve is {load['error']:+.0%} from the model: the "
                 "1.4x gap reported before was the order's writeback, not a term the model "
                 "lacks" if load else "")
              + ". The `--stage sbcast` row reads files in the page cache (the staged copies "
              "just written) and uses the earlier warm-cache by-hand figure, 9.2 s. The sandbox "
              "measured up to 8 nodes; its sub-second figures move by about 0.2 s between "
              "runs.", "",
              "![simulated](results/simulate.svg)", "",
              f"At 1,000 nodes the image dominates: with `--stage direct` every node reads the "
              f"{params['image_gb']:.2f} GB tarball from the shared path, "
              f"{dd['dominant_s']:.0f} s of the {dd['ready_s']:.0f} s to READY at the assumed "
              f"{params['shared_fs_gbps']:g} GB/s, linear in N. slurmserve's answer is sbcast "
              "staging (`--stage sbcast`; `auto` from 4 nodes), which reads the shared path once "
              f"and fans it out over SLURM's tree: {ds['ready_s']:.0f} s to READY, the sbcast "
              f"tree's {ds['dominant_s']:.0f} s growing with the tree's depth rather than N (by "
              f"the model staging pays from {_count(pays['1'])} nodes on a 1 GB/s shared file "
              f"system, {_count(pays['10'])} on 10 GB/s, {_count(pays['100'])} on 100 GB/s, "
              "against `auto`'s fixed 4). A repeated job (the image on every node, the "
              f"verdict kept) takes {dd['ready_warm_s']:.1f} s, mostly srun's per-node work on "
              "its one step over all nodes (SchedMD's 2 ms a node, an upper bound: preflight "
              "and launch share the step) and one env file per node on the log directory, "
              "which is why every cluster-side action is one srun step over all nodes and "
              "preflight is one step for all its checks, the launch running in it; a new "
              f"layout on those nodes adds the argument check's one-node step ({args:.1f} s with "
              "the stand-in's parser; the real vLLM's took 9.1 s in `make demo`). Under pyxis "
              f"the conversion ({ps['dominant_s']:.0f} s, once per image ID, cached) leads a "
              "staged first run, unstaged every node reading the squashfs at launch does "
              f"({pd['dominant_s']:.0f} s), and as each job unpacks the image anew, a repeated "
              f"pyxis job still takes {ps['ready_warm_s']:.0f} s staged "
              f"({pd['ready_warm_s']:.0f} s unstaged).", ""]
    return lines


if __name__ == "__main__":
    main()
