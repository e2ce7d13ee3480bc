"""Outputs derived from transcripts are not readable by other users (care.io.restrict_umask)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from care.io import DEFAULT_UMASK, parse_umask, restrict_umask, write_table

from .conftest import TINY_CONFIG, copy_workflow, run_snakemake


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    """The usual umask, which leaves new files world-readable; restored afterwards."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_parse_umask():
    assert parse_umask("0027") == parse_umask("027") == parse_umask(0o27) == 0o027
    assert parse_umask(DEFAULT_UMASK) == 0o027
    for bad in ("", "0089", "rw-r-----", "12345", -1, 0o1000):
        with pytest.raises(ValueError, match="not an octal umask"):
            parse_umask(bad)


def test_restriction_only_takes_permissions_away(umask_022, monkeypatch):
    monkeypatch.delenv("CARE_UMASK", raising=False)
    assert restrict_umask() == 0o027  # the default
    os.umask(0o077)  # a stricter umask of the user's stays
    assert restrict_umask("0022") == 0o077
    os.umask(0o022)
    monkeypatch.setenv("CARE_UMASK", "0007")
    assert restrict_umask() == 0o027  # 022 | 007


def test_atomic_writes_and_new_directories_follow_it(umask_022, tmp_path):
    import pandas as pd

    restrict_umask("0027")
    write_table(tmp_path / "new" / "scores.parquet", pd.DataFrame({"a": [1]}))
    assert mode(tmp_path / "new") == 0o750
    assert mode(tmp_path / "new" / "scores.parquet") == 0o640


def care(args: list[str], env_umask: str | None, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CARE_UMASK"}
    if env_umask is not None:
        env["CARE_UMASK"] = env_umask
    return subprocess.run(
        [sys.executable, "-m", "care.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(0o022),
    )


@pytest.mark.parametrize(
    ("env_umask", "file_mode", "dir_mode"),
    [(None, 0o640, 0o750), ("0077", 0o600, 0o700), ("0022", 0o644, 0o755)],
)
def test_care_commands_write_private_outputs_by_default(
    small_corpus, instrument, tmp_path, env_umask, file_mode, dir_mode
):
    out = tmp_path / "results" / "data" / "sessions.tsv"
    args = ["data", "validate", "--sessions", str(small_corpus[0]), "--instrument", instrument.path]
    proc = care([*args, "--out", str(out)], env_umask, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert mode(out) == file_mode
    assert mode(out.parent) == mode(out.parent.parent) == dir_mode


def test_a_bad_umask_is_one_line(small_corpus, instrument, tmp_path):
    args = ["data", "validate", "--sessions", str(small_corpus[0]), "--instrument", instrument.path]
    proc = care(args, "world", tmp_path)
    assert proc.returncode == 2
    expected = "care: error: $CARE_UMASK: not an octal umask: 'world' (e.g. 0027)"
    assert proc.stderr.strip() == expected


@pytest.mark.slow
def test_workflow_outputs_grant_nothing_to_other_users(tiny_finished):
    """Through Snakemake under umask 022 (the shared ``tiny_finished`` run): corpus, tables,
    drafts, the expert sheet, logs, and the backbone, fine-tune and predictions after them."""
    work = tiny_finished
    made = [p for root in ("results", "logs") for p in (work / root).rglob("*")]
    assert work / "results/rationales/expert_sheet.xlsx" in made
    assert work / "results/demo/sessions.jsonl" in made
    leaks = [f"{p.relative_to(work)} {mode(p):o}" for p in made if mode(p) & stat.S_IRWXO]
    assert not leaks
    assert mode(work / "results/table1.csv") == 0o640 and mode(work / "results") == 0o750


def test_snakemake_log_follows_output_umask(tmp_path):
    """Snakemake opens ``.snakemake/log/<time>.snakemake.log`` (job commands, failed jobs'
    logs) before the workflow restricts the umask: the workflow then restricts the log."""
    work = copy_workflow(tmp_path)
    old = os.umask(0o022)
    try:
        done = run_snakemake(work, "results/demo/sessions.jsonl", *TINY_CONFIG, timeout=300)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr[-2000:]
    logs = list((work / ".snakemake/log").glob("*.snakemake.log"))
    assert logs and all(mode(p) == 0o640 for p in logs)
    assert mode(work / ".snakemake/log") == 0o750 and not mode(work / ".snakemake") & 0o007
