"""Figures in one shared style, each written as PNG and PDF.

- :func:`score_distributions`: the paper's Figure 3, client dimension scores per dimension.
- :func:`prediction_scatter`: predicted vs client dimension scores of one fine-tuned run.
- :func:`ablation_bars`: Table 4 as bars (fold-mean Pearson r, error bars = sd over folds).

Files carry no creation date, so the same data give the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from care.io import atomic_path

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "svg.hashsalt": "care",
}
PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]  # models, people
# One colour per dimension (by its position in the instrument), in every figure and page.
DIMENSION_COLORS = ["#2b6cb0", "#2f855a", "#c05621", "#6b46c1", "#b83280", "#2c7a7b"]


def dimension_color(index: int) -> str:
    return DIMENSION_COLORS[index % len(DIMENSION_COLORS)]
FORMATS = ("png", "pdf")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, stem: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``stem.<fmt>`` for each format, atomically, without timestamps."""
    plt = _pyplot()
    written = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, metadata=metadata, bbox_inches="tight")
        written.append(path)
    plt.close(fig)
    return written


def score_distributions(
    sessions: pd.DataFrame,
    dims: Sequence[str],
    labels: Mapping[str, str],
    scale: tuple[int, int],
    stem: str | Path,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Histograms of the client's dimension scores (Figure 3), with the mean marked."""
    plt = _pyplot()
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(dims), figsize=(3.0 * len(dims), 2.6), sharey=True)
        axes = np.atleast_1d(axes)
        bins = np.arange(scale[0] - 0.125, scale[1] + 0.25, 0.25)
        for n, (ax, d) in enumerate(zip(axes, dims, strict=True)):
            values = sessions[d].dropna().to_numpy(dtype=float)
            ax.hist(values, bins=bins, color=dimension_color(n), edgecolor="white")
            ax.axvline(values.mean(), color="black", linestyle="--", linewidth=1)
            ax.set_title(f"{labels[d]} (mean {values.mean():.2f}, n={len(values)})")
            ax.set_xlabel("client score")
            ax.set_xlim(scale[0] - 0.25, scale[1] + 0.25)
        axes[0].set_ylabel("sessions")
        fig.tight_layout()
    return save(fig, stem, formats)


def prediction_scatter(
    scores: pd.DataFrame,
    dims: Sequence[str],
    labels: Mapping[str, str],
    scale: tuple[int, int],
    title: str,
    stem: str | Path,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Predicted vs client dimension score per dimension (held-out folds pooled)."""
    plt = _pyplot()
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            1, len(dims), figsize=(3.0 * len(dims), 3.0), sharex=True, sharey=True
        )
        axes = np.atleast_1d(axes)
        for n, (ax, d) in enumerate(zip(axes, dims, strict=True)):
            part = scores[scores["dimension"] == d].dropna(subset=["predicted", "client"])
            ax.plot(scale, scale, color="grey", linewidth=0.8, linestyle=":")
            ax.scatter(
                part["client"],
                part["predicted"],
                s=10,
                alpha=0.6,
                color=dimension_color(n),
                edgecolors="none",
            )
            r = np.corrcoef(part["client"], part["predicted"])[0, 1] if len(part) > 2 else np.nan
            ax.set_title(f"{labels[d]} (pooled r = {r:.2f}, n={len(part)})")
            ax.set_xlabel("client score")
            ax.set_xlim(scale[0] - 0.2, scale[1] + 0.2)
            ax.set_ylim(scale[0] - 0.2, scale[1] + 0.2)
        axes[0].set_ylabel("predicted score")
        fig.suptitle(title)
        fig.tight_layout()
    return save(fig, stem, formats)


def ablation_bars(
    table: pd.DataFrame,
    dims: Sequence[str],
    labels: Mapping[str, str],
    stem: str | Path,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Fold-mean Pearson r per dimension for each backbone x variant, error bars = sd."""
    plt = _pyplot()
    runs = table[["model", "variant"]].drop_duplicates().to_records(index=False)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(dims) * max(len(runs), 1) / 2, 3.0))
        width = 0.8 / max(len(runs), 1)
        x = np.arange(len(dims))
        models = list(dict.fromkeys(table["model"]))
        for n, (model, variant) in enumerate(runs):
            row = table[(table["model"] == model) & (table["variant"] == variant)].iloc[0]
            means = [row[f"{d}_pearson_mean"] for d in dims]
            sds = np.nan_to_num([row[f"{d}_pearson_sd"] for d in dims])
            hatch = "" if variant == "rationale" else "//"
            ax.bar(
                x + (n - (len(runs) - 1) / 2) * width,
                means,
                width,
                yerr=sds,
                capsize=3,
                label=f"{model} · {variant}",
                color=PALETTE[models.index(model) % len(PALETTE)],
                alpha=1.0 if variant == "rationale" else 0.55,
                hatch=hatch,
                edgecolor="white",
            )
        ax.set_xticks(x, [labels[d] for d in dims])
        ax.set_ylabel("Pearson r (mean ± sd over folds)")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.legend(fontsize=7, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.12))
        fig.tight_layout()
    return save(fig, stem, formats)


def training_curves(
    runs: Sequence[tuple[str, int, pd.DataFrame, Mapping]],
    stem: str | Path,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Per fine-tuning run (backbone · variant): training loss by epoch and validation mean
    Pearson r by epoch, one line per fold; the chosen epoch is circled.

    ``runs``: (run label, fold, train_log.csv frame, selection.json) per fine-tune.
    """
    plt = _pyplot()
    labels = list(dict.fromkeys(label for label, *_ in runs))
    folds = sorted({fold for _, fold, *_ in runs})
    colors = {f: plt.get_cmap("viridis")(n / max(len(folds) - 1, 1) * 0.85)
              for n, f in enumerate(folds)}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(labels), 2, figsize=(7.0, 2.2 * len(labels) + 0.4),
                                 squeeze=False)
        for label, fold, log, selection in runs:
            loss_ax, val_ax = axes[labels.index(label)]
            log = log.dropna(subset=["loss"])
            loss_ax.plot(log["epoch"], log["loss"], color=colors[fold], linewidth=1,
                         label=f"fold {fold}")
            epochs = selection.get("epochs", [])
            xs = [e["epoch"] for e in epochs]
            ys = [np.nan if e.get("mean_pearson") is None else e["mean_pearson"] for e in epochs]
            val_ax.plot(xs, ys, marker="o", markersize=3, color=colors[fold], linewidth=1)
            chosen = selection.get("chosen", {})
            if chosen.get("mean_pearson") is not None:
                val_ax.plot([chosen["epoch"]], [chosen["mean_pearson"]], marker="o",
                            markersize=9, markerfacecolor="none", color=colors[fold])
            loss_ax.set_title(f"{label}: training loss")
            mode = selection.get("selection", "")
            val_ax.set_title(f"{label}: validation mean Pearson r ({mode})")
        for loss_ax, val_ax in axes:
            loss_ax.set_ylabel("loss")
            val_ax.set_ylabel("r")
            val_ax.axhline(0, color="black", linewidth=0.6)
        axes[-1][0].set_xlabel("epoch")
        axes[-1][1].set_xlabel("epoch (circled: the chosen checkpoint)")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
    return save(fig, stem, formats)
