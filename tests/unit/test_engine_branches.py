"""The rule "engine-specific decisions live in slurmserve/engines/<name>.py" stays enforced."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import slurmserve
from slurmserve.engines import ENGINES

PACKAGE = Path(slurmserve.__file__).parent
#: Modules held to the rule: every module outside engines/ (the engines are where it lives) and
#: node/ (programs that run inside an engine's image, such as the per-engine argument check).
CHECKED = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.relative_to(PACKAGE).parts[0] not in ("engines", "node"))
def engine_branches(source: str) -> list[int]:
    """Lines that compare with an engine name or `engine`, or key a dict or match by engine name.

    `engine is None` (is an engine given at all) is no branch on its name.
    """
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and not _is_none_test(node):
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


def _is_none_test(node: ast.Compare) -> bool:
    return (all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops)
            and all(isinstance(c, ast.Constant) and c.value is None for c in node.comparators))


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
        'if ctx.engine is None or engine is not None:\n    pass\n'  # given or not: no branch
        'if ctx.engine in SEEDED_ENGINES:\n    pass\n'
        'h = {"vllm": ["vllm", "bench"], "sglang": []}\n'
        'if engine is None or ctx.engine != "sglang":\n    pass\n'
    )
    assert engine_branches(source) == [1, 3, 4, 5, 7, 12, 14, 15]


RUNTIME_CHECKED = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                         if p.relative_to(PACKAGE).parts[0] not in ("runtimes", "node"))


@pytest.mark.parametrize("module", RUNTIME_CHECKED)
def test_no_runtime_name_branches(module: str) -> None:
    """Runtime decisions live in slurmserve/runtimes/ (the same rule as for engines)."""
    from slurmserve.runtimes import RUNTIMES

    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    lines = sorted(n.lineno for n in ast.walk(tree) if isinstance(n, ast.Compare)
                   and {c.value for c in ast.walk(n) if isinstance(c, ast.Constant)}
                   & set(RUNTIMES))
    assert not lines, (f"{module} branches on a runtime name at line(s) {lines}: move the "
                       "decision into slurmserve/runtimes/<name>.py")
