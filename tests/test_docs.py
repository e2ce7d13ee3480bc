"""The front door: a short README whose links, and the docs' links, lead somewhere real."""

from __future__ import annotations

import re

import pytest

from .conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_the_readme_is_a_front_page():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "**Contents:**" in text


def test_the_readme_commands_are_what_ci_runs():
    """The test command's setup and checks, in .ci/run's order (CI runs the README's command)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    test_cmd = next(
        line
        for line in text.splitlines()
        if line.startswith("python3 -m venv") and "pytest" in line
    )
    steps = [s.strip() for s in test_cmd.split("&&")][2:]  # after the venv and its activation
    ci = (REPO / ".ci/run").read_text(encoding="utf-8")
    ci_steps = [
        line.replace("pip install -q", "pip install").replace("pytest -q", "pytest")
        for line in ci.splitlines()
    ]
    positions = [ci_steps.index(step) for step in steps]
    assert positions == sorted(positions)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        assert dest.exists(), f"{doc.name}: {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{doc.name}: {target}"
