"""`trtllm-serve MODEL [flags]` and `trtllm-llmapi-launch CMD...` -- STAND-IN, not TensorRT-LLM.

Under mpirun (or srun --mpi=pmix) every rank joins the real MPI world; rank 0 serves the
API, the other ranks are workers that exit when rank 0 finishes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from .common import StandinError, local_gpus
from .mpiworld import in_mpi_world, launch_rank
from .runtime import Launch, run

VALUE_FLAGS: dict[str, tuple[str, ...]] = {
    "--host": (), "--port": (), "--backend": (), "--tp_size": (), "--pp_size": (),
    "--ep_size": (), "--cluster_size": (), "--gpus_per_node": (),
    "--config": ("--extra_llm_api_options",), "--max_batch_size": (), "--max_num_tokens": (),
    "--max_seq_len": (), "--max_beam_width": (), "--kv_cache_free_gpu_memory_fraction": (),
    "--num_postprocess_workers": (), "--tokenizer": (), "--log_level": (),
    "--reasoning_parser": (), "--server_role": (), "--metadata_server_config_file": (),
}
# YAML keys of --config that override the CLI's parallel flags.
YAML_PARALLEL = ("tensor_parallel_size", "pipeline_parallel_size", "moe_expert_parallel_size",
                 "moe_tensor_parallel_size", "enable_attention_dp")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trtllm-serve", allow_abbrev=False,
                                description="STAND-IN for tests: not TensorRT-LLM.")
    p.add_argument("model", nargs="?")
    for flag, aliases in VALUE_FLAGS.items():
        p.add_argument(flag, *aliases)
    p.add_argument("--trust_remote_code", action="store_true")
    return p


def _load_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        import yaml
    except ImportError as e:
        raise StandinError(f"--config needs PyYAML: {e}") from e
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise StandinError(f"cannot read --config {path}: {e.strerror}") from e
    if not isinstance(data, dict):
        raise StandinError(f"--config {path} must hold a YAML mapping")
    return data


def plan(argv: list[str], environ: Mapping[str, str]) -> Launch:
    args, unknown = parser().parse_known_args(argv)
    if not args.model:
        raise StandinError("Missing argument 'MODEL'.")
    config = _load_config(args.config)
    tp = int(config.get("tensor_parallel_size", args.tp_size or 1))
    pp = int(config.get("pipeline_parallel_size", args.pp_size or 1))
    ep = config.get("moe_expert_parallel_size", args.ep_size)
    moe_tp = config.get("moe_tensor_parallel_size")
    attention_dp = bool(config.get("enable_attention_dp", False))
    if ep is not None and moe_tp is not None and int(ep) * int(moe_tp) != tp:
        raise StandinError(f"moe_tensor_parallel_size ({moe_tp}) * moe_expert_parallel_size "
                           f"({ep}) must equal tensor_parallel_size ({tp})")
    if ep is not None and tp % int(ep):
        raise StandinError(f"moe_expert_parallel_size ({ep}) must divide "
                           f"tensor_parallel_size ({tp})")
    ep_size = int(ep) if ep is not None else 1
    gpus = local_gpus(environ)
    parallel = {
        "tensor_parallel_size": tp, "pipeline_parallel_size": pp,
        "moe_expert_parallel_size": ep_size,
        "moe_tensor_parallel_size": int(moe_tp) if moe_tp is not None else tp // ep_size,
        "enable_attention_dp": attention_dp, "gpus_per_node": gpus,
        "backend": args.backend or "pytorch",
    }
    common = dict(
        engine="trtllm", model=args.model, parallel=parallel, host=args.host or "localhost",
        port=int(args.port or 8000), served_names=[args.model],
        max_model_len=int(config.get("max_seq_len", args.max_seq_len or 4096)),
        unknown_args=unknown, extra_info={"config": config}, world_size=tp * pp)
    if in_mpi_world(environ):
        rank = launch_rank(environ)
        return Launch(**common, mode="mpi", serve=rank == 0, rank=rank, workers_here=1,
                      mpi=True)
    if tp * pp > gpus:
        raise StandinError(f"tp_size * pp_size = {tp * pp} GPUs needed but this node has "
                           f"{gpus}; start one MPI rank per GPU across nodes "
                           "(mpirun/srun with trtllm-llmapi-launch)")
    return Launch(**common, mode="single", serve=True, rank=0, workers_here=tp * pp)


def plan_launch(command: list[str], environ: Mapping[str, str]) -> Launch:
    """trtllm-llmapi-launch: rank 0 runs COMMAND, other ranks are MPI workers."""
    if os.path.basename(command[0]) == "trtllm-serve":
        return plan(command[1:], environ)
    rank = launch_rank(environ)
    return Launch(engine="trtllm", model="", mode="mpi", serve=False, rank=rank, world_size=0,
                  workers_here=1, parallel={}, mpi=True,
                  rank0_command=command if rank == 0 else None)


def serve_main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        parser().print_help()
        return
    run("trtllm", argv, lambda: plan(argv, os.environ))


def launch_main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: trtllm-llmapi-launch COMMAND [ARGS...]  (STAND-IN, not TensorRT-LLM)",
              file=sys.stderr)
        sys.exit(2)
    if not in_mpi_world(os.environ) and os.path.basename(argv[0]) != "trtllm-serve":
        os.execvp(argv[0], argv)
    run("trtllm", argv, lambda: plan_launch(argv, os.environ))
