"""Orchestration benchmarks on the sandbox cluster, each measured side by side in one run.

- overhead: `slurmserve run` -> READY, minus the same containers started by hand -> /health 200
- distribution: N-node load through slurmserve vs the same `docker load`s by hand in parallel;
  already-present skip; bytes read from the shared path (direct vs --stage sbcast)
- failure detection: a worker container killed during startup -> driver exit
- teardown: Ctrl+C (SIGINT) -> no container of ours left on any node

Uses the stand-in engine (SGLang command line, real TCP rendezvous): the numbers measure
slurmserve's orchestration, not an engine. Usage (root, sandbox up with >= max(N) nodes):
    python benchmarks/cluster.py [--nodes 1,2,3] [--out benchmarks/results/cluster.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
SANDBOX = str(REPO / "tests/cluster/sandbox")
NODE_LOCAL = "/var/tmp/slurmserve-node-local"  # the sandbox's per-node private directory
PHASE = re.compile(r"^\[\s*([\d.]+)s\] (\S+)\s+(.*)$")


def sh(*argv: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check,
                          timeout=timeout)


def node_docker(node: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(SANDBOX, "exec", node, "docker", *argv, check=check)


# The entry point beside this interpreter: a version manager's shim on PATH (pyenv's is a bash
# script that runs `pyenv exec`) would be timed as slurmserve's start-up.
_BESIDE = Path(sys.executable).parent / "slurmserve"
SLURMSERVE = str(_BESIDE) if _BESIDE.exists() else "slurmserve"
RUNTIME = os.environ.get("SLURMSERVE_BENCH_RUNTIME", "docker")  # the by-hand arm is docker's


def nodes_up() -> list[tuple[str, str]]:
    status = json.loads(sh(SANDBOX, "status", "--json", check=False).stdout)
    return [(n["name"], n["addr"]) for n in status["nodes"]]


def nodes_for(counts: list[int]) -> list[tuple[str, str]]:
    """The sandbox's nodes, or exit saying how to get max(counts) of them."""
    nodes = nodes_up()
    if len(nodes) < max(counts):
        sys.exit(f"sandbox has {len(nodes)} nodes; run `tests/cluster/sandbox up --nodes "
                 f"{max(counts)}`")
    return nodes


def tarball() -> str:
    return sh(str(REPO / "containers/testing/build"), "standin").stdout.strip().splitlines()[-1]


def image_id(path: str) -> str:
    from slurmserve.images import read_tarball

    return read_tarball(path).image_id


class Run:
    """`salloc -N n slurmserve run sglang ...` in the background."""

    def __init__(self, nodes: list[str], image: str, *extra: str, engine: str = "sglang",
                 layout: tuple[str, ...] | None = None) -> None:
        self.log_dir = Path(tempfile.mkdtemp(prefix="ss-bench-"))
        n = len(nodes)
        argv = ["salloc", f"--nodes={n}", f"--nodelist={','.join(nodes)}", "--oversubscribe",
                SLURMSERVE, "run", engine, "org/bench", "--image", image, "--nodes", str(n),
                *(("--tp", str(n)) if layout is None else layout), "--gpus", "none",
                "--gpus-per-node", "1", "--health-timeout",
                "120", "--log-dir", str(self.log_dir), "--quiet-logs", "--runtime", RUNTIME,
                *extra]
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.out: list[str] = []
        self.err: list[tuple[float, str]] = []
        self.ready_at: float | None = None
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        for line in self.proc.stdout:
            self.out.append(line)
            if line.startswith("READY") and self.ready_at is None:
                self.ready_at = time.monotonic()

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self.err.append((time.monotonic(), line.rstrip()))

    def wait_ready(self, timeout: float = 300) -> float:
        """Seconds the driver reports from its start to READY."""
        deadline = time.monotonic() + timeout
        while self.ready_at is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("no READY:\n" + "\n".join(line for _, line in self.err))
            time.sleep(0.05)
        ready = next(line for line in self.out if line.startswith("READY"))
        return float(re.search(r" in ([\d.]+)s", ready)[1])

    def phase_time(self, name: str, contains: str = "") -> float:
        for _, line in self.err:
            match = PHASE.match(line)
            if match and match[2] == name and contains in match[3]:
                return float(match[1])
        raise KeyError(f"no '{name} {contains}' line")

    def state(self) -> dict:
        return json.loads(next(self.log_dir.glob("*/state.json")).read_text())

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.state()["driver_pid"], signal.SIGINT)
        return self.proc.wait(120)


