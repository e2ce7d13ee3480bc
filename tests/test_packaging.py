"""Package data: the files the workflow reads are the files an installed `care` loads."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch

from care.resources import KINDS, resource_path

from .conftest import REPO


def test_resources_are_the_workflow_files():
    for kind in KINDS:
        shipped = resource_path(kind)
        assert shipped.resolve() == (REPO / "workflow" / kind).resolve(), kind
        assert any(shipped.iterdir()), kind


def test_every_shipped_file_is_declared_as_package_data():
    """A file in a resource directory that no package-data pattern names is not in the wheel."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]
    patterns = setuptools["package-data"]["care.resources"]
    for kind in KINDS:
        for path in (REPO / "workflow" / kind).rglob("*"):
            if path.is_file():
                name = path.relative_to(REPO / "workflow").as_posix()
                assert any(fnmatch(name, p) for p in patterns), f"{name} is not package data"
    templates = setuptools["package-data"]["care.apply"]
    for path in (REPO / "workflow/care/apply/templates").iterdir():
        assert any(fnmatch(f"templates/{path.name}", p) for p in templates), path.name
