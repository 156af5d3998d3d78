"""The rule "engine-specific decisions live in slurmserve/engines/<name>.py" stays enforced."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import slurmserve
from slurmserve import engines
from slurmserve.spec import ENGINES

PACKAGE = Path(slurmserve.__file__).parent
#: Modules held to the rule. apicheck.py and bench.py still branch on engine names.
CHECKED = ("configurator.py",)
#: What configurator.py asks every engine module (see engines/__init__.py).
ADVICE = ("LABEL", "VENDORS", "SERVED_NAME", "PREFIX_CACHE", "ROUTER", "tuning_args",
          "parallel_advice", "spec_data_parallel", "data_parallel_notes")


def engine_branches(source: str) -> list[int]:
    """Lines that compare with an engine name or `engine`, or key a dict or match by engine name."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            parts = list(ast.walk(node))
            literals = {n.value for n in parts if isinstance(n, ast.Constant)}
            names = {n.id for n in parts if isinstance(n, ast.Name)}
            names |= {n.attr for n in parts if isinstance(n, ast.Attribute)}
            if literals & set(ENGINES) or "engine" in names:
                hits.append(node.lineno)
        elif isinstance(node, ast.Dict):
            if any(isinstance(k, ast.Constant) and k.value in ENGINES for k in node.keys):
                hits.append(node.lineno)
        elif (isinstance(node, ast.MatchValue) and isinstance(node.value, ast.Constant)
              and node.value.value in ENGINES):
            hits.append(node.lineno)
    return sorted(hits)


@pytest.mark.parametrize("module", CHECKED)
def test_no_engine_name_branches(module: str) -> None:
    lines = engine_branches((PACKAGE / module).read_text(encoding="utf-8"))
    assert not lines, (f"{module} branches on the engine name at line(s) {lines}: move the "
                       "decision into slurmserve/engines/<name>.py and call it via engines.get()")


def test_detector_catches_the_old_patterns() -> None:
    source = (
        'if engine == "vllm":\n    pass\n'
        'x = "sgl-router" if req.engine == "sglang" else "a router"\n'
        'y = {"trtllm": 1}[name]\n'
        'z = name in ("vllm", "sglang")\n'
        'match name:\n    case "trtllm":\n        pass\n'
        'default = "vllm"\n'  # a default value is not a branch
    )
    assert engine_branches(source) == [1, 3, 4, 5, 7]


@pytest.mark.parametrize("name", ENGINES)
def test_engines_export_the_same_advice(name: str) -> None:
    module = engines.get(name)
    missing = [attr for attr in ADVICE if not hasattr(module, attr)]
    assert not missing, f"engines/{name}.py lacks {missing}"
    args, notes = module.tuning_args(4096, 32, None, False)
    assert str(4096) in args and str(32) in args and isinstance(notes, list)
    ep, _, _ = module.parallel_advice(1, 1, 8, False, 0, False)
    assert ep == 1
    assert 1 <= module.spec_data_parallel(4, 2) <= 4
