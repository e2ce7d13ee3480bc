"""``care bench coverage``: do the tables' 95% intervals cover? Measured by simulation.

Corpora are drawn from the demo's generator (:mod:`care.corpus`) at two shapes: the demo's
(32 clients, 4-10 sessions each, 8 counselors) and the paper's (82 clients, about 793
sessions; the generator's 8 counselors). Each corpus is split by the project's fold procedure
(:func:`care.folds.make_folds`) and scored by two fast predictors read off the session record:

- ``reactions``: the share of the client's positive minus negative reactions (one value per
  session, so it tracks the general alliance, better for some dimensions than others);
- ``counselor``: the counselor's own rating of the dimension (the human baseline row).

Their true (population) Pearson r with the client's dimension score is estimated from a large
independent sample of corpora of the same shape pooled together (other seeds), so it includes
what a single corpus cannot show: other counselors. Every interval method of
:mod:`care.evaluate.bootstrap` (and the display's mean ± sd band) is then run on every corpus,
and the share of intervals containing the truth is printed per method and estimand: the
fold-mean r (the tables' number), the pooled r, the fold-centred pooled r, and the paired
difference of the two predictors' fold-mean r. Coverage pools the 3 dimensions and 2
predictors (1 predictor pair for the difference); "min" is the lowest of those cells.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from care.corpus import CorpusSpec, generate
from care.evaluate import bootstrap as bs
from care.folds import make_folds
from care.instrument import Instrument, load_instrument

SHAPES = {
    "demo": CorpusSpec(n_clients=32, sessions_per_client=(4, 10)),
    # the paper: 793 sessions of 82 clients (~9.7 each); 5-14 sessions give ~780 on average
    "paper": CorpusSpec(n_clients=82, sessions_per_client=(5, 14)),
}
PREDICTORS = ("reactions", "counselor")
ESTIMANDS = ("fold_mean", "pooled", "centred", "difference")
ESTIMAND_TEXT = {
    "fold_mean": "fold-mean r",
    "pooled": "pooled r",
    "centred": "fold-centred pooled r",
    "difference": "paired difference (fold-mean r)",
}


@dataclass(frozen=True)
class Method:
    """One interval: the bootstrap unit and interval of a :class:`bs.BootstrapSpec`, or the
    display's mean ± sd over folds (``band``)."""

    name: str
    unit: str
    interval: str


METHODS = (
    Method("BCa, clients", "client", "bca"),
    Method("percentile, clients", "client", "percentile"),
    Method("BCa, sessions", "session", "bca"),
    Method("t over folds", "client", "t"),
    Method("BCa, counselors then clients", "counselor", "bca"),
    Method("percentile, counselors then clients", "counselor", "percentile"),
    Method("mean ± sd over folds (display)", "client", "band"),
)
#: which methods apply to which estimand (t and the band are fold-level, BCa everywhere)
APPLIES = {
    "fold_mean": {m.name for m in METHODS},
    "pooled": {m.name for m in METHODS if m.interval in ("bca", "percentile")},
    "centred": {m.name for m in METHODS if m.interval in ("bca", "percentile")},
    "difference": {m.name for m in METHODS if m.interval != "band"},
}


def add_arguments(parser) -> None:
    parser.add_argument("--corpora", type=int, default=200, help="simulated corpora per shape")
    parser.add_argument("--population", type=int, default=300,
                        help="corpora pooled to estimate the true r (per shape)")
    # fewer than the tables' 1000 to fit a few minutes on 2 cores; the header says how many
    parser.add_argument("--resamples", type=int, default=500, help="bootstrap resamples")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--workers", type=int, default=2, help="processes")


# ------------------------------------------------------------------------------ simulation


def simulate(spec: CorpusSpec, instrument: Instrument) -> pd.DataFrame:
    """One corpus as a session table: ids, the client's dimension scores (``<dim>``) and each
    predictor's (``<dim>_<predictor>``)."""
    sessions, _ = generate(spec, instrument)
    rows = []
    for s in sessions:
        row = {k: s[k] for k in ("session_id", "client_id", "counselor_id")}
        reactions = [t.get("reaction") for t in s["turns"] if t["speaker"] == "client"]
        share = (reactions.count("positive") - reactions.count("negative")) / len(reactions)
        counselor = instrument.dimension_scores(s["counselor_ratings"])
        for d, value in instrument.dimension_scores(s["client_ratings"]).items():
            row.update({d: value, f"{d}_reactions": share, f"{d}_counselor": counselor[d]})
        rows.append(row)
    return pd.DataFrame(rows)


