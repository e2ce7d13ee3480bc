"""``care bench coverage``: the simulation's parts on a tiny corpus (the bench itself runs
hundreds of corpora and prints the coverage table; its numbers are not asserted here)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from care.cli import main
from care.corpus import CorpusSpec
from care.evaluate import bootstrap as bs
from care.evaluate import coverage

TINY = CorpusSpec(n_clients=12, sessions_per_client=(3, 5), seed=11)


def test_a_simulated_corpus_has_truth_and_both_predictors(instrument):
    table = coverage.simulate(TINY, instrument)
    assert table["client_id"].nunique() == 12
    for d in instrument.dimension_ids:
        assert table[d].between(1, 5).all()
        assert table[f"{d}_reactions"].between(-1, 1).all()
        # the counselor's rating of the session, as the human baseline row
        assert table[f"{d}_counselor"].notna().all()


def test_every_method_runs_on_every_estimand_it_applies_to(instrument):
    rows = pd.DataFrame(
        coverage.corpus_intervals(TINY, instrument, 3, bs.BootstrapSpec(n_resamples=40, seed=1))
    )
    pairs = set(zip(rows["estimand"], rows["method"], strict=True))
    assert pairs == {(e, m) for e, names in coverage.APPLIES.items() for m in names}
    assert set(rows["predictor"]) == {"reactions", "counselor", "reactions-counselor"}
    # one point estimate per estimand and predictor, whatever the method
    spread = rows.groupby(["dimension", "predictor", "estimand"])["value"].nunique()
    assert (spread == 1).all()
    fold_mean = rows[(rows["estimand"] == "fold_mean") & (rows["method"] == "t over folds")]
    assert (fold_mean["ci_low"] < fold_mean["value"]).all()


def test_coverage_counts_undefined_intervals_as_misses():
    truth = {("goal", "a"): 0.5, ("goal", "b"): 0.2}
    rows = pd.DataFrame(
        [
            {"dimension": "goal", "predictor": "a", "estimand": "fold_mean", "method": "m",
             "value": 0.45, "ci_low": 0.4, "ci_high": 0.6},
            {"dimension": "goal", "predictor": "a", "estimand": "fold_mean", "method": "m",
             "value": 0.7, "ci_low": 0.6, "ci_high": 0.8},
            {"dimension": "goal", "predictor": "b", "estimand": "fold_mean", "method": "m",
             "value": 0.2, "ci_low": np.nan, "ci_high": np.nan},
            {"dimension": "goal", "predictor": "a-b", "estimand": "difference", "method": "m",
             "value": 0.3, "ci_low": 0.0, "ci_high": 0.5},
        ]
    )
    summary = coverage.summarize(rows, truth).set_index("estimand")
    assert summary.at["fold_mean", "coverage"] == pytest.approx(1 / 3)
    assert summary.at["fold_mean", "undefined"] == pytest.approx(1 / 3)
    assert summary.at["fold_mean", "min_cell"] == 0  # predictor b: no interval at all
    assert summary.at["fold_mean", "width"] == pytest.approx(0.2)
    assert summary.at["fold_mean", "bias"] == pytest.approx(((-0.05) + 0.2 + 0.0) / 3)
    assert summary.at["difference", "coverage"] == 1  # truth 0.5 - 0.2 = 0.3


def test_the_bench_prints_the_coverage_table(capsys):
    assert main(["bench", "coverage", "--shapes", "demo", "--corpora", "2", "--population",
                 "2", "--resamples", "20", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "shape demo: 32 clients" in out and "true r (2 corpora pooled)" in out
    for method in coverage.METHODS:
        assert method.name in out
    assert "care bench coverage:" in out
