"""Programs slurmserve runs inside the engine containers, shipped as files (not in templates).

They run under the image's python3 with only the standard library and the engine's packages,
so they import nothing from slurmserve.
"""

from __future__ import annotations

from importlib import resources


def read(name: str) -> str:
    """The text of the node program `name` (e.g. "ray_wait.py")."""
    if name.startswith("_") or not name.endswith(".py") or "/" in name:
        raise ValueError(f"{name!r} is not a node program")
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
