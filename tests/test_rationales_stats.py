"""rationale_stats.csv: lengths and edit rates per dimension and overall."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from care.rationales.sheet import rationale_table
from care.rationales.stats import STATS_COLUMNS, rationale_stats, reference_label


def test_stats_per_dimension_and_overall(instrument):
    records = [
        {
            "session_id": "s1",
            "item_id": "4",
            "dimension": "goal",
            "rating": 4.0,
            "draft": "abcd (turn 1)",
            "final": "abcd (turn 1)",
            "editor_id": None,
            "unedited": True,
        },
        {
            "session_id": "s1",
            "item_id": "6",
            "dimension": "goal",
            "rating": 4.0,
            "draft": "abcd",
            "final": "abcdefgh (turn 2) (turn 3)",
            "editor_id": "e1",
            "unedited": False,
        },
        {
            "session_id": "s1",
            "item_id": "3",
            "dimension": "bond",
            "rating": 2.0,
            "draft": "xyz",
            "final": "xyz",
            "editor_id": "e1",
            "unedited": False,
        },
    ]
    frame = rationale_table(records, instrument)
    assert list(frame["item_id"]) == ["4", "6", "3"]  # instrument order within a session
    table = rationale_stats(frame, instrument)
    assert tuple(table.columns) == STATS_COLUMNS
    assert list(table["dimension"]) == ["goal", "task", "bond", "overall"]
    goal = table.set_index("dimension").loc["goal"]
    lengths = [len("abcd (turn 1)"), len("abcdefgh (turn 2) (turn 3)")]
    assert goal["n"] == 2
    assert goal["mean_chars"] == pytest.approx(sum(lengths) / 2)
    assert goal["sd_chars"] == pytest.approx(pd.Series(lengths).std(), abs=1e-4)
    assert goal["edit_rate"] == 0.5 and goal["share_unchanged"] == 0.5
    assert goal["n_unedited"] == 1
    assert goal["mean_cited_turns"] == pytest.approx(1.5)
    task = table.set_index("dimension").loc["task"]
    assert task["n"] == 0 and math.isnan(task["mean_chars"])
    overall = table.set_index("dimension").loc["overall"]
    assert overall["n"] == 3 and overall["edit_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert frame.loc[frame["item_id"] == "6", "edit_distance"].item() == pytest.approx(
        1 - 4 / len("abcdefgh (turn 2) (turn 3)")
    )


@pytest.mark.parametrize(
    ("unedited", "label"),
    [
        ([False, False], "expert-reviewed rationales"),
        ([True, True], "unedited drafts (no expert reviewed them)"),
        ([True, False], "reference rationales (50% expert-reviewed, the rest unedited drafts)"),
    ],
)
def test_reference_label_calls_unreviewed_drafts_drafts(unedited, label):
    assert reference_label(pd.DataFrame({"unedited": unedited})) == label
