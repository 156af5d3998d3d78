"""Time to READY and teardown at 1 to 1,000 nodes, from a model of slurmserve's lifecycle.

No SLURM needed. Each phase is a sum of terms (CLI start, scontrol, the preflight step, the
image, the argument check, the launch step, the engine's start, readiness polling; teardown
with its cleanup step), fed with the sandbox's measured figures (the per-phase ones from the
driver's timeline) and SLURM's documented fan-out. Terms nobody measured here are named
ASSUMED in Params. Two parameter sets:

- SANDBOX (the defaults): the machine the figures come from, where every node is a namespace
  on one 2-core host with one disk; `--check` compares it with what the sandbox measured, in
  total and span by span of the timeline, and recomputes each FITTED default;
- CLUSTER: the same per-node costs on real nodes (each with its own cores and disk), a shared
  file system and a network as assumed below, and the real vLLM image; it gives the
  prediction up to 1,000 nodes.

Not modelled: the queue wait and slurmctld's allocation (under `slurmserve submit` the driver
runs in the batch job, on its first node, and then runs the same steps), and the engine's own
model load after launch, which is the same for every mode.

    python benchmarks/simulate.py          # writes results/simulate.json and results/simulate.svg
    python benchmarks/simulate.py --check  # the model against the sandbox's figures, per N

simulate.json keys: nodes, modes, scenarios.{cluster,sandbox}.{about, params, predictions}
(each prediction: mode, nodes, ready_s (a first run: the image on no node, pyxis: not
converted, the argument check run), ready_warm_s (a repeated job of the layout: the image on
every node, pyxis: converted, the check's verdict kept), teardown_s, dominant, dominant_warm,
dominant_teardown, ready_terms, ready_warm_terms, teardown_terms), scenarios.sandbox.as_measured
(nodes, ready_s, teardown_s: timed as benchmarks/cluster.py times them), at_1000 (per mode),
sbcast_pays_from (shared-FS GB/s -> the first N where docker's first run is faster staged),
check.{tolerance, rows (each: what, nodes, measured_s, model_s, error, within, fitted,
asserted, source), phases (each: span, nodes, measured_s, model_s, fitted, source), fits
(each FITTED default: fitted, default, source)}.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NODES = (1, 2, 4, 8, 16, 100, 1000)
SANDBOX_NODES = (1, 2, 3, 4, 8, 16)  # `sandbox up --nodes` goes up to 16
MODES = ("docker direct", "docker sbcast", "pyxis direct", "pyxis sbcast")
# READY "in X s" counts from the driver's start, after these:
BEFORE_DRIVER_CLOCK = ("cli start", "scontrol hostnames")
# REPORT.md: "about +/-0.2 s between runs on this 2-core machine"; relative for the long ones
TOLERANCE = {"relative": 0.25, "absolute_s": 0.2}
# README figures of the real vLLM CPU image (not in results/*.json): `make demo` under docker
# (2 nodes: loading at 0.2 s, loaded at 26.3 s, args at 35.4 s, READY at 133.6 s) and under
# pyxis (READY in 146.6 s, the image converted before).
VLLM_IMAGE_GB = 3.01
VLLM_ARGS_S = 35.4 - 26.3
VLLM_LAUNCH_TO_READY_S = 133.6 - 35.4
PYXIS_DEMO_READY_S = 146.6
# lifecycle/watch.py POLL_S, which READY was polled at before the 50 ms READY_POLL_S (6c11c64):
# cluster-8nodes.json was measured then
OLD_POLL_S = 0.25


@dataclass(frozen=True)
class Params:
    """The model's inputs. Defaults: the sandbox; each comment names the figure's source.
    FITTED ones are recomputed from results/*.json by `fits()` (printed by --check)."""

    # SLURM's fan-out
    tree_width: int = 16  # slurm.conf TreeWidth default (DEFAULT_TREE_WIDTH in read_config.h)
    sbcast_width: int = 8  # sbcast's tree unless --treewidth (file_bcast.c DEFAULT_THREADS)
    sbcast_block_gb: float = 8 * 2**20 / 1e9  # sbcast --size default, 8 MiB (sbcast opts.c)
    hop_s: float = 0.005  # ASSUMED: one RPC forwarded between slurmds on a LAN
    # srun's own work per node of a step (launch, I/O, exit): SchedMD's big_sys.shtml runs
    # "30,000 tasks on 15,000 compute nodes" in 30 s, allocation included, so an upper bound
    srun_node_s: float = 0.002
    # The driver and its steps. FITTED ones: to the driver's timeline (state.json; each
    # event's seconds after the process started) of cluster.json's overhead_no_check_args
    # runs at 1, 2, 4, 6 nodes, per span; the overhead runs (argument-check verdict kept) are
    # held out. Per-node spans: least squares over crowd() after the fixed step terms.
    cli_s: float = 0.2516  # FITTED: process -> driver, 0.24-0.27 s (2026-12-04, a slower
    #                        machine than 12-02's 0.14-0.21 s), less scontrol_s: Python
    #                        start-up and the `run` path's imports
    scontrol_s: float = 0.01  # ASSUMED: one C client and one slurmctld RPC
    driver_s: float = 0.03  # the record, the engine's plan, the tarball's manifest, the
    #                         script: 0.03-0.05 s when it came before the step (fitted to
    #                         12-02's timeline); now it runs while the step's tasks start
    step_s: float = 0.03  # ASSUMED: srun's start and slurmctld's step record
    stepd_s: float = 0.05  # ASSUMED: slurmstepd and the task's start, per step and node; the
    #                        timeline gives only its sums with preflight_s and node_script_s
    preflight_s: float = 0.0295  # FITTED: driver -> preflight facts (0.13, 0.15, 0.26,
    #                              0.32 s): stepd_s + this = 0.08 s per crowd unit
    render_s: float = 0.005  # FITTED: image load -> launch, image present, no check (0.004-
    #                          0.005 s): the launch's scripts and env files rendered, written
    node_script_s: float = 0.0228  # FITTED: launch -> containers started (0.018, 0.021,
    #                                0.098, 0.058 s): node.sh up to `docker run`, in the
    #                                preflight's held tasks (docker; pyxis starts a step)
    start_s: float = 0.2486  # FITTED: containers started -> health (0.33, 0.62, 0.86, 1.11 s)
    #                        less the rendezvous and the poll: `docker run` -> /health 200
    #                        (by hand, 1 node, through `sandbox exec`: 0.30-0.31 s)
    rendezvous_retry_s: float = 0.3  # the stand-in's follower retries its connect to rank 0
    #                                  every RETRY_SECONDS (standin rendezvous.py); ASSUMED:
    #                                  each misses its first try and lands uniformly in one
    #                                  retry after rank 0 listens (mean of the latest of k:
    #                                  k/(k+1) of it)
    argcheck_s: float = 0.828  # FITTED: first jobs of the layout with the check (1.5, 1.5 s
    #                             at 1, 2 nodes; READY to 0.1 s) less the model without it:
    #                             a 1-node step + this (the check container, the parser)
    poll_s: float = 0.05  # lifecycle/watch.py READY_POLL_S: READY waits half of it on average
    probe_s: float = 0.0035  # FITTED: health -> ready (0.003-0.004 s): /v1/models and a
    #                         1-token completion
    # teardown
    squeue_s: float = 0.02  # ASSUMED like scontrol_s: finding the serving step
    scancel_s: float = 0.02  # ASSUMED: SIGTERM to the step's tasks
    stop_s: float = 0.07  # stop_modes at 1 node: SIGINT -> no container 0.10-0.17 s
    cleanup_s: float = 0.115  # FITTED: cluster-8nodes.json teardown, 1.16 s at 8 nodes
    file_s: float = 0.0  # per env file the driver writes (launch) or removes (teardown) in the
    #                      log directory: local disk on the sandbox
    # images
    image_gb: float = 0.562  # cluster.json distribution.tarball_bytes (the stand-in)
    squashfs_ratio: float = 0.82  # README: the 3.01 GB vLLM tarball is a 2.47 GB squashfs
    load_gbps: float = 0.116  # README demo: `docker load` of 3.01 GB on one node in 26 s
    # FITTED: cluster.json distribution, 3 x 0.562 GB loaded by hand in 19.9 s (median of 6
    # rounds, each arm after `sync` and the page cache dropped): the host's one disk, cold
    shared_fs_gbps: float = 0.085
    # the one host disk under every node's files here, with the files in the page cache (the
    # sbcast run's staged copies were just written, its source read by the run before): 3 x
    # 0.562 GB loaded by hand in 9.2 s with the tarball cached (cluster.json before cbbe578,
    # median of 6 rounds). None: each node has its own
    host_disk_gbps: float | None = 0.183
    nic_gbps: float = 1.0  # ASSUMED: veth between namespaces (the disk bounds sbcast here)
    convert_gbps: float = 0.018  # README: 3.01 GB converted for pyxis in 167 s
    unpack_gbps: float = 0.104  # README: pyxis's args phase took 32.9 s with the squashfs
    #                             unpack, docker's 9.1 s without: 2.47 GB in 23.8 s
    remove_gbps: float = 0.39  # README: pyxis teardown 9.1 s, docker's 2.8 s, same vLLM:
    #                            6.3 s to remove the unpacked 2.47 GB image
    host_cores: int | None = 2  # REPORT.md: 2 CPU cores shared by every node; None on a
    #                             cluster, where each node has its own


SANDBOX = Params()
CLUSTER = replace(
    SANDBOX,
    host_cores=None,
    host_disk_gbps=None,
    image_gb=VLLM_IMAGE_GB,  # the real vLLM (CPU) image the sandbox serves; CUDA ones are larger
    # ASSUMED: a mid-size parallel file system, e.g. FSx for Lustre PERSISTENT_2 at
    # 250 MB/s per TiB (AWS's documented tier) on 40 TiB; an NFS server is nearer 1 GB/s
    shared_fs_gbps=10.0,
    nic_gbps=3.125,  # ASSUMED: 25 Gb/s Ethernet carries slurmd's traffic (sbcast)
    file_s=0.002,  # ASSUMED: a small file's create or unlink on NFS/Lustre, a few round trips
)
ABOUT = {
    "cluster": "real nodes (own cores and disk), shared FS 10 GB/s, 25 Gb/s NIC, the 3.01 GB "
               "vLLM image, the stand-in engine's start and stop (orchestration only)",
    "sandbox": "the sandbox: every node on one 2-core host with one disk, the 0.56 GB stand-in",
}


def depth(nodes: int, width: int) -> int:
    """Message hops for SLURM's tree to reach `nodes`: level k holds width**k of them
    (hostlist.c _set_span; slurm.conf: width 16 reaches 4,368 nodes in three hops)."""
    hops, reach = 1, width
    while reach < nodes:
        hops += 1
        reach += width**hops
    return hops


def crowd(p: Params, nodes: int) -> float:
    """How much longer per-node work takes when every node shares the host's cores, and the
    driver's side (the driver, srun, slurmctld) takes a node's share: 1 node and the driver
    fit the sandbox's 2 cores, 2 nodes do not (the timeline's 2-node spans are longer)."""
    return max(1.0, (nodes + 1) / p.host_cores) if p.host_cores else 1.0


def srun_step(p: Params, nodes: int) -> float:
    """One srun step over `nodes`: launched down SLURM's tree, srun's work per node, and
    slurmstepd on each node (in parallel, but for the sandbox's shared cores)."""
    return (p.step_s + depth(nodes, p.tree_width) * p.hop_s + nodes * p.srun_node_s
            + p.stepd_s * crowd(p, nodes))


def node_read(p: Params, readers: int, gb: float, gbps: float, shared: bool) -> tuple[float, str]:
    """`readers` nodes each take in `gb` at `gbps`, from the shared path (one bandwidth for
    all of them) or from their own disks (one for all only on the sandbox); seconds and the
    bound that holds. One reader alone runs at `gbps`, which was measured that way."""
    own = gb / gbps
    cap = p.shared_fs_gbps if shared else p.host_disk_gbps
    together = readers * gb / cap if cap and readers > 1 else 0.0
    if together > own:
        return together, "shared-FS bound" if shared else "host-disk bound"
    return own, "node-bound"


def sbcast(p: Params, nodes: int, gb: float) -> float:
    """sbcast sends the file block by block, each block down the whole tree before the next
    (file_bcast.c: one slurm_send_recv_msgs per block); each sender pushes a block to up to
    sbcast_width children over its link. It reads the file once."""
    blocks = math.ceil(gb / p.sbcast_block_gb)
    fan = min(nodes, p.sbcast_width)
    per_block = depth(nodes, p.sbcast_width) * (p.hop_s + fan * p.sbcast_block_gb / p.nic_gbps)
    tree = blocks * per_block + gb / p.shared_fs_gbps
    written = nodes * gb / p.host_disk_gbps if p.host_disk_gbps else 0.0
    return max(tree, written)


def rendezvous(p: Params, nodes: int) -> float:
    """The stand-in's followers wait out a connect retry for rank 0 (see Params)."""
    followers = nodes - 1
    return p.rendezvous_retry_s * followers / (followers + 1)


def ready_terms(p: Params, nodes: int, mode: str, warm: bool = False,
                check_args: bool = True) -> dict[str, float]:
    """Seconds per term from the prompt to READY. `warm`: docker finds the image on every
    node; pyxis finds it converted (each job still unpacks it on every node). `check_args`
    False: no argument check, or (a repeated job of the layout) its verdict kept, which costs
    the driver a file read (5 ms in the timeline, not modelled)."""
    runtime, stage = mode.split()
    staged = stage == "sbcast"
    crowded = crowd(p, nodes)
    # srun starts the preflight step first; the driver renders the script while its tasks
    # start (slurm/steps.py WAIT_FOR_SCRIPT): the step's term is the longer of the two.
    t = {"cli start": p.cli_s, "scontrol hostnames": p.scontrol_s,
         "preflight: srun step": max(
             srun_step(p, nodes), p.scontrol_s + p.driver_s),
         "preflight: node checks": p.preflight_s * crowded}
    squashfs = p.image_gb * p.squashfs_ratio
    if runtime == "docker" and not warm:
        if staged:
            t["image: stage-check srun step"] = srun_step(p, nodes)
            t["image: sbcast tree"] = sbcast(p, nodes, p.image_gb)
        t["image: load srun step"] = srun_step(p, nodes)
        seconds, bound = node_read(p, nodes, p.image_gb, p.load_gbps, shared=not staged)
        t[f"image: docker load ({bound})"] = seconds
    if runtime == "pyxis":
        if not warm:
            t["image: convert once on the head"] = srun_step(p, 1) + p.image_gb / p.convert_gbps
        if staged:  # the squashfs is staged for every job: each job unpacks it anew
            t["image: stage-check srun step"] = srun_step(p, nodes)
            t["image: sbcast tree"] = sbcast(p, nodes, squashfs)
    if check_args:
        t["args: srun step"] = srun_step(p, 1)
        if runtime == "pyxis":  # the first pyxis step on a node unpacks the squashfs
            seconds, bound = node_read(p, 1, squashfs, p.unpack_gbps, shared=not staged)
            t[f"args: unpack on the head ({bound})"] = seconds
        t["args: engine parser"] = p.argcheck_s
    t["launch: scripts rendered"] = p.render_s
    t["launch: env files on the log dir"] = nodes * p.file_s
    if runtime == "pyxis":  # docker's launch runs in the preflight's held tasks: no step
        t["launch: srun step"] = srun_step(p, nodes)
    unpacking = nodes - 1 if check_args else nodes
    if runtime == "pyxis" and unpacking:
        seconds, bound = node_read(p, unpacking, squashfs, p.unpack_gbps, shared=not staged)
        t[f"launch: unpack on the nodes ({bound})"] = seconds
    t["launch: node script up to the engine"] = p.node_script_s * crowded
    t["engine: start to /health"] = p.start_s * crowded
    t["engine: rendezvous retries"] = rendezvous(p, nodes)
    t["ready: poll wait"] = p.poll_s / 2
    t["ready: models and a 1-token completion"] = p.probe_s
    return t


#: The driver's timeline, span by span (state.json `timeline`: each event's seconds after the
#: process started), and the terms of a docker job with the image on the nodes and no check
#: (or the verdict kept) that fill each span.
SPANS = (
    ("process", "driver", ("cli start", "scontrol hostnames")),
    ("driver", "preflight facts", ("preflight: srun step",
                                   "preflight: node checks")),
    ("image load", "launch", ("launch: scripts rendered", "launch: env files on the log dir")),
    ("launch", "containers started", ("launch: node script up to the engine",)),
    ("containers started", "health", ("engine: start to /health", "engine: rendezvous retries",
                                      "ready: poll wait")),
    ("health", "ready", ("ready: models and a 1-token completion",)),
)


def teardown_terms(p: Params, nodes: int, runtime: str) -> dict[str, float]:
    """Seconds per term from Ctrl+C to the driver's exit, while serving."""
    crowded = crowd(p, nodes)
    t = {"find and signal the step": p.squeue_s + p.scancel_s + depth(nodes, p.tree_width) * p.hop_s,
         "stop the engines": p.stop_s * crowded,
         "cleanup: srun step": srun_step(p, nodes),
         "cleanup: by label on each node": p.cleanup_s * crowded}
    if runtime == "pyxis":
        t["cleanup: remove the unpacked image"] = p.image_gb * p.squashfs_ratio / p.remove_gbps
    t["remove env files"] = nodes * p.file_s
    return t


def dominant(terms: dict[str, float]) -> str:
    return max(terms, key=terms.__getitem__)


def _rounded(terms: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in terms.items()}


def predict(p: Params, counts: tuple[int, ...]) -> list[dict]:
    """Every mode at every node count: totals, the dominant terms and the breakdowns. Cold: a
    first run (the image on no node, pyxis: not converted; the argument check runs); warm: a
    repeated job of the layout (the image on every node, pyxis: converted; the verdict kept)."""
    rows = []
    for mode in MODES:
        for n in counts:
            cold = ready_terms(p, n, mode)
            warm = ready_terms(p, n, mode, warm=True, check_args=False)
            down = teardown_terms(p, n, mode.split()[0])
            rows.append({"mode": mode, "nodes": n, "ready_s": round(sum(cold.values()), 3),
                         "ready_warm_s": round(sum(warm.values()), 3),
                         "teardown_s": round(sum(down.values()), 3),
                         "dominant": dominant(cold), "dominant_warm": dominant(warm),
                         "dominant_teardown": dominant(down), "ready_terms": _rounded(cold),
                         "ready_warm_terms": _rounded(warm), "teardown_terms": _rounded(down)})
    return rows


def _driver_clock(terms: dict[str, float]) -> float:
    return sum(v for k, v in terms.items() if k not in BEFORE_DRIVER_CLOCK)


def _load(name: str) -> dict:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else {}


def _no_check(p: Params, nodes: int) -> float:
    """READY on the driver's clock: docker, the image on the nodes, no argument check."""
    return _driver_clock(ready_terms(p, nodes, "docker direct", True, False))


def _timelines(rows: list[dict]) -> list[tuple[int, dict]]:
    return [(r["nodes"], r["timeline"]) for r in rows if "ready" in r.get("timeline", {})]


def _span(timeline: dict, start: str, end: str) -> float:
    return timeline[end] - timeline[start]


def fits(p: Params = SANDBOX) -> dict[str, dict]:
    """Each FITTED default recomputed from the figures it was fitted to, beside the default
    (as `Params` rounds it). Per-node spans: least squares of seconds = fixed + crowd x fit."""
    cluster, big = _load("cluster.json"), _load("cluster-8nodes.json")
    runs = _timelines(cluster.get("overhead_no_check_args", []))
    out: dict[str, dict] = {}

    def put(name: str, value: float, default: float, source: str) -> None:
        out[name] = {"fitted": round(value, 4), "default": round(default, 4), "source": source}

    def fixed(n: int) -> float:  # a step's terms that do not crowd
        return p.step_s + depth(n, p.tree_width) * p.hop_s + n * p.srun_node_s

    def per_crowd(points: list[tuple[float, float]]) -> float:
        return sum(c * y for c, y in points) / sum(c * c for c, _ in points)

    if runs:
        source = "cluster.json overhead_no_check_args timeline"
        spans = {(a, b): [(n, _span(t, a, b)) for n, t in runs] for a, b, _ in SPANS}
        put("cli_s", statistics.median(y for _, y in spans["process", "driver"]) - p.scontrol_s,
            p.cli_s, source + ": process -> driver, median, less scontrol_s")
        put("stepd_s + preflight_s", per_crowd([(crowd(p, n), y - fixed(n))
                                                for n, y in spans["driver", "preflight facts"]]),
            p.stepd_s + p.preflight_s, source + ": driver -> preflight facts")
        put("render_s", statistics.mean(y - n * p.file_s for n, y in spans["image load", "launch"]),
            p.render_s, source + ": image load -> launch, mean")
        put("node_script_s", per_crowd(
            [(crowd(p, n), y) for n, y in spans["launch", "containers started"]]),
            p.node_script_s, source + ": launch -> containers started (the held step's tasks)")
        put("start_s", per_crowd([(crowd(p, n), y - rendezvous(p, n) - p.poll_s / 2)
                                  for n, y in spans["containers started", "health"]]),
            p.start_s, source + ": containers started -> health, less rendezvous and poll")
        put("probe_s", statistics.mean(y for _, y in spans["health", "ready"]), p.probe_s,
            source + ": health -> ready, mean")
    firsts = [(r["nodes"], r["first_run_ready_s"]) for r in cluster.get("overhead", [])
              if "first_run_ready_s" in r and r["nodes"] in FIRST_RUNS_FITTED]
    if firsts:
        check = statistics.mean(s - _no_check(p, n) for n, s in firsts) - srun_step(p, 1)
        put("argcheck_s", check, p.argcheck_s, "cluster.json overhead first_run_ready_s at "
            f"{', '.join(str(n) for n, _ in firsts)} nodes, less the model without the check "
            "and a 1-node step")
    t = big.get("teardown")
    if t:
        n = t["nodes"]
        rest = teardown_terms(replace(p, cleanup_s=0.0), n, "docker")
        put("cleanup_s", (t["sigint_to_exit_s"] - sum(rest.values())) / crowd(p, n), p.cleanup_s,
            "cluster-8nodes.json teardown, less the other teardown terms")
    d = cluster.get("distribution")
    if d:
        put("shared_fs_gbps", d["nodes"] * d["tarball_bytes"] / 1e9
            / statistics.median(d["by_hand_parallel_s"]), p.shared_fs_gbps,
            "cluster.json distribution by_hand_parallel_s, median")
    return out


#: Node counts whose first run with the argument check set argcheck_s (the rest are held out).
FIRST_RUNS_FITTED = (1, 2)
#: Check rows on the driver's clock for docker with the image on the nodes and no argument
#: check run: the sandbox line of the plot, with these rows as its circles.
NO_CHECK_ROWS = ("READY, image on the nodes, no argument check (repeated job)",
                 "READY, image on the nodes, no argument check (first job of the layout)",
                 "READY, image on the nodes, argument-check verdict kept (repeated job)",
                 "READY, image on the nodes, no argument check (8-node run, 0.25 s polls)")


def check_rows(p: Params = SANDBOX) -> list[dict]:
    """The model (sandbox parameters) next to each figure the sandbox measured. `fitted`: the
    figure went into a default above, so agreeing with it shows consistency, not skill."""
    cluster, big = _load("cluster.json"), _load("cluster-8nodes.json")
    rows: list[dict] = []

    def add(what: str, nodes: int, measured: float, model: float, fitted: bool, source: str,
            asserted: bool = True) -> None:
        error = model - measured
        within = abs(error) <= max(TOLERANCE["absolute_s"], TOLERANCE["relative"] * measured)
        rows.append({"what": what, "nodes": nodes, "measured_s": round(measured, 3),
                     "model_s": round(model, 3), "error": round(error / measured, 3),
                     "within": within, "fitted": fitted, "asserted": asserted,
                     "source": source})

    repeated, no_check_first, kept, big_run = NO_CHECK_ROWS
    for r in cluster.get("overhead_no_check_args", []):  # its timeline set the per-phase terms
        add(repeated, r["nodes"], r["slurmserve_ready_s"], _no_check(p, r["nodes"]), True,
            "cluster.json overhead_no_check_args")
    for r in cluster.get("overhead_no_check_args", []):
        if "first_run_ready_s" in r:
            add(no_check_first, r["nodes"], r["first_run_ready_s"], _no_check(p, r["nodes"]),
                False, "cluster.json overhead_no_check_args first_run_ready_s")
    for r in cluster.get("overhead", []):  # held out: the check's verdict kept from the first
        add(kept, r["nodes"], r["slurmserve_ready_s"], _no_check(p, r["nodes"]), False,
            "cluster.json overhead")
    # first jobs of a layout found the image on the nodes too: each took under 2.5 s, and
    # loading the 0.56 GB stand-in takes 5 s or more
    for r in cluster.get("overhead", []):
        if "first_run_ready_s" in r:
            add("READY, image on the nodes, argument check run (first job of the layout)",
                r["nodes"], r["first_run_ready_s"],
                _driver_clock(ready_terms(p, r["nodes"], "docker direct", True)),
                r["nodes"] in FIRST_RUNS_FITTED, "cluster.json overhead first_run_ready_s")
    old = replace(p, poll_s=OLD_POLL_S)
    for r in big.get("overhead", []):  # measured before the argument check and 50 ms polls
        add(big_run, r["nodes"], r["slurmserve_ready_s"], _no_check(old, r["nodes"]), False,
            "cluster-8nodes.json overhead")
    for t, fitted, source in ((cluster.get("teardown"), False, "cluster.json teardown"),
                              (big.get("teardown"), True, "cluster-8nodes.json teardown")):
        if t:
            add("Ctrl+C -> driver exited", t["nodes"], t["sigint_to_exit_s"],
                sum(teardown_terms(p, t["nodes"], "docker").values()), fitted, source)
    stops: dict[int, list[float]] = {}
    for m in cluster.get("stop_modes", []):
        stops.setdefault(m["nodes"], []).append(m["sigint_to_no_container_s"])
    if cluster.get("teardown"):
        stops.setdefault(cluster["teardown"]["nodes"], []).append(
            cluster["teardown"]["sigint_to_no_container_s"])
    for n, seconds in sorted(stops.items()):
        gone = teardown_terms(p, n, "docker")
        add("Ctrl+C -> no container (median of the runs)", n, statistics.median(seconds),
            gone["find and signal the step"] + gone["stop the engines"], n == 1,
            "cluster.json stop_modes, teardown")
    d = cluster.get("distribution")
    if d:
        n, q = d["nodes"], replace(p, image_gb=d["tarball_bytes"] / 1e9)
        load, _ = node_read(q, n, q.image_gb, q.load_gbps, shared=True)
        add("docker load by hand, all nodes at once, cold cache (median)", n,
            statistics.median(d["by_hand_parallel_s"]), load, True, "cluster.json distribution")
        add("docker load through slurmserve, --stage direct, cold cache (median)", n,
            statistics.median(d["slurmserve_s"]), srun_step(q, n) + load, False,
            "cluster.json distribution")
        if "sbcast_s" in d:  # after a direct run of the layout: its verdict kept, files cached
            local, _ = node_read(q, n, q.image_gb, q.load_gbps, shared=False)
            model = sbcast(q, n, q.image_gb) + srun_step(q, n) + local
            add("--stage sbcast: sbcast and load (verdict kept)", n, d["sbcast_s"], model, False,
                "cluster.json distribution.sbcast_s")
    # pyxis: README's `make demo` (2 nodes, image converted), with the real vLLM's own
    # argument check and start taken from the same demo's docker lines (no stand-in rendezvous)
    q = replace(p, image_gb=VLLM_IMAGE_GB, rendezvous_retry_s=0.0, start_s=0.0)
    launch = _from_launch(ready_terms(q, 2, "docker direct", warm=True))
    q = replace(q, argcheck_s=VLLM_ARGS_S - srun_step(p, 1),
                start_s=(VLLM_LAUNCH_TO_READY_S - launch) / crowd(p, 2))
    add("pyxis make demo, vLLM, image converted", 2, PYXIS_DEMO_READY_S,
        _driver_clock(ready_terms(q, 2, "pyxis direct", warm=True)), False, "README (make demo)")
    return rows


def _from_launch(terms: dict[str, float]) -> float:
    """The terms from the launch line to READY."""
    return sum(v for k, v in terms.items() if k.split(":")[0] in ("launch", "engine", "ready"))


def phase_rows(p: Params = SANDBOX) -> list[dict]:
    """The driver's timeline span by span next to the model's terms for it: the runs whose
    spans set the per-phase defaults (fitted), and the held-out ones (verdict kept)."""
    cluster = _load("cluster.json")
    rows = []
    for key, fitted in (("overhead_no_check_args", True), ("overhead", False)):
        for n, t in _timelines(cluster.get(key, [])):
            terms = ready_terms(p, n, "docker direct", True, False)
            for start, end, names in SPANS:
                rows.append({"span": f"{start} -> {end}", "nodes": n,
                             "measured_s": round(_span(t, start, end), 4),
                             "model_s": round(sum(terms[k] for k in names), 4),
                             "fitted": fitted, "source": f"cluster.json {key} timeline"})
    return rows


def at_1000(rows: list[dict]) -> dict[str, dict]:
    """Per mode at 1,000 nodes: totals and the dominant term with its share."""
    result = {}
    for r in rows:
        if r["nodes"] != 1000:
            continue
        term, warm = r["dominant"], r["dominant_warm"]
        result[r["mode"]] = {
            "ready_s": r["ready_s"], "ready_warm_s": r["ready_warm_s"],
            "teardown_s": r["teardown_s"], "dominant": term,
            "dominant_s": r["ready_terms"][term],
            "dominant_share": round(r["ready_terms"][term] / r["ready_s"], 3),
            "dominant_warm": warm, "dominant_warm_s": r["ready_warm_terms"][warm],
            "dominant_teardown": r["dominant_teardown"]}
    return result


def sbcast_pays_from(p: Params, limit: int = 10_000) -> int | None:
    """The smallest N at which docker's first run is faster with sbcast than direct reads
    (slurmserve's `auto` stages from SBCAST_MIN_NODES = 4, set on the sandbox's one disk)."""
    for n in range(1, limit + 1):
        if sum(ready_terms(p, n, "docker sbcast").values()) < \
                sum(ready_terms(p, n, "docker direct").values()):
            return n
    return None


def as_measured(p: Params, counts: tuple[int, ...]) -> list[dict]:
    """What benchmarks/cluster.py times: READY on the driver's clock of a repeated job (image
    on the nodes, the argument check's verdict kept); Ctrl+C to the driver's exit."""
    return [{"nodes": n, "ready_s": round(_no_check(p, n), 3),
             "teardown_s": round(sum(teardown_terms(p, n, "docker").values()), 3)}
            for n in counts]


def results() -> dict:
    cluster, sandbox = predict(CLUSTER, NODES), predict(SANDBOX, SANDBOX_NODES)
    return {"nodes": list(NODES), "modes": list(MODES),
            "scenarios": {
                "cluster": {"about": ABOUT["cluster"], "params": asdict(CLUSTER),
                            "predictions": cluster},
                "sandbox": {"about": ABOUT["sandbox"], "params": asdict(SANDBOX),
                            "predictions": sandbox,
                            "as_measured": as_measured(SANDBOX, SANDBOX_NODES)}},
            "at_1000": at_1000(cluster),
            "sbcast_pays_from": {f"{gbps:g}": sbcast_pays_from(replace(CLUSTER, shared_fs_gbps=gbps))
                                 for gbps in (1.0, 10.0, 100.0)},
            "check": {"tolerance": TOLERANCE, "rows": check_rows(), "phases": phase_rows(),
                      "fits": fits()}}


# --- the plot: plain SVG, log-log ---------------------------------------------------------

W, H, LEFT, RIGHT, TOP, BOTTOM = 860, 480, 70, 560, 40, 420
X_DECADES, Y_DECADES = (0, 3), (-1, 3)  # 1..1000 nodes, 0.1..1000 s


def _x(nodes: float) -> float:
    lo, hi = X_DECADES
    return LEFT + (math.log10(nodes) - lo) / (hi - lo) * (RIGHT - LEFT)


def _y(seconds: float) -> float:
    lo, hi = Y_DECADES
    v = min(max(math.log10(max(seconds, 1e-9)), lo), hi)
    return BOTTOM - (v - lo) / (hi - lo) * (BOTTOM - TOP)


def svg(data: dict) -> str:
    """READY and teardown against N: the cluster model's lines, the sandbox model's dotted
    lines (on a dense grid of N, so knees show), and what the sandbox measured as circles."""
    dense = tuple(sorted({round(10 ** (i / 20)) for i in range(61)}))
    cluster = predict(CLUSTER, dense)
    sandbox = as_measured(SANDBOX, tuple(n for n in dense if n <= max(SANDBOX_NODES)))

    def points(mode: str, key: str) -> list[tuple[float, float]]:
        return [(r["nodes"], r[key]) for r in cluster if r["mode"] == mode]

    checked = data["check"]["rows"]
    ready_seen = [(r["nodes"], r["measured_s"]) for r in checked if r["what"] in NO_CHECK_ROWS]
    down_seen = [(r["nodes"], r["measured_s"]) for r in checked
                 if r["what"] == "Ctrl+C -> driver exited"]
    # (label, points, colour, dash, measured points)
    series = [
        ("docker direct, first run", points("docker direct", "ready_s"), "#1f77b4", "", []),
        ("docker sbcast, first run", points("docker sbcast", "ready_s"), "#1f77b4", "7,4", []),
        ("pyxis direct, first run", points("pyxis direct", "ready_s"), "#d62728", "", []),
        ("pyxis sbcast, first run", points("pyxis sbcast", "ready_s"), "#d62728", "7,4", []),
        ("docker, repeated job", points("docker direct", "ready_warm_s"), "#2ca02c", "", []),
        ("teardown, docker", points("docker direct", "teardown_s"), "#7f7f7f", "", []),
        ("sandbox: READY, image on the nodes*", [(r["nodes"], r["ready_s"]) for r in sandbox],
         "#9467bd", "2,3", ready_seen),
        ("sandbox: teardown", [(r["nodes"], r["teardown_s"]) for r in sandbox], "#8c564b", "2,3",
         down_seen),
    ]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{LEFT}" y="22" font-size="14">slurmserve lifecycle, modelled: seconds to '
           'READY and teardown against nodes</text>']
    for e in range(X_DECADES[0], X_DECADES[1] + 1):
        x = _x(10**e)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{BOTTOM}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{BOTTOM + 16}" text-anchor="middle">{10**e:,}</text>')
    for e in range(Y_DECADES[0], Y_DECADES[1] + 1):
        y = _y(10.0**e)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{RIGHT}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{10.0**e:g}</text>')
    out += [f'<rect x="{LEFT}" y="{TOP}" width="{RIGHT - LEFT}" height="{BOTTOM - TOP}" '
            'fill="none" stroke="#333"/>',
            f'<text x="{(LEFT + RIGHT) / 2}" y="{BOTTOM + 36}" text-anchor="middle">nodes (log)'
            '</text>',
            f'<text x="18" y="{(TOP + BOTTOM) / 2}" text-anchor="middle" '
            f'transform="rotate(-90 18 {(TOP + BOTTOM) / 2})">seconds (log)</text>']
    for i, (label, pts, colour, dash, seen) in enumerate(series):
        path = " ".join(f"{_x(n):.1f},{_y(s):.1f}" for n, s in pts)
        dashing = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                   f'stroke-width="2"{dashing}/>')
        for n, s in seen:
            out.append(f'<circle cx="{_x(n):.1f}" cy="{_y(s):.1f}" r="4" fill="none" '
                       f'stroke="{colour}" stroke-width="1.5"/>')
        ly = TOP + 10 + i * 20
        out.append(f'<line x1="{RIGHT + 16}" y1="{ly}" x2="{RIGHT + 46}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="2"{dashing}/>')
        out.append(f'<text x="{RIGHT + 52}" y="{ly + 4}">{escape(label)}</text>')
    notes = ["circles: measured on the sandbox", "* driver's clock, no check (or kept)",
             "cluster lines: shared FS 10 GB/s, 25 Gb/s NIC,", "3.01 GB image, stand-in engine"]
    for i, note in enumerate(notes):
        out.append(f'<text x="{RIGHT + 16}" y="{TOP + 10 + (len(series) + 1 + i) * 20}" '
                   f'fill="#555">{escape(note)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def print_check(rows: list[dict], phases: list[dict] = (), fitted: dict | None = None) -> bool:
    """The check table (and, when given, the timeline per span and the fits); False when an
    asserted row is outside the tolerance."""
    print(f"model (sandbox parameters) vs the sandbox's figures; tolerance "
          f"max({TOLERANCE['relative']:.0%}, {TOLERANCE['absolute_s']} s)")
    print(f"{'measure':<76} {'N':>2} {'measured':>9} {'model':>7} {'error':>7}")
    ok = True
    for r in rows:
        flag = ("" if r["within"] else " OUTSIDE") + (" (fitted)" if r["fitted"] else "") + \
            ("" if r["asserted"] else " (not asserted)")
        print(f"{r['what']:<76} {r['nodes']:>2} {r['measured_s']:>9.2f} {r['model_s']:>7.2f} "
              f"{r['error']:>+7.0%}{flag}")
        ok = ok and (r["within"] or not r["asserted"])
    for fit in (True, False):
        chosen = [r for r in phases if r["fitted"] == fit]
        if not chosen:
            continue
        counts = sorted({r["nodes"] for r in chosen})
        print(f"\ntimeline per span, measured/model ms ({chosen[0]['source']}"
              f"{', fitted' if fit else ', held out'})")
        print(f"{'span':<40}" + "".join(f"{f'N={n}':>11}" for n in counts))
        for span in dict.fromkeys(r["span"] for r in chosen):
            cells = {r["nodes"]: r for r in chosen if r["span"] == span}
            print(f"{span:<40}" + "".join(
                f"{cells[n]['measured_s'] * 1e3:.0f}/{cells[n]['model_s'] * 1e3:.0f}".rjust(11)
                for n in counts))
    if fitted:
        print("\nFITTED defaults, recomputed from their figures")
        for name, f in fitted.items():
            print(f"{name:<24} {f['fitted']:>8.4f} (default {f['default']:g})  {f['source']}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the sandbox's measurements; exit 1 when outside")
    args = parser.parse_args()
    data = results()
    if args.check:
        check = data["check"]
        sys.exit(0 if print_check(check["rows"], check["phases"], check["fits"]) else 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "simulate.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / "simulate.svg").write_text(svg(data))
    print(f"{'mode':<14} {'N':>5} {'READY s':>9} {'warm s':>8} {'teardown s':>10}  dominant")
    for r in data["scenarios"]["cluster"]["predictions"]:
        print(f"{r['mode']:<14} {r['nodes']:>5} {r['ready_s']:>9.1f} {r['ready_warm_s']:>8.1f} "
              f"{r['teardown_s']:>10.1f}  {r['dominant']}")
    print(f"wrote {RESULTS / 'simulate.json'} and {RESULTS / 'simulate.svg'}")


if __name__ == "__main__":
    main()
