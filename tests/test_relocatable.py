"""A finished workdir stays finished when it is copied or moved (no absolute rule paths)."""

from __future__ import annotations

import pytest

from .conftest import TINY_CONFIG as CONFIG
from .conftest import TINY_TARGETS, clone_workdir, copy_workflow, run_snakemake


@pytest.mark.slow
def test_copied_and_moved_workdir_has_nothing_to_do(tiny_finished, tmp_path):
    """Every stage up to a fine-tune's predictions (conftest.TINY_TARGETS) ran in one
    workdir; a copy of it elsewhere and a moved one have nothing to do."""
    work = clone_workdir(tiny_finished, tmp_path / "first" / "work")
    copy = clone_workdir(work, tmp_path / "elsewhere" / "copy")  # copy2: modification times kept
    moved = tmp_path / "moved"
    work.rename(moved)
    for where in (copy, moved):
        again = run_snakemake(where, "-n", *TINY_TARGETS, *CONFIG)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "Nothing to be done" in again.stdout + again.stderr, (
            f"{where.name}: {(again.stdout + again.stderr)[-3000:]}")


def test_no_absolute_path_reaches_a_rule(tmp_path):
    """A dry run of the whole tiny DAG names no path under the workdir (inputs, outputs,
    params in the shell commands)."""
    work = copy_workflow(tmp_path)
    proc = run_snakemake(work, "-n", "-p", "--forceall", *CONFIG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = proc.stdout.split("Building DAG of jobs...", 1)[-1]
    assert str(work) not in plan.replace(f"Working directory: {work}", "")
