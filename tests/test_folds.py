"""Client-grouped stratified folds and Table 1."""

from __future__ import annotations

import pytest
from care.corpus import CorpusSpec, generate
from care.errors import CareInputError
from care.folds import make_folds, table1
from care.sessions import session_table

from .test_corpus import load_sessions_from


@pytest.fixture(scope="module")
def demo_table(instrument):
    records, _ = generate(CorpusSpec(), instrument)
    return session_table(load_sessions_from(records, instrument), instrument)


def test_no_client_in_two_folds(demo_table, instrument):
    folds = make_folds(demo_table, instrument.dimension_ids, 5, 3, seed=123)
    assert folds.groupby("client_id")["fold"].nunique().max() == 1
    assert sorted(folds["fold"].unique()) == [1, 2, 3, 4, 5]
    assert len(folds) == len(demo_table)


def test_folds_are_stratified(demo_table, instrument):
    """Each fold's mean client score lies within 0.25 of the overall mean (sd ~0.7)."""
    dims = instrument.dimension_ids
    folds = make_folds(demo_table, dims, 5, 3, seed=123)
    summary = table1(demo_table, folds, dims)
    overall = summary[summary["fold"] == "all"].iloc[0]
    for _, row in summary[summary["fold"] != "all"].iterrows():
        for d in dims:
            assert abs(row[f"{d}_mean"] - overall[f"{d}_mean"]) < 0.25, (row["fold"], d)
    assert summary["n_sessions"].iloc[:-1].sum() == len(demo_table)


def test_seed_is_respected(demo_table, instrument):
    dims = instrument.dimension_ids
    a = make_folds(demo_table, dims, 5, 3, seed=1)
    assert a.equals(make_folds(demo_table, dims, 5, 3, seed=1))
    assert not a.equals(make_folds(demo_table, dims, 5, 3, seed=2))


def test_fewer_clients_than_folds(demo_table, instrument):
    few = demo_table[demo_table["client_id"].isin(demo_table["client_id"].unique()[:3])]
    with pytest.raises(CareInputError, match="cannot fill 5"):
        make_folds(few, instrument.dimension_ids, 5, 3, seed=1)


def test_table1_files_share_the_tables_writer(demo_table, instrument, tmp_path):
    # Table 1 is written like Tables 2-8 (care.tableformat.write_outputs): CSV, and
    # Markdown, LaTeX (escaped headers) and HTML with mean ± sd cells and a note
    import json

    from care.cli import main

    sessions = tmp_path / "sessions.tsv"
    demo_table.to_csv(sessions, sep="\t", index=False)
    out = tmp_path / "table1.csv"
    spec = json.dumps({"n_folds": 5, "n_strata": 3, "seed": 123})
    assert main(["data", "folds", "--sessions-table", str(sessions),
                 "--instrument", instrument.path, "--spec", spec,
                 "--folds", str(tmp_path / "folds.tsv"),
                 "--table1", str(out)]) == 0
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert md.startswith("**Table 1:") and " ± " in md and "mean of its items" in md
    tex = out.with_suffix(".tex").read_text(encoding="utf-8")
    assert "Clients & Sessions & Goal" in tex and r"$\pm$" in tex and r"\toprule" in tex
    assert "<table" in out.with_suffix(".html").read_text(encoding="utf-8")
