"""Synthetic predictions in the predictions contract, for tests and dry runs of this stage.

Given labeled sessions, folds and reference rationales, :func:`predictions` makes one run's
fold files as a model of a chosen quality would: each item score is the client's rating plus
noise (rounded to the scale), a share of items fails to parse, and rationales are the
reference ones with some words dropped. Nothing here is used by the workflow's rules.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from care.infer import PREDICTION_COLUMNS
from care.instrument import Instrument


def simple_folds(sessions: list[dict], n_folds: int) -> pd.DataFrame:
    """Client-grouped folds by client order (round robin): session_id, client_id, fold."""
    clients = sorted({s["client_id"] for s in sessions})
    fold_of = {c: n % n_folds + 1 for n, c in enumerate(clients)}
    return pd.DataFrame(
        [
            {
                "session_id": s["session_id"],
                "client_id": s["client_id"],
                "fold": fold_of[s["client_id"]],
            }
            for s in sessions
        ]
    )


def predictions(
    sessions: list[dict],
    references: list[dict],
    folds: pd.DataFrame,
    instrument: Instrument,
    model: str,
    variant: str,
    *,
    noise: float = 0.8,
    fail_rate: float = 0.02,
    drop_words: float = 0.3,
    seed: int = 0,
    client_ratings: str = "client_ratings",
) -> dict[int, pd.DataFrame]:
    """One run's predictions per fold (fold -> frame in the contract's columns and order).

    ``client_ratings="counselor_ratings"`` makes a human-counselor baseline instead (score =
    the counselor's rating; NaN where missing).
    """
    rng = np.random.default_rng(seed)
    refs = {(r["session_id"], r["item_id"]): r["rationale"] for r in references}
    fold_of = dict(zip(folds["session_id"], folds["fold"], strict=True))
    lo, hi = instrument.scale_min, instrument.scale_max
    rows = []
    for s in sorted(sessions, key=lambda s: s["session_id"]):
        for item in instrument.item_ids:
            truth = float(s["client_ratings"][item])
            if client_ratings == "client_ratings":
                value = float(np.clip(np.rint(truth + rng.normal(0, noise)), lo, hi))
                parsed = bool(rng.random() >= fail_rate)
            else:
                given = (s.get(client_ratings) or {}).get(item)
                value = np.nan if given is None else float(given)
                parsed = given is not None
            rationale = _perturb(refs.get((s["session_id"], item), ""), drop_words, rng)
            has_text = parsed and variant == "rationale"
            rows.append(
                {
                    "session_id": s["session_id"],
                    "client_id": s["client_id"],
                    "fold": int(fold_of[s["session_id"]]),
                    "item_id": item,
                    "dimension": instrument.dimension_of(item),
                    "model": model,
                    "variant": variant,
                    "score": value if parsed else np.nan,
                    "score_generated": value if parsed else np.nan,
                    "score_expected": np.nan,
                    "score_argmax": np.nan,
                    "probs": None,
                    "rationale": rationale if has_text else None,
                    "raw_text": None,
                    "parsed": parsed,
                    "parse_error": None if parsed else "no score",
                    "prompt_tokens": 100,
                    "truncated": False,
                    "client_score": truth,
                }
            )
    frame = pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))
    return {int(k): g.reset_index(drop=True) for k, g in frame.groupby("fold", sort=True)}


def _perturb(text: str, drop: float, rng: np.random.Generator) -> str:
    words = text.split()
    kept = [w for w in words if rng.random() >= drop]
    return " ".join(kept or words)
