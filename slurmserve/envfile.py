"""Env files as docker reads them (`--env-file`): KEY=VALUE lines, taken literally.

The spec check, the vLLM engine and the launch all ask; the file is read once while it stays
the same (same size and modification time).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

from .errors import SpecError

KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def lines(path: str) -> tuple[str, ...]:
    """Lines as docker reads an env file: split at \\n only (a value may hold U+2028 or \\f)."""
    stat = os.stat(path)
    return _read(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    with open(path, encoding="utf-8", newline="") as fh:
        return tuple(line.removesuffix("\r") for line in fh.read().split("\n"))


def check(path: str) -> None:
    """Refuse a file docker would misread; never shows a line (it may hold a secret)."""
    try:
        text = lines(path)
    except OSError as exc:
        raise SpecError("--env-file", f"cannot read {path}: {exc.strerror}", "check the path") from None
    except UnicodeDecodeError as exc:
        raise SpecError("--env-file", f"{path} is not UTF-8 text (byte {exc.start})",
                        "save it as UTF-8") from None
    for number, line in enumerate(text, 1):
        stripped = line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        key = stripped.split("=", 1)[0]
        if key.startswith("export "):
            raise SpecError("--env-file", f"{path} line {number} starts with `export`",
                            "write plain KEY=VALUE lines, as docker reads them")
        if "=" not in stripped or not KEY.match(key):
            raise SpecError("--env-file", f"{path} line {number} is not KEY=VALUE",
                            "fix or remove that line")
        if "\x00" in stripped:
            raise SpecError("--env-file", f"{path} line {number} holds a NUL byte", "remove it")


def pairs(path: str) -> list[tuple[str, str]]:
    """KEY=VALUE pairs of an env file (already checked by `check`)."""
    out = []
    for line in lines(path):
        stripped = line.strip(" \t")
        if stripped and not stripped.startswith("#"):
            key, value = stripped.split("=", 1)
            out.append((key, value))
    return out
