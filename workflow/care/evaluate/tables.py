"""The paper's Tables 2-5 as frames and their display forms.

The CSV has one row per model (or term), one column per statistic (``goal_pearson_mean``,
``goal_pearson_sd``, ``goal_pearson_ci_low``, ...); the display forms show mean ± sd over
folds as in the paper, with a note under the table (what ± means, significance marks,
checkpoint selection). :mod:`care.tableformat` writes the files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from care.evaluate import bootstrap as bs
from care.evaluate import multiplicity
from care.evaluate.metrics import METRICS, fold_metrics, summarize_folds
from care.tableformat import (
    fold_count,
    latex_escape,
    marker,
    mean_sd,
    number,
    round_decimals,
    write_outputs,
)

METRIC_LABEL = {"pearson": "r", "spearman": "ρ", "mse": "MSE"}
METRIC_LATEX = {"pearson": "$r$", "spearman": r"$\rho$", "mse": "MSE"}
TEXT_LABEL = {"bleu": "BLEU", "rouge1": "ROUGE-1", "rougeL": "ROUGE-L", "bertscore": "BERTScore"}
#: verdict agreement of generated rationales (care.evaluate.textmetrics.verdict_agreement)
VERDICT_LABEL = {"verdict_score": "Verdict agrees with own score",
                 "verdict_reference": "Verdict agrees with reference"}


# ----------------------------------------------------------------------------- alliance tables
#
# A row is one run under one scoring (``generated``: the parsed integer; ``expected``: the mean
# over the scale labels' probabilities, where a model has them). Per dimension it carries the
# fold mean ± sd of each metric with a bootstrap interval, the pooled out-of-fold r, the
# metrics on the sessions every row of the table scored (``_common``) and the coverage:
# scored sessions over the test folds' sessions (folds.tsv), so a session a counselor did not
# rate counts against the counselor baseline.


def scoring_rows(
    runs: Sequence[Mapping], scores: Mapping[tuple[str, str], pd.DataFrame], headline: str
) -> list[dict]:
    """One entry per (run, scoring), the run's headline scoring first: run fields, scoring,
    headline (bool) and ``scores``, a list of frames (one per seed replicate of the run)."""
    out = []
    for run in runs:
        frames = [scores[run["model"], v] for v in run.get("replicates", [run["variant"]])]
        available = [
            x
            for x in dict.fromkeys(frames[0]["scoring"])
            if all((f["scoring"] == x).any() for f in frames)
        ]
        main = headline if headline in available else available[0]
        for scoring in sorted(available, key=lambda x: (x != main, x)):
            parts = [f[f["scoring"] == scoring] for f in frames]
            out.append({**run, "scoring": scoring, "headline": scoring == main, "scores": parts})
    return out


def common_sessions(rows: Sequence[Mapping], dim: str) -> pd.DataFrame:
    """(fold, session_id) pairs of ``dim`` that every row (and every replicate) scored; a row
    that scored no session of ``dim`` (e.g. no parsed answer) is left out of the comparison."""
    keys = ["fold", "session_id"]
    common = None
    for row in rows:
        for part in row["scores"]:
            scored = bs.scored(part, dim)[keys].drop_duplicates()
            if scored.empty:
                continue
            common = scored if common is None else common.merge(scored, on=keys)
    return common if common is not None else pd.DataFrame(columns=keys)


def _fold_summary(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per-fold metrics averaged over replicates, then mean and sd over folds per dimension."""
    per_fold = pd.concat([fold_metrics(p) for p in parts], ignore_index=True)
    keys = ["fold", "dimension"]
    averaged = per_fold.groupby(keys, sort=True).agg(
        {**{m: "mean" for m in METRICS}, "n_sessions": "mean", "n_scored": "mean"}
    )
    averaged = averaged.reset_index().assign(model="", variant="", scoring="")
    return summarize_folds(averaged).set_index("dimension")


