"""Write a results table three ways: CSV (one column per statistic), Markdown and LaTeX.

The CSV is the machine-readable source; the Markdown and LaTeX (booktabs) versions are for
reading and for papers, with ``mean ± sd`` pairs merged into one cell.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from care.io import atomic_open, write_table


def merge_mean_sd(frame: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Join each ``<stat>_mean`` / ``<stat>_sd`` column pair into one ``<stat>`` text column."""
    out = pd.DataFrame(index=frame.index)
    for col in frame.columns:
        if col.endswith("_sd") and f"{col[:-3]}_mean" in frame.columns:
            continue
        if col.endswith("_mean") and f"{col[:-5]}_sd" in frame.columns:
            base = col[:-5]
            pairs = zip(frame[col], frame[f"{base}_sd"], strict=True)
            out[base] = [_pm(m, s, digits) for m, s in pairs]
        elif pd.api.types.is_float_dtype(frame[col]):
            out[col] = frame[col].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
        else:
            out[col] = frame[col].astype(str)
    return out


def _pm(mean: float, sd: float, digits: int) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.{digits}f}" if pd.isna(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def to_markdown(frame: pd.DataFrame, caption: str | None = None) -> str:
    cols = [str(c) for c in frame.columns]
    lines = [f"**{caption}**", ""] if caption else []
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def to_latex(frame: pd.DataFrame, caption: str | None = None, label: str | None = None) -> str:
    escaped = frame.map(_tex_escape)
    escaped.columns = [_tex_escape(str(c)) for c in frame.columns]
    return escaped.style.hide(axis="index").to_latex(
        hrules=True, caption=caption, label=label, position="t",
        column_format="l" + "r" * (len(frame.columns) - 1),
    )


def _tex_escape(value: object) -> str:
    text = str(value).replace("\\", r"\textbackslash{}")
    for ch in "&%$#_{}":
        text = text.replace(ch, "\\" + ch)
    return text.replace("±", r"$\pm$")


def write_table_formats(
    frame: pd.DataFrame,
    csv_path: str | Path,
    *,
    caption: str | None = None,
    digits: int = 2,
    md_path: str | Path | None = None,
    tex_path: str | Path | None = None,
) -> None:
    """Write ``frame`` to CSV and (by default beside it) ``.md`` and ``.tex``."""
    csv_path = Path(csv_path)
    md_path = Path(md_path) if md_path else csv_path.with_suffix(".md")
    tex_path = Path(tex_path) if tex_path else csv_path.with_suffix(".tex")
    pretty = merge_mean_sd(frame, digits)
    label = f"tab:{csv_path.stem}"
    with atomic_open(md_path) as f:
        f.write(to_markdown(pretty, caption))
    with atomic_open(tex_path) as f:
        f.write(to_latex(pretty, caption, label))
    write_table(csv_path, frame, float_format=f"%.{max(digits, 4)}f")
