"""Per container runtime, side by side in one run (issue 15), at N = 1, 2, 4, 8, 16 sandbox nodes:

- ready: `slurmserve run` -> READY for a repeated job (the image in place, the argument check's
  verdict kept), next to the same stand-in engines started by hand with that runtime
  (docker: `docker run` on every node at once; pyxis: one `srun --container-image` step in an
  allocation already granted) -> /health 200;
- first run: the same job with nothing in place yet (docker: the tarball loaded on every node;
  pyxis: the squashfs converted once beforehand, read from the shared path), and for docker the
  same loads by hand in parallel;
- Ctrl+C -> nothing of the job left on any node (containers; under pyxis, marked processes and
  pyxis's named container).

The stand-in engine (SGLang's command line, a real TCP rendezvous): orchestration numbers, not
engine numbers. Usage (root, sandbox up with >= max(N) nodes):
    python benchmarks/runtimes.py [--nodes 1,2,4,8,16] [--runtimes docker,pyxis]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import cluster as bench

sys.path.insert(0, str(bench.REPO / "tests/cluster"))
from deploy import marked_leftovers  # noqa: E402 - the cluster suite's probe of pyxis leftovers

PORT, RDV = 30999, 29999


def left(runtime: str, nodes: list[str], job: str) -> int:
    if runtime == "pyxis":
        return sum(len(v) for v in marked_leftovers(nodes, job).values())
    return sum(len(bench.node_docker(n, "ps", "-aq", "--filter", f"label=slurmserve.job={job}")
                   .stdout.split()) for n in nodes)


def standin_argv(n: int, head: str, rank: str) -> list[str]:
    argv = ["-m", "sglang.launch_server", "--model-path", "org/bench", "--tp-size", str(n),
            "--host", "0.0.0.0", "--port", str(PORT)]
    if n > 1:
        argv += ["--nnodes", str(n), "--node-rank", rank, "--dist-init-addr", f"{head}:{RDV}"]
    return argv


def by_hand_pyxis(nodes: list[tuple[str, str]], sqsh: str) -> float:
    """One srun step in an allocation already granted (as a user inside salloc would), each task
    the stand-in in its node's pyxis container."""
    rank_cmd = "exec /opt/venv/bin/python3 " + shlex.join(
        standin_argv(len(nodes), nodes[0][1], "RANK")).replace("RANK", "$SLURM_PROCID")
    return _one_step(nodes, [f"--container-image={sqsh}", "--container-name=ss-bench-hand",
                             "--container-writable", "--no-container-mount-home"], rank_cmd)


def by_hand_docker_srun(nodes: list[tuple[str, str]], image: str) -> float:
    """What a run.sbatch does: one srun step in an allocation already granted, each task
    `docker run -d` of the stand-in on its node (no preflight, no checks)."""
    rank_cmd = "exec docker run -d --rm --name ss-bench-hand-$SLURM_PROCID " + shlex.join(
        ["--network", "host", "--ipc", "host", "--init", "--entrypoint", "python3", image,
         *standin_argv(len(nodes), nodes[0][1], "RANK")]).replace("RANK", "$SLURM_PROCID")
    try:
        return _one_step(nodes, [], rank_cmd)
    finally:
        for rank, (node, _) in enumerate(nodes):
            bench.node_docker(node, "rm", "-f", f"ss-bench-hand-{rank}", check=False)


