"""Score an unlabeled corpus with a fine-tuned model, and read the scores back per session.

The corpus is in the data contract's format; ratings it may carry are ignored (the point is
to predict them) and the log says how many. Scoring reuses the inference engine
(``care infer``'s scorer: the HF backend with prefix sharing and its per-unit answer cache, or
vLLM on GPUs) and so the exact prompts and answer format of training.
One model scores the corpus (``application.model``: backbone, variant, fold): averaging the
folds' probabilities would cost one inference pass per fold and would leave the averaged score
without a rationale that explains it, so the application keeps one model's score and rationale
together.

``predictions.parquet`` has the predictions contract's columns (``client_score`` is NaN: the
corpus is unlabeled) plus ``counselor_id`` after ``client_id``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from care.instrument import Instrument
from care.io import write_table
from care.sessions import Session, count_rated, load_sessions

log = logging.getLogger(__name__)

COLUMNS = [
    "session_id", "client_id", "counselor_id", "fold", "item_id", "dimension", "model",
    "variant", "score", "score_generated", "score_expected", "score_argmax", "probs",
    "rationale", "raw_text", "parsed", "parse_error", "prompt_tokens", "truncated",
    "client_score",
]
FLOAT_COLUMNS = ["score", "score_generated", "score_expected", "score_argmax", "client_score"]


# --------------------------------------------------------------------------- inputs


def load_corpus(path: str | Path, instrument: Instrument) -> list[Session]:
    """Load an unlabeled corpus: ratings are dropped (and counted), every session is checked
    (a session without counselor turns has no alliance to predict: refused)."""
    path = Path(path)
    n_rated = count_rated(path, instrument)
    sessions = load_sessions(path, instrument, labeled=False)
    if n_rated:
        log.warning(
            "%s: %d of %d sessions carry client ratings; they are ignored (the application "
            "predicts alliance from the transcript alone)", path, n_rated, len(sessions),
        )
    return sessions  # the contract's checks include a counselor turn in every session


# --------------------------------------------------------------------------- scoring


def prediction_frame(
    rows: Iterable[dict], sessions: list[Session], instrument: Instrument,
    *, model: str, variant: str, fold: int,
) -> pd.DataFrame:
    """Scorer rows as the contract's frame: fixed columns, dtypes and row order."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise ValueError("the scorer returned no predictions")
    by_id = {s.session_id: s for s in sessions}
    frame["client_id"] = frame["session_id"].map(lambda sid: by_id[sid].client_id)
    frame["counselor_id"] = frame["session_id"].map(lambda sid: by_id[sid].counselor_id)
    frame["dimension"] = frame["item_id"].map(instrument.dimension_of)
    frame["fold"], frame["model"], frame["variant"] = fold, model, variant
    frame["client_score"] = math.nan
    for col in COLUMNS:
        if col not in frame:
            frame[col] = None
    frame = frame[COLUMNS]
    for col in FLOAT_COLUMNS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame["fold"] = frame["fold"].astype("int64")
    frame["prompt_tokens"] = pd.to_numeric(frame["prompt_tokens"]).fillna(0).astype("int64")
    frame["parsed"] = frame["parsed"].fillna(False).astype(bool)
    frame["truncated"] = frame["truncated"].fillna(False).astype(bool)
    order = {item: n for n, item in enumerate(instrument.item_ids)}
    frame = frame.sort_values(
        ["session_id", "item_id"], key=lambda col: col.map(order) if col.name == "item_id" else col
    )
    return frame.reset_index(drop=True)


def predict_corpus(
    corpus: str | Path,
    instrument: Instrument,
    out: str | Path,
    *,
    make_scorer: Callable[[], object],
    model: str,
    variant: str,
    fold: int,
    name: str | None = None,
) -> pd.DataFrame:
    """Score every session of ``corpus``; write and return the predictions frame.

    ``make_scorer`` builds the inference engine's scorer (anything whose ``score(sessions)``
    yields prediction rows); it is called after the corpus validates, so bad data fails
    before a model is loaded. ``name`` is how the log names the model (default: the run,
    ``model/variant fold k``).
    """
    sessions = load_corpus(corpus, instrument)
    scorer = make_scorer()
    log.info("scoring %d sessions with %s", len(sessions), name or f"{model}/{variant} fold {fold}")
    rows = _progress(scorer.score(sessions), len(sessions), instrument.item_ids[-1])
    frame = prediction_frame(rows, sessions, instrument, model=model, variant=variant, fold=fold)
    log.info("%d predictions, parse coverage %.1f%%", len(frame), 100 * frame["parsed"].mean())
    write_table(out, frame)
    return frame


def _progress(rows: Iterable[dict], n_sessions: int, last_item: str) -> Iterable[dict]:
    """Pass rows through, logging every 10th finished session (a long job shows progress)."""
    done = 0
    for row in rows:
        yield row
        if row["item_id"] == last_item:
            done += 1
            if done % 10 == 0 or done == n_sessions:
                log.info("%d/%d sessions scored", done, n_sessions)


# --------------------------------------------------------------------------- reading back


#: The predictions columns this stage reads (an unlabeled corpus's: no fold, no client score).
APPLIED_COLUMNS = ("session_id", "counselor_id", "item_id", "score")


def session_scores(predictions: pd.DataFrame, instrument: Instrument) -> pd.DataFrame:
    """One row per session: ids and the predicted dimension scores (mean of its items).

    A dimension with an unparsed item is NaN (never imputed), as in the evaluation.
    """
    wide = predictions.set_index(["session_id", "counselor_id", "item_id"])["score"].unstack()
    rows = []
    for (session_id, counselor_id), ratings in wide.iterrows():
        scores = instrument.dimension_scores(
            {i: (None if pd.isna(v) else float(v)) for i, v in ratings.items()}
        )
        rows.append({"session_id": session_id, "counselor_id": counselor_id, **scores})
    frame = pd.DataFrame(rows, columns=["session_id", "counselor_id", *instrument.dimension_ids])
    return frame.sort_values("session_id").reset_index(drop=True)
