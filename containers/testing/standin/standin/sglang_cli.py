"""`python -m sglang.launch_server --model-path M [flags]` -- STAND-IN, not SGLang."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

from .common import StandinError, local_gpus
from .runtime import Launch, Rendezvous, run

VALUE_FLAGS: dict[str, tuple[str, ...]] = {
    "--model-path": ("--model",), "--host": (), "--port": (), "--api-key": (),
    "--tp-size": ("--tp", "--tensor-parallel-size"),
    "--dp-size": ("--dp", "--data-parallel-size"),
    "--pp-size": ("--pp", "--pipeline-parallel-size"),
    "--ep-size": ("--ep", "--expert-parallel-size"),
    "--nnodes": (), "--node-rank": (), "--dist-init-addr": ("--nccl-init-addr",),
    "--context-length": (), "--mem-fraction-static": (), "--tokenizer-path": (),
    "--dtype": (), "--chunked-prefill-size": (), "--max-running-requests": (),
    "--moe-a2a-backend": (), "--log-level": (), "--random-seed": (), "--dist-timeout": (),
}
BOOL_FLAGS = (
    "--enable-dp-attention", "--enable-metrics", "--trust-remote-code",
    "--disable-radix-cache", "--enable-ep-moe", "--skip-server-warmup",
    "--disable-cuda-graph",
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sglang.launch_server", allow_abbrev=False,
                                description="STAND-IN for tests: not SGLang.")
    for flag, aliases in VALUE_FLAGS.items():
        p.add_argument(flag, *aliases)
    p.add_argument("--served-model-name")
    for flag in BOOL_FLAGS:
        p.add_argument(flag, action="store_true")
    return p


def merge_config(argv: list[str]) -> list[str]:
    """SGLang's `--config FILE` (YAML/JSON): its keys become flags placed before the command
    line, which wins. Values read this way (e.g. `api-key`) never appear in the process's argv."""
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        return argv
    rest: list[str] = []
    paths: list[str] = []
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name == "--config":
            if not eq and i + 1 == len(argv):
                raise StandinError("No config file specified after --config flag!")
            paths.append(value if eq else argv[i + 1])
            i += 1 if eq else 2
            continue
        rest.append(argv[i])
        i += 1
    if len(paths) > 1:
        raise StandinError("Multiple config files specified! Only one allowed.")
    path = paths[0]
    if not path.lower().endswith((".yaml", ".yml", ".json")):
        raise StandinError(f"Config file must be YAML or JSON format, got: {path}")
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as e:
        raise StandinError(f"Config file not found: {path} ({e.strerror})") from None
    if not isinstance(data, dict):
        raise StandinError("Config file must contain a dictionary at root level")
    flags: list[str] = []
    for key, value in data.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            flags.append(flag)
        elif isinstance(value, list):
            flags += [flag, *map(str, value)]
        elif value is not None and value is not False:
            flags += [flag, str(value)]
    return flags + rest


def plan(argv: list[str], environ: Mapping[str, str]) -> Launch:
    args, unknown = parser().parse_known_args(merge_config(argv))
    if not args.model_path:
        raise StandinError("the following arguments are required: --model-path")
    tp = int(args.tp_size or 1)
    dp = int(args.dp_size or 1)
    pp = int(args.pp_size or 1)
    ep = int(args.ep_size or 1)
    nnodes = int(args.nnodes or 1)
    node_rank = int(args.node_rank or 0)
    gpus = local_gpus(environ)
    if tp % ep:
        raise StandinError(f"--ep-size {ep} must divide --tp-size {tp} (EP subdivides TP)")
    if dp > 1 and args.enable_dp_attention and tp % dp:
        raise StandinError(f"--tp-size {tp} must be divisible by --dp-size {dp} with "
                           "--enable-dp-attention")
    if nnodes > 1 and dp > 1 and not args.enable_dp_attention:
        raise StandinError("multi-node data parallel is not supported unless dp attention!")
    # With DP attention the DP ranks live inside the TP group; otherwise DP replicates it.
    world = tp * pp * (1 if args.enable_dp_attention else dp)
    if world % nnodes:
        raise StandinError(f"tp_size * pp_size ({world}) must be divisible by nnodes "
                           f"({nnodes})")
    if not 0 <= node_rank < nnodes:
        raise StandinError(f"--node-rank {node_rank} out of range for --nnodes {nnodes}")
    per_node = world // nnodes
    if per_node > gpus:
        raise StandinError(f"this node needs {per_node} GPUs (tp {tp} x pp {pp} over "
                           f"{nnodes} nodes) but has {gpus}")
    parallel = {"tp_size": tp, "dp_size": dp, "pp_size": pp, "ep_size": ep,
                "enable_dp_attention": args.enable_dp_attention, "nnodes": nnodes,
                "node_rank": node_rank, "gpus_per_node": gpus}
    common = dict(
        engine="sglang", model=args.model_path, parallel=parallel,
        host=args.host or "127.0.0.1", port=int(args.port or 30000),
        served_names=[args.served_model_name or args.model_path], api_key=args.api_key,
        max_model_len=int(args.context_length or 4096), default_max_tokens=16,
        metrics_enabled=args.enable_metrics, unknown_args=unknown,
        world_size=world, workers_here=per_node, rank=node_rank)
    if nnodes == 1:
        return Launch(**common, mode="single", serve=True)
    if not args.dist_init_addr:
        raise StandinError("--dist-init-addr IP:PORT is required when --nnodes > 1")
    host, sep, port = args.dist_init_addr.rpartition(":")
    if not sep or not port.isdigit():
        raise StandinError(f"--dist-init-addr must be HOST:PORT, got {args.dist_init_addr!r}")
    rz = Rendezvous(host.strip("[]"), int(port), nnodes, [node_rank], per_node, "node_rank")
    return Launch(**common, mode="multinode", serve=node_rank == 0, rendezvous=rz)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        parser().print_help()
        return
    run("sglang", argv, lambda: plan(argv, os.environ))
