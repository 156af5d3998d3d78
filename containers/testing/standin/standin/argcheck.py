"""The stand-ins' answer to slurmserve's argument check (the `slurmserve.argcheck` entry point).

STAND-IN, not the engines: each checks a command line with the stand-in's own parser, the same
spelling rules as for serving, so a flag the stand-in knows but misuses is rejected; flags it
does not know pass, as they pass when it serves.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Callable

from . import __version__, sglang_cli, trtllm_cli, vllm_cli


class _Check:
    def __init__(self, parser: Callable[[], argparse.ArgumentParser],
                 prepare: Callable[[list[str]], list[str]] = list) -> None:
        self.VERSION = f"{__version__}+standin"
        self._parser = parser
        self._prepare = prepare

    def check(self, argv: list[str]) -> str | None:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                self._parser().parse_known_args(self._prepare(list(argv)))
        except SystemExit:
            lines = err.getvalue().strip().splitlines()
            return lines[-1] if lines else "rejected"
        return None


VLLM = _Check(vllm_cli.parser)
SGLANG = _Check(sglang_cli.parser, sglang_cli.merge_config)
TRTLLM = _Check(trtllm_cli.parser)