def population_r(
    spec: CorpusSpec, instrument: Instrument, n_corpora: int, seed: int, workers: int
) -> dict[tuple[str, str], float]:
    """(dimension, predictor) -> Pearson r over ``n_corpora`` independent corpora pooled."""
    specs = [replace(spec, seed=int(s)) for s in _seeds(seed, 1, n_corpora)]
    with ProcessPoolExecutor(workers) as pool:
        table = pd.concat(pool.map(simulate, specs, [instrument] * len(specs)))
    return {
        (d, p): float(np.corrcoef(table[f"{d}_{p}"], table[d])[0, 1])
        for d in instrument.dimension_ids
        for p in PREDICTORS
    }


def _seeds(seed: int, stream: int, n: int) -> np.ndarray:
    """Corpus seeds: the bench's corpora (stream 0) and the population's (1) never overlap."""
    return np.random.default_rng([seed, stream]).choice(2**31, size=n, replace=False)


def _scores(table: pd.DataFrame, dim: str, predictor: str) -> pd.DataFrame:
    """One predictor's scored sessions of one dimension, in the bootstrap's columns."""
    return pd.DataFrame({
        "fold": table["fold"], "session_id": table["session_id"],
        "predicted": table[f"{dim}_{predictor}"], "client": table[dim],
    }).dropna()


def corpus_intervals(
    spec: CorpusSpec, instrument: Instrument, n_folds: int, boot: bs.BootstrapSpec
) -> list[dict]:
    """Every method's interval for every estimand, dimension and predictor on one corpus."""
    table = simulate(spec, instrument)
    dims = instrument.dimension_ids
    folds = make_folds(table, dims, n_folds=n_folds, n_strata=3, seed=spec.seed)
    table = table.merge(folds[["session_id", "fold"]], on="session_id")
    rows = []
    for unit in sorted({m.unit for m in METHODS}):
        sampler = bs.Resampler(table[["session_id", "client_id", "counselor_id", "fold"]],
                               replace(boot, unit=unit))
        sessions = bs.Split.of(_scores(table, dims[0], PREDICTORS[0]))
        # every dimension and predictor scores the same sessions: one set of weights for all
        keys = bs.jackknife_keys([sessions], sampler)
        draws = bs.resample_weights(sessions, sampler)
        jackknife = bs.jackknife_weights(sessions, sampler, keys)
        methods = [m for m in METHODS if m.unit == unit]
        for d in dims:
            runs = {p: _scores(table, d, p) for p in PREDICTORS}
            for estimand in ESTIMANDS:
                for label, parts in _parts(estimand, runs, sampler, draws, jackknife).items():
                    rows += [
                        {"dimension": d, "predictor": label, "estimand": estimand,
                         "method": m.name, **_interval(m, estimand, parts, runs.get(label),
                                                       boot.confidence)}
                        for m in methods if m.name in APPLIES[estimand]
                    ]
    return rows


def _parts(estimand: str, runs: dict[str, pd.DataFrame], sampler: bs.Resampler, draws: dict,
           jackknife: dict) -> dict:
    """label -> :func:`bs.statistic_parts` of the estimand on the given weights."""
    kind = "fold_mean" if estimand == "difference" else estimand
    if estimand == "difference":
        a, b = PREDICTORS
        statistics = {f"{a}-{b}": bs.difference_statistic([runs[a]], [runs[b]], "pearson", kind)}
    else:
        statistics = {p: bs.run_statistic([s], "pearson", kind) for p, s in runs.items()}
    needs = {"draws", "jackknife", "per_fold"}
    return {
        label: bs.statistic_parts(stat, list(runs.values()), sampler, per_fold, needs,
                                  weights=lambda _: draws, jackknife=lambda _: jackknife)
        for label, (stat, per_fold) in statistics.items()
    }


def _interval(method: Method, estimand: str, parts: dict, scores, confidence: float) -> dict:
    if method.interval == "band":
        return _band(scores)
    kind = "fold_mean" if estimand == "difference" else estimand
    low, high = bs.interval_from(parts, method.interval, confidence, kind)
    return {"value": parts["observed"], "ci_low": low, "ci_high": high}


def _band(scores: pd.DataFrame) -> dict[str, float]:
    """The display's mean ± sd over folds, read as an interval."""
    per_fold = np.array([v[0] for v in bs.fold_resamples(scores, None, "pearson", False).values()])
    mean, sd = np.nanmean(per_fold), np.nanstd(per_fold, ddof=1)
    return {"value": mean, "ci_low": mean - sd, "ci_high": mean + sd}


# ------------------------------------------------------------------------------ summary


