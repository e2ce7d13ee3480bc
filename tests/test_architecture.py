"""docs/architecture.md names modules, files and definitions: each must exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "workflow" / "care"
LINK = re.compile(r"\[`?([^`\]]+)`?\]\((\.\./[^)#]+)\)")


def links() -> list[tuple[str, Path]]:
    text = DOC.read_text(encoding="utf-8")
    return [(label, (DOC.parent / target).resolve()) for label, target in LINK.findall(text)]


def defines(path: Path, name: str) -> bool:
    pattern = rf"^\s*(def|class) {name}\b|^\s*{name}\s*[:=]"
    return re.search(pattern, path.read_text(encoding="utf-8"), re.M) is not None


def stage_modules() -> list[str]:
    """The module column of the stage table: `sessions`, `train/`, `infer/lexical.py`, ..."""
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("| stage |") :].split("\n\n")[0].splitlines()
    return [m for row in table[2:] for m in re.findall(r"`([\w/.]+)`", row.split("|")[4])]


@pytest.mark.parametrize("label, path", links(), ids=[label for label, _ in links()])
def test_every_linked_path_exists(label, path):
    assert path.exists(), f"{label}: {path} is not there"


def test_every_linked_definition_exists():
    named = [
        (label, path)
        for label, path in links()
        if path.suffix == ".py"
        and re.fullmatch(r"\w+(\.\w+)+", label)
        and not label.endswith((".py", ".yaml"))
    ]
    assert named  # the doc names definitions: the check reads them
    missing = [label for label, path in named if not defines(path, label.split(".")[-1])]
    assert missing == []


def test_every_stage_module_exists():
    modules = stage_modules()
    assert "sessions" in modules and "train/" in modules
    missing = [
        m for m in modules if not (PACKAGE / m).exists() and not (PACKAGE / f"{m}.py").exists()
    ]
    assert missing == []