def run_metric_columns(
    scores: pd.DataFrame | Sequence[pd.DataFrame],
    dims: Sequence[str],
    resampler: bs.Resampler,
    common: Mapping[str, pd.DataFrame] | None = None,
) -> dict[str, float]:
    """One row's statistics per dimension: fold mean, sd over folds, interval, pooled r, sd
    over seeds, the metrics on the common sessions, coverage. ``scores``: one frame, or one
    per seed replicate (statistics are then averaged over replicates)."""
    parts = list(scores) if isinstance(scores, list | tuple) else [scores]
    summary = _fold_summary(parts)
    row: dict[str, float] = {"n_folds": len(resampler.folds), "n_seeds": len(parts)}
    for d in dims:
        dim_scores = [bs.scored(p, d) for p in parts]
        for metric in METRICS:
            mean = summary.at[d, f"{metric}_mean"] if d in summary.index else np.nan
            sd = summary.at[d, f"{metric}_sd"] if d in summary.index else np.nan
            estimate = bs.estimate(dim_scores, resampler, metric, "fold_mean")
            row.update(
                {
                    f"{d}_{metric}_mean": mean,
                    f"{d}_{metric}_sd": sd,
                    f"{d}_{metric}_ci_low": estimate["ci_low"],
                    f"{d}_{metric}_ci_high": estimate["ci_high"],
                    f"{d}_{metric}_n_folds": (
                        int(summary.at[d, f"{metric}_n_folds"]) if d in summary.index else 0
                    ),
                }
            )
        by_seed = [bs.estimate(x, resampler, "pearson", "fold_mean")["value"] for x in dim_scores]
        finite = [v for v in by_seed if np.isfinite(v)]
        row[f"{d}_pearson_seed_sd"] = float(np.std(finite, ddof=1)) if len(finite) > 1 else np.nan
        pooled = bs.estimate(dim_scores, resampler, "pearson", "pooled")
        row[f"{d}_pearson_pooled"] = pooled["value"]
        row[f"{d}_pearson_pooled_ci_low"] = pooled["ci_low"]
        row[f"{d}_pearson_pooled_ci_high"] = pooled["ci_high"]
        if common is not None:
            shared = [x.merge(common[d], on=["fold", "session_id"]) for x in dim_scores]
            shared_summary = _fold_summary(shared) if any(len(x) for x in shared) else None
            for metric in METRICS:
                row[f"{d}_{metric}_common_mean"] = (
                    shared_summary.at[d, f"{metric}_mean"]
                    if shared_summary is not None and d in shared_summary.index
                    else np.nan
                )
            row[f"{d}_n_common"] = len(shared[0])
        row[f"{d}_sd_ratio"] = spread_ratio(dim_scores)
        row[f"{d}_n_scored"] = float(np.mean([len(x) for x in dim_scores]))
        row[f"{d}_coverage"] = row[f"{d}_n_scored"] / max(resampler.n_sessions, 1)
    return row


#: a row whose predictions vary less than this share of the ratings' within-fold sd is
#: flagged: it predicts (nearly) one value per fold, whatever its r
FLAT_SD_RATIO = 0.1


def spread_ratio(dim_scores: Sequence[pd.DataFrame]) -> float:
    """Within-fold sd of the predictions over the within-fold sd of the client ratings, mean
    over folds and replicates: how much a model's scores move against how much ratings do."""
    ratios = [
        g["predicted"].std(ddof=1) / g["client"].std(ddof=1)
        for x in dim_scores
        for _, g in x.groupby("fold")
        if len(g) > 1 and g["client"].std(ddof=1) > 0
    ]
    return float(np.mean(ratios)) if ratios else np.nan


def flat_note(frame: pd.DataFrame, dims: Sequence[str]) -> list[str]:
    """A note naming the rows whose predictions hardly vary (they have not learned)."""
    flat = [
        f"{rec['label']} ({rec['scoring']})"
        for rec in frame.to_dict("records")
        if any(rec.get(f"{d}_sd_ratio", np.nan) < FLAT_SD_RATIO for d in dims)
    ]
    if not flat:
        return []
    return [
        f"Not learned: {', '.join(flat)} — within-fold prediction sd below {FLAT_SD_RATIO:g}× "
        "the client ratings' sd on some dimension (CSV: {dimension}_sd_ratio); such a row "
        "predicts nearly one value per fold, and its r says little."
    ]


def paired_columns(
    scores: pd.DataFrame,
    reference: pd.DataFrame,
    dims: Sequence[str],
    resampler: bs.Resampler,
    suffix: str,
    only: Sequence[str] | None = None,
) -> dict[str, float]:
    """Pearson difference to a reference run and its paired bootstrap p-value, per dimension."""
    row = {}
    for d in dims:
        if only is not None and d not in only:
            result = {"difference": np.nan, "p_value": np.nan}
        else:
            result = bs.paired_test(
                [bs.scored(x, d) for x in bs.as_list(scores)],
                [bs.scored(x, d) for x in bs.as_list(reference)],
                resampler,
            )
        row[f"{d}_pearson_diff_vs_{suffix}"] = result["difference"]
        row[f"{d}_pearson_p_vs_{suffix}"] = result["p_value"]
    return row


