"""The arrows of docs/architecture.rst stay true: who may import whom, who starts processes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import slurmserve

PACKAGE = Path(slurmserve.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))

#: Deciding what runs where is pure: no process, no SLURM, no lifecycle, no tools or front ends.
DECIDE = ("engines", "runtimes", "router", "plan", "spec", "envfile", "render", "images")
ACT = ("runner", "slurm", "lifecycle", "metrics", "chain")
FRONT = ("api", "cli", "client", "remote", "tools", "__main__")
#: The CLI parses and prints; everything it does goes through these.
CLI_MAY_IMPORT = {"api", "client", "errors", "cli"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["slurmserve", *parts])


def imports(path: Path) -> set[str]:
    """Absolute names of the slurmserve modules (or module.member) a file imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found |= {f"{module}.{a.name}" for a in node.names}
            if module != "slurmserve":  # `from slurmserve import api` imports slurmserve.api
                found.add(module)
    return {m for m in found if m.startswith("slurmserve")}


def top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def in_layer(path: Path, layer: tuple[str, ...]) -> bool:
    return top(module_name(path)) in layer


def starts_processes(path: Path) -> list[int]:
    """Lines importing subprocess or calling os.exec*/os.spawn*/os.system/os.popen."""
    def hit(node: ast.AST) -> bool:
        if isinstance(node, ast.Import):
            return any(a.name == "subprocess" for a in node.names)
        if isinstance(node, ast.ImportFrom):
            return node.module == "subprocess"
        return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "os"
                and node.attr.startswith(("exec", "spawn", "system", "popen", "fork")))

    return [node.lineno for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if hit(node)]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_runner_starts_processes(path: Path) -> None:
    if module_name(path) == "slurmserve.runner":
        return
    assert not starts_processes(path), f"{path.name}: start processes through slurmserve.runner"


@pytest.mark.parametrize("path", [p for p in MODULES if in_layer(p, DECIDE)],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_deciding_imports_no_acting_or_front_end(path: Path) -> None:
    bad = sorted(m for m in imports(path) if top(m) in ACT + FRONT)
    assert not bad, f"{path.name} decides what runs where and must not import {bad}"


@pytest.mark.parametrize("path", [p for p in MODULES if in_layer(p, ACT)],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_acting_imports_no_front_end(path: Path) -> None:
    bad = sorted(m for m in imports(path) if top(m) in FRONT)
    assert not bad, f"{path.name} runs the job and must not import {bad}"


@pytest.mark.parametrize("path", [p for p in MODULES if in_layer(p, ("cli",))],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_cli_imports_only_the_api(path: Path) -> None:
    bad = sorted(m for m in imports(path) if top(m) not in CLI_MAY_IMPORT)
    assert not bad, f"{path.name}: the CLI goes through slurmserve.api, not {bad}"


def test_the_rules_see_every_module() -> None:
    layers = DECIDE + ACT + FRONT + ("errors", "state", "console", "apikey", "node", "data",
                                     "templates", "")
    unplaced = [module_name(p) for p in MODULES if top(module_name(p)) not in layers]
    assert not unplaced, f"place these modules in a layer of test_layers.py: {unplaced}"
