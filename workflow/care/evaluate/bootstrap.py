"""Bootstrap intervals and paired tests that resample clients, not sessions.

Sessions of one client are not independent (same person, same counselor, a course of
treatment), so the resampling unit is the client: a resample draws, within each test fold,
as many clients as the fold has, with replacement, and takes every session of each drawn
client. The statistic is the one the tables report: the metric per fold, averaged over folds.

All runs share the draws (they are made per fold from ``folds.tsv`` with a seed derived from
the config seed and the fold), so a paired comparison of two runs evaluates both on the same
resampled clients and, per fold, on the sessions both of them scored.

A resample is a vector of integer weights over a fold's sessions (how often each session's
client was drawn); the weighted statistics below equal the plain ones on the sessions repeated
that many times (tests check this against scipy), and run as array operations over all
resamples at once.

With a handful of clients per fold the bootstrap distribution is skewed and biased, so the
intervals are BCa (bias-corrected and accelerated, Efron & Tibshirani 1993, ch. 14): the bias
correction from the share of resamples below the observed value, the acceleration from a
jackknife that leaves out one client (one resampling unit) at a time. ``interval: percentile``
gives the plain percentile interval. Two statistics are estimated: the mean over folds of the
per-fold metric (the paper's) and the pooled out-of-fold metric (all test folds' sessions
together), which shows whether a fold mean is signal or fold offsets.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from care.errors import CareInputError

UNITS = ("client", "session")
INTERVALS = ("bca", "percentile")
STATISTICS_KINDS = ("fold_mean", "pooled")


@dataclass(frozen=True)
class BootstrapSpec:
    n_resamples: int = 1000
    confidence: float = 0.95
    unit: str = "client"
    seed: int = 123
    interval: str = "bca"

    def describe(self) -> str:
        """How the intervals are made, for table notes."""
        method = (
            f"BCa (acceleration from a jackknife over {self.unit}s)"
            if self.interval == "bca"
            else "percentile"
        )
        return (
            f"{self.confidence:.0%} {method} intervals from {self.n_resamples} resamples of "
            f"{self.unit}s within test folds"
        )

    @classmethod
    def from_config(cls, spec: dict, seed: int) -> BootstrapSpec:
        unit = spec.get("unit", "client")
        if unit not in UNITS:
            raise CareInputError("<config>", f"unknown bootstrap unit {unit!r}", field="unit")
        method = spec.get("interval", "bca")
        if method not in INTERVALS:
            raise CareInputError("<config>", f"unknown interval {method!r}", field="interval")
        return cls(
            n_resamples=int(spec.get("n_resamples", 1000)),
            confidence=float(spec.get("confidence", 0.95)),
            unit=unit,
            seed=int(spec.get("seed", seed)),
            interval=method,
        )


class Resampler:
    """Per-fold draws of clients (or sessions) shared by every run evaluated on the folds."""

    def __init__(self, folds: pd.DataFrame, spec: BootstrapSpec):
        self.spec = spec
        self._unit_of: dict[int, pd.Series] = {}
        self._counts: dict[int, np.ndarray] = {}
        column = "client_id" if spec.unit == "client" else "session_id"
        for fold, group in folds.groupby("fold", sort=True):
            units = np.array(sorted(group[column].astype(str).unique()))
            index = pd.Series(np.arange(len(units)), index=units)
            self._unit_of[int(fold)] = pd.Series(
                index.loc[group[column].astype(str)].to_numpy(),
                index=group["session_id"].astype(str).to_numpy(),
            )
            rng = np.random.default_rng([spec.seed, int(fold)])
            self._counts[int(fold)] = rng.multinomial(
                len(units), np.full(len(units), 1 / len(units)), size=spec.n_resamples
            )

    @property
    def folds(self) -> list[int]:
        return sorted(self._counts)

    @property
    def n_sessions(self) -> int:
        """Sessions of all test folds (the denominator of coverage)."""
        return sum(len(units) for units in self._unit_of.values())

    def weights(self, fold: int, session_ids: np.ndarray) -> np.ndarray:
        """(n_resamples, n_sessions) integer weights of the given sessions of ``fold``."""
        unit_of = self._unit_of.get(int(fold))
        if unit_of is None:
            raise CareInputError("<folds>", f"fold {fold} is not in the folds table", field="fold")
        ids = pd.Index(np.asarray(session_ids).astype(str))
        missing = ids.difference(unit_of.index)
        if len(missing):
            raise CareInputError(
                "<folds>",
                f"sessions not in fold {fold} of the folds table: {list(missing[:5])}",
                field="session_id",
            )
        return self._counts[int(fold)][:, unit_of.loc[ids].to_numpy()]

    def units(self, fold: int, session_ids: np.ndarray) -> np.ndarray:
        """The resampling unit (index within the fold) of each given session."""
        self.weights(fold, session_ids[:0])  # checks the fold
        return self._unit_of[int(fold)].loc[np.asarray(session_ids).astype(str)].to_numpy()


def weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of x and y with frequency weights, one value per row of ``w``.

    x and y are 1-D (the same values for every resample) or 2-D like ``w`` (ranks).
    """
    total = w.sum(axis=1, keepdims=True).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = x - (w * x).sum(axis=1, keepdims=True) / total
        dy = y - (w * y).sum(axis=1, keepdims=True) / total
        cov = (w * dx * dy).sum(axis=1)
        var = (w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1)
        r = cov / np.sqrt(var)
    r[~(var > 1e-24)] = np.nan
    return np.clip(r, -1.0, 1.0)