def _base_row(entry: Mapping, keys: Sequence[str]) -> dict:
    row = {k: entry[k] for k in keys}
    row.update(scoring=entry["scoring"], headline=bool(entry["headline"]))
    return row


def table2(
    runs: Sequence[Mapping],
    scores: Mapping[tuple[str, str], pd.DataFrame],
    dims: Sequence[str],
    resampler: bs.Resampler,
    selection: str,
    headline: str = "generated",
    multiple_testing: str = "holm",
) -> pd.DataFrame:
    """Human counselor, zero-shot baselines and CARE per backbone, each under every scoring it
    has; each row tested against the best baseline row (any scoring) on shared sessions.

    ``runs``: dicts with model, variant, label, kind (counselor | zero_shot | fine_tuned) and
    optionally selection (a fine-tuned run's checkpoint selection; default ``selection``).
    The best baseline of a dimension is the highest fold-mean r among the baselines whose r
    is defined in every fold (a mean over fewer folds is not comparable). The p-values are
    adjusted over the table (:func:`adjust_p`).
    """
    entries = scoring_rows(runs, scores, headline)
    common = {d: common_sessions(entries, d) for d in dims}
    rows = []
    for entry in entries:
        row = _base_row(entry, ("model", "variant", "label", "kind"))
        fine_tuned = entry["kind"] == "fine_tuned"
        row["selection"] = entry.get("selection", selection) if fine_tuned else "n/a"
        row.update(run_metric_columns(entry["scores"], dims, resampler, common))
        rows.append(row)
    frame = pd.DataFrame(rows)
    baselines = frame[frame["kind"] != "fine_tuned"]
    for d in dims:
        complete = baselines[baselines[f"{d}_pearson_n_folds"] == baselines["n_folds"]]
        ranked = complete.dropna(subset=[f"{d}_pearson_mean"])
        best = ranked[f"{d}_pearson_mean"].idxmax() if len(ranked) else None
        frame[f"{d}_best_baseline"] = (
            "none" if best is None else f"{frame.at[best, 'label']} ({frame.at[best, 'scoring']})"
        )
        diffs, pvals = [], []
        for n, entry in enumerate(entries):
            if best is None or n == best:
                diffs.append(np.nan)
                pvals.append(np.nan)
                continue
            result = paired_columns(
                entry["scores"], entries[best]["scores"], [d], resampler, "best"
            )
            diffs.append(result[f"{d}_pearson_diff_vs_best"])
            pvals.append(result[f"{d}_pearson_p_vs_best"])
        frame[f"{d}_pearson_diff_vs_best"] = diffs
        frame[f"{d}_pearson_p_vs_best"] = pvals
    adjust_p(frame, dims, "{d}_pearson_p_vs_best", multiple_testing)
    return round_decimals(frame)


def table4(
    runs: Sequence[Mapping],
    scores: Mapping[tuple[str, str], pd.DataFrame],
    dims: Sequence[str],
    resampler: bs.Resampler,
    reference_variant: str = "score_only",
    headline: str = "generated",
    multiple_testing: str = "holm",
) -> pd.DataFrame:
    """Backbone x variant (the ablation) under each scoring; each variant tested against the
    backbone's ``reference_variant`` under the same scoring, on the sessions both scored (with
    seed replicates: over seeds and clients, :func:`bs.paired_test`). A dimension whose
    reference r is defined in fewer folds than the table's is not tested. The p-values are
    adjusted over the table (:func:`adjust_p`)."""
    entries = scoring_rows(runs, scores, headline)
    common = {d: common_sessions(entries, d) for d in dims}
    by_key = {(e["model"], e["variant"], e["scoring"]): e for e in entries}
    rows = []
    for entry in entries:
        row = _base_row(entry, ("model", "variant", "label"))
        row.update(run_metric_columns(entry["scores"], dims, resampler, common))
        ref = by_key.get((entry["model"], reference_variant, entry["scoring"]))
        if entry["variant"] != reference_variant and ref is not None:
            row.update(
                paired_columns(
                    entry["scores"],
                    ref["scores"],
                    dims,
                    resampler,
                    reference_variant,
                    only=complete_dimensions(ref["scores"], dims, resampler),
                )
            )
        else:
            row.update(
                {
                    f"{d}_pearson_{s}_vs_{reference_variant}": np.nan
                    for d in dims
                    for s in ("diff", "p")
                }
            )
        rows.append(row)
    frame = pd.DataFrame(rows)
    adjust_p(frame, dims, f"{{d}}_pearson_p_vs_{reference_variant}", multiple_testing)
    return round_decimals(frame)


