"""Helpers shared by unit tests (imported, not fixtures)."""

from __future__ import annotations

from pathlib import Path

from slurmserve.plan import Allocation, NodeInfo

UNIT = Path(__file__).resolve().parent
GOLDEN = UNIT / "golden"
DATA = UNIT / "data"


def allocation(nodes: int, job_id: str = "4242") -> Allocation:
    """Documentation addresses (RFC 5737): plain data, never contacted."""
    return Allocation(job_id=job_id, nodes=tuple(
        NodeInfo(name=f"gpu-{i + 1}", address=f"192.0.2.{i + 1}", ifname="ens5")
        for i in range(nodes)))
