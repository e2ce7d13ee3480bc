"""The human counselor baseline: the counselor's own WAI ratings as predictions.

For each held-out fold, every session that carries both client and counselor ratings gives
one row per item rated by both, in the predictions format (``model = counselor``,
``variant = human``, ``score`` = the counselor's rating), so the evaluation stage scores the
counselors with the same metric code as any model (the paper's §5.4 baseline).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from care.instrument import Instrument
from care.sessions import Session

MODEL, VARIANT = "counselor", "human"


def counselor_rows(
    sessions: Iterable[Session], instrument: Instrument, fold: int | None
) -> Iterator[dict]:
    for s in sessions:
        client, counselor = s.client_ratings or {}, s.counselor_ratings or {}
        for item in instrument.item_ids:
            if item not in client or item not in counselor:
                continue
            score = float(counselor[item])
            yield {
                "session_id": s.session_id,
                "client_id": s.client_id,
                "fold": fold,
                "item_id": item,
                "dimension": instrument.dimension_of(item),
                "model": MODEL,
                "variant": VARIANT,
                "score": score,
                "score_generated": score,
                "score_expected": math.nan,
                "score_argmax": math.nan,
                "probs": None,
                "rationale": None,
                "raw_text": None,
                "parsed": True,
                "parse_error": None,
                "prompt_tokens": 0,
                "truncated": False,
                "client_score": float(client[item]),
            }
