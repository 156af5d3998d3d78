"""The MPI world of TensorRT-LLM's launch, for real (mpi4py, imported lazily).

Only non-blocking MPI calls polled with short sleeps are used, so signals are handled
promptly and idle workers do not spin a CPU core.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .common import StandinError

MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE")
TAG_INFO, TAG_STOP = 11, 12
POLL = 0.05


def in_mpi_world(environ: Mapping[str, str]) -> bool:
    """Started by mpirun/srun --mpi=...: importing mpi4py then joins that world."""
    return any(name in environ for name in MPI_ENV)


def launch_rank(environ: Mapping[str, str]) -> int:
    """The rank trtllm-llmapi-launch would see, before MPI is initialised."""
    for name in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"):
        if name in environ:
            return int(environ[name])
    return 0


def _poll(request: Any, deadline: float | None) -> Any:
    while True:
        done, value = request.test()
        if done:
            return value
        if deadline is not None and time.monotonic() > deadline:
            raise StandinError("MPI peer did not answer in time")
        time.sleep(POLL)


@dataclass
class MpiWorld:
    rank: int
    size: int
    comm: Any
    members: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def join(cls, info: dict[str, Any], timeout: float) -> MpiWorld:
        """Join COMM_WORLD; rank 0 gathers every rank's info (rank order)."""
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise StandinError(f"mpi4py is not installed: {e}") from e
        comm = MPI.COMM_WORLD
        world = cls(comm.Get_rank(), comm.Get_size(), comm)
        mine = {**info, "rank": world.rank}
        if world.rank == 0:
            deadline = time.monotonic() + timeout
            requests = [comm.irecv(source=r, tag=TAG_INFO) for r in range(1, world.size)]
            world.members = [mine] + [_poll(r, deadline) for r in requests]
        else:
            _poll(comm.isend(mine, dest=0, tag=TAG_INFO), None)
        return world

    def release_workers(self) -> None:
        """Rank 0: tell every worker to finish."""
        requests = [self.comm.isend("stop", dest=r, tag=TAG_STOP) for r in range(1, self.size)]
        deadline = time.monotonic() + 0.5
        for r in requests:
            try:
                _poll(r, deadline)
            except StandinError:
                break

    def wait_for_rank0(self) -> None:
        """Workers: block (politely) until rank 0 says stop."""
        _poll(self.comm.irecv(source=0, tag=TAG_STOP), None)

    def finalize(self, wait: float = 0.5) -> None:
        from mpi4py import MPI

        t = threading.Thread(target=MPI.Finalize, daemon=True)
        t.start()
        t.join(wait)