class ReadMeter:
    """Bytes the nodes' loaders (`docker load --input PATH`) read from `path`.

    Samples /proc/PID/io every 20 ms (nodes are namespaces on this host, so their processes
    are visible here); the last <= 20 ms of a reader may be missed. sbcast's own single pass
    over the file is not counted: it maps the file, which rchar does not see.
    """

    def __init__(self, path: str) -> None:
        self.path = path.encode()
        self.peak: dict[tuple[int, bytes], int] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        cmdline = fh.read()
                    if self.path not in cmdline or not cmdline.startswith(b"docker\0"):
                        continue
                    with open(f"/proc/{pid}/io") as fh:
                        rchar = int(fh.readline().split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                key = (int(pid), cmdline)
                self.peak[key] = max(self.peak.get(key, 0), rchar)
            time.sleep(0.02)

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return sum(self.peak.values())


def ours_left(nodes: list[str]) -> int:
    return sum(len(node_docker(n, "ps", "-aq", "--filter", "label=slurmserve.job").stdout.split())
               for n in nodes)


def wait_health(head: str, port: int, timeout: float = 300) -> None:
    """Poll http://HEAD:PORT/health every 50 ms until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://{head}:{port}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"by hand: no /health 200 from {head}:{port} in {timeout:g}s")


def by_hand(nodes: list[tuple[str, str]], image: str) -> float:
    """Start the same stand-in containers by hand on every node at once -> /health 200."""
    head = nodes[0][1]
    port, rdv = 30999, 29999
    names = []
    t0 = time.monotonic()
    threads = []
    for rank, (node, _addr) in enumerate(nodes):
        name = f"ss-bench-hand-{rank}"
        names.append((node, name))
        argv = ["run", "-d", "--rm", "--name", name, "--network", "host", "--ipc", "host",
                "--init", "--entrypoint", "python3", image, "-m", "sglang.launch_server",
                "--model-path", "org/bench", "--tp-size", str(len(nodes)), "--host", "0.0.0.0",
                "--port", str(port)]
        if len(nodes) > 1:
            argv += ["--nnodes", str(len(nodes)), "--node-rank", str(rank),
                     "--dist-init-addr", f"{head}:{rdv}"]
        threads.append(threading.Thread(target=node_docker, args=(node, *argv)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_health(head, port)
    elapsed = time.monotonic() - t0
    for node, name in names:
        node_docker(node, "rm", "-f", name, check=False)
    return elapsed


def parallel_load(nodes: list[str], path: str) -> float:
    t0 = time.monotonic()
    threads = [threading.Thread(target=node_docker, args=(n, "load", "-i", path)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0


def settle() -> None:
    """The same start for either arm: the previous arm's dirty pages written back and the page
    cache dropped (else the second arm pays the first's writeback, and reads its cache)."""
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def remove_image(nodes: list[str], image: str) -> None:
    for n in nodes:
        node_docker(n, "rmi", "-f", image, check=False)


def forget_verdicts() -> None:
    """Empty the argument check's verdict cache (lifecycle/argcheck.py), so that a first run
    of a layout runs the check."""
    from slurmserve import images

    shutil.rmtree(Path(images.default_cache_dir()).parent / "argcheck", ignore_errors=True)


def bench_overhead(all_nodes, path, counts, *extra: str) -> list[dict]:
    rows = []
    image = image_id(path)
    for n in counts:
        nodes = all_nodes[:n]
        names = [name for name, _ in nodes]
        forget_verdicts()  # an earlier run of the layout (any benchmark) would have kept one
        first = Run(names, path, *extra)  # loads the image where missing, checks the args
        first_s = first.wait_ready()
        first.stop()
        run = Run(names, path, *extra)  # the same job again: image present, verdict kept
        ready_s = run.wait_ready()
        timeline = run.state().get("timeline", {})
        run.stop()
        if "ready" in timeline:  # to the millisecond, from the same start as the READY line
            ready_s = timeline["ready"] - timeline["driver"]
        hand_s = by_hand(nodes, image)
        rows.append({"nodes": n, "slurmserve_ready_s": ready_s, "by_hand_health_s": hand_s,
                     "overhead_s": ready_s - hand_s, "timeline": timeline,
                     "process_overhead_s": timeline.get("ready", ready_s) - hand_s,
                     "first_run_ready_s": first_s})
        print(f"overhead N={n}: slurmserve {ready_s:.2f}s, by hand {hand_s:.2f}s, "
              f"overhead {ready_s - hand_s:+.2f}s", flush=True)
    return rows


def load_seconds(run: Run, start_line: str = "loading ") -> float:
    """The load only: from "loading IMAGE on N of M node(s)" (or another image line, e.g.
    "sbcast ") to the last node's "loaded" line (not the in-image checks or the argument check
    that follow it)."""
    start = run.phase_time("image", start_line)
    ends = [float(m[1]) for _, line in run.err
            if (m := PHASE.match(line)) and m[2] == "image" and ": loaded " in m[3]]
    return max(ends) - start


def bench_distribution(all_nodes, path, n, rounds: int = 6) -> dict:
    """Rounds of both arms, the order swapped every round (both drift as the disk fills its
    caches), timing the same interval (the parallel loads); medians and paired differences."""
    nodes = [name for name, _ in all_nodes[:n]]
    image = image_id(path)
    hand, ours, order = [], [], []

    def by_hand_arm() -> None:
        remove_image(nodes, image)
        settle()
        hand.append(parallel_load(nodes, path))

    def slurmserve_arm() -> None:
        remove_image(nodes, image)
        settle()
        run = Run(nodes, path, "--stage", "direct", "--no-check-args")
        run.wait_ready()
        ours.append(load_seconds(run))
        run.stop()

    for i in range(rounds):  # timing rounds without the /proc sampler (it costs CPU here)
        arms = (by_hand_arm, slurmserve_arm) if i % 2 == 0 else (slurmserve_arm, by_hand_arm)
        order.append("by hand first" if i % 2 == 0 else "slurmserve first")
        for arm in arms:
            arm()
    remove_image(nodes, image)
    meter = ReadMeter(path)
    run = Run(nodes, path, "--stage", "direct")
    run.wait_ready()
    direct_reads = meter.stop()
    run.stop()
    run = Run(nodes, path)
    run.wait_ready()
    skip_s = run.phase_time("image", "skipped") - run.phase_time("preflight", "ok")
    run.stop()
    paired = [o - h for o, h in zip(ours, hand, strict=True)]
    result = {"nodes": n, "rounds": rounds, "tarball_bytes": os.path.getsize(path),
              "by_hand_parallel_s": hand, "slurmserve_s": ours, "order": order,
              "paired_difference_s": paired,
              "median_paired_difference_s": statistics.median(paired),
              "median_paired_ratio": statistics.median(o / h for o, h in zip(ours, hand,
                                                                            strict=True)),
              "ratio_of_medians": statistics.median(ours) / statistics.median(hand),
              "already_present_s": skip_s, "already_present_s_per_node": skip_s / n,
              "node_reads_from_shared_path_direct": direct_reads}
    remove_image(nodes, image)
    try:
        meter = ReadMeter(path)
        run = Run(nodes, path, "--stage", "sbcast", "--stage-dir", NODE_LOCAL)
        run.wait_ready()
        result["node_reads_from_shared_path_sbcast"] = meter.stop()
        result["sbcast_s"] = run.phase_time("launch") - run.phase_time("image", "sbcast")
        run.stop()
    except (RuntimeError, KeyError) as exc:
        result["sbcast_error"] = str(exc)[-500:]
    print(f"distribution N={n}: {json.dumps(result)}", flush=True)
    return result


def bench_staging(all_nodes, path, n, rounds: int = 4) -> dict:
    """`--stage sbcast` against `--stage direct`, both through slurmserve, settled, the order
    swapped every round, each timed from its first image line (sbcast's copy, or the loads) to
    the last node's `loaded` line: the cost of reading the shared path once."""
    nodes = [name for name, _ in all_nodes[:n]]
    image = image_id(path)
    times: dict[str, list[float]] = {"direct": [], "sbcast": []}
    extra = {"direct": ("--stage", "direct"),
             "sbcast": ("--stage", "sbcast", "--stage-dir", NODE_LOCAL)}
    order = []
    for i in range(rounds):
        arms = ("direct", "sbcast") if i % 2 == 0 else ("sbcast", "direct")
        order.append(f"{arms[0]} first")
        for arm in arms:
            remove_image(nodes, image)
            settle()
            run = Run(nodes, path, *extra[arm], "--no-check-args")
            run.wait_ready()
            times[arm].append(load_seconds(run, "sbcast " if arm == "sbcast" else "loading "))
            run.stop()
    remove_image(nodes, image)
    ratios = [s / d for s, d in zip(times["sbcast"], times["direct"], strict=True)]
    result = {"nodes": n, "rounds": rounds, "order": order, "direct_s": times["direct"],
              "sbcast_s": times["sbcast"], "median_paired_ratio": statistics.median(ratios),
              "ratio_of_medians": statistics.median(times["sbcast"])
              / statistics.median(times["direct"])}
    print(f"staging N={n}: {json.dumps(result)}", flush=True)
    return result


def bench_failure(all_nodes, path) -> dict:
    nodes = [name for name, _ in all_nodes[:2]]
    run = Run(nodes, path, "--env", "SLURMSERVE_STANDIN_FAULT=slow-start=60")
    deadline = time.monotonic() + 120
    container = None
    while container is None and time.monotonic() < deadline:
        if any("container slurmserve-" in line and "@" + nodes[1] in line for _, line in run.err):
            container = run.state()["nodes"][1]["container"]
        time.sleep(0.05)
    time.sleep(1.0)  # let it be well into its startup
    t_kill = time.monotonic()
    node_docker(nodes[1], "kill", container)
    code = run.proc.wait(60)
    detect_s = time.monotonic() - t_kill
    print(f"failure detection: exit {code} {detect_s:.2f}s after the kill", flush=True)
    return {"exit_code": code, "kill_to_exit_s": detect_s}


def ctrl_c(run: Run, nodes: list[str]) -> tuple[float, float]:
    """SIGINT the ready driver: seconds until no container of ours is left, and until it exits."""
    run.wait_ready()
    t0 = time.monotonic()
    os.kill(run.state()["driver_pid"], signal.SIGINT)
    while ours_left(nodes):
        time.sleep(0.05)
    gone_s = time.monotonic() - t0
    run.proc.wait(60)
    return gone_s, time.monotonic() - t0


def bench_teardown(all_nodes, path) -> dict:
    nodes = [name for name, _ in all_nodes]
    gone_s, exit_s = ctrl_c(Run(nodes, path), nodes)
    print(f"teardown N={len(nodes)}: no container left after {gone_s:.2f}s "
          f"(driver exited after {exit_s:.2f}s)", flush=True)
    return {"nodes": len(nodes), "sigint_to_no_container_s": gone_s, "sigint_to_exit_s": exit_s}


#: Every launch mode of every engine (stand-in): (label, engine, nodes, layout flags).
STOP_MODES = [
    ("vllm single", "vllm", 1, ()),
    ("vllm ray (TP1 PP2)", "vllm", 2, ("--launch-mode", "ray", "--tp", "1", "--pp", "2")),
    ("vllm mp (TP2)", "vllm", 2, ("--launch-mode", "mp", "--tp", "2")),
    ("vllm dp (DP2)", "vllm", 2, ("--tp", "1", "--dp", "2")),
    ("sglang (TP1)", "sglang", 1, ("--tp", "1")),
    ("sglang (TP2)", "sglang", 2, ("--tp", "2")),
    ("trtllm (TP1)", "trtllm", 1, ("--tp", "1")),
    ("trtllm MPI world (TP2)", "trtllm", 2, ("--tp", "2")),
]


def bench_stop_modes(all_nodes, path) -> list[dict]:
    """Ctrl+C -> no container of ours, per engine mode: each must end within about 1 s of its
    engine exiting on SIGTERM (a container that ignores SIGTERM waits out docker's 10 s)."""
    results = []
    for label, engine, n, layout in STOP_MODES:
        nodes = [name for name, _ in all_nodes[:n]]
        gone_s, _ = ctrl_c(Run(nodes, path, engine=engine, layout=layout), nodes)
        print(f"stop {label}: no container left after {gone_s:.2f}s", flush=True)
        results.append({"mode": label, "nodes": n, "sigint_to_no_container_s": gone_s})
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", default="1,2,3")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/cluster.json"))
    parser.add_argument("--only", help="comma-separated parts to re-measure, kept beside the "
                        "others in --out (overhead, overhead_no_check_args, distribution, ...)")
    args = parser.parse_args()
    counts = [int(x) for x in args.nodes.split(",")]
    all_nodes = nodes_for(counts)
    path = tarball()
    parts = {
        "overhead": lambda: bench_overhead(all_nodes, path, counts),
        # the same lifecycle without the argument check (one container start plus the
        # engine's parser import, before launch)
        "overhead_no_check_args": lambda: bench_overhead(all_nodes, path, counts,
                                                         "--no-check-args"),
        "distribution": lambda: bench_distribution(all_nodes, path, min(3, max(counts))),
        "staging": lambda: bench_staging(all_nodes, path, min(3, max(counts))),
        "failure": lambda: bench_failure(all_nodes, path),
        "teardown": lambda: bench_teardown(all_nodes[: max(counts)], path),
        "stop_modes": lambda: bench_stop_modes(all_nodes, path),
    }
    out = Path(args.out)
    only = args.only.split(",") if args.only else list(parts)
    results = json.loads(out.read_text()) if args.only and out.exists() else {}
    results["machine"] = {"cpus": os.cpu_count()}
    results.update({name: parts[name]() for name in only})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
