"""vLLM's Ray executor path, for real: placement groups of GPU bundles, one actor each.

Imports ray lazily so the rest of the package works without it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .common import StandinError, log, node_name

ACTOR_START_TIMEOUT = 120.0


class _Member:
    """Stands for one vLLM GPU worker (RayWorkerWrapper) in a placement group bundle."""

    def info(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        return {"host": socket.gethostname(), "node": node_name(os.environ),
                "node_id": ctx.get_node_id(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    def ping(self) -> bool:
        return True


@dataclass
class RayGroup:
    actors: list[Any]
    members: list[dict[str, Any]]

    def watch(self, on_lost: Callable[[str], None], interval: float = 2.0) -> None:
        """Call on_lost when any actor dies (its node left the cluster)."""
        import ray

        def loop() -> None:
            while True:
                time.sleep(interval)
                for rank, actor in enumerate(self.actors):
                    try:
                        ray.get(actor.ping.remote(), timeout=30)
                    except Exception as e:  # noqa: BLE001 (any failure means the worker is gone)
                        on_lost(f"Ray worker rank {rank} died: {type(e).__name__}: {e}")
                        return

        threading.Thread(target=loop, daemon=True, name="ray-watch").start()


def _wait_ready(refs: list[Any], timeout: float, what: Callable[[float], str | None]) -> bool:
    """Poll ray.wait in short steps so SIGTERM stays responsive; log progress."""
    import ray

    start = time.monotonic()
    next_log = 10.0
    pending = list(refs)
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
        elapsed = time.monotonic() - start
        if not pending:
            return True
        if elapsed >= timeout:
            return False
        if elapsed >= next_log:
            message = what(elapsed)
            if message:
                log(message)
            next_log += 10.0
    return True


def form_group(world: int, groups: int, strict_pack: bool, timeout: float,
               on_connected: Callable[[], None] = lambda: None) -> RayGroup:
    """Connect to the running Ray cluster and place `groups` x `world` GPU workers.

    on_connected runs right after ray.init (which installs its own signal handlers).
    """
    try:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    except ImportError as e:
        raise StandinError(f"Ray is not installed: {e}") from e

    address = os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(address=address, namespace="vllm-standin", logging_level=logging.WARNING,
                 log_to_driver=False)
    except Exception as e:  # noqa: BLE001 (ray raises many types here)
        raise StandinError(f"could not connect to a Ray cluster at {address!r}: {e}") from e
    on_connected()
    node_id = ray.get_runtime_context().get_node_id()
    nodes = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
    resources = nodes.get(node_id, {}).get("Resources", {})
    current_ip = os.environ.get("VLLM_HOST_IP") or ray.util.get_node_ip_address()
    log(f"connected to Ray at {address}: {len(nodes)} nodes, "
        f"{ray.cluster_resources().get('GPU', 0):g} GPUs; driver node {current_ip}")
    if resources.get("GPU", 0) < 1:
        raise StandinError(
            f"Current node has no GPU available. current_node_resource={resources}. vLLM "
            f"engine cannot start without GPU. Make sure you have at least 1 GPU available "
            f"in a node current_node_id={node_id!r} current_ip={current_ip!r}.")
    if world * groups > ray.cluster_resources().get("GPU", 0):
        log("WARNING: The number of required GPUs exceeds the total number of available GPUs "
            "in the placement group.")

    specs = [{"GPU": 1.0} for _ in range(world)]
    pgs = []
    for g in range(groups):
        bundles = [dict(b) for b in specs]
        if g == 0:
            # As vLLM does: bundle 0 must sit on the driver's node (found by its IP).
            bundles[0][f"node:{current_ip}"] = 0.001
        pgs.append(placement_group(bundles, strategy="STRICT_PACK" if strict_pack else "PACK"))

    def waiting(elapsed: float) -> str:
        return (f"Waiting for creating a placement group of specs for {elapsed:.0f} seconds. "
                f"specs={specs}. Check `ray status` and `ray list nodes` to see if you have "
                "enough resources, and make sure the IP addresses used by ray cluster are the "
                "same as VLLM_HOST_IP environment variable specified in each node if you are "
                "running on a multi-node.")

    if not _wait_ready([pg.ready() for pg in pgs], timeout, waiting):
        for pg in pgs:
            remove_placement_group(pg)
        if world > 1:
            raise StandinError(
                f"Cannot provide a placement group requiring {float(world)} GPUs "
                f"(placement_group_specs={specs}) within {timeout:g} seconds.\n"
                "Tensor parallel size may exceed available GPUs in your cluster. Check "
                "resources with `ray status` and `ray list nodes`.")
        raise StandinError(
            f"Cannot provide a placement group of placement_group_specs={specs} within "
            f"{timeout:g} seconds. See `ray status` and `ray list nodes` to make sure the "
            "cluster has enough resources.")

    remote = ray.remote(_Member)
    actors, places = [], []
    for g, pg in enumerate(pgs):
        for i in range(world):
            strategy = PlacementGroupSchedulingStrategy(
                placement_group=pg, placement_group_bundle_index=i)
            actors.append(remote.options(num_cpus=0, num_gpus=1,
                                         scheduling_strategy=strategy).remote())
            places.append((g, i))
    refs = [a.info.remote() for a in actors]
    if not _wait_ready(refs, ACTOR_START_TIMEOUT, lambda _: None):
        raise StandinError(f"Ray workers did not start within {ACTOR_START_TIMEOUT:g} s")
    infos = ray.get(refs)
    node_ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
    members = [{"rank": k, **info, "ip": node_ips.get(info["node_id"]), "dp_rank": g,
                "bundle": i}
               for k, (info, (g, i)) in enumerate(zip(infos, places, strict=True))]
    return RayGroup(actors, members)
