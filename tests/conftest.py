"""Shared fixtures: the default instrument and small demo corpora written to tmp dirs."""

from __future__ import annotations

from pathlib import Path

import pytest
from care.corpus import CorpusSpec, generate
from care.instrument import load_instrument
from care.io import write_jsonl

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def instrument():
    return load_instrument()


@pytest.fixture(scope="session")
def small_spec() -> CorpusSpec:
    return CorpusSpec(n_clients=8, sessions_per_client=(2, 3), n_counselors=3,
                      turns_per_session=(8, 10), seed=11)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, instrument, small_spec):
    """(sessions.jsonl path, session records, reference rationale records)."""
    records, refs = generate(small_spec, instrument)
    path = tmp_path_factory.mktemp("corpus") / "sessions.jsonl"
    write_jsonl(path, records)
    return path, records, refs


def copy_workflow(dest: Path) -> Path:
    """A fresh working copy of the workflow (no results) to run Snakemake in."""
    import shutil

    ignore = shutil.ignore_patterns("results", ".snakemake", "logs", "benchmarks", "__pycache__",
                                    ".venv", ".git", "*.egg-info", ".pytest_cache", ".ruff_cache")
    for name in ("Snakefile", "config.yaml", "workflow", "profiles", ".test", "envs", "configs"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def run_snakemake(workdir: Path, *args: str, timeout: int = 900):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