def complete_dimensions(
    scores: Sequence[pd.DataFrame], dims: Sequence[str], resampler: bs.Resampler
) -> list[str]:
    """The dimensions whose fold-mean r (over replicates) is defined in every fold."""
    summary = _fold_summary(list(scores))
    return [
        d
        for d in dims
        if d in summary.index and summary.at[d, "pearson_n_folds"] == len(resampler.folds)
    ]


def adjust_p(frame: pd.DataFrame, dims: Sequence[str], p_column: str, method: str) -> int:
    """Add ``<p column>_adjusted`` per dimension: the table's p-values adjusted as one family
    (:mod:`care.evaluate.multiplicity`). A row whose r is from fewer folds than the table's is
    not in the family and gets no adjusted p (it is never starred). Returns the family size."""
    columns = [p_column.format(d=d) for d in dims]
    if frame.empty or any(c not in frame.columns for c in columns):
        return 0
    cells = [
        frame[c].where(frame[f"{d}_pearson_n_folds"] == frame["n_folds"]).to_numpy(dtype=float)
        for d, c in zip(dims, columns, strict=True)
    ]
    adjusted = multiplicity.adjust(np.concatenate(cells), method).reshape(len(dims), -1)
    for column, values in zip(columns, adjusted, strict=True):
        frame[f"{column}_adjusted"] = values
    return int(np.isfinite(adjusted).sum())


# ------------------------------------------------------------------------ Tables 2 and 4 files


@dataclass(frozen=True)
class Protocol:
    """How a table's fine-tuned numbers were made, for its notes."""

    selection: str = "unknown"  # checkpoint selection (a run's own wins)
    selection_scoring: str = "generated"  # the scoring selection maximised r of
    headline: str = "generated"  # the scoring of each run's first row


def write_table2(
    out, runs, scores, instrument, resampler, protocol: Protocol, multiple_testing: str = "holm"
) -> pd.DataFrame:
    """Build Table 2 (:func:`table2`) and write its files with their notes."""
    dims, labels = instrument.dimension_ids, dimension_labels(instrument)
    frame = table2(
        runs, scores, dims, resampler, protocol.selection, protocol.headline, multiple_testing
    )
    best = ", ".join(f"{labels[d]}: {frame[f'{d}_best_baseline'].iloc[0] or 'none'}" for d in dims)
    p_column = "{d}_pearson_p_vs_best"
    notes = alliance_notes(
        frame, dims, f"the best baseline ({best})", resampler, protocol, p_column, multiple_testing
    )
    columns = {"label": "Model", "scoring": "Scoring"}
    caption = f"Table 2: prediction of {instrument.construct_text('en')} against client ratings"
    _write_alliance(out, frame, instrument, columns, p_column, caption, notes)
    return frame


def write_table4(
    out,
    runs,
    scores,
    instrument,
    resampler,
    protocol: Protocol,
    reference_variant: str,
    multiple_testing: str = "holm",
) -> pd.DataFrame:
    """Build Table 4 (:func:`table4`), every row under ``protocol.selection``, and write its
    files with their notes."""
    dims, ref = instrument.dimension_ids, reference_variant
    frame = table4(runs, scores, dims, resampler, ref, protocol.headline, multiple_testing)
    frame.insert(3, "selection", protocol.selection)
    compared = f"the same backbone's {ref} run under the same scoring"
    p_column = f"{{d}}_pearson_p_vs_{ref}"
    notes = alliance_notes(frame, dims, compared, resampler, protocol, p_column, multiple_testing)
    notes.insert(3, seed_note(frame, dims))
    columns = {"model": "Backbone", "variant": "Variant", "scoring": "Scoring"}
    caption = "Table 4: rationale supervision across backbones (ablation)"
    _write_alliance(out, frame, instrument, columns, p_column, caption, notes)
    return frame


