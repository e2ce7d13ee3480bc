"""Bootstrap intervals and paired tests that resample counselors and clients, not sessions.

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

Sessions of clients who share a counselor are not independent either, and counselors see
clients in several test folds: ``unit: counselor`` draws counselors (over all folds) with
replacement, then, for each drawn counselor, as many of its clients as it has, with
replacement (a two-stage cluster bootstrap; a client seen by several counselors goes with
the one who saw most of its sessions); a fold a resample leaves empty is skipped. It is the
default, with percentile intervals: ``care bench coverage`` found that pair closest to the
nominal coverage (docs/evaluation.md, "Uncertainty"); a bootstrap over clients alone is too
narrow.

Intervals: ``bca`` (bias-corrected and accelerated, Efron & Tibshirani 1993, ch. 14): the bias
correction from the share of resamples below the observed value, the acceleration from a
jackknife that leaves out one top-level unit (client, session or counselor) at a time, pooled
over all folds; ``percentile``; ``t``: the fold values' mean ± t(K-1) sd / sqrt(K) over the K
test folds (for the fold mean; pooled statistics then get BCa). ``care bench coverage``
measures each one's coverage by simulation. Three statistics are estimated: the mean over
folds of the per-fold metric (the paper's), the pooled out-of-fold metric (all test folds'
sessions together), which shows whether a fold mean is signal or fold offsets, and the
fold-centred pooled r (Pearson r after subtracting each fold's means).

A resample in which a statistic is undefined (a fold whose metric the data define becomes
undefined, e.g. constant predictions among the drawn clients) makes the interval (and a paired
p-value) undefined: dropping such resamples would narrow the interval without reason.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from care.config import default
from care.errors import CareInputError

UNITS = ("client", "session", "counselor")
INTERVALS = ("bca", "percentile", "t")
STATISTICS_KINDS = ("fold_mean", "pooled", "centred")
_UNIT_TEXT = {
    "client": "clients within test folds",
    "session": "sessions within test folds",
    "counselor": "counselors, then each drawn counselor's clients (two-stage)",
}


BOOTSTRAP = "evaluation.bootstrap"


@dataclass(frozen=True)
class BootstrapSpec:
    n_resamples: int = default(f"{BOOTSTRAP}.n_resamples")
    confidence: float = default(f"{BOOTSTRAP}.confidence")
    # the defaults: the method closest to nominal coverage in `care bench coverage`
    # (docs/evaluation.md, "Uncertainty")
    unit: str = default(f"{BOOTSTRAP}.unit")
    seed: int = default("seed")
    interval: str = default(f"{BOOTSTRAP}.interval")

    def describe(self) -> str:
        """How the intervals are made, for table notes."""
        resamples = f"{self.n_resamples} resamples of {_UNIT_TEXT[self.unit]}"
        if self.interval == "t":
            return (
                f"{self.confidence:.0%} t intervals over the test folds for fold means "
                f"(mean ± t(K−1) sd/√K); pooled r: BCa from {resamples}"
            )
        method = "BCa" if self.interval == "bca" else "percentile"
        return f"{self.confidence:.0%} {method} intervals from {resamples}"

    @classmethod
    def from_config(cls, spec: dict, seed: int) -> BootstrapSpec:
        unit = spec.get("unit", cls.unit)
        if unit not in UNITS:
            raise CareInputError("<config>", f"unknown bootstrap unit {unit!r}", field="unit")
        method = spec.get("interval", cls.interval)
        if method not in INTERVALS:
            raise CareInputError("<config>", f"unknown interval {method!r}", field="interval")
        return cls(
            n_resamples=int(spec.get("n_resamples", cls.n_resamples)),
            confidence=float(spec.get("confidence", cls.confidence)),
            unit=unit,
            seed=int(spec.get("seed", seed)),
            interval=method,
        )


class Resampler:
    """Draws shared by every run evaluated on the folds: per fold, a count per client (or
    session) in every resample; and each session's jackknife unit (client, session or
    counselor). ``folds``: session_id, client_id, fold (and counselor_id for unit counselor)."""

    def __init__(self, folds: pd.DataFrame, spec: BootstrapSpec):
        self.spec = spec
        if spec.unit == "counselor" and "counselor_id" not in folds.columns:
            raise CareInputError(
                "<folds>",
                "bootstrap unit counselor needs each session's counselor_id (care evaluate: "
                "--sessions-table; or evaluation.bootstrap.unit: client)",
                field="counselor_id",
            )
        if spec.unit == "counselor":
            folds = folds.assign(counselor_id=main_counselor(folds))
        self._unit_of: dict[int, pd.Series] = {}  # session -> column of the fold's counts
        self._key_of: dict[int, pd.Series] = {}  # session -> jackknife unit (global label)
        self._counts: dict[int, np.ndarray] = {}
        column = "session_id" if spec.unit == "session" else "client_id"
        for fold, group in folds.groupby("fold", sort=True):
            units = np.array(sorted(group[column].astype(str).unique()))
            index = pd.Series(np.arange(len(units)), index=units)
            sessions = group["session_id"].astype(str).to_numpy()
            self._unit_of[int(fold)] = pd.Series(
                index.loc[group[column].astype(str)].to_numpy(), index=sessions
            )
            key = group["counselor_id" if spec.unit == "counselor" else column]
            self._key_of[int(fold)] = pd.Series(key.astype(str).to_numpy(), index=sessions)
            if spec.unit != "counselor":
                rng = np.random.default_rng([spec.seed, int(fold)])
                self._counts[int(fold)] = rng.multinomial(
                    len(units), np.full(len(units), 1 / len(units)), size=spec.n_resamples
                ).astype(float)  # weights enter matrix products as floats
        if spec.unit == "counselor":
            self._counts = _two_stage_counts(folds, spec)

    def with_interval(self, interval: str) -> Resampler:
        """The same draws, another interval method (``care bench coverage`` compares them)."""
        other = copy.copy(self)
        other.spec = replace(self.spec, interval=interval)
        return other

    @property
    def folds(self) -> list[int]:
        return sorted(self._counts)

    @property
    def n_sessions(self) -> int:
        """Sessions of all test folds (the denominator of coverage)."""
        return sum(len(units) for units in self._unit_of.values())

    def weights(self, fold: int, session_ids: np.ndarray) -> np.ndarray:
        """(n_resamples, n_sessions) weights (whole numbers, as floats) of the given sessions."""
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
        """The jackknife unit (client, session or counselor label) of each given session."""
        self.weights(fold, session_ids[:0])  # checks the fold
        return self._key_of[int(fold)].loc[np.asarray(session_ids).astype(str)].to_numpy()


def main_counselor(folds: pd.DataFrame) -> pd.Series:
    """Each session's client's counselor: the one who saw most of the client's sessions (the
    first by id on a tie), so a client who changed counselors is drawn, and left out by the
    jackknife, with one of them, all its sessions together."""
    pairs = folds.assign(
        client_id=folds["client_id"].astype(str), counselor_id=folds["counselor_id"].astype(str)
    )
    counts = pairs.groupby(["client_id", "counselor_id"]).size().reset_index(name="n")
    counts = counts.sort_values(["client_id", "n", "counselor_id"], ascending=[True, False, True])
    main = counts.drop_duplicates("client_id").set_index("client_id")["counselor_id"]
    return pairs["client_id"].map(main)


def _two_stage_counts(folds: pd.DataFrame, spec: BootstrapSpec) -> dict[int, np.ndarray]:
    """Per fold, (n_resamples, clients of the fold) counts: counselors drawn with replacement
    over all folds, then each drawn copy's clients drawn with replacement."""
    clients = folds.assign(client_id=folds["client_id"].astype(str)).drop_duplicates("client_id")
    clients = clients.sort_values("client_id", ignore_index=True)
    counselors = sorted(clients["counselor_id"].unique())
    rng = np.random.default_rng([spec.seed, 0])  # folds are 1..K: another stream
    copies = rng.multinomial(
        len(counselors), np.full(len(counselors), 1 / len(counselors)), size=spec.n_resamples
    )
    counts = np.zeros((spec.n_resamples, len(clients)), dtype=float)
    for g, counselor in enumerate(counselors):
        members = np.flatnonzero(clients["counselor_id"].to_numpy() == counselor)
        counts[:, members] = rng.multinomial(
            copies[:, g] * len(members), np.full(len(members), 1 / len(members))
        )
    # within a fold, columns follow the sorted client ids (as Resampler's unit index)
    return {
        int(k): counts[:, group.index.to_numpy()] for k, group in clients.groupby("fold", sort=True)
    }


def weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of x and y with frequency weights, one value per row of ``w``.

    x and y are 1-D (the same values for every resample) or 2-D like ``w`` (ranks).
    """
    if x.ndim == 1 and y.ndim == 1:
        return _r(*_moments(x, y, w)[1:])
    total = w.sum(axis=1, keepdims=True).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = x - (w * x).sum(axis=1, keepdims=True) / total
        dy = y - (w * y).sum(axis=1, keepdims=True) / total
        cov = (w * dx * dy).sum(axis=1)
        var = (w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1)
        r = cov / np.sqrt(var)
    r[~(var > 1e-24)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _moments(x: np.ndarray, y: np.ndarray, w: np.ndarray):
    """Per row of ``w``: total weight and the weighted sums of squares and cross-products of
    x and y about their weighted means (as matrix products: one pass for every resample).

    A sum of squares below 1e-10 of the raw one is rounding, i.e. no variation: set to 0.
    """
    x, y = x - x.mean(), y - y.mean()  # r is shift-invariant; this keeps the sums small
    w = np.asarray(w, dtype=float)  # matrix products in BLAS, not integer loops
    n, sx, sy = w.sum(axis=1), w @ x, w @ y
    xx, yy = w @ (x * x), w @ (y * y)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_x, mean_y = np.where(n > 0, sx / n, 0.0), np.where(n > 0, sy / n, 0.0)
    sxx, syy = xx - sx * mean_x, yy - sy * mean_y
    sxy = w @ (x * y) - sx * mean_y
    sxx = np.where(sxx > 1e-10 * xx, sxx, 0.0)
    syy = np.where(syy > 1e-10 * yy, syy, 0.0)
    return n, sxx, syy, sxy


def _r(sxx: np.ndarray, syy: np.ndarray, sxy: np.ndarray) -> np.ndarray:
    """Pearson r from sums of squares and cross-products; NaN where a variance is 0."""
    var = sxx * syy
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sxy / np.sqrt(var)
    return np.clip(np.where(var > 0, r, np.nan), -1.0, 1.0)


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
    A fold a resample leaves empty (two-stage draws) is NaN there.
    """
    weights = resample_weights(scores, resampler) if resampled else _ones(scores)
    return _per_fold(scores, weights, metric)


