"""Human progress on stderr: phase lines, and one live status line when stderr is a terminal."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Console:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.quiet = quiet
        self._live = False
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def _clear(self) -> None:
        if self._live:
            self.stream.write("\r\033[K")
            self._live = False

    def line(self, text: str) -> None:
        with self._lock:
            self._clear()
            self.stream.write(text + "\n")
            self.stream.flush()

    def phase(self, name: str, text: str) -> None:
        if not self.quiet:
            self.line(f"[{time.monotonic() - self._t0:6.1f}s] {name:<9} {text}")

    def status(self, text: str) -> None:
        """A live line, rewritten in place on a terminal; skipped when not a terminal."""
        if self.quiet or not self.tty:
            return
        with self._lock:
            self.stream.write(f"\r\033[K[{time.monotonic() - self._t0:6.1f}s] {text}")
            self.stream.flush()
            self._live = True

    def result(self, lines: list[str]) -> None:
        """What a script reads (the READY block): on stdout, whatever `quiet` says."""
        with self._lock:
            self._clear()
            for line in lines:
                print(line, flush=True)

    def error(self, text: str) -> None:
        self.line(f"slurmserve: error: {text}")
