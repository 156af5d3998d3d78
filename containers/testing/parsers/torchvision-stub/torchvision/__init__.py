"""STUB of torchvision for the parse-only SGLang venv (containers/testing/parsers/sglang-venv).

Not torchvision. SGLang 0.5.23 imports torchvision unguarded while resolving server arguments
(sglang/srt/configs/__init__.py -> nano_nemotron_vl.py -> multimodal/internvl_utils.py), and
PyPI's torchvision wheels do not load against torch 2.13.0+cpu ("operator torchvision::nms does
not exist"); no CPU build of the matching version is on PyPI. Parsing never calls it: every name
(and every submodule, e.g. torchvision.transforms.v2.functional) is a placeholder that raises
when called.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

__version__ = "0.0.0+slurmserve.stub"
STUB = True


class Placeholder:
    """Any attribute is another placeholder; calling one raises."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("torchvision is a stub in the parse-only SGLang venv")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return Placeholder()

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (Placeholder,)


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return Placeholder()


class _Submodules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves every torchvision.* submodule as a placeholder module."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if not fullname.startswith(__name__ + "."):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


if not any(isinstance(finder, _Submodules) for finder in sys.meta_path):
    sys.meta_path.append(_Submodules())
