"""Pieces shared by the stand-in engines: banner, env capture, faults, lifecycle."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

ENGINE_TITLES = {"vllm": "vLLM", "sglang": "SGLang", "trtllm": "TensorRT-LLM"}

ENV_PREFIXES = (
    "SLURMSERVE_", "VLLM_", "NCCL_", "GLOO_", "TP_SOCKET", "HF_HUB_OFFLINE", "HF_HOME",
    "TRANSFORMERS_OFFLINE", "RAY_", "SGLANG_", "TRTLLM_", "TLLM_", "OMPI_COMM_WORLD_",
    "PMIX_RANK", "PMI_", "SLURM_", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
    "MASTER_ADDR", "MASTER_PORT", "FI_", "UCX_", "OPENAI_",
)
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
REDACTED = "<redacted>"
DEFAULT_GPUS_PER_NODE = 8


class StandinError(Exception):
    """A failure the stand-in reports like the real engine would, then exits non-zero."""


def log(message: str) -> None:
    print(f"[standin] {message}", flush=True)


def banner(engine: str) -> None:
    print(f"STAND-IN ENGINE for tests: not {ENGINE_TITLES[engine]}", flush=True)


def selected_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Env vars tests may assert on; secret-looking ones appear by name only."""
    out: dict[str, str] = {}
    for name in sorted(environ):
        if SECRET_NAME.search(name):
            out[name] = REDACTED
        elif name.startswith(ENV_PREFIXES):
            out[name] = environ[name]
    return out


def is_local_model(model: str) -> bool:
    """A path (as slurmserve decides: path-shaped), or an existing file or directory."""
    return model.startswith(("/", "./", "../")) or os.path.exists(model)


def hub_offline(environ: Mapping[str, str]) -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it."""
    return environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_model(model: str, environ: Mapping[str, str],
                  snapshot: Callable[..., str] | None = None) -> str | None:
    """Where an engine would load MODEL from; None when the stand-in does not look it up.

    A local path is used as given (not checked: the stand-in loads no weights). A hub ID under
    HF_HUB_OFFLINE=1 must be complete in the Hugging Face cache (HF_HOME), as the real engines
    need it offline, else StandinError. A hub ID online is only served by name: the stand-in
    never downloads. `snapshot` replaces huggingface_hub.snapshot_download in unit tests.
    """
    if is_local_model(model):
        return model
    if not hub_offline(environ):
        return None
    if snapshot is None:
        try:
            from huggingface_hub import snapshot_download as snapshot
        except ImportError as e:
            raise StandinError(f"cannot resolve {model} offline: {e}") from None
    try:
        return snapshot(model, local_files_only=True)
    except Exception as e:  # whatever huggingface_hub raises, the engine dies with it
        first = (str(e).splitlines() or [""])[0]
        raise StandinError(f"cannot load {model}: not a local path, HF_HUB_OFFLINE=1 and not in "
                           f"the Hugging Face cache under HF_HOME="
                           f"{environ.get('HF_HOME', '~/.cache/huggingface')} "
                           f"({type(e).__name__}: {first})") from None


def local_gpus(environ: Mapping[str, str]) -> int:
    """GPUs this node declares: SLURMSERVE_STANDIN_GPUS, else CUDA_VISIBLE_DEVICES, else 8."""
    if "SLURMSERVE_STANDIN_GPUS" in environ:
        return int(environ["SLURMSERVE_STANDIN_GPUS"])
    for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        value = environ.get(name)
        if value is not None and value not in ("all", "void"):
            return len([d for d in value.split(",") if d.strip()])
    return DEFAULT_GPUS_PER_NODE


def node_name(environ: Mapping[str, str]) -> str:
    return (environ.get("SLURMSERVE_NODE_NAME") or environ.get("SLURMD_NODENAME")
            or socket.gethostname())


def local_ipv4() -> list[str]:
    """Non-loopback IPv4 addresses of this network namespace, by interface order."""
    addrs: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            if name == "lo":
                continue
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915,  # SIOCGIFADDR
                                     struct.pack("256s", name[:15].encode()))
            except OSError:
                continue
            addrs.append(socket.inet_ntoa(packed[20:24]))
    return addrs


def primary_ip() -> str:
    addrs = local_ipv4()
    return addrs[0] if addrs else "127.0.0.1"


def member(rank: int, **extra: Any) -> dict[str, Any]:
    """One GPU worker of a group, as reported in /standin/info."""
    return {"rank": rank, "host": socket.gethostname(), "ip": primary_ip(),
            "node": node_name(os.environ), **extra}


@dataclass(frozen=True)
class Faults:
    """Fault modes from SLURMSERVE_STANDIN_FAULT (comma list; `NAME[=VALUE][@RANK]`)."""

    break_streaming: bool = False
    hang_generation: bool = False
    no_metrics: bool = False
    exit_after: float | None = None
    slow_start: float | None = None

    @classmethod
    def parse(cls, spec: str, rank: int = 0) -> Faults:
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            body, _, only_rank = item.partition("@")
            if only_rank and int(only_rank) != rank:
                continue
            name, has_value, value = body.partition("=")
            key = name.replace("-", "_")
            if key in ("break_streaming", "hang_generation", "no_metrics") and not has_value:
                values[key] = True
            elif key in ("exit_after", "slow_start") and has_value:
                values[key] = float(value)
            else:
                raise StandinError(f"unknown SLURMSERVE_STANDIN_FAULT item {item!r}")
        return cls(**values)


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass
class Lifecycle:
    """Process-wide stop handling: SIGTERM/SIGINT exit within ~1 s, failures exit 1."""

    hooks: list[Callable[[], None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _exiting: threading.Lock = field(default_factory=threading.Lock)

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._exiting.locked():
            return  # a second signal while exiting: let the first exit finish
        log(f"received {signal.Signals(signum).name}, shutting down")
        self.exit(0)

    def start_exit_timer(self, seconds: float, message: str) -> None:
        def fire() -> None:
            if not self.stop.wait(seconds):
                self.fail(message)

        threading.Thread(target=fire, daemon=True, name="exit-after").start()

    def fail(self, message: str) -> NoReturn:
        print(f"ERROR: {message}", file=sys.stderr, flush=True)
        self.exit(1)

    def exit(self, code: int) -> NoReturn:
        if not self._exiting.acquire(blocking=False):
            # Another thread is already exiting; let it finish.
            while True:
                time.sleep(1)
        self.stop.set()
        # Hooks get at most ~0.8 s; a stuck hook must not delay the exit.
        runner = threading.Thread(target=self._run_hooks, daemon=True)
        runner.start()
        runner.join(0.8)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def _run_hooks(self) -> None:
        for hook in reversed(self.hooks):
            with contextlib.suppress(Exception):
                hook()

    def wait(self) -> NoReturn:
        """Block the main thread (signals still handled) until something exits."""
        while True:
            self.stop.wait(0.5)
            if self.stop.is_set():
                while True:
                    time.sleep(1)
