"""Alliance metrics: dimension scores per session, then Pearson, Spearman, MSE per fold.

The paper's protocol (section 5.1): a dimension's predicted score is the mean of its items'
predicted ratings, compared with the client's dimension score (the mean of the client's item
ratings) by Pearson r, Spearman rho and MSE, per test fold; tables report the mean and the
standard deviation over folds. A session whose items of a dimension did not all parse gets no
score for that dimension: it is left out of that dimension's metrics and counts against its
coverage (scored sessions / sessions in the fold).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import mean_squared_error

from care.errors import CareInputError
from care.instrument import Instrument, dimension_mean

#: The columns of the predictions contract (care.infer.PREDICTION_COLUMNS) this stage needs
#: in every file (the rest are carried); read with :func:`care.infer.run.read_predictions`.
EVALUATED_COLUMNS = ("session_id", "client_id", "fold", "item_id", "dimension", "model")
EVALUATED_COLUMNS += ("variant", "score", "rationale", "parsed", "client_score")
METRICS = ["pearson", "spearman", "mse"]
RUN_KEYS = ["model", "variant", "scoring"]
#: The item-score columns of the predictions contract, by the scoring they hold: the parsed
#: integer a model generated, or the expectation over the scale labels' probabilities.
SCORINGS = {"generated": "score_generated", "expected": "score_expected"}
SCORE_COLUMNS = [
    "model",
    "variant",
    "scoring",
    "fold",
    "session_id",
    "client_id",
    "dimension",
    "predicted",
    "client",
    "n_items",
    "n_scored",
]
FOLD_COLUMNS = [
    "model",
    "variant",
    "scoring",
    "fold",
    "dimension",
    "n_sessions",
    "n_scored",
    "coverage",
    *METRICS,
]


def scorings(pred: pd.DataFrame) -> list[str]:
    """The scorings a run's predictions hold: ``generated`` always (an unparsed answer has
    none), ``expected`` where label probabilities exist (not for API models or counselors)."""
    parsed = pred[pred["parsed"].astype(bool)]
    return [
        name
        for name, column in SCORINGS.items()
        if column in pred.columns and parsed[column].notna().any()
    ]


def run_scores(pred: pd.DataFrame, instrument: Instrument) -> pd.DataFrame:
    """:func:`dimension_scores` under every scoring the predictions hold (column ``scoring``)."""
    # A run none of whose answers parsed stays in the tables as "0% scored" under the
    # generated scoring, rather than stopping the evaluation of every other run.
    names = scorings(pred) or ["generated"]
    frames = [dimension_scores(pred, instrument, SCORINGS[n], scoring=n) for n in names]
    return pd.concat(frames, ignore_index=True)


def dimension_scores(
    pred: pd.DataFrame,
    instrument: Instrument,
    score_column: str = "score",
    scoring: str | None = None,
) -> pd.DataFrame:
    """One row per (run, fold, session, dimension): predicted and client dimension scores.

    Both are :func:`care.instrument.dimension_mean` of the dimension's items: ``predicted``
    over the parsed ``score_column`` values, ``client`` over ``client_score``; NaN unless
    every item of the dimension has one. Checkpoint selection calls this same function.
    ``scoring`` names the scoring in the output (default: ``score_column``).
    """
    known = set(instrument.item_ids)
    unknown = sorted(set(pred["item_id"]) - known)
    if unknown:
        raise CareInputError(
            "<predictions>",
            f"items not in instrument {instrument.name}: {unknown}",
            field="item_id",
        )
    if score_column not in pred.columns:
        raise CareInputError("<predictions>", "no such score column", field=score_column)
    frame = pred.assign(dimension=pred["item_id"].map(instrument.dimension_of))
    frame = frame.assign(
        score=frame[score_column].where(frame["parsed"].astype(bool)),
        scoring=scoring or score_column,
    )
    keys = [*RUN_KEYS, "fold", "session_id", "client_id", "dimension"]
    grouped = frame.groupby(keys, sort=True, observed=True)
    out = grouped.agg(
        scores=("score", list), clients=("client_score", list), n_scored=("score", "count")
    ).reset_index()
    n_items = out["dimension"].map({d.id: len(d.items) for d in instrument.dimensions})
    out["predicted"] = [dimension_mean(v, n) for v, n in zip(out["scores"], n_items, strict=True)]
    out["client"] = [dimension_mean(v, n) for v, n in zip(out["clients"], n_items, strict=True)]
    out["n_items"] = n_items.astype("int64")
    out["n_scored"] = out["n_scored"].astype("int64")
    out["fold"] = out["fold"].astype("int64")
    return out[SCORE_COLUMNS].reset_index(drop=True)


def correlations(predicted: np.ndarray, client: np.ndarray) -> dict[str, float]:
    """Pearson r, Spearman rho (scipy.stats) and MSE (scikit-learn); NaN where undefined."""
    if len(predicted) == 0:
        return dict.fromkeys(METRICS, np.nan)
    mse = float(mean_squared_error(client, predicted))
    if len(predicted) < 3 or np.ptp(predicted) == 0 or np.ptp(client) == 0:
        return {"pearson": np.nan, "spearman": np.nan, "mse": mse}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        pearson = stats.pearsonr(predicted, client).statistic
        spearman = stats.spearmanr(predicted, client).statistic
    return {"pearson": float(pearson), "spearman": float(spearman), "mse": mse}


def fold_metrics(scores: pd.DataFrame, fold_sizes: dict[int, int] | None = None) -> pd.DataFrame:
    """Per (run, fold, dimension): sessions, scored sessions, coverage and the three metrics.

    ``fold_sizes`` (fold -> sessions in folds.tsv) makes coverage count the fold's sessions a
    run has no rows for (a counselor's unrated sessions); else the run's own sessions.
    """
    rows = []
    for key, group in scores.groupby([*RUN_KEYS, "fold", "dimension"], sort=True):
        scored = group.dropna(subset=["predicted", "client"])
        row = dict(zip([*RUN_KEYS, "fold", "dimension"], key, strict=True))
        n = len(group) if fold_sizes is None else max(fold_sizes.get(int(row["fold"]), 0), 1)
        row.update(n_sessions=n, n_scored=len(scored))
        row["coverage"] = len(scored) / n if n else np.nan
        row.update(correlations(scored["predicted"].to_numpy(), scored["client"].to_numpy()))
        rows.append(row)
    return pd.DataFrame(rows, columns=FOLD_COLUMNS)


def summarize_folds(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample sd (ddof=1) over folds per (run, dimension), plus pooled coverage."""
    rows = []
    for key, group in per_fold.groupby([*RUN_KEYS, "dimension"], sort=False):
        row = dict(zip([*RUN_KEYS, "dimension"], key, strict=True))
        for metric in METRICS:
            values = group[metric].dropna()
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
            row[f"{metric}_n_folds"] = len(values)  # folds where the metric is defined
        row["coverage"] = group["n_scored"].sum() / max(int(group["n_sessions"].sum()), 1)
        row["n_scored"] = int(group["n_scored"].sum())
        row["n_folds"] = int(group["fold"].nunique())
        rows.append(row)
    return pd.DataFrame(rows)
