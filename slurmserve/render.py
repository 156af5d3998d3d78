"""Jinja rendering: StrictUndefined, and a `q` filter that shell-quotes every value."""

from __future__ import annotations

import shlex
from functools import lru_cache
from typing import Any


def shquote(value: Any) -> str:
    """Quote one value for bash; lists become space-separated quoted words."""
    if isinstance(value, (list, tuple)):
        return " ".join(shquote(v) for v in value)
    return shlex.quote(str(value))


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
    )
    env.filters["q"] = shquote
    return env


def render_template(name: str, **context: Any) -> str:
    return _environment().get_template(name).render(**context)