def _one_step(nodes: list[tuple[str, str]], options: list[str], rank_cmd: str) -> float:
    """Seconds from the step's srun to the head's /health 200."""
    names = ",".join(name for name, _ in nodes)
    job = bench.sh("salloc", "--no-shell", f"--nodes={len(nodes)}", f"--nodelist={names}",
                   "--oversubscribe", "--job-name=ss-bench-hand").stderr
    job_id = job.split("Granted job allocation ")[1].split()[0]
    t0 = time.monotonic()
    step = subprocess.Popen(
        ["srun", f"--jobid={job_id}", f"--nodes={len(nodes)}", f"--ntasks={len(nodes)}",
         "--ntasks-per-node=1", "--overlap", *options, "bash", "-c", rank_cmd],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bench.wait_health(nodes[0][1], PORT)
        return time.monotonic() - t0
    finally:
        bench.sh("scancel", job_id, check=False)
        step.wait(60)


def flush(timeout: float = 120, drop_caches: bool = True) -> None:
    """Each timed arm starts once the previous job has ended everywhere (pyxis removes the
    job's unpacked container as the job ends), with its writes on disk and the page cache
    dropped: under pyxis every job unpacks the squashfs on every node, and an arm started
    after another was measured up to 2x slower."""
    deadline = time.monotonic() + timeout
    while bench.sh("squeue", "--noheader", check=False).stdout.strip():
        if time.monotonic() > deadline:
            raise RuntimeError("jobs still in the queue: " + bench.sh("squeue").stdout)
        time.sleep(0.1)
    if drop_caches:
        bench.settle()  # sync, and the page cache dropped: every arm starts alike
    else:
        subprocess.run(["sync"], check=True)


def ctrl_c(runtime: str, run: bench.Run, nodes: list[str]) -> float:
    """SIGINT the ready driver: seconds until nothing of its job is left on any node."""
    run.wait_ready()
    job = run.state()["job"]
    t0 = time.monotonic()
    os.kill(run.state()["driver_pid"], signal.SIGINT)
    while left(runtime, nodes, job):
        time.sleep(0.05)
    gone = time.monotonic() - t0
    run.proc.wait(60)
    return gone


def measure(runtime: str, all_nodes, path: str, counts: list[int]) -> list[dict]:
    bench.RUNTIME = runtime  # Run passes it as --runtime
    image = bench.image_id(path)
    sqsh = None
    rows = []
    for n in counts:
        nodes = all_nodes[:n]
        names = [name for name, _ in nodes]
        row: dict = {"runtime": runtime, "nodes": n}
        if runtime == "docker":
            bench.remove_image(names, image)
            flush()
            row["by_hand_load_s"] = bench.parallel_load(names, path)
            bench.remove_image(names, image)
        flush()
        first = bench.Run(names, path)
        row["first_run_ready_s"] = first.wait_ready()
        timeline = first.state().get("timeline", {})
        if "image load" in timeline and "argument check" in timeline:
            row["first_run_image_s"] = timeline["argument check"] - timeline["image load"]
        row["first_run_distribution"] = first.state().get("distribution", {})
        sqsh = sqsh or first.state().get("image")
        first.stop()
        flush()
        run = bench.Run(names, path)  # the same job again
        row["ready_s"] = run.wait_ready()
        timeline = run.state().get("timeline", {})
        if "ready" in timeline:
            row["ready_s"] = timeline["ready"] - timeline["driver"]
        row["timeline"] = timeline
        row["sigint_to_nothing_left_s"] = ctrl_c(runtime, run, names)
        flush()
        row["by_hand_ready_s"] = (bench.by_hand(nodes, image) if runtime == "docker"
                                  else by_hand_pyxis(nodes, sqsh))
        row["overhead_s"] = row["ready_s"] - row["by_hand_ready_s"]
        print(f"{runtime} N={n}: ready {row['ready_s']:.2f}s (by hand "
              f"{row['by_hand_ready_s']:.2f}s, {row['overhead_s']:+.2f}s), first run "
              f"{row['first_run_ready_s']:.1f}s, Ctrl+C {row['sigint_to_nothing_left_s']:.2f}s",
              flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", default="1,2,4,8,16")
    parser.add_argument("--runtimes", default="docker,pyxis")
    parser.add_argument("--out", default=str(bench.REPO / "benchmarks/results/runtimes.json"))
    args = parser.parse_args()
    counts = [int(x) for x in args.nodes.split(",")]
    all_nodes = bench.nodes_for(counts)
    path = bench.tarball()
    results = {"machine": {"cpus": os.cpu_count()}, "tarball_bytes": os.path.getsize(path),
               "rows": [row for rt in args.runtimes.split(",")
                        for row in measure(rt, all_nodes, path, counts)]}
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
