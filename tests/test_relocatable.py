"""A finished workdir stays finished when it is copied or moved (no absolute rule paths)."""

from __future__ import annotations

import shutil

import pytest

from .conftest import copy_workflow, run_snakemake

# Every stage up to a fine-tune's predictions: data, drafting (prompt inputs), the expert
# round trip, a tiny backbone, one fine-tune and its inference, the human baseline.
TARGETS = [
    "results/table1.csv",
    "results/rationale_stats.csv",
    "results/predictions/llama/score_only/fold1.parquet",
    "results/predictions/counselor/human/fold1.parquet",
]
CONFIG = ["--configfile", ".test/config.yaml"]


@pytest.mark.slow
def test_copied_and_moved_workdir_has_nothing_to_do(tmp_path):
    (tmp_path / "first").mkdir()
    work = copy_workflow(tmp_path / "first")
    done = run_snakemake(work, *TARGETS, *CONFIG)
    assert done.returncode == 0, done.stderr[-4000:]

    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(work, copy, symlinks=True)  # copy2: modification times kept
    moved = tmp_path / "moved"
    work.rename(moved)
    for where in (copy, moved):
        again = run_snakemake(where, "-n", *TARGETS, *CONFIG)
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
