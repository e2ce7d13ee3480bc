"""``rationale_stats.csv``: length and edit statistics of the final rationales.

One row per dimension (instrument order) and one ``overall`` row: number of rationales, mean
and standard deviation of the final rationale's length in characters (the paper: mean 155,
sd 13, Chinese), the drafts' mean length, the share of drafts the expert edited and the share
left unchanged, how many rows were left empty (draft accepted), the mean normalized edit
distance between draft and final (0 = unchanged, 1 = rewritten), and the mean number of
turns a final rationale cites.
"""

from __future__ import annotations

import pandas as pd

from care.instrument import Instrument
from care.prompts import cited_turns

STATS_COLUMNS = (
    "dimension",
    "n",
    "mean_chars",
    "sd_chars",
    "draft_mean_chars",
    "edit_rate",
    "share_unchanged",
    "n_unedited",
    "mean_edit_distance",
    "mean_cited_turns",
)


def rationale_stats(frame: pd.DataFrame, instrument: Instrument) -> pd.DataFrame:
    groups = [(d, frame[frame["dimension"] == d]) for d in instrument.dimension_ids]
    rows = [_summary(name, part) for name, part in [*groups, ("overall", frame)]]
    return pd.DataFrame(rows, columns=list(STATS_COLUMNS)).round(4)


def _summary(name: str, part: pd.DataFrame) -> dict:
    n = len(part)
    lengths = part["n_chars"].astype(float)
    return {
        "dimension": name,
        "n": n,
        "mean_chars": lengths.mean() if n else float("nan"),
        "sd_chars": lengths.std(ddof=1) if n > 1 else float("nan"),
        "draft_mean_chars": part["draft"].str.len().mean() if n else float("nan"),
        "edit_rate": part["edited"].mean() if n else float("nan"),
        "share_unchanged": 1 - part["edited"].mean() if n else float("nan"),
        "n_unedited": int(part["unedited"].sum()) if "unedited" in part else 0,
        "mean_edit_distance": part["edit_distance"].mean() if n else float("nan"),
        "mean_cited_turns": part["final"].map(lambda t: len(cited_turns(t))).mean()
        if n
        else float("nan"),
    }


def reference_label(frame: pd.DataFrame) -> str:
    """What the reference rationales are, for table notes: a draft nobody reviewed (imported
    untouched, no editor id) is a draft, not an expert rationale."""
    if "unedited" not in frame.columns or frame.empty:
        return "reference rationales (review status not recorded)"
    reviewed = 1.0 - frame["unedited"].astype(bool).mean()
    if reviewed == 1.0:
        return "expert-reviewed rationales"
    if reviewed == 0.0:
        return "unedited drafts (no expert reviewed them)"
    return f"reference rationales ({reviewed:.0%} expert-reviewed, the rest unedited drafts)"