def alliance_notes(
    frame: pd.DataFrame,
    dims: Sequence[str],
    compared: str,
    resampler: bs.Resampler,
    protocol: Protocol,
    p_column: str,
    multiple_testing: str,
) -> list[str]:
    """The notes under Tables 2 and 4: folds, protocol, the significance test and its
    correction, the intervals, coverage."""
    adjusted = [f"{p_column.format(d=d)}_adjusted" for d in dims]
    n_tests = int(sum(frame[c].notna().sum() for c in adjusted if c in frame.columns))
    return [
        f"Mean ± sd over {int(frame['n_folds'].max())} test folds; r Pearson, ρ Spearman.",
        protocol_note(frame, protocol),
        f"(*) Pearson r differs from {compared} at p < .05 (paired bootstrap on the sessions "
        f"both scored), p {multiplicity.describe(multiple_testing, n_tests)}; cells from fewer "
        "folds are not tested. CSV: uncorrected p (*_p_vs_*) and adjusted (*_adjusted).",
        interval_note(resampler.spec),
        PARTIAL_NOTE if partial_folds(frame, dims) else SCORED_NOTE,
        *flat_note(frame, dims),
    ]


def interval_note(spec: bs.BootstrapSpec) -> str:
    """Which intervals the CSV holds, and what simulation says of their coverage."""
    return f"Intervals (CSV *_ci_low, *_ci_high): {spec.describe()}. " + COVERAGE_NOTE


#: What `care bench coverage` found (docs/evaluation.md, "Uncertainty", has its table and command).
COVERAGE_NOTE = (
    "In simulated corpora (care bench coverage), the default (percentile intervals from "
    "counselors, then their clients) covered the true r about as often as stated at the "
    "paper's size (82 clients), but at the demo's size (32 clients, 8 counselors) no interval "
    "method did for the fold-mean r: intervals from a corpus that small are too narrow."
)


def seed_note(frame: pd.DataFrame, dims: Sequence[str]) -> str:
    """How many training seeds stand behind each row, and how far apart they are."""
    n_seeds = int(frame["n_seeds"].max()) if "n_seeds" in frame.columns else 1
    if n_seeds < 2:
        return (
            "One training seed per run: each p-value is conditional on one model per fold "
            "(training.seeds adds seed replicates; the test then redraws seeds and clients)."
        )
    spread = frame[[f"{d}_pearson_seed_sd" for d in dims]].to_numpy(dtype=float)
    spread = spread[np.isfinite(spread)]
    text = (
        f"Up to {n_seeds} training seeds per run: values are means over seeds, and the paired "
        "test redraws seeds and clients."
    )
    if len(spread):
        text += (
            f" Seed-to-seed sd of the fold-mean r: median {number(np.median(spread))}, "
            f"max {number(spread.max())} (CSV *_pearson_seed_sd)."
        )
    return text


def protocol_note(frame: pd.DataFrame, protocol: Protocol) -> str:
    """Which checkpoint selection and which scoring each number is (the table's protocol)."""
    tuned = frame[frame["kind"] == "fine_tuned"] if "kind" in frame else frame
    selections = sorted(set(tuned["selection"])) if "selection" in tuned else []
    scoring = protocol.selection_scoring
    differs = ", not the headline scoring" if scoring != protocol.headline else ""
    selection = (
        f"Fine-tuned checkpoints selected by the mean validation Pearson r "
        f"({scoring} scoring{differs}) on: {', '.join(selections)} "
        "(inner_split: a client-grouped share of the training folds; heldout_fold: the test "
        "fold itself, optimistic). "
        if selections
        else ""
    )
    return (
        f"{selection}Scoring: generated = the parsed integer the model wrote; expected = the "
        "mean over the scale labels weighted by their probabilities (models with label "
        f"probabilities only). Headline scoring: {protocol.headline} (each run's first row; "
        "runs without it show generated)."
    )


def _write_alliance(out, frame, instrument, row_columns, p_column, caption, notes) -> None:
    kwargs = dict(
        dims=instrument.dimension_ids,
        dim_labels=dimension_labels(instrument),
        row_columns=row_columns,
        p_column=p_column,
    )
    write_outputs(
        out,
        frame,
        alliance_display(frame, latex=False, **kwargs),
        alliance_display(frame, latex=True, **kwargs),
        caption,
        notes,
    )


