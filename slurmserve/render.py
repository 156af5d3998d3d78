"""Jinja rendering: StrictUndefined, and a `q` filter that shell-quotes every value."""

from __future__ import annotations

import shlex
import sys
from functools import lru_cache
from typing import Any


def shquote(value: Any) -> str:
    """Quote one value for bash; lists become space-separated quoted words."""
    if isinstance(value, (list, tuple)):
        return " ".join(shquote(v) for v in value)
    return shlex.quote(str(value))


def _bytecode_cache() -> Any:
    """Compiled templates kept between runs (checked against each template's source), so a
    run does not compile its dozen templates again; None where the cache cannot be written."""
    import os

    import jinja2

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = os.path.join(base, "slurmserve", f"templates-py{sys.version_info[0]}"
                             f"{sys.version_info[1]}-jinja{jinja2.__version__}")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(directory) if os.access(directory, os.W_OK) else None


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("slurmserve", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        bytecode_cache=_bytecode_cache(),
    )
    env.filters["q"] = shquote
    return env


def render_template(name: str, **context: Any) -> str:
    return _environment().get_template(name).render(**context)
