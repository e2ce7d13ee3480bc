"""Table files: every results table written as CSV, Markdown, LaTeX (booktabs) and HTML.

CSV is the machine-readable form: one row per model (or term), one column per statistic,
numbers rounded to 6 decimals so that the same inputs give the same bytes on any machine;
:func:`read_table` reads it back. Markdown, LaTeX and HTML are the display forms, with the
notes under the table. The cell formatters (:func:`number`, :func:`mean_sd`, LaTeX escaping)
are shared by Tables 1-8, the README and the application's reports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from care.io import atomic_open, write_table

DECIMALS = 6


def round_decimals(frame: pd.DataFrame) -> pd.DataFrame:
    numeric = frame.select_dtypes(include="float").columns
    frame[numeric] = frame[numeric].round(DECIMALS)
    return frame


def read_table(path: str | Path) -> pd.DataFrame:
    """A table CSV as written by :func:`write_outputs` (exact round trip of its numbers)."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def write_outputs(
    csv_path: str | Path,
    frame: pd.DataFrame,
    display: pd.DataFrame,
    latex_display: pd.DataFrame,
    caption: str,
    notes: Sequence[str],
) -> None:
    """``x.csv`` (the frame); ``x.md``, ``x.tex`` and ``x.html`` (the display) beside it."""
    from care.provenance import NOTE

    csv_path = Path(csv_path)
    notes = [*notes, NOTE]
    write_table(csv_path, frame)
    md = display.copy()
    if isinstance(md.columns, pd.MultiIndex):
        md.columns = [" ".join(str(p) for p in c if p) for c in md.columns]
    with atomic_open(csv_path.with_suffix(".md")) as out:
        out.write(f"**{caption}**\n\n")
        out.write(md.to_markdown(index=False, disable_numparse=True) + "\n\n")
        out.write("\n\n".join(notes) + "\n")
    label = f"tab:{csv_path.stem}"
    styler = latex_display.style.hide(axis="index")
    tex = styler.to_latex(
        hrules=True,
        multicol_align="c",
        position="t",
        position_float="centering",
        caption=latex_escape(re.sub(r"^Table \d+:\s*", "", caption)),  # LaTeX numbers it
        label=label,
        column_format="l" * _label_columns(latex_display)
        + "c" * (latex_display.shape[1] - _label_columns(latex_display)),
    )
    tex_notes = "".join(f"\\par\\footnotesize {latex_escape(n)}\n" for n in notes)
    tex = tex.replace("\\end{table}", tex_notes + "\\end{table}")
    # a table wider than the text is scaled down to it (never up), instead of overflowing
    tex = tex.replace("\\begin{tabular}", FIT_WIDTH + "\\begin{tabular}", 1)
    tex = tex.replace("\\end{tabular}\n", "\\end{tabular}}\n", 1)
    with atomic_open(csv_path.with_suffix(".tex")) as out:
        out.write(f"% requires {TEX_PACKAGES}\n" + tex)
    with atomic_open(csv_path.with_suffix(".html")) as out:
        out.write(to_html(display, caption, notes))


TEX_PACKAGES = r"\usepackage{booktabs,graphicx}"


FIT_WIDTH = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%" + "\n"


HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;font-size:14px;margin:1em}"
    "table{border-collapse:collapse}th,td{padding:4px 10px;text-align:center}"
    "thead tr:last-child th{border-bottom:1px solid #333}"
    "table{border-top:2px solid #333;border-bottom:2px solid #333}"
    "td:first-child,th:first-child{text-align:left}p.note{color:#444;font-size:12px}"
)


def to_html(display: pd.DataFrame, caption: str, notes: Sequence[str]) -> str:
    """A standalone HTML page of the display table (the HTML report shows it inline)."""
    import html

    body = display.to_html(index=False, border=0, escape=True, na_rep="–")
    notes_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(caption)}'
        f"</title><style>{HTML_STYLE}</style></head><body><h3>{html.escape(caption)}</h3>"
        f"{body}{notes_html}</body></html>\n"
    )


def _label_columns(display: pd.DataFrame) -> int:
    n = 0
    for column in display.columns:
        top = column[0] if isinstance(column, tuple) else column
        if top in ("Model", "Backbone", "Rationale", "Metric", "Dimension", "Variant", "Source"):
            n += 1
    return max(n, 1)


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "ρ": r"$\rho$",
    "–": "--",
    "†": r"$^{\dagger}$",
    "−": r"$-$",
    "²": r"$^{2}$",
    "×": r"$\times$",
    "·": r"$\cdot$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "…": r"\ldots{}",
}


MINUS = "−"  # U+2212: a true minus sign, not the hyphen


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(char, char) for char in str(text))


def latex_display(display: pd.DataFrame) -> pd.DataFrame:
    """A plain-text display table with every cell and header escaped for LaTeX."""
    out = display.map(latex_escape)
    out.columns = [latex_escape(c) for c in display.columns]
    return out


def mean_sd(mean: float, sd: float, digits: int = 2, latex: bool = False) -> str:
    if mean is None or not np.isfinite(mean):
        return "--" if latex else "–"
    pm = r" $\pm$ " if latex else " ± "
    text = number(mean, digits, latex)
    return text + (f"{pm}{sd:.{digits}f}" if sd is not None and np.isfinite(sd) else "")


def number(value: float, digits: int = 2, latex: bool = False) -> str:
    """Fixed ``digits`` decimals with a true minus sign (``$-$`` in LaTeX); no ``-0.00``."""
    if value is None or not np.isfinite(value):
        return "--" if latex else "–"
    text = f"{abs(value):.{digits}f}"
    if value < 0 and text.strip("0.") != "":
        return ("$-$" if latex else MINUS) + text
    return text


def marker(p: float, alpha: float = 0.05, latex: bool = False) -> str:
    if p is None or not np.isfinite(p) or p >= alpha:
        return ""
    return "$^{*}$" if latex else "*"


def fold_count(rec: Mapping, dim: str, metric: str = "pearson") -> tuple[int, int]:
    """(folds where the metric is defined, folds of the table) of one row."""
    total = int(rec["n_folds"])
    folds = rec.get(f"{dim}_{metric}_n_folds", total)
    return (total if folds is None or pd.isna(folds) else int(folds)), total
