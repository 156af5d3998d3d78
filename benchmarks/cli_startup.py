"""CLI start-up and render time (issue target: under 0.3 s for `slurmserve render`).

Runs each command REPEAT times in fresh processes and reports min/median wall time, next to
`python -c pass` on the same machine; also the in-process time of plan + render per engine.
Usage: python benchmarks/cli_startup.py [--repeat N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RENDER = ["render", "vllm", "meta-llama/Llama-3.1-70B-Instruct", "--image",
          "registry.example/vllm:1", "--nodes", "2", "--tp", "8", "--pp", "2",
          "-o", "/dev/null"]
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "slurmserve --version": [sys.executable, "-m", "slurmserve", "--version"],
    "slurmserve --help": [sys.executable, "-m", "slurmserve", "--help"],
    "slurmserve run --help": [sys.executable, "-m", "slurmserve", "run", "--help"],
    "slurmserve render (2 nodes)": [sys.executable, "-m", "slurmserve", *RENDER],
    "slurmserve plan": [sys.executable, "-m", "slurmserve", "plan", "--model", "llama-3.1-70b",
                        "--gpu", "h100"],
}


def wall(argv: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


def in_process(repeat: int) -> dict[str, float]:
    from slurmserve import api, load_spec

    result = {}
    for engine, extra in (("vllm", {"tp": 8, "pp": 2}), ("sglang", {"tp": 16}),
                          ("trtllm", {"tp": 16})):
        spec = load_spec(engine=engine, model="org/m", image="registry.example/x:1", nodes=2,
                         **extra)
        t0 = time.perf_counter()
        for _ in range(repeat):
            api.plan_cluster(spec, api.preview_allocation(spec))
            api.render_sbatch(spec)
        result[engine] = (time.perf_counter() - t0) / repeat * 1000
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results") /
                                             "cli_startup.json"))
    args = parser.parse_args()
    rows = {}
    for name, argv in COMMANDS.items():
        times = wall(argv, args.repeat)
        rows[name] = {"min_s": min(times), "median_s": statistics.median(times)}
    base = rows["python -c pass"]["median_s"]
    print(f"{'command':<30} {'min s':>7} {'median s':>9} {'x python':>9}")
    for name, row in rows.items():
        row["ratio_to_python"] = row["median_s"] / base
        print(f"{name:<30} {row['min_s']:7.3f} {row['median_s']:9.3f} "
              f"{row['ratio_to_python']:9.2f}")
    renders = in_process(50)
    for engine, ms in renders.items():
        print(f"in-process plan+render {engine:<7} {ms:7.2f} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"commands": rows, "in_process_ms": renders,
                               "target_render_s": 0.3}, indent=2) + "\n")


if __name__ == "__main__":
    main()