def dimension_labels(instrument, language: str = "en") -> dict[str, str]:
    """Each dimension's display label (table headers, figure titles)."""
    return {d.id: d.label(language) for d in instrument.dimensions}


# ------------------------------------------------------------------------ rationale quality


def table3(
    quality: pd.DataFrame,
    dims: Sequence[str],
    labels: Mapping[tuple[str, str], str],
    human: pd.DataFrame | None = None,
    human_model: tuple[str, str] | None = None,
) -> pd.DataFrame:
    """Per fine-tuned run: BLEU/ROUGE-1/ROUGE-L/BERTScore per dimension, mean ± sd over folds.

    ``quality``: per (model, variant, fold, dimension) text metrics. ``human``: the human
    evaluation summary (criterion, dimension, mean, sd, alpha), added to ``human_model``'s row.
    """
    rows = []
    for (model, variant), group in quality.groupby(["model", "variant"], sort=False):
        row = {"model": model, "variant": variant, "label": labels.get((model, variant), model)}
        row["n_folds"] = int(group["fold"].nunique())
        for d in dims:
            part = group[group["dimension"] == d]
            for metric in [*TEXT_LABEL, *VERDICT_LABEL, *(f"{v}_chance" for v in VERDICT_LABEL)]:
                values = part[metric].dropna() if metric in part else part.iloc[:0, 0]
                row[f"{d}_{metric}_mean"] = values.mean() if len(values) else np.nan
                row[f"{d}_{metric}_sd"] = values.std(ddof=1) if len(values) > 1 else np.nan
            row[f"{d}_coverage"] = part["n_pairs"].sum() / max(int(part["n_items"].sum()), 1)
            row[f"{d}_n_pairs"] = int(part["n_pairs"].sum())
        if human is not None and human_model == (model, variant):
            for rec in human.to_dict("records"):
                if rec["dimension"] in dims:
                    prefix = f"{rec['dimension']}_{rec['criterion']}"
                    row.update(
                        {
                            f"{prefix}_mean": rec["mean"],
                            f"{prefix}_sd": rec["sd"],
                            f"{prefix}_alpha": rec["alpha"],
                        }
                    )
        rows.append(row)
    return round_decimals(pd.DataFrame(rows))


# ------------------------------------------------------------------------------ lexical table


def table5(terms: pd.DataFrame, lengths: pd.DataFrame, source: str) -> pd.DataFrame:
    """Top terms per dimension with rank; the dimension's rationale length (characters).

    ``terms``: :func:`care.evaluate.logodds.top_terms` output with group = dimension.
    ``lengths``: dimension, length_mean, length_sd.
    """
    frame = terms.rename(columns={"group": "dimension"}).copy()
    frame.insert(1, "rank", frame.groupby("dimension", sort=False).cumcount() + 1)
    frame = frame.merge(lengths, on="dimension", how="left")
    frame.insert(0, "source", source)
    return round_decimals(frame)


# --------------------------------------------------------------------------- writing, reading


def alliance_display(
    frame: pd.DataFrame,
    dims: Sequence[str],
    dim_labels: Mapping[str, str],
    row_columns: Mapping[str, str],
    p_column: str | None,
    latex: bool,
) -> pd.DataFrame:
    """Display frame for Tables 2 and 4: label columns, then dimension x metric cells."""
    names = METRIC_LATEX if latex else METRIC_LABEL
    data = {}
    for column, title in row_columns.items():
        values = frame[column].astype(str)
        data[(title, "")] = [latex_escape(v) for v in values] if latex else list(values)
    for d in dims:
        for metric in METRICS:
            p = p_column and metric == "pearson" and f"{p_column.format(d=d)}_adjusted"
            cells = [
                metric_cell(rec, d, metric, p or None, latex) for rec in frame.to_dict("records")
            ]
            data[(dim_labels[d], names[metric])] = cells
        for column, title in (("pearson_pooled", "pooled"), ("pearson_common_mean", "common")):
            if f"{d}_{column}" in frame.columns:
                cells = [mean_sd(v, None, latex=latex) for v in frame[f"{d}_{column}"]]
                data[(dim_labels[d], f"{names['pearson']} {title}")] = cells
    coverage = frame[[f"{d}_coverage" for d in dims]].mean(axis=1)
    percent, missing = (r"\%", "--") if latex else ("%", "–")
    data[("Scored", "")] = [
        f"{c * 100:.0f}{percent}" if np.isfinite(c) else missing for c in coverage
    ]
    display = pd.DataFrame(data)
    display.columns = pd.MultiIndex.from_tuples(display.columns)
    return display


