"""What the nodes' logs say about the fabric: notes and warnings, never a failure.

Failure is a process exiting (driver.py); log lines only inform. NCCL names the transport it
picked at init (with NCCL_DEBUG=INFO, which the runtime sets when RDMA is expected), so a job
that silently fell back to TCP sockets (field failure 4) is flagged while it starts, and the
NCCL version is logged next to the startup stage (field failure 11).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_VERSION = re.compile(r"NCCL INFO NCCL version (\S+)")
_NETWORK = re.compile(r"NCCL INFO (?:Using network (\S+(?: \S+)?)|NET/(\w+) ?: Using)")


@dataclass
class LogWatch:
    """Feed it one node's log lines; it returns the messages worth printing, each once."""

    host: str
    rdma_expected: bool
    said: set[str] = field(default_factory=set)

    def feed(self, line: str) -> list[str]:
        out: list[str] = []
        version = _VERSION.search(line)
        if version:
            out.append(f"node {self.host}: NCCL {version[1]}")
        network = _NETWORK.search(line)
        if network:
            transport = network[1] or network[2]
            if transport == "Socket" and self.rdma_expected:
                out.append(f"warning: node {self.host}: NCCL is using TCP sockets (NET/Socket) "
                           "although RDMA devices were expected: the image lacks the EFA/IB "
                           "user-space libraries or NCCL plugin; expect a fraction of the "
                           "bandwidth (use an image with aws-ofi-nccl/rdma-core, or --fabric tcp "
                           "to accept it)")
            elif transport != "Socket":
                out.append(f"node {self.host}: NCCL network {transport}")
        fresh = [m for m in out if m not in self.said]
        self.said.update(fresh)
        return fresh
