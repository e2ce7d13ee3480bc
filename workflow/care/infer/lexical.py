"""Text baselines every fine-tuned model is read against (``care infer lexical``).

- ``lexical``: TF-IDF over the dialogue's word 1-2 grams and a ridge regression per
  dimension, fit on the test fold's training folds only. The ridge penalty is chosen on the
  inner split the fine-tunes validate on (:func:`care.sft.split_sessions`: the same clients,
  seed and share), by validation MSE, then the model is refit on all training sessions.
- ``length``: the dialogue's word count in an ordinary least-squares line per dimension,
  fit on the training folds (so its sign is learnt there, never on the test fold): the
  confound a real corpus showed (fine-tuned scores that follow dialogue length).

A dimension's prediction is written as the score of each of its items, so the dimension
score (the mean of its items) is the prediction and the metrics code scores the baselines
like any model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from care.infer.counselor import rating_row
from care.instrument import Instrument
from care.runs import TEXT_BASELINES as BASELINES  # model -> variant directory
from care.sessions import Session

#: ridge penalties tried on the inner split (TF-IDF rows have unit norm: 0.01-100 spans
#: an almost unpenalised fit to the training mean)
ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def dialogue_text(session: Session) -> str:
    return "\n".join(turn.text for turn in session.turns)


def word_count(session: Session) -> int:
    return sum(len(turn.text.split()) for turn in session.turns)


def targets(sessions: Sequence[Session], instrument: Instrument) -> np.ndarray:
    """(sessions, dimensions) client dimension scores; NaN where a dimension is incomplete."""
    dims = instrument.dimension_ids
    rows = [instrument.dimension_scores(s.client_ratings or {}) for s in sessions]
    return np.array([[row[d] for d in dims] for row in rows], dtype=float).reshape(-1, len(dims))


@dataclass
class Fit:
    """Predictions (sessions, dimensions) for the test sessions and what was chosen."""

    predictions: np.ndarray
    chosen: dict[str, dict]


def _vectorizer():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)


def _ridge(alpha: float, x, y):
    from sklearn.linear_model import Ridge

    return Ridge(alpha=alpha).fit(x, y)


def _mse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean((predicted - actual) ** 2))


def fit_lexical(
    fit: Sequence[Session],
    val: Sequence[Session],
    train: Sequence[Session],
    test: Sequence[Session],
    instrument: Instrument,
) -> Fit:
    """Penalty by validation MSE (``fit`` -> ``val``) per dimension, then refit on ``train``
    (every training-fold session; never the test fold, even when ``val`` is the test fold)."""
    y_fit, y_val = targets(fit, instrument), targets(val, instrument)
    vec = _vectorizer().fit([dialogue_text(s) for s in fit])
    x_fit = vec.transform([dialogue_text(s) for s in fit])
    x_val = vec.transform([dialogue_text(s) for s in val])
    y_train = targets(train, instrument)
    vec_all = _vectorizer().fit([dialogue_text(s) for s in train])
    x_train = vec_all.transform([dialogue_text(s) for s in train])
    x_test = vec_all.transform([dialogue_text(s) for s in test])
    out = np.full((len(test), len(instrument.dimension_ids)), np.nan)
    chosen = {}
    for k, dim in enumerate(instrument.dimension_ids):
        a, b = ~np.isnan(y_fit[:, k]), ~np.isnan(y_val[:, k])
        mse = {
            alpha: _mse(_ridge(alpha, x_fit[a], y_fit[a, k]).predict(x_val[b]), y_val[b, k])
            for alpha in ALPHAS
        }
        alpha = min(ALPHAS, key=lambda v: (mse[v], -v))  # ties: the stronger penalty
        keep = ~np.isnan(y_train[:, k])
        out[:, k] = _ridge(alpha, x_train[keep], y_train[keep, k]).predict(x_test)
        chosen[dim] = {"alpha": alpha, "validation_mse": round(mse[alpha], 6)}
    return Fit(out, chosen)


def fit_length(train: Sequence[Session], test: Sequence[Session], instrument: Instrument) -> Fit:
    """One OLS line of the dimension score on the word count per dimension."""
    x = np.array([word_count(s) for s in train], dtype=float)
    x_test = np.array([word_count(s) for s in test], dtype=float)
    y = targets(train, instrument)
    out = np.full((len(test), len(instrument.dimension_ids)), np.nan)
    chosen = {}
    for k, dim in enumerate(instrument.dimension_ids):
        keep = ~np.isnan(y[:, k])
        slope, intercept = np.polyfit(x[keep], y[keep, k], 1)
        out[:, k] = intercept + slope * x_test
        chosen[dim] = {"slope_per_100_words": round(float(slope) * 100, 6)}
    return Fit(out, chosen)


def prediction_rows(
    test: Sequence[Session], fit: Fit, instrument: Instrument, model: str, fold: int
) -> list[dict]:
    """Rows in the predictions contract: each item carries its dimension's prediction."""
    dims = {d: k for k, d in enumerate(instrument.dimension_ids)}
    rows = []
    for n, s in enumerate(test):
        client = s.client_ratings or {}
        for item in instrument.item_ids:
            if item not in client:
                continue
            score = float(fit.predictions[n, dims[instrument.dimension_of(item)]])
            rows.append(rating_row(s, item, instrument, model, BASELINES[model], fold, score))
    return rows