def metric_cell(
    rec: Mapping, dim: str, metric: str, p_column: str | None, latex: bool = False
) -> str:
    """One cell: mean ± sd over folds with a star where the (adjusted) p is below .05; a mean
    over fewer folds than the table's says so, e.g. "−0.02 (1 of 5 folds)", and has no star."""
    mean, sd = rec[f"{dim}_{metric}_mean"], rec[f"{dim}_{metric}_sd"]
    folds, total = fold_count(rec, dim, metric)
    if 0 < folds < total:
        return f"{number(mean, latex=latex)} ({folds} of {total} folds)"
    text = mean_sd(mean, sd, latex=latex)
    return text + (marker(rec.get(p_column), latex=latex) if p_column else "")


def partial_folds(frame: pd.DataFrame, dims: Sequence[str]) -> bool:
    """Whether some mean covers fewer folds than the run has ("k of K folds" cells)."""
    return any(
        ((frame[f"{d}_{m}_n_folds"] > 0) & (frame[f"{d}_{m}_n_folds"] < frame["n_folds"])).any()
        for d in dims
        for m in METRICS
        if f"{d}_{m}_n_folds" in frame.columns
    )


SCORED_NOTE = (
    "Scored: share of the test folds' sessions with a dimension score (every item parsed; "
    "for the counselor baseline, rated by the counselor), mean over dimensions. "
    "r pooled: Pearson r over all test folds' sessions together (fold offsets lower it); "
    "r common: fold-mean r on the sessions every row of the table scored (rows that scored "
    "none left out)."
)
PARTIAL_NOTE = (
    "(k of K folds): the mean over the k folds where the metric is defined (a correlation is "
    "undefined in a fold where the predictions are constant); not comparable with the other "
    "cells, never tested or starred. " + SCORED_NOTE
)


def text_display(
    frame: pd.DataFrame, dims: Sequence[str], dim_labels: Mapping[str, str], latex: bool
) -> pd.DataFrame:
    """Display frame for Table 3: rows (model, metric), columns the dimensions."""
    metrics = {**TEXT_LABEL, **VERDICT_LABEL}
    for criterion in ("faithfulness", "relevance", "informativeness"):
        if any(f"{d}_{criterion}_mean" in frame.columns for d in dims):
            metrics[criterion] = f"Human: {criterion}"
    rows = []
    for rec in frame.to_dict("records"):
        for metric, title in metrics.items():
            if f"{dims[0]}_{metric}_mean" not in rec or not np.isfinite(
                rec.get(f"{dims[0]}_{metric}_mean", np.nan)
            ):
                continue
            row = {"Model": latex_escape(rec["label"]) if latex else rec["label"], "Metric": title}
            for d in dims:
                row[dim_labels[d]] = mean_sd(
                    rec[f"{d}_{metric}_mean"], rec[f"{d}_{metric}_sd"], latex=latex
                )
                if metric in VERDICT_LABEL:  # agreement means little without its chance rate
                    chance = number(rec[f"{d}_{metric}_chance_mean"], latex=latex)
                    row[dim_labels[d]] += f" (chance {chance})"
            rows.append(row)
    return pd.DataFrame(rows, columns=["Model", "Metric", *[dim_labels[d] for d in dims]])


def terms_display(frame: pd.DataFrame, dim_labels: Mapping[str, str], latex: bool) -> pd.DataFrame:
    """Display frame for Table 5: dimension, rationale length, top terms with z-scores."""
    rows = []
    for dimension, group in frame.groupby("dimension", sort=False):
        first = group.iloc[0]
        terms = ", ".join(f"{t} ({z:.1f})" for t, z in zip(group["term"], group["z"], strict=True))
        rows.append(
            {
                "Dimension": dim_labels.get(dimension, dimension),
                "Length": mean_sd(first["length_mean"], first["length_sd"], digits=1, latex=latex),
                "Lexical features (z)": latex_escape(terms) if latex else terms,
            }
        )
    return pd.DataFrame(rows, columns=["Dimension", "Length", "Lexical features (z)"])