class Split(list):
    """A run's scored sessions split by fold once, as arrays: [(fold, {session_id, predicted,
    client})] in fold order. Every statistic iterates over the folds, many times per interval;
    splitting a frame once keeps pandas out of those loops."""

    @classmethod
    def of(cls, scores: pd.DataFrame | Split) -> Split:
        if isinstance(scores, Split):
            return scores
        return cls(
            (
                int(k),
                {
                    "session_id": g["session_id"].to_numpy(),
                    "predicted": g["predicted"].to_numpy(dtype=float),
                    "client": g["client"].to_numpy(dtype=float),
                },
            )
            for k, g in scores.groupby("fold", sort=True)
        )

    @property
    def empty(self) -> bool:
        return not any(len(g["session_id"]) for _, g in self)


def _folds(scores: pd.DataFrame | Split) -> Split:
    return Split.of(scores)


def resample_weights(scores: pd.DataFrame, resampler: Resampler) -> dict[int, np.ndarray]:
    """Per fold, the (n_resamples, sessions) weights of the scored sessions."""
    return {k: resampler.weights(k, g["session_id"]) for k, g in _folds(scores)}


def _ones(scores: pd.DataFrame) -> dict[int, np.ndarray]:
    return {k: np.ones((1, len(g["session_id"])), dtype=float) for k, g in _folds(scores)}


def jackknife_weights(
    scores: pd.DataFrame, resampler: Resampler, keys: np.ndarray
) -> dict[int, np.ndarray]:
    """One row per jackknife unit in ``keys``: weight 0 for that unit's sessions, else 1."""
    rows = np.arange(len(keys))[:, None]
    return {
        k: (rows != np.searchsorted(keys, resampler.units(k, g["session_id"]))).astype(float)
        for k, g in _folds(scores)
    }


def _per_fold(scores: pd.DataFrame, weights: dict[int, np.ndarray], metric: str):
    statistic = STATISTICS[metric]
    return {k: statistic(g["predicted"], g["client"], weights[k]) for k, g in _folds(scores)}


