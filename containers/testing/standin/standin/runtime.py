"""From a parsed command line (Launch) to a formed group and, on rank 0, a served API."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .common import (
    Faults,
    Lifecycle,
    StandinError,
    banner,
    env_float,
    log,
    member,
    node_name,
    primary_ip,
    resolve_model,
    selected_env,
)
from .rendezvous import Follower, Leader, RendezvousError
from .server import ApiServer, ServeConfig

DEFAULT_RDZV_TIMEOUT = 60.0


@dataclass(frozen=True)
class Rendezvous:
    """A TCP rendezvous: `total` ranks meet at host:port; this process holds `ranks`."""

    host: str
    port: int
    total: int
    ranks: list[int]
    workers_per_rank: int
    what: str  # "node_rank" or "dp_rank"


@dataclass(frozen=True)
class RayPlacement:
    world: int  # GPU bundles per placement group (TP*PP)
    groups: int  # placement groups (DP ranks placed by Ray)
    strict_pack: bool


@dataclass
class Launch:
    """Everything one stand-in process does, decided from argv and env without I/O."""

    engine: str
    model: str
    mode: str  # single | mp-multinode | dp-rpc | ray | multinode | mpi
    serve: bool  # this process serves the HTTP API
    rank: int  # node/MPI rank, for fault targeting and logs
    world_size: int  # GPU workers in the whole group
    workers_here: int  # GPU workers this process stands for
    parallel: dict[str, Any]
    host: str | None = None
    port: int = 8000
    served_names: list[str] = field(default_factory=list)
    api_key: str | None = None
    max_model_len: int = 4096
    default_max_tokens: int = 16
    metrics_enabled: bool = True
    unknown_args: list[str] = field(default_factory=list)
    extra_info: dict[str, Any] = field(default_factory=dict)
    rendezvous: Rendezvous | None = None
    ray: RayPlacement | None = None
    mpi: bool = False
    # For trtllm-llmapi-launch: a non-serve command rank 0 runs while workers wait.
    rank0_command: list[str] | None = None


def expand_members(participants: list[dict[str, Any]], per_rank: int,
                   what: str) -> list[dict[str, Any]]:
    """One member per GPU worker from rendezvous participants (each holds some ranks)."""
    members = []
    for p in participants:
        for r in p["ranks"]:
            for j in range(per_rank):
                members.append({"rank": r * per_rank + j, "host": p.get("host"), "ip": p["ip"],
                                "node": p.get("node"), what: r})
    return sorted(members, key=lambda m: m["rank"])


def _rendezvous(launch: Launch, life: Lifecycle) -> list[dict[str, Any]]:
    rz = launch.rendezvous
    assert rz is not None
    timeout = env_float("SLURMSERVE_STANDIN_RDZV_TIMEOUT", DEFAULT_RDZV_TIMEOUT)
    info = {"host": socket.gethostname(), "node": node_name(os.environ)}
    fingerprint = {"engine": launch.engine, "model": launch.model, "mode": launch.mode,
                   "world_size": launch.world_size, "total": rz.total}
    log(f"{rz.what} {rz.ranks}: rendezvous of {rz.total} at {rz.host}:{rz.port}")
    if 0 in rz.ranks:
        leader = Leader(rz.host, rz.port, rz.total, rz.ranks, info, fingerprint, timeout, rz.what)
        participants = leader.run()
        life.hooks.append(leader.shutdown)
        leader.watch(lambda lost: life.fail(f"{lost}; the group is broken, exiting"))
    else:
        follower = Follower(rz.host, rz.port, rz.ranks, info, fingerprint, timeout)
        participants = follower.run()
        life.hooks.append(follower.close)

        def gone(clean: bool) -> None:
            if clean:
                log("rank 0 shut down; exiting")
                life.exit(0)
            life.fail(f"lost connection to rank 0 at {rz.host}:{rz.port}; exiting")

        follower.watch(gone)
    return expand_members(participants, rz.workers_per_rank, rz.what)


def _ray(launch: Launch, life: Lifecycle) -> list[dict[str, Any]]:
    from .raygroup import form_group

    rp = launch.ray
    assert rp is not None
    timeout = env_float("VLLM_STANDIN_PG_TIMEOUT", 30.0)
    group = form_group(rp.world, rp.groups, rp.strict_pack, timeout, life.install)
    group.watch(lambda lost: life.fail(f"{lost}; the engine is dead, exiting"))
    return group.members


def _mpi(launch: Launch, life: Lifecycle) -> list[dict[str, Any]]:
    from .mpiworld import MpiWorld

    timeout = env_float("SLURMSERVE_STANDIN_RDZV_TIMEOUT", DEFAULT_RDZV_TIMEOUT)
    world = MpiWorld.join({"host": socket.gethostname(), "ip": primary_ip(),
                           "node": node_name(os.environ)}, timeout)
    life.install()  # MPI_Init may have replaced the handlers
    if launch.world_size and world.size != launch.world_size:
        raise StandinError(
            f"MPI world size ({world.size}) must equal tp_size * pp_size "
            f"({launch.world_size}): start {launch.world_size} MPI ranks, one per GPU")
    if world.rank != 0:
        log(f"MPI rank {world.rank}/{world.size}: worker, waiting for rank 0")
        world.wait_for_rank0()
        log("rank 0 finished; exiting")
        world.finalize()
        life.exit(0)

    def release() -> None:
        world.release_workers()
        world.finalize()

    life.hooks.append(release)
    return world.members


def form_group(launch: Launch, life: Lifecycle) -> list[dict[str, Any]]:
    if launch.rendezvous is not None:
        return _rendezvous(launch, life)
    if launch.ray is not None:
        return _ray(launch, life)
    if launch.mpi:
        return _mpi(launch, life)
    return [member(i) for i in range(launch.workers_here)]


def info_of(launch: Launch, argv: list[str], members: list[dict[str, Any]]) -> dict[str, Any]:
    return {"argv": argv, "env": selected_env(os.environ), "mode": launch.mode,
            "group": {"world_size": launch.world_size, "members": members},
            "parallel": launch.parallel, "unknown_args": launch.unknown_args,
            **launch.extra_info}


def _sleep(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(0.2, end - time.monotonic()))


def run(engine: str, argv: list[str], plan: Callable[[], Launch]) -> NoReturn:
    """Banner, plan, group, serve; never returns (exits through the Lifecycle)."""
    banner(engine)
    life = Lifecycle()
    life.install()
    try:
        launch = plan()
        if launch.model:  # every rank loads the weights: each resolves the model itself
            model_path = resolve_model(launch.model, os.environ)
            launch.extra_info["model_path"] = model_path
            if model_path is not None and model_path != launch.model:
                log(f"model {launch.model} resolved offline to {model_path}")
        faults = Faults.parse(os.environ.get("SLURMSERVE_STANDIN_FAULT", ""), launch.rank)
        if faults.exit_after is not None:
            life.start_exit_timer(faults.exit_after,
                                  f"fault exit-after={faults.exit_after:g}: rank {launch.rank} "
                                  "exits on purpose")
        log(f"{engine} stand-in, mode {launch.mode}, rank {launch.rank}, "
            f"world size {launch.world_size}, parallel {launch.parallel}")
        members = form_group(launch, life)
        log(f"group formed: {len(members)} workers on "
            f"{sorted({str(m.get('ip')) for m in members})}")
        if launch.rank0_command is not None:
            _run_command(launch.rank0_command, life)
        if not launch.serve:
            log("headless: not serving the API; waiting for rank 0")
            life.wait()
        if faults.slow_start:
            log(f"fault slow-start={faults.slow_start:g}: delaying the API")
            _sleep(faults.slow_start)
        config = ServeConfig(
            engine=engine, model=launch.model, served_names=launch.served_names,
            host=launch.host, port=launch.port, api_key=launch.api_key,
            max_model_len=launch.max_model_len, default_max_tokens=launch.default_max_tokens,
            metrics_enabled=launch.metrics_enabled, faults=faults,
            token_latency=env_float("SLURMSERVE_STANDIN_TOKEN_LATENCY", 0.0),
            max_seqs=int(env_float("SLURMSERVE_STANDIN_MAX_SEQS", 0)),
            info=info_of(launch, [sys.argv[0], *argv], members))
        server = ApiServer(config)
        host, port = server.start()
        log(f"Uvicorn running on http://{host}:{port} (Press CTRL+C to quit)")
        log("Application startup complete.")
    except (StandinError, RendezvousError, OSError) as e:
        life.fail(str(e))
    life.wait()


def _run_command(command: list[str], life: Lifecycle) -> NoReturn:
    """trtllm-llmapi-launch rank 0 with a command that is not trtllm-serve."""
    import subprocess

    log(f"rank 0 runs {command}")
    try:
        code = subprocess.call(command)
    except OSError as e:
        life.fail(f"cannot run {command[0]}: {e}")
    life.exit(code)
