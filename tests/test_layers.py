"""The layering rule of docs/architecture.md, enforced: a module imports only from its own layer or
below, and a pass never imports another pass. Imports are read with `ast` (lazy imports inside
functions count too), so nothing is executed."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgesparse"

# Bottom to top. A module's layer is that of the longest prefix listed here.
LAYERS: dict[str, int] = {
    "edgesparse": 5,                 # the package facade: edgesparse.build() wraps build_api lazily
    "edgesparse.errors": 0, "edgesparse.files": 0, "edgesparse._tf": 0,
    "edgesparse.pipeline": 1, "edgesparse.state": 1, "edgesparse.targets": 1, "edgesparse.data": 1,
    "edgesparse.graph": 2, "edgesparse.train": 2, "edgesparse.frontends": 2, "edgesparse.convert": 2,
    "edgesparse.runtime": 2, "edgesparse.checks": 2,
    "edgesparse.passes": 3,
    "edgesparse.recipe": 4, "edgesparse.build_api": 4, "edgesparse.search": 4,
    "edgesparse.profile": 4, "edgesparse.report": 4, "edgesparse.release": 4,
    "edgesparse.control": 4, "edgesparse.outdir": 4, "edgesparse.console": 4,
    "edgesparse.cli": 5,
}
NAMES = {0: "core", 1: "contracts", 2: "toolkits", 3: "passes", 4: "drivers", 5: "cli and facade"}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    return None


def pass_package(module: str) -> str | None:
    """`edgesparse.passes.prune.criteria` -> `edgesparse.passes.prune`: the unit a pass lives in."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[:2] == ["edgesparse", "passes"]:
        return ".".join(parts[:3])
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, imported module) for every edgesparse import, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            # `from edgesparse.passes import prune` imports the sub-module too.
            found += [(node.lineno, f"{base}.{a.name}" if layer_of(f"{base}.{a.name}") is not None
                       and f"{base}.{a.name}".startswith("edgesparse.") and _is_module(f"{base}.{a.name}")
                       else base) for a in node.names]
    return [(line, m) for line, m in found if m == "edgesparse" or m.startswith("edgesparse.")]


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    here = layer_of(module)
    if here is None:
        return [f"{module} has no layer: add it to LAYERS and docs/architecture.md"]
    found = []
    for line, imported in imports_of(source, module, is_package):
        # `from edgesparse import __version__`: the facade's plain attributes are core.
        there = 0 if imported == "edgesparse" else layer_of(imported)
        if there is None:
            found.append(f"{module}:{line} imports {imported}, which has no layer")
        elif there > here:
            found.append(f"{module}:{line} ({NAMES[here]}) imports {imported} ({NAMES[there]}): "
                         "an import from a lower layer up")
        mine, theirs = pass_package(module), pass_package(imported)
        if mine and theirs and mine != theirs:
            found.append(f"{module}:{line} imports {imported}: a pass imports another pass; "
                         "move what they share into a toolkit (graph/, train/, ...)")
    return found


def all_modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, module_name(path)


def test_every_module_respects_the_layers():
    problems = []
    for path, module in all_modules():
        problems += violations(path.read_text(), module, path.name == "__init__.py")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module,source,expect", [
    ("edgesparse.passes.prune.pass_", "from edgesparse.cli import app\n", "from a lower layer up"),
    ("edgesparse.passes.qat", "def f():\n    from edgesparse.passes.distill import x\n", "another pass"),
    ("edgesparse.graph.surgery", "from edgesparse.passes.prune.criteria import CRITERIA\n", "lower layer up"),
    ("edgesparse.pipeline", "from edgesparse import passes\n", "lower layer up"),
    ("edgesparse.passes.prune.allocation", "from . import criteria\nfrom ..sparsify import masks\n",
     "another pass"),
])
def test_the_rule_catches_upward_and_sideways_imports(module, source, expect):
    found = violations(source, module)
    assert found and expect in found[0], found


def test_the_rule_allows_downward_imports():
    assert violations("from edgesparse.graph.channels import ChannelGraph\n"
                      "from edgesparse.pipeline import Pass\n", "edgesparse.passes.prune.pass_") == []
