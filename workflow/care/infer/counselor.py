"""The human counselor baseline: the counselor's own ratings as predictions.

For each held-out fold, every session with client ratings gives one row per item, in the
predictions format (``model = counselor``, ``variant = human``, ``score`` = the counselor's
rating), so the evaluation stage scores the counselors with the same metric code as any
model (the paper's §5.4 baseline). An item the counselor did not rate is an unanswered one
(``parsed`` false, ``parse_error`` "not rated by the counselor"), so coverage says how many
sessions the baseline could score instead of hiding the others.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from care.instrument import Instrument
from care.sessions import Session

MODEL, VARIANT = "counselor", "human"
NOT_RATED = "not rated by the counselor"


def counselor_rows(
    sessions: Iterable[Session], instrument: Instrument, fold: int | None
) -> Iterator[dict]:
    for s in sessions:
        client, counselor = s.client_ratings or {}, s.counselor_ratings or {}
        for item in instrument.item_ids:
            if item not in client:
                continue
            # an item the counselor did not rate is an unanswered item, not a missing row:
            # coverage (Table 2's "Scored") then counts the sessions the baseline cannot score
            rated = item in counselor
            score = float(counselor[item]) if rated else math.nan
            yield rating_row(s, item, instrument, MODEL, VARIANT, fold, score,
                             None if rated else NOT_RATED)


def rating_row(session: Session, item: str, instrument: Instrument, model: str, variant: str,
               fold: int | None, score: float, parse_error: str | None = None) -> dict:
    """One row of the predictions contract for a baseline that gives a number, not an answer
    (no text, no label probabilities): the counselors, the text baselines. A NaN score is an
    unanswered item, with ``parse_error`` saying why."""
    return {
        "session_id": session.session_id,
        "client_id": session.client_id,
        "fold": fold,
        "item_id": item,
        "dimension": instrument.dimension_of(item),
        "model": model,
        "variant": variant,
        "score": score,
        "score_generated": score,
        "score_expected": math.nan,
        "score_argmax": math.nan,
        "probs": None,
        "rationale": None,
        "raw_text": None,
        "parsed": parse_error is None,
        "parse_error": parse_error,
        "prompt_tokens": 0,
        "truncated": False,
        "client_score": float(session.client_ratings[item]),
    }
