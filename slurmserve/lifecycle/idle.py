"""--idle-timeout: a deployment that has served nothing for that long ends itself, so an idle
model does not hold its GPUs.

Activity is read from each endpoint's own metrics (metrics.py, by the engine's names): a request
running or waiting, or generated tokens counted since the last reading. An endpoint whose
metrics do not answer counts as busy: a job is never ended on what it could not see.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from .. import metrics
from .context import RunContext

CHECK_S = 5.0  # between readings; the timeout is met within this much


class IdleWatch:
    """Reads the endpoints every `check_s`; `idle_for()` is how long nothing happened."""

    def __init__(self, timeout: float, endpoints: Callable[[], Sequence[str]],
                 engine: str | None, api_key: str | None = None,
                 fetch: Callable[..., metrics.Load | None] = metrics.fetch,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.endpoints = endpoints
        self.engine = engine
        self.api_key = api_key
        self.fetch = fetch
        self.clock = clock
        self.last_active = clock()
        self.tokens: dict[str, float | None] = {}

    def observe(self) -> float:
        """One reading of every endpoint; returns the seconds since the last activity."""
        for endpoint in self.endpoints():
            load = self.fetch(endpoint, self.engine, self.api_key)
            if self._active(endpoint, load):
                self.last_active = self.clock()
        return self.clock() - self.last_active

    def _active(self, endpoint: str, load: metrics.Load | None) -> bool:
        if load is None:
            return True  # no answer: cannot tell, so not idle
        tokens = load.generation_tokens_total
        before = self.tokens.get(endpoint, tokens)
        self.tokens[endpoint] = tokens
        return bool(load.running) or bool(load.waiting) or tokens != before

    def start(self, ctx: RunContext, check_s: float = CHECK_S,
              on_idle: Callable[[str], None] | None = None) -> threading.Thread:
        """In the background until the run stops: ask it to stop once idle for `timeout`
        (`on_idle(reason)` first: a chain ends as a whole)."""

        def loop() -> None:
            while not ctx.stop.wait(check_s):
                if self.observe() >= self.timeout:
                    reason = f"idle for {self.timeout:g}s (--idle-timeout): no request served"
                    if on_idle is not None:
                        on_idle(reason)
                    ctx.request_stop(reason, announce=True)
                    return

        thread = threading.Thread(target=loop, daemon=True, name="idle-watch")
        thread.start()
        return thread
