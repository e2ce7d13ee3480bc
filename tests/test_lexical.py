"""The text baselines (care.infer.lexical, ``care infer lexical``): fit on the training folds only,
the ridge penalty chosen on the fine-tunes' inner split, rows in the predictions contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from care.cli import main
from care.corpus import CorpusSpec, generate
from care.infer import lexical
from care.io import write_jsonl
from care.sessions import load_sessions

from tests.train_fixtures import write_client_folds


@pytest.fixture(scope="module")
def folded(tmp_path_factory, instrument):
    spec = CorpusSpec(n_clients=20, sessions_per_client=(4, 6), n_counselors=4, seed=11)
    records, _ = generate(spec, instrument)
    root = tmp_path_factory.mktemp("lexical")
    write_jsonl(root / "sessions.jsonl", records)
    write_client_folds(root / "folds.tsv", records, 4)
    return root


def run(folded, instrument, model: str, fold: int, out) -> pd.DataFrame:
    assert main(["infer", "lexical", "--model", model, "--sessions",
                 str(folded / "sessions.jsonl"), "--instrument", str(instrument.path),
                 "--folds", str(folded / "folds.tsv"), "--fold", str(fold),
                 "--out", str(out)]) == 0
    return pd.read_parquet(out)


def test_lexical_baseline_predicts_held_out_sessions(folded, instrument, tmp_path):
    frames = [run(folded, instrument, "lexical", k, tmp_path / f"{k}.parquet") for k in range(1, 5)]
    pred = pd.concat(frames)
    assert set(pred["model"]) == {"lexical"} and set(pred["variant"]) == {"tfidf_ridge"}
    # each item carries its dimension's prediction: the dimension mean is the prediction
    per_dim = pred.groupby(["session_id", "dimension"])["score"].nunique()
    assert (per_dim == 1).all()
    sessions = pred.groupby(["session_id", "dimension"])[["score", "client_score"]].mean()
    goal = sessions.xs("goal", level="dimension")
    assert np.corrcoef(goal["score"], goal["client_score"])[0, 1] > 0.3  # the corpus's signal


def test_lexical_baseline_never_fits_the_test_fold(folded, instrument, tmp_path):
    """Changing a test-fold session's ratings changes nothing the baseline predicts."""
    import json

    before = run(folded, instrument, "lexical", 1, tmp_path / "a.parquet")
    lines = (folded / "sessions.jsonl").read_text(encoding="utf-8").splitlines()
    folds = pd.read_csv(folded / "folds.tsv", sep="\t").set_index("session_id")["fold"]
    changed = []
    for line in lines:
        rec = json.loads(line)
        if folds[rec["session_id"]] == 1:
            rec["client_ratings"] = {k: 1 for k in rec["client_ratings"]}
        changed.append(rec)
    moved = tmp_path / "moved"
    moved.mkdir()
    write_jsonl(moved / "sessions.jsonl", changed)
    (moved / "folds.tsv").write_text((folded / "folds.tsv").read_text(), encoding="utf-8")
    after = run(moved, instrument, "lexical", 1, tmp_path / "b.parquet")
    assert np.allclose(before["score"], after["score"])
    assert not np.allclose(before["client_score"], after["client_score"])


def test_length_baseline_learns_its_sign_on_the_training_folds(instrument, folded):
    sessions = load_sessions(folded / "sessions.jsonl", instrument)
    fit = lexical.fit_length(sessions[:40], sessions[40:], instrument)
    x = np.array([lexical.word_count(s) for s in sessions[40:]])
    for k in range(len(instrument.dimension_ids)):  # a line in the word count, per dimension
        assert abs(np.corrcoef(x, fit.predictions[:, k])[0, 1]) == pytest.approx(1.0)
    assert set(fit.chosen) == set(instrument.dimension_ids)