def weighted_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mid-ranks of x in the weighted sample (ties share their mean rank), per row of ``w``."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    group = np.cumsum(np.r_[True, xs[1:] != xs[:-1]]) - 1
    sums = np.add.reduceat(w[:, order], starts, axis=1).astype(float)
    below = np.cumsum(sums, axis=1) - sums
    ranks_sorted = (below + (sums + 1) / 2)[:, group]
    ranks = np.empty_like(ranks_sorted)
    ranks[:, order] = ranks_sorted
    return ranks


def weighted_spearman(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Spearman rho with frequency weights: Pearson r of the weighted mid-ranks."""
    return weighted_pearson(weighted_ranks(x, w), weighted_ranks(y, w), w)


def weighted_mse(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    total = w.sum(axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mse = (w * (x - y) ** 2).sum(axis=1) / total
    return mse


STATISTICS = {"pearson": weighted_pearson, "spearman": weighted_spearman, "mse": weighted_mse}


def fold_resamples(
    scores: pd.DataFrame, resampler: Resampler, metric: str, resampled: bool = True
) -> dict[int, np.ndarray]:
    """Per fold, ``metric`` in every resample (or once, unweighted, if not ``resampled``).

    ``scores`` holds columns fold, session_id, predicted, client (scored sessions only).
    """
    weights = _weights(scores, resampler) if resampled else _ones(scores)
    return _per_fold(scores, weights, metric)


def _folds(scores: pd.DataFrame):
    return ((int(k), g) for k, g in scores.groupby("fold", sort=True))


def _weights(scores: pd.DataFrame, resampler: Resampler) -> dict[int, np.ndarray]:
    return {k: resampler.weights(k, g["session_id"].to_numpy()) for k, g in _folds(scores)}


def _ones(scores: pd.DataFrame) -> dict[int, np.ndarray]:
    return {k: np.ones((1, len(g)), dtype=np.int64) for k, g in _folds(scores)}


def _per_fold(scores: pd.DataFrame, weights: dict[int, np.ndarray], metric: str):
    statistic = STATISTICS[metric]
    return {
        k: statistic(
            g["predicted"].to_numpy(dtype=float), g["client"].to_numpy(dtype=float), weights[k]
        )
        for k, g in _folds(scores)
    }


def _statistic(
    scores: pd.DataFrame, weights: dict[int, np.ndarray], metric: str, kind: str
) -> np.ndarray:
    """The fold-mean or pooled ``metric``, one value per row of the weight matrices."""
    if kind == "fold_mean":
        width = next(iter(weights.values())).shape[0] if weights else 1
        return _mean_over_folds(list(_per_fold(scores, weights, metric).values()), width)
    if kind != "pooled":
        raise ValueError(f"unknown statistic {kind!r}; expected one of {STATISTICS_KINDS}")
    if scores.empty:
        return np.full(1, np.nan)
    ordered = scores.sort_values("fold", kind="stable")
    w = np.hstack([weights[k] for k, _ in _folds(scores)])
    return STATISTICS[metric](
        ordered["predicted"].to_numpy(dtype=float), ordered["client"].to_numpy(dtype=float), w
    )


def estimate(
    scores: pd.DataFrame | list[pd.DataFrame],
    resampler: Resampler,
    metric: str,
    kind: str = "fold_mean",
) -> dict[str, float]:
    """Observed value and interval (BCa or percentile, per the spec) of one run's statistic.

    ``scores``: the run's scored sessions, or a list of them (seed replicates of the run):
    the statistic is then the mean over replicates, each resample drawing the same clients
    for every replicate (the seeds are the run's, not resampled).
    """
    replicates_of = as_list(scores)
    spec = resampler.spec

    def over_replicates(weights_of) -> np.ndarray:
        values = [_statistic(s, weights_of(s), metric, kind) for s in replicates_of]
        return np.nanmean(np.vstack(values), axis=0) if values else np.full(1, np.nan)

    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN, as intended
        observed = float(over_replicates(_ones)[0])
        if all(s.empty for s in replicates_of) or not np.isfinite(observed):
            return {"value": observed, "ci_low": np.nan, "ci_high": np.nan}
        draws = over_replicates(lambda s: _weights(s, resampler))
        if spec.interval == "percentile":
            low, high = interval(draws, spec.confidence)
        else:
            jack = _jackknife(replicates_of, resampler, metric, kind)
            low, high = bca_interval(observed, draws, jack, spec.confidence)
    return {"value": observed, "ci_low": low, "ci_high": high}


def as_list(scores) -> list[pd.DataFrame]:
    return list(scores) if isinstance(scores, list | tuple) else [scores]


def _jackknife(
    replicates_of: list[pd.DataFrame], resampler: Resampler, metric: str, kind: str
) -> np.ndarray:
    """Leave-one-unit-out values of the replicate-mean statistic (units of any replicate)."""
    keys = sorted(
        {
            (k, u)
            for s in replicates_of
            for k, g in _folds(s)
            for u in resampler.units(k, g["session_id"].to_numpy())
        }
    )
    values = []
    for s in replicates_of:
        weights = {}
        for k, g in _folds(s):
            unit = resampler.units(k, g["session_id"].to_numpy())
            w = np.ones((len(keys), len(unit)), dtype=np.int64)
            for row, (fold, u) in enumerate(keys):
                if fold == k:
                    w[row, unit == u] = 0
            weights[k] = w
        value = _statistic(s, weights, metric, kind) if weights else np.full(len(keys), np.nan)
        values.append(value)
    return np.nanmean(np.vstack(values), axis=0)


def bca_interval(
    observed: float, replicates: np.ndarray, jackknife: np.ndarray, confidence: float
) -> tuple[float, float]:
    """BCa interval from bootstrap replicates and leave-one-unit-out jackknife values.

    The same formulas as ``scipy.stats.bootstrap(method="BCa")`` (tests compare them):
    z0 from the mid-rank share of replicates below ``observed``, acceleration
    a = sum(d^3) / (6 (sum d^2)^1.5) with d the jackknife deviations from their mean.
    Undefined replicates (NaN) are dropped; NaN if the bias correction is infinite.
    """
    from scipy.special import ndtr, ndtri

    reps = replicates[np.isfinite(replicates)]
    jack = jackknife[np.isfinite(jackknife)]
    if len(reps) == 0:
        return (np.nan, np.nan)
    share = (np.sum(reps < observed) + np.sum(reps <= observed)) / (2 * len(reps))
    z0 = ndtri(share)
    d = jack.mean() - jack if len(jack) else np.zeros(1)
    denominator = np.sum(d**2) ** 1.5
    a = np.sum(d**3) / (6 * denominator) if denominator > 0 else 0.0
    tail = (1 - confidence) / 2
    bounds = []
    for z in (ndtri(tail), -ndtri(tail)):
        bounds.append(ndtr(z0 + (z0 + z) / (1 - a * (z0 + z))))
    if not np.all(np.isfinite(bounds)):
        return (np.nan, np.nan)
    low, high = np.quantile(reps, bounds)
    return float(low), float(high)


def _mean_over_folds(per_fold: list[np.ndarray], width: int) -> np.ndarray:
    """Mean over folds per resample, skipping folds where the value is undefined."""
    if not per_fold:
        return np.full(width, np.nan)
    stacked = np.vstack(per_fold)
    counts = np.isfinite(stacked).sum(axis=0)
    sums = np.where(np.isfinite(stacked), stacked, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def fold_mean_resamples(scores: pd.DataFrame, resampler: Resampler, metric: str) -> np.ndarray:
    """The fold-mean ``metric`` in every resample, for one run and dimension's scored sessions.

    Folds where a resample leaves the metric undefined are skipped in that resample's mean.
    """
    return _statistic(scores, _weights(scores, resampler), metric, "fold_mean")


def interval(resamples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the finite resampled values."""
    finite = resamples[np.isfinite(resamples)]
    if len(finite) == 0:
        return (np.nan, np.nan)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def paired_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value that the paired difference is zero.

    Twice the smaller share of resamples on either side of zero, with the usual +1 correction
    so a finite number of resamples never yields p = 0.
    """
    finite = differences[np.isfinite(differences)]
    if len(finite) == 0:
        return np.nan
    n = len(finite)
    below = (np.sum(finite <= 0) + 1) / (n + 1)
    above = (np.sum(finite >= 0) + 1) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))


def scored(scores: pd.DataFrame, dimension: str) -> pd.DataFrame:
    """A run's scored sessions of one dimension."""
    rows = scores[scores["dimension"] == dimension]
    return rows.dropna(subset=["predicted", "client"])


def paired_sessions(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both runs restricted to the sessions (per fold) that both of them scored."""
    keys = ["fold", "session_id"]
    common = a[keys].merge(b[keys], on=keys)
    return (
        a.merge(common, on=keys).sort_values(keys, ignore_index=True),
        b.merge(common, on=keys).sort_values(keys, ignore_index=True),
    )


def paired_test(
    a: pd.DataFrame | list[pd.DataFrame],
    b: pd.DataFrame | list[pd.DataFrame],
    resampler: Resampler,
    metric: str = "pearson",
) -> dict[str, float]:
    """Difference a - b of the fold-mean metric on shared sessions, and its p-value.

    Per fold, both runs are evaluated on the sessions both scored and the same resampled
    clients; the difference is averaged over the folds where both metrics are defined. With
    seed replicates (lists, paired by position), the difference is averaged over seeds and
    each resample also redraws the seeds with replacement: a paired comparison over seeds and
    clients.
    """
    pairs = list(zip(as_list(a), as_list(b), strict=False))
    observed, draws, n_common = [], [], 0
    for one, other in pairs:
        a_common, b_common = paired_sessions(one, other)
        if a_common.empty:
            continue
        draws.append(_paired_differences(a_common, b_common, resampler, metric, resampled=True))
        observed.append(
            _paired_differences(a_common, b_common, resampler, metric, resampled=False)[0]
        )
        n_common += len(a_common)
    if not draws:
        return {"difference": np.nan, "p_value": np.nan, "n_common": 0}
    stacked = np.vstack(draws)  # (seeds, resamples)
    if len(draws) > 1:
        rng = np.random.default_rng([resampler.spec.seed, len(draws), 7])
        picks = rng.integers(0, len(draws), size=(stacked.shape[1], len(draws)))
        stacked = stacked[picks.T, np.arange(stacked.shape[1])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        differences = np.nanmean(stacked, axis=0)
        difference = float(np.nanmean(observed))
    return {
        "difference": difference,
        "p_value": paired_p_value(differences),
        "n_common": n_common,
        "n_seeds": len(draws),
    }


def _paired_differences(
    a: pd.DataFrame, b: pd.DataFrame, resampler: Resampler, metric: str, resampled: bool
) -> np.ndarray:
    per_a = fold_resamples(a, resampler, metric, resampled)
    per_b = fold_resamples(b, resampler, metric, resampled)
    diffs = [per_a[k] - per_b[k] for k in sorted(per_a) if k in per_b]
    return _mean_over_folds(diffs, resampler.spec.n_resamples if resampled else 1)
