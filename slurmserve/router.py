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
BACKOFF_MS = (200, 2000)  # first and longest wait between retries (the router doubles it)


def hold_retries(hold_s: float) -> int:
    """Retries whose backoff adds up to `hold_s`: with no replica in (a replacement starting),
    the router retries "no available workers" too, so a request waits instead of failing."""
    waited, wait, count = 0.0, BACKOFF_MS[0] / 1000, 0
    while waited < hold_s:
        waited += wait
        wait = min(wait * 2, BACKOFF_MS[1] / 1000)
        count += 1
    return max(count, RETRIES)


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
    retries: int = RETRIES
    python: str = sys.executable  # the router runs from this environment (shared with nodes)

    @classmethod
    def for_job(cls, job_id: str, head_address: str, route: str, bind: str = "0.0.0.0",
                hold_s: float = 0.0) -> RouterPlan:
        """On the job's port block; `hold_s`: how long a request may wait for a replica."""
        block = PortBlock.for_job(job_id)
        name, options = policy(route)
        return cls(head_address, block.at(PORT_OFFSET), block.at(METRICS_OFFSET), name, options,
                   bind, hold_retries(hold_s) if hold_s else RETRIES)

    @property
    def endpoint(self) -> str:
        return f"http://{host_port(self.host, self.port)}"

    @property
    def metrics(self) -> str:
        return f"http://{host_port(self.host, self.metrics_port)}/metrics"

    def _backoff(self) -> list[str]:
        if self.retries == RETRIES:
            return []  # the router's own backoff: a failover retry goes out at once
        return ["--retry-initial-backoff-ms", str(BACKOFF_MS[0]),
                "--retry-max-backoff-ms", str(BACKOFF_MS[1])]

    def argv(self) -> list[str]:
        """Started with no worker: replicas join when ready (Router.add)."""
        return [self.python, "-m", f"{PACKAGE}.launch_router", "--host", self.bind,
                "--port", str(self.port), "--policy", self.policy, *self.options,
                "--prometheus-host", self.bind, "--prometheus-port", str(self.metrics_port),
                "--retry-max-retries", str(self.retries), *self._backoff(),
                # Replicas join once ready; a join that outlives its replica must not linger.
                "--worker-startup-timeout-secs", str(JOIN_TIMEOUT_S), "--log-level", "warning"]
