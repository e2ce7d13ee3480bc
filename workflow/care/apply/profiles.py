"""Counselor alliance profiles (the paper's Figure 2).

For every counselor with at least ``min_sessions`` scored sessions: the mean predicted score
of each dimension with a 95% t-interval over sessions, against the corpus mean (all
sessions). The table behind the figure is written too (``profiles.csv``), so the numbers can
be checked without reading bars. Counselors may be shown anonymised (``Counselor A`` for the
one with the most sessions, then B, ...); the CSV keeps the mapping.
"""

from __future__ import annotations

import logging
import string
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from care.errors import CareInputError
from care.instrument import Instrument
from care.io import write_table

CORPUS = "all sessions"
log = logging.getLogger(__name__)


def mean_interval(values: pd.Series, confidence: float) -> tuple[float, float, float]:
    """Mean and its t-interval; NaN bounds with fewer than two values."""
    values = values.dropna().to_numpy(dtype=float)
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, np.nan, np.nan
    sem = stats.sem(values)
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def counselor_labels(counts: pd.Series, anonymize: bool) -> dict[str, str]:
    """Display names: ids, or letters by descending session count (ties by id)."""
    order = sorted(counts.index, key=lambda c: (-counts[c], c))
    if not anonymize:
        return {c: str(c) for c in order}
    letters = list(string.ascii_uppercase)
    names = [letters[n] if n < 26 else f"{letters[n // 26 - 1]}{letters[n % 26]}"
             for n in range(len(order))]
    return {c: f"Counselor {name}" for c, name in zip(order, names, strict=True)}


def counselor_profiles(
    scores: pd.DataFrame,
    instrument: Instrument,
    *,
    min_sessions: int,
    confidence: float = 0.95,
    anonymize: bool = False,
    source: str = "predictions",
) -> pd.DataFrame:
    """Long table: one row per (group, dimension); group = the corpus, then each counselor."""
    counts = scores.groupby("counselor_id")["session_id"].nunique()
    chosen = counts[counts >= min_sessions]
    if chosen.empty:
        raise CareInputError(
            source,
            f"no counselor has {min_sessions} or more sessions (most: {int(counts.max())}); "
            "lower application.min_sessions",
            field="counselor_id",
        )
    labels = counselor_labels(chosen, anonymize)
    rows = []
    for dim in instrument.dimension_ids:
        corpus_mean, low, high = mean_interval(scores[dim], confidence)
        rows.append(_row(CORPUS, CORPUS, scores, dim, corpus_mean, low, high, corpus_mean))
        for counselor, label in labels.items():
            mine = scores[scores["counselor_id"] == counselor]
            mean, low, high = mean_interval(mine[dim], confidence)
            rows.append(_row(counselor, label, mine, dim, mean, low, high, corpus_mean))
    return pd.DataFrame(rows)


def _row(group, label, frame, dim, mean, low, high, corpus_mean) -> dict:
    return {
        "counselor_id": group, "label": label, "dimension": dim,
        "n_sessions": int(frame["session_id"].nunique()), "n_scored": int(frame[dim].notna().sum()),
        "mean": mean, "ci_low": low, "ci_high": high, "diff_from_corpus": mean - corpus_mean,
    }


def plot_profiles(profiles: pd.DataFrame, instrument: Instrument, language: str = "en",
                  note: str | None = None, notice=None):
    """Per dimension, each counselor's mean with its 95% interval beside the corpus mean.

    The y-axis spans the instrument's whole scale, so a difference of a few hundredths does
    not look like a gap; ``notice`` (care.apply.notice.Validity) is printed under the plot.
    """
    from care.evaluate.figures import PALETTE, STYLE, _pyplot

    plt = _pyplot()
    dims = instrument.dimension_ids
    counselors = profiles.loc[profiles["counselor_id"] != CORPUS, "label"].drop_duplicates()
    n = len(counselors)
    step = 0.7 / max(n, 1)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(2.4 + 1.3 * len(dims) + 0.15 * n * len(dims), 3.2))
        corpus = profiles[profiles["counselor_id"] == CORPUS].set_index("dimension").loc[dims]
        for j, dim in enumerate(dims):
            row = corpus.loc[dim]
            label = f"corpus mean, 95% CI (n={int(row['n_sessions'])})"
            ax.fill_between([j - 0.42, j + 0.42], row["ci_low"], row["ci_high"], color="grey",
                            alpha=0.25, linewidth=0)
            ax.hlines(row["mean"], j - 0.42, j + 0.42, colors="black", linestyles="--",
                      linewidth=1.1, label=label if j == 0 else None)
        for k, label in enumerate(counselors):
            sub = profiles[profiles["label"] == label].set_index("dimension").loc[dims]
            x = np.arange(len(dims)) - 0.35 + step * (k + 0.5)
            err = np.vstack([sub["mean"] - sub["ci_low"], sub["ci_high"] - sub["mean"]])
            ax.errorbar(x, sub["mean"], yerr=np.nan_to_num(err), fmt="o", capsize=3,
                        markersize=5, color=PALETTE[k % len(PALETTE)],
                        label=f"{label} (n={int(sub['n_sessions'].iloc[0])})")
        ax.set_xticks(range(len(dims)), [instrument.dimension(d).label(language) for d in dims])
        ax.set_xlim(-0.5, len(dims) - 0.5)
        pad = 0.04 * (instrument.scale_max - instrument.scale_min)
        ax.set_ylim(instrument.scale_min - pad, instrument.scale_max + pad)
        ax.set_yticks(instrument.scale_points)
        ax.set_ylabel(f"mean predicted score (95% CI), {instrument.scale_min}–"
                      f"{instrument.scale_max} scale")
        if notice is not None:
            import textwrap

            text = "\n".join(textwrap.fill(line, 150) for line in notice.lines())
            fig.text(0.01, -0.02, text, fontsize=6, va="top", ha="left", color="#333333")
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        if note:
            ax.set_title(note, fontsize=8, loc="left", wrap=True)
        fig.tight_layout()
    return fig


def figure2(
    scores: pd.DataFrame, instrument: Instrument, *, stem: str | Path, table: str | Path | None,
    min_sessions: int, confidence: float = 0.95, anonymize: bool = False, language: str = "en",
    source: str = "predictions", notice=None,
) -> pd.DataFrame:
    """Write ``stem.png`` and ``stem.pdf`` (and the table behind them); return the table."""
    from care.evaluate.figures import save

    profiles = counselor_profiles(scores, instrument, min_sessions=min_sessions,
                                  confidence=confidence, anonymize=anonymize, source=source)
    note = None
    if scores["counselor_id"].nunique() < 2:
        note = ("The corpus has one counselor: the profile is the corpus mean itself, "
                "so there is nothing to compare.")
        log.warning("Figure 2: %s", note)
    save(plot_profiles(profiles, instrument, language, note, notice), stem)
    if table is not None:
        write_table(table, profiles, float_format="%.4f")
    return profiles