def _statistic(
    scores: pd.DataFrame, weights: dict[int, np.ndarray], metric: str, kind: str
) -> np.ndarray:
    """The fold-mean, pooled or fold-centred pooled ``metric``, one value per row of the weight
    matrices."""
    if kind == "fold_mean":
        width = next(iter(weights.values())).shape[0] if weights else 1
        defined = _per_fold(scores, _ones(scores), metric)
        present = {k: w.sum(axis=1) > 0 for k, w in weights.items()}
        return _mean_over_folds(_per_fold(scores, weights, metric), defined, present, width)
    if kind not in STATISTICS_KINDS:
        raise ValueError(f"unknown statistic {kind!r}; expected one of {STATISTICS_KINDS}")
    if _folds(scores).empty:
        return np.full(1, np.nan)
    if kind == "centred":
        if metric != "pearson":
            raise ValueError("the fold-centred statistic is a Pearson r")
        return _centred_pearson(scores, weights)
    split = _folds(scores)
    x, y = (np.concatenate([g[c] for _, g in split]) for c in ("predicted", "client"))
    return STATISTICS[metric](x, y, np.hstack([weights[k] for k, _ in split]))


def _centred_pearson(scores: pd.DataFrame, weights: dict[int, np.ndarray]) -> np.ndarray:
    """Pearson r of all folds' sessions after subtracting each fold's (weighted) means, so
    fold offsets do not enter: the within-fold sums of squares and products, added up."""
    sums = [_moments(g["predicted"], g["client"], weights[k])[1:] for k, g in _folds(scores)]
    return _r(*(np.sum(parts, axis=0) for parts in zip(*sums, strict=True)))