def truth_of(rows: pd.DataFrame, truth: dict[tuple[str, str], float]) -> pd.Series:
    """Each row's true value: the population r of its predictor, or the difference of two."""
    def one(dim: str, predictor: str) -> float:
        if "-" in predictor:
            a, b = predictor.split("-")
            return truth[dim, a] - truth[dim, b]
        return truth[dim, predictor]

    return pd.Series([one(d, p) for d, p in zip(rows["dimension"], rows["predictor"],
                                                 strict=True)], index=rows.index)


def summarize(rows: pd.DataFrame, truth: dict[tuple[str, str], float]) -> pd.DataFrame:
    """Coverage (undefined intervals count as misses), min over cells, undefined share, mean
    width and bias of the estimate, per estimand and method."""
    rows = rows.assign(truth=truth_of(rows, truth))
    defined = rows["ci_low"].notna() & rows["ci_high"].notna()
    rows = rows.assign(
        covered=defined & (rows["ci_low"] <= rows["truth"]) & (rows["truth"] <= rows["ci_high"]),
        undefined=~defined, width=(rows["ci_high"] - rows["ci_low"]).where(defined),
        error=rows["value"] - rows["truth"],
    )
    keys = ["estimand", "method"]
    cells = rows.groupby([*keys, "dimension", "predictor"], sort=False)["covered"].mean()
    out = rows.groupby(keys, sort=False).agg(
        coverage=("covered", "mean"), undefined=("undefined", "mean"),
        width=("width", "mean"), bias=("error", "mean"), n=("covered", "size"),
    )
    out["min_cell"] = cells.groupby(level=keys, sort=False).min()
    order = {name: n for n, name in enumerate([*ESTIMANDS, *(m.name for m in METHODS)])}
    return out.reset_index().sort_values(keys, key=lambda c: c.map(order), ignore_index=True)


def run_shape(name: str, args, instrument: Instrument) -> tuple[pd.DataFrame, dict]:
    spec = SHAPES[name]
    truth = population_r(spec, instrument, args.population, args.seed, args.workers)
    boot = bs.BootstrapSpec(n_resamples=args.resamples, confidence=args.confidence,
                            seed=args.seed)
    specs = [replace(spec, seed=int(s)) for s in _seeds(args.seed, 0, args.corpora)]
    n = len(specs)
    with ProcessPoolExecutor(args.workers) as pool:
        parts = pool.map(corpus_intervals, specs, [instrument] * n, [args.folds] * n, [boot] * n)
        rows = pd.DataFrame([row for part in parts for row in part])
    return summarize(rows, truth), truth


def format_summary(name: str, spec: CorpusSpec, summary: pd.DataFrame, truth: dict,
                   args) -> str:
    lines = [
        f"shape {name}: {spec.n_clients} clients, {spec.sessions_per_client[0]}-"
        f"{spec.sessions_per_client[1]} sessions each, {spec.n_counselors} counselors, "
        f"{args.folds} folds; {args.corpora} corpora, {args.resamples} resamples, "
        f"nominal {args.confidence:.0%}",
        "true r (" + f"{args.population} corpora pooled): " + ", ".join(
            f"{d}/{p} {v:.3f}" for (d, p), v in truth.items()),
        f"{'estimand':<33}{'method':<46}{'coverage':>9}{'min':>7}{'undef':>7}{'width':>7}"
        f"{'bias':>8}",
    ]
    default = next(m.name for m in METHODS
                   if (m.unit, m.interval) == (bs.BootstrapSpec.unit, bs.BootstrapSpec.interval))
    for rec in summary.to_dict("records"):
        method = rec["method"] + (" [tables]" if rec["method"] == default else "")
        lines.append(
            f"{ESTIMAND_TEXT[rec['estimand']]:<33}{method:<46}{rec['coverage']:>9.3f}"
            f"{rec['min_cell']:>7.3f}{rec['undefined']:>7.3f}{rec['width']:>7.3f}"
            f"{rec['bias']:>+8.3f}"
        )
    return "\n".join(lines)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished workers (wall time depends on the load)."""
    import resource

    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def run(args) -> int:
    instrument = load_instrument()
    start = time.perf_counter()
    for name in args.shapes:
        summary, truth = run_shape(name, args, instrument)
        print(format_summary(name, SHAPES[name], summary, truth, args), flush=True)
        print(flush=True)
    print(f"care bench coverage: {time.perf_counter() - start:.0f} s wall, {_cpu_seconds():.0f} "
          f"s CPU, {args.workers} process(es), seed {args.seed}")
    return 0
