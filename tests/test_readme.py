"""The README's generated demo-results block: written from a run, checked against a run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from care.errors import CareInputError
from care.readme import END, START, check, parse_block, render_block, splice

from .conftest import REPO

DIMS = ["goal", "task", "bond"]
LABELS = {"goal": "Goal", "task": "Task", "bond": "Bond"}


def table2() -> pd.DataFrame:
    rows = []
    for label, base in (("Human counselor", 0.29), ("zs", np.nan), ("CARE (llama)", 0.456)):
        row = {"label": label}
        for n, d in enumerate(DIMS):
            row[f"{d}_pearson_mean"] = base - 0.1 * n if base == base else np.nan
            row[f"{d}_pearson_sd"] = 0.123
            row[f"{d}_pearson_n_folds"] = 5
        rows.append(row)
    return pd.DataFrame(rows)


def test_block_round_trip_and_every_disagreement_named():
    frame = table2()
    readme = f"# Title\n\nBefore.\n\n{START}\nold\n{END}\n\nAfter.\n"
    block = render_block(frame, DIMS, LABELS, {"git": {"commit": "abc123", "dirty": False},
                                               "finished": "2026-01-01T00:00:00+00:00"})
    text = splice(readme, block)
    assert text.startswith("# Title\n\nBefore.\n\n") and text.endswith("\n\nAfter.\n")
    assert "| CARE (llama) | .46 ± .12 | .36 ± .12 | .26 ± .12 |" in text
    assert "| zs | no parsed answers |" in text and "abc123" in text
    assert check(text, frame, DIMS) == []
    assert splice(text, block) == text  # idempotent

    fresh = frame.copy()
    fresh.loc[2, "goal_pearson_mean"] = 0.44  # a retrained fold moves Goal: .46 -> .44
    fresh.loc[2, "bond_pearson_mean"] = 0.2551  # same to the printed precision: not reported
    problems = check(text, fresh, DIMS)
    assert problems == ["README.md: CARE (llama) / goal: README '.46 ± .12', run '.44 ± .12'"]
    assert any("lacks" in p for p in check(text, pd.concat([fresh, frame.iloc[[0]].assign(
        label="new")]), DIMS))


def test_negative_r_prints_a_true_minus_sign():
    frame = table2()
    frame.loc[0, "goal_pearson_mean"] = -0.051
    assert "| Human counselor | −.05 ± .12 |" in render_block(frame, DIMS, LABELS)


def test_the_readme_has_a_generated_block():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    rows = parse_block(text)
    assert rows and all(len(cells) == 3 for cells in rows.values())
    with pytest.raises(CareInputError, match="no generated block"):
        parse_block("no markers here")



def test_scorings_are_named_and_a_constant_prediction_is_not_called_unparsed():
    frame = table2().assign(scoring="expected")
    argmax = frame.iloc[[1]].assign(scoring="generated", goal_coverage=1.0)
    block = render_block(pd.concat([frame, argmax], ignore_index=True), DIMS, LABELS)
    assert "| CARE (llama) (expected) | .46 ± .12 |" in block
    assert "| zs (expected) | no parsed answers |" in block  # no coverage: nothing parsed
    assert "| zs (generated) | undefined (constant scores) |" in block  # scored, never varies


def test_a_mean_from_fewer_folds_says_how_many():
    """As in the tables: one fold's r is not a mean over 5 folds, and the block says so."""
    frame = table2().assign(n_folds=5)
    frame.loc[2, ["goal_pearson_mean", "goal_pearson_sd", "goal_pearson_n_folds"]] = (
        -0.02, np.nan, 1)
    frame.loc[2, ["task_pearson_n_folds"]] = 2
    block = render_block(frame, DIMS, LABELS)
    assert "| CARE (llama) | −.02 (1 of 5 folds) | .36 (2 of 5 folds) | .26 ± .12 |" in block
    assert check(splice(f"{START}\n{END}\n", block), frame, DIMS) == []