def _mean_over_folds(
    per_fold: dict[int, np.ndarray],
    defined: dict[int, np.ndarray],
    present: dict[int, np.ndarray],
    width: int,
) -> np.ndarray:
    """Mean over the folds where the observed value is ``defined``, per resample.

    A fold a resample leaves empty (not ``present``) is skipped; one present but undefined in
    the resample makes that resample's mean undefined (NaN), never a mean of the others.
    """
    folds = [k for k in sorted(per_fold) if np.isfinite(defined[k][0])]
    if not folds:
        return np.full(width, np.nan)
    stacked = np.vstack([per_fold[k] for k in folds])
    used = np.vstack([present[k] for k in folds])
    broken = (used & ~np.isfinite(stacked)).any(axis=0)
    counts = used.sum(axis=0)
    sums = np.where(used, stacked, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    return np.where(broken | (counts == 0), np.nan, mean)


def _replicate_mean(replicates_of: list[pd.DataFrame], weights_of, metric: str, kind: str):
    """The statistic averaged over seed replicates (same draws for each), per resample; a
    replicate undefined on the data is left out, one undefined in a resample makes it NaN."""
    observed = [_statistic(s, _ones(s), metric, kind)[0] for s in replicates_of]
    values = [
        _statistic(s, weights_of(s), metric, kind)
        for s, value in zip(replicates_of, observed, strict=True)
        if np.isfinite(value)
    ]
    return np.mean(np.vstack(values), axis=0) if values else np.full(1, np.nan)


def _fold_values(replicates_of: list[pd.DataFrame], metric: str) -> dict[int, float]:
    """Each fold's observed metric, averaged over the replicates where it is defined."""
    per = [fold_resamples(s, None, metric, resampled=False) for s in replicates_of]
    folds = sorted({k for p in per for k in p})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {k: float(np.nanmean([p[k][0] for p in per if k in p])) for k in folds}


def estimate(
    scores: pd.DataFrame | list[pd.DataFrame],
    resampler: Resampler,
    metric: str,
    kind: str = "fold_mean",
) -> dict[str, float]:
    """Observed value and interval (per the spec) of one run's statistic.

    ``scores``: the run's scored sessions, or a list of them (seed replicates of the run):
    the statistic is then the mean over replicates, each resample drawing the same clients
    for every replicate (the seeds are the run's, not resampled).
    """
    frames = [Split.of(s) for s in as_list(scores)]
    return _estimate(*run_statistic(frames, metric, kind), frames, resampler, kind)


def estimate_difference(
    a: pd.DataFrame | list[pd.DataFrame],
    b: pd.DataFrame | list[pd.DataFrame],
    resampler: Resampler,
    metric: str = "pearson",
    kind: str = "fold_mean",
) -> dict[str, float]:
    """Observed a - b and its interval (per the spec), both statistics on the same draws.

    The runs should cover the same sessions (:func:`paired_sessions`); replicates are averaged
    as in :func:`estimate`, not redrawn (that is :func:`paired_test`'s p-value).
    """
    a, b = [Split.of(s) for s in as_list(a)], [Split.of(s) for s in as_list(b)]
    statistic, per_fold = difference_statistic(a, b, metric, kind)
    frames = a + b
    return _estimate(statistic, per_fold, frames, resampler, kind)


def run_statistic(frames: list[pd.DataFrame], metric: str, kind: str):
    """(statistic, per_fold) of a run's replicates: the statistic maps a weights provider to
    one value per resample; per_fold gives each fold's observed value (for t intervals)."""
    frames = [Split.of(s) for s in frames]
    return (
        lambda weights_of: _replicate_mean(frames, weights_of, metric, kind),
        lambda: _fold_values(frames, metric),
    )


def difference_statistic(a: list[pd.DataFrame], b: list[pd.DataFrame], metric: str, kind: str):
    """(statistic, per_fold) of run a minus run b, as :func:`run_statistic`."""
    stat_a, folds_a = run_statistic(a, metric, kind)
    stat_b, folds_b = run_statistic(b, metric, kind)

    def per_fold() -> dict[int, float]:
        one, other = folds_a(), folds_b()
        return {k: one[k] - other[k] for k in one if k in other}

    return (lambda weights_of: stat_a(weights_of) - stat_b(weights_of)), per_fold


def _estimate(statistic, per_fold, frames, resampler: Resampler, kind: str) -> dict[str, float]:
    """Value and interval (per the spec) of ``statistic`` (a function of a weights provider)."""
    spec = resampler.spec
    fold_level = spec.interval == "t" and kind == "fold_mean"
    if fold_level:
        needs = {"per_fold"}
    else:
        needs = {"draws"} if spec.interval == "percentile" else {"draws", "jackknife"}
    parts = statistic_parts(statistic, frames, resampler, per_fold, needs)
    low, high = interval_from(parts, spec.interval, spec.confidence, kind)
    return {"value": parts["observed"], "ci_low": low, "ci_high": high}


def statistic_parts(
    statistic, frames, resampler: Resampler, per_fold, needs, weights=None, jackknife=None
) -> dict:
    """What the intervals are made from: the observed value and, as ``needs`` asks, the
    resampled values (``draws``), the jackknife values and the per-fold values.

    ``weights`` and ``jackknife``: weights providers (frame -> per-fold weight matrices) to use
    instead of the resampler's, e.g. computed once for many statistics on the same sessions.
    """
    weights = weights or (lambda s: resample_weights(s, resampler))
    parts: dict = {}
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        parts["observed"] = float(statistic(_ones)[0])
        if all(s.empty for s in frames) or not np.isfinite(parts["observed"]):
            return parts
        if "draws" in needs:
            parts["draws"] = statistic(weights)
        if "jackknife" in needs:
            if jackknife is None:
                keys = jackknife_keys(frames, resampler)
                jackknife = lambda s: jackknife_weights(s, resampler, keys)  # noqa: E731
            parts["jackknife"] = statistic(jackknife)
        if "per_fold" in needs:
            parts["per_fold"] = np.array(list(per_fold().values()), dtype=float)
    return parts


def interval_from(parts: dict, method: str, confidence: float, kind: str) -> tuple[float, float]:
    """The ``method`` interval (bca | percentile | t) from :func:`statistic_parts`; a t
    interval exists for the fold mean only (other statistics get BCa)."""
    if not np.isfinite(parts["observed"]):
        return (np.nan, np.nan)
    if method == "t" and kind == "fold_mean":
        return t_interval(parts["per_fold"], confidence)
    if method == "percentile":
        return interval(parts["draws"], confidence)
    return bca_interval(parts["observed"], parts["draws"], parts["jackknife"], confidence)


def as_list(scores) -> list[pd.DataFrame]:
    return list(scores) if isinstance(scores, list | tuple) else [scores]


def jackknife_keys(frames: list[pd.DataFrame], resampler: Resampler) -> np.ndarray:
    """The jackknife units (clients, sessions or counselors) of any of the frames."""
    units = {u for s in frames for k, g in _folds(s) for u in resampler.units(k, g["session_id"])}
    return np.array(sorted(units))  # sorted: searchsorted finds each session's row


def bca_interval(
    observed: float, replicates: np.ndarray, jackknife: np.ndarray, confidence: float
) -> tuple[float, float]:
    """BCa interval from bootstrap replicates and leave-one-unit-out jackknife values.

    z0 from the mid-rank share of replicates below ``observed`` and the acceleration
    a = sum(d^3) / (6 (sum d^2)^1.5), d the jackknife deviations from their mean: the formulas
    of ``scipy.stats.bootstrap(method="BCa")``, equal to it for one fold of independent units
    (tests compare them). With several folds the jackknife leaves out one unit of the whole
    table (a client of one fold, or a counselor of several) and pools the deviations over all
    folds, which scipy's per-sample jackknife does not do. NaN if any replicate or jackknife
    value is undefined, or the bias correction is infinite.
    """
    from scipy.special import ndtr, ndtri

    if len(replicates) == 0 or not np.all(np.isfinite(replicates)):
        return (np.nan, np.nan)
    if not np.all(np.isfinite(jackknife)):
        return (np.nan, np.nan)
    reps = replicates
    share = (np.sum(reps < observed) + np.sum(reps <= observed)) / (2 * len(reps))
    z0 = ndtri(share)
    d = jackknife.mean() - jackknife if len(jackknife) else np.zeros(1)
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


def t_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """mean ± t(n-1) sd/sqrt(n) over the finite values (one per fold); NaN below 2 values."""
    from scipy import stats

    finite = values[np.isfinite(values)]
    if len(finite) < 2:
        return (np.nan, np.nan)
    half = stats.t.ppf(1 - (1 - confidence) / 2, len(finite) - 1) * finite.std(ddof=1)
    half /= np.sqrt(len(finite))
    return float(finite.mean() - half), float(finite.mean() + half)


def fold_mean_resamples(scores: pd.DataFrame, resampler: Resampler, metric: str) -> np.ndarray:
    """The fold-mean ``metric`` in every resample, for one run and dimension's scored sessions.

    A resample where a fold the data define becomes undefined is NaN.
    """
    return _statistic(scores, resample_weights(scores, resampler), metric, "fold_mean")


def interval(resamples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the resampled values; NaN if any is undefined."""
    if len(resamples) == 0 or not np.all(np.isfinite(resamples)):
        return (np.nan, np.nan)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(resamples, [tail, 100 - tail])
    return float(low), float(high)


def paired_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value that the paired difference is zero.

    Twice the smaller share of resamples on either side of zero, with the usual +1 correction
    so a finite number of resamples never yields p = 0. NaN if any resample is undefined.
    """
    if len(differences) == 0 or not np.all(np.isfinite(differences)):
        return np.nan
    n = len(differences)
    below = (np.sum(differences <= 0) + 1) / (n + 1)
    above = (np.sum(differences >= 0) + 1) / (n + 1)
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
        value = _paired_differences(a_common, b_common, resampler, metric, resampled=False)[0]
        if not np.isfinite(value):
            continue  # no fold where both are defined: this seed pair says nothing
        draws.append(_paired_differences(a_common, b_common, resampler, metric, resampled=True))
        observed.append(value)
        n_common += len(a_common)
    if not draws:
        return {"difference": np.nan, "p_value": np.nan, "n_common": n_common, "n_seeds": 0}
    stacked = np.vstack(draws)  # (seeds, resamples)
    if len(draws) > 1:
        rng = np.random.default_rng([resampler.spec.seed, len(draws), 7])
        picks = rng.integers(0, len(draws), size=(stacked.shape[1], len(draws)))
        stacked = stacked[picks.T, np.arange(stacked.shape[1])]
    return {
        "difference": float(np.mean(observed)),
        "p_value": paired_p_value(stacked.mean(axis=0)),
        "n_common": n_common,
        "n_seeds": len(draws),
    }


def _paired_differences(
    a: pd.DataFrame, b: pd.DataFrame, resampler: Resampler, metric: str, resampled: bool
) -> np.ndarray:
    """Per resample, the mean over folds of a's metric minus b's (folds both define)."""
    a, b = Split.of(a), Split.of(b)
    per_a = fold_resamples(a, resampler, metric, resampled)
    per_b = fold_resamples(b, resampler, metric, resampled)
    defined_a = fold_resamples(a, resampler, metric, resampled=False)
    defined_b = fold_resamples(b, resampler, metric, resampled=False)
    folds = [k for k in sorted(per_a) if k in per_b]
    weights = resample_weights(a, resampler) if resampled else _ones(a)
    width = resampler.spec.n_resamples if resampled else 1
    return _mean_over_folds(
        {k: per_a[k] - per_b[k] for k in folds},
        {k: defined_a[k] - defined_b[k] for k in folds},
        {k: weights[k].sum(axis=1) > 0 for k in folds},
        width,
    )
