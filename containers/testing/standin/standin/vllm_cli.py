"""`vllm serve MODEL [flags]` -- STAND-IN, not vLLM."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

from . import __version__
from .common import StandinError, local_gpus
from .runtime import Launch, RayPlacement, Rendezvous, run

# Flags that take a value; names as in vLLM's `vllm serve --help`.
VALUE_FLAGS: dict[str, tuple[str, ...]] = {
    "--model": (), "--host": (), "--port": (), "--uds": (), "--api-key": (),
    "--tensor-parallel-size": ("-tp",), "--pipeline-parallel-size": ("-pp",),
    "--data-parallel-size": ("-dp",), "--data-parallel-size-local": ("-dpl",),
    "--data-parallel-address": ("-dpa",), "--data-parallel-rpc-port": ("-dpp",),
    "--data-parallel-start-rank": ("-dpr",), "--data-parallel-rank": ("-dpn",),
    "--data-parallel-backend": ("-dpb",), "--distributed-executor-backend": (),
    "--nnodes": ("-n",), "--node-rank": ("-r",), "--master-addr": (), "--master-port": (),
    "--max-model-len": (), "--api-server-count": ("-asc",), "--all2all-backend": (),
    "--dtype": (), "--gpu-memory-utilization": (), "--max-num-seqs": (),
    "--max-num-batched-tokens": (), "--tokenizer": (), "--seed": (), "--download-dir": (),
    "--load-format": (), "--quantization": ("-q",), "--kv-cache-dtype": (),
    "--chat-template": (), "--config": (), "--uvicorn-log-level": (), "--root-path": (),
}
BOOL_FLAGS: dict[str, tuple[str, ...]] = {
    "--headless": (), "--enable-expert-parallel": ("-ep",),
    "--data-parallel-hybrid-lb": ("-dph",), "--data-parallel-external-lb": ("-dpe",),
}
OTHER_BOOL_FLAGS = (
    "--trust-remote-code", "--enforce-eager",
    "--enable-prefix-caching", "--disable-log-requests", "--enable-log-requests",
    "--disable-log-stats",
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm serve", allow_abbrev=False,
                                description="STAND-IN for tests: not vLLM.")
    p.add_argument("model_tag", nargs="?")
    for flag, aliases in VALUE_FLAGS.items():
        p.add_argument(flag, *aliases)
    p.add_argument("--served-model-name", nargs="+")
    for flag, aliases in BOOL_FLAGS.items():
        p.add_argument(flag, *aliases, action=argparse.BooleanOptionalAction, default=False)
    for flag in OTHER_BOOL_FLAGS:
        p.add_argument(flag, action=argparse.BooleanOptionalAction, default=False)
    return p


def _size(value: str | None, default: int) -> int:
    """vLLM accepts 1k / 32K / 1m style sizes for --max-model-len."""
    if value is None:
        return default
    v = value.strip().lower()
    scale = {"k": 1000, "m": 1000**2}.get(v[-1:], 1)
    return int(float(v[:-1] if scale > 1 else v) * scale)


def _int(value: str | None, default: int) -> int:
    return default if value is None else int(value)


def plan(argv: list[str], environ: Mapping[str, str]) -> Launch:
    """Decide mode, role and group layout from `vllm serve` arguments."""
    args, unknown = parser().parse_known_args(argv)
    model = args.model_tag or args.model
    if not model:
        raise StandinError("vllm serve: a model is required (positional MODEL or --model)")
    tp = _int(args.tensor_parallel_size, 1)
    pp = _int(args.pipeline_parallel_size, 1)
    dp = _int(args.data_parallel_size, 1)
    dpl = _int(args.data_parallel_size_local, dp)
    start = _int(args.data_parallel_start_rank, 0)
    nnodes = _int(args.nnodes, 1)
    node_rank = _int(args.node_rank, 0)
    executor = args.distributed_executor_backend
    gpus = local_gpus(environ)
    per_engine = tp * pp
    parallel = {
        "tensor_parallel_size": tp, "pipeline_parallel_size": pp, "data_parallel_size": dp,
        "data_parallel_size_local": dpl, "data_parallel_start_rank": start,
        "data_parallel_backend": args.data_parallel_backend or "mp",
        "distributed_executor_backend": executor, "nnodes": nnodes, "node_rank": node_rank,
        "enable_expert_parallel": args.enable_expert_parallel,
        "expert_parallel_size": tp * dp if args.enable_expert_parallel else 1,
        "headless": args.headless, "gpus_per_node": gpus,
    }
    common = dict(
        engine="vllm", model=model, parallel=parallel, host=args.host,
        port=_int(args.port, 8000), served_names=args.served_model_name or [model],
        api_key=args.api_key or environ.get("VLLM_API_KEY") or None,
        max_model_len=_size(args.max_model_len, 4096), unknown_args=unknown)

    # As in vLLM's ParallelConfig: Ray only when asked for. A world larger than the node's
    # GPUs without it fails (below), even with RAY_ADDRESS set.
    ray_mode = executor == "ray" or args.data_parallel_backend == "ray"
    if ray_mode:
        if args.headless:
            raise StandinError("--headless is for mp/multi-node ranks, not the Ray backend "
                               "(Ray workers are `ray start` processes)")
        if nnodes > 1:
            raise StandinError(f"Invalid data-parallel launch options: `--nnodes {nnodes}` "
                               "requires `--data-parallel-backend mp`")
        return Launch(**common, mode="ray", serve=True, rank=0, world_size=per_engine * dp,
                      workers_here=0, ray=RayPlacement(per_engine, dp,
                                                       args.data_parallel_backend == "ray"))

    if dp > 1 and dpl < dp:
        if not args.data_parallel_address:
            raise StandinError("--data-parallel-address is required when "
                               "--data-parallel-size-local < --data-parallel-size")
        if start + dpl > dp:
            raise StandinError(f"data parallel ranks {start}..{start + dpl - 1} exceed "
                               f"--data-parallel-size {dp}")
        external = args.data_parallel_hybrid_lb or args.data_parallel_external_lb
        if start > 0 and not args.headless and not external:
            raise StandinError(f"Remote engine {start} must use --headless unless in external "
                               "or hybrid dp lb mode")
        if start == 0 and args.headless:
            raise StandinError("the node with --data-parallel-start-rank 0 serves the API; "
                               "it must not be --headless")
        _check_gpus(dpl * per_engine, gpus)
        rz = Rendezvous(args.data_parallel_address, _int(args.data_parallel_rpc_port, 29550),
                        dp, list(range(start, start + dpl)), per_engine, "dp_rank")
        return Launch(**common, mode="dp-rpc", serve=not args.headless, rank=start,
                      world_size=dp * per_engine, workers_here=dpl * per_engine, rendezvous=rz)

    if nnodes > 1:
        world = per_engine * dp
        if world % nnodes:
            raise StandinError(f"Invalid data-parallel launch options: `--nnodes {nnodes}` must "
                               f"evenly divide the total world size ({world}).")
        if not 0 <= node_rank < nnodes:
            raise StandinError("Invalid data-parallel launch options: `--node-rank` must be "
                               f"between 0 and {nnodes - 1}; got `--node-rank {node_rank}`.")
        if node_rank > 0 and not args.headless:
            raise StandinError(f"node rank {node_rank} must run with --headless: only node "
                               "rank 0 runs the API server")
        if node_rank == 0 and args.headless:
            raise StandinError("node rank 0 runs the API server; it must not be --headless")
        per_node = world // nnodes
        _check_gpus(per_node, gpus)
        rz = Rendezvous(args.master_addr or "127.0.0.1", _int(args.master_port, 29501),
                        nnodes, [node_rank], per_node, "node_rank")
        return Launch(**common, mode="mp-multinode", serve=node_rank == 0, rank=node_rank,
                      world_size=world, workers_here=per_node, rendezvous=rz)

    if args.headless:
        raise StandinError("--headless needs a multi-node setup (--nnodes > 1 or data "
                           "parallel ranks on other nodes)")
    _check_gpus(per_engine * dp, gpus)
    return Launch(**common, mode="single", serve=True, rank=0, world_size=per_engine * dp,
                  workers_here=per_engine * dp)


def _check_gpus(needed: int, available: int) -> None:
    if needed > available:
        raise StandinError(
            f"World size ({needed}) is larger than the number of available GPUs "
            f"({available}) in this node. If this is intentional and you are using:\n"
            "- ray, set '--distributed-executor-backend ray'.\n"
            "- multiprocessing, set '--nnodes' appropriately.")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-v"]):
        print(f"{__version__}+standin")
        return
    if argv[:1] != ["serve"]:
        print("STAND-IN ENGINE for tests: not vLLM. Only `vllm serve MODEL [flags]` is "
              f"implemented; got {argv[:1] or 'nothing'}.", file=sys.stderr)
        sys.exit(2)
    if "-h" in argv or "--help" in argv:
        parser().print_help()
        return
    run("vllm", argv, lambda: plan(argv[1:], os.environ))


if __name__ == "__main__":
    main()
