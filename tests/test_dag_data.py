"""The data stage through Snakemake on the tiny test config: runs, then has nothing to do."""

from __future__ import annotations

import pandas as pd
import pytest

from .conftest import copy_workflow, run_snakemake


@pytest.mark.slow
def test_table1_dag_then_nothing_to_do(tiny_finished):
    """Table 1 and the folds of the shared tiny run (conftest.tiny_finished); a second run
    of the target has nothing to do."""
    work = tiny_finished
    table = pd.read_csv(work / "results/table1.csv")
    folds = pd.read_csv(work / "results/folds.tsv", sep="\t")
    assert list(table["fold"].astype(str)) == ["1", "2", "3", "all"]
    assert folds.groupby("client_id")["fold"].nunique().max() == 1
    assert table["n_sessions"].iloc[-1] == len(folds)
    again = run_snakemake(work, "results/table1.csv", "--configfile", ".test/config.yaml")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_bad_corpus_stops_before_folds(tmp_path):
    work = copy_workflow(tmp_path)
    (work / "data").mkdir()
    (work / "data/sessions.jsonl").write_text('{"session_id": "a"}\n', encoding="utf-8")
    (work / "real.yaml").write_text(
        "demo_corpus: {enabled: false}\ndata: {sessions: data/sessions.jsonl}\n", encoding="utf-8"
    )
    proc = run_snakemake(work, "results/table1.csv", "--configfile", ".test/config.yaml",
                         "real.yaml")
    assert proc.returncode != 0
    log = (work / "logs/validate_sessions.log").read_text(encoding="utf-8")
    assert "data/sessions.jsonl:1: field 'client_id': required field is missing" in log
    assert not (work / "results/data/sessions.tsv").exists()
    assert not (work / "results/folds.tsv").exists()
