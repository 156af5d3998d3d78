"""The router in front of `--replicas N`: vllm-router as data (where it listens, its command
line). The watchdog drives its admin API (lifecycle/replicas.py).

Why vllm-router (PyPI `vllm-router`, a Rust binary in a wheel, from the vLLM project): it
forwards the OpenAI API to any OpenAI-compatible server (vLLM, SGLang and trtllm-serve alike, no
engine-specific probing of workers), retries a failed request on another worker, routes
round-robin, by prefix (cache-aware) or by load (the same, balance thresholds at zero), exports
Prometheus metrics, and adds or removes a worker synchronously (`POST /add_worker?url=`), so the watchdog
knows a replica is in or out when the call returns. sglang-router 0.3 queues those changes as
background jobs and probes SGLang-only endpoints on every worker it adds.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass

from .errors import SpecError
from .plan import PortBlock, host_port

PACKAGE = "vllm_router"
MARK_VAR = "SLURMSERVE_ROUTER"  # the router process's mark: the job ID (not the engines' mark)
INSTALL = "pip install 'slurmserve[router]' (the vllm-router wheel)"
# --route: our names -> the router's policy and its options. Least load is cache-aware with its
# balance thresholds at zero: each request goes to the replica with the fewest requests in
# flight through the router (ties by prefix match). Not power_of_two, which refuses to start
# with fewer than 2 workers (replicas join one by one), nor sticky_least_loaded, which sends
# identical requests to one replica whatever its load.
ROUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "round-robin": ("round_robin", ()),
    "least-load": ("cache_aware", ("--balance-abs-threshold", "0",
                                   "--balance-rel-threshold", "1.0")),
    "prefix": ("cache_aware", ()),
    "random": ("random", ()),
    "consistent-hash": ("consistent_hash", ()),
}
OWN_POLICIES = ("round_robin", "cache_aware", "consistent_hash")  # taken as they are
ROUTE_CHOICES = (*ROUTES, *OWN_POLICIES)
DEFAULT_ROUTE = "prefix"  # the router's own default: cache-aware, balanced under skewed load
PORT_OFFSET = 20  # in the job's port block (plan.PortBlock), on the job's first node
METRICS_OFFSET = 21
RETRIES = 3  # a request that fails on one replica is retried on another
JOIN_TIMEOUT_S = 10  # how long the router waits for a joining replica's /health


def policy(route: str) -> tuple[str, tuple[str, ...]]:
    """The router's policy and options for a --route value (ours or its own name)."""
    return ROUTES.get(route, (route, ()))


def require_installed() -> None:
    if importlib.util.find_spec(PACKAGE) is None:
        raise SpecError("--replicas", "needs the router, which is not installed here", INSTALL)


@dataclass(frozen=True)
class RouterPlan:
    """Where the router listens and how it starts (one task on the job's first node)."""

    host: str  # the first node's address: what the endpoint names
    port: int
    metrics_port: int
    policy: str
    options: tuple[str, ...] = ()  # the policy's own
    bind: str = "0.0.0.0"  # as the engines bind (--host)
    python: str = sys.executable  # the router runs from this environment (shared with nodes)

    @classmethod
    def for_job(cls, job_id: str, head_address: str, route: str, bind: str = "0.0.0.0"
                ) -> RouterPlan:
        block = PortBlock.for_job(job_id)
        name, options = policy(route)
        return cls(head_address, block.at(PORT_OFFSET), block.at(METRICS_OFFSET), name, options,
                   bind)

    @property
    def endpoint(self) -> str:
        return f"http://{host_port(self.host, self.port)}"

    @property
    def metrics(self) -> str:
        return f"http://{host_port(self.host, self.metrics_port)}/metrics"

    def argv(self) -> list[str]:
        """Started with no worker: replicas join when ready (Router.add)."""
        return [self.python, "-m", f"{PACKAGE}.launch_router", "--host", self.bind,
                "--port", str(self.port), "--policy", self.policy, *self.options,
                "--prometheus-host", self.bind, "--prometheus-port", str(self.metrics_port),
                "--retry-max-retries", str(RETRIES),
                # Replicas join once ready; a join that outlives its replica must not linger.
                "--worker-startup-timeout-secs", str(JOIN_TIMEOUT_S), "--log-level", "warning"]
