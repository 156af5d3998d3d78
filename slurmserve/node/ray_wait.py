"""The Ray head's readiness: `has-client` and `wait NODES GPUS TIMEOUT ADDRESS...`.

`has-client` exits 0 when ray[client] is installed (Ray then starts a client server on 10001
unless told a port, so the head script keeps it inside the job's block; without grpc, passing
the port fails `ray start`). `wait` returns once Ray lists every expected
node (by IP) and at least GPUS GPUs; it fails at once when a node joins from an address not in
the plan (it picked another interface), and after TIMEOUT seconds otherwise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

POLL_S = 0.2


def has_client() -> bool:
    """Whether Ray's client server can start: Ray 2.60's own probe, else grpc importable."""
    try:
        import ray._private.utils as utils
    except ImportError:
        return False
    probe = getattr(utils, "get_ray_client_dependency_error", None)
    if probe is not None:
        return probe() is None  # None: the dependencies import
    try:
        import grpc  # noqa: F401  (what ray[client] adds)
    except ImportError:
        return False
    return True


def wait(ray: Any, nodes: int, gpus: float, timeout: float, expected: set[str],
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> str:
    """Poll `ray` until the cluster is complete; the ready line, or SystemExit with the reason."""
    ray.init(address="auto", logging_level="ERROR")
    deadline = clock() + timeout
    try:
        while True:
            alive = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
            have = ray.cluster_resources().get("GPU", 0)
            if alive >= expected and have >= gpus:
                return f"slurmserve: Ray cluster ready: {len(alive)} nodes, {have:g} GPUs"
            stray = alive - expected
            if stray:
                raise SystemExit(f"slurmserve: Ray nodes joined from unexpected addresses "
                                 f"{sorted(stray)}; a node picked another interface (set its "
                                 "fabric IP)")
            if clock() > deadline:
                raise SystemExit(f"slurmserve: Ray has {sorted(alive)} and {have:g} GPUs after "
                                 f"{timeout:g}s, expected {sorted(expected)} and {gpus:g} GPUs")
            sleep(POLL_S)
    finally:
        ray.shutdown()


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["has-client"]:
        return 0 if has_client() else 1
    if argv[:1] == ["wait"] and len(argv) >= 5:
        import ray

        nodes, gpus, timeout = int(argv[1]), float(argv[2]), float(argv[3])
        print(wait(ray, nodes, gpus, timeout, set(argv[4:])), flush=True)
        return 0
    print("usage: ray_wait.py has-client | wait NODES GPUS TIMEOUT ADDRESS...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
