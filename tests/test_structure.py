"""The package's structure: which layers may import which (function-local imports count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workflow" / "care"
DATA_MODULES = (
    "care.corpus",
    "care.corpus_text",
    "care.corpus_summary",
    "care.sessions",
    "care.folds",
    "care.instrument",
    "care.importer",
    "care.rationales",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The ``care`` modules a file imports, ``from care.x import y`` counted as ``care.x.y``
    where ``y`` is a module and as ``care.x`` otherwise."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "care"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "care":
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if within(name, "care")}


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


GRAPH = {
    module_name(p): {m for m in imports(p) if is_module(m)} for p in sorted(PACKAGE.rglob("*.py"))
}


def offenders(importers, imported: str) -> list[str]:
    return sorted(
        f"{name} imports {m}"
        for name, deps in GRAPH.items()
        if any(within(name, i) for i in importers)
        for m in deps
        if within(m, imported)
    )


@pytest.mark.parametrize(
    "importers, imported",
    [
        (["care.infer"], "care.train"),  # inference stands on care.model, not on training
        (["care.model"], "care.train"),  # the floor stands on nothing above it
        (["care.model"], "care.infer"),
        (["care.model"], "care.evaluate"),
        (DATA_MODULES, "care.evaluate"),  # data comes before evaluation
        (["care.runs"], "care.evaluate"),  # the run plan every rule file reads
        (["care.readme", "care.tableformat"], "care.evaluate"),
    ],
)
def test_layers_import_only_what_they_stand_on(importers, imported):
    assert offenders(importers, imported) == []


def test_the_graph_sees_function_local_imports():
    # the package imports heavy modules inside functions: the graph must count them
    assert "care.model.attention" in GRAPH["care.infer.hf"]
    assert "care.train.checkpoints" in GRAPH["care.train.trainer"]
