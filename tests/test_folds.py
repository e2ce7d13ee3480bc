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
