"""Score one fold's held-out sessions and write its predictions table and coverage.

Sessions are streamed from ``sessions.jsonl`` (only the fold's are kept, a batch at a time);
the rows, one per (session, item), are sorted by session id and item order and written
with a fixed Arrow schema, so the same inputs give byte-identical Parquet files.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pandas as pd

from care.errors import CareInputError
from care.infer import PREDICTION_COLUMNS
from care.instrument import Instrument
from care.io import atomic_path, write_json
from care.sessions import Session, iter_sessions

log = logging.getLogger(__name__)


def prediction_schema():
    import pyarrow as pa

    types = {
        "session_id": pa.string(),
        "client_id": pa.string(),
        "fold": pa.int64(),
        "item_id": pa.string(),
        "dimension": pa.string(),
        "model": pa.string(),
        "variant": pa.string(),
        "score": pa.float64(),
        "score_generated": pa.float64(),
        "score_expected": pa.float64(),
        "score_argmax": pa.float64(),
        "probs": pa.list_(pa.float64()),
        "rationale": pa.string(),
        "raw_text": pa.string(),
        "parsed": pa.bool_(),
        "parse_error": pa.string(),
        "prompt_tokens": pa.int64(),
        "truncated": pa.bool_(),
        "client_score": pa.float64(),
    }
    return pa.schema([(name, types[name]) for name in PREDICTION_COLUMNS])


def read_folds(path: str | Path) -> dict[str, int]:
    """``session_id -> fold`` from ``folds.tsv``."""
    try:
        table = pd.read_csv(path, sep="\t", dtype={"session_id": str})
    except OSError as exc:
        raise CareInputError(path, f"cannot read: {exc.strerror}") from None
    for column in ("session_id", "fold"):
        if column not in table.columns:
            raise CareInputError(path, "required column is missing", field=column)
    return dict(zip(table["session_id"], table["fold"].astype(int), strict=True))


def fold_sessions(
    sessions_path: str | Path,
    instrument: Instrument,
    folds: dict[str, int] | None,
    fold: int | None,
) -> Iterator[Session]:
    """Stream the sessions of ``fold`` (every session when ``fold`` is None)."""
    for session in iter_sessions(sessions_path, instrument):
        if fold is None or folds.get(session.session_id) == fold:
            yield session


def sort_rows(rows: Iterable[dict], instrument: Instrument) -> list[dict]:
    order = {item: n for n, item in enumerate(instrument.item_ids)}
    return sorted(rows, key=lambda r: (r["session_id"], order[r["item_id"]]))


def write_predictions(path: str | Path, rows: list[dict]) -> None:
    """Write rows with the predictions schema (deterministic bytes), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = prediction_schema()
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    table = pa.table(columns, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=False)


def read_predictions(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    columns: Sequence[str] = PREDICTION_COLUMNS,
) -> pd.DataFrame:
    """Read and concatenate predictions files; each must have rows and ``columns`` (the
    ones the reader needs: the whole contract by default)."""
    paths = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    frames = []
    for path in paths:
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise CareInputError(path, f"cannot read predictions: {exc}") from None
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise CareInputError(path, f"missing columns {missing}", field=missing[0])
        if frame.empty:
            raise CareInputError(path, "no predictions")
        frames.append(frame)
    if not frames:
        raise CareInputError("<predictions>", "no prediction files given")
    return pd.concat(frames, ignore_index=True)


def coverage(rows: list[dict]) -> dict:
    """How many items got a parsed score (and a label distribution), and why others failed."""
    n = len(rows)
    parsed = sum(1 for r in rows if r["parsed"])
    with_probs = sum(1 for r in rows if r["probs"] is not None)
    scored = sum(1 for r in rows if not _isnan(r["score"]))
    errors: dict[str, int] = {}
    for r in rows:
        if not r["parsed"]:
            reason = (r["parse_error"] or "unknown").split(" (")[0]
            errors[reason] = errors.get(reason, 0) + 1
    sessions = len({r["session_id"] for r in rows})
    return {
        "rows": n,
        "sessions": sessions,
        "parsed": parsed,
        "with_probs": with_probs,
        "scored": scored,
        "coverage": parsed / n if n else None,
        "truncated_prompts": sum(1 for r in rows if r["truncated"]),
        "parse_errors": dict(sorted(errors.items())),
    }


def coverage_path(predictions: str | Path) -> Path:
    p = Path(predictions)
    return p.with_name(p.name.removesuffix(".parquet") + ".coverage.json")


def predict_fold(
    scorer,
    *,
    sessions_path: str | Path,
    instrument: Instrument,
    folds_path: str | Path | None,
    fold: int | None,
    model: str,
    variant: str,
    out: str | Path,
) -> dict:
    """Score the fold's sessions, write the predictions and their coverage; return coverage."""
    folds = read_folds(folds_path) if folds_path else None
    expected = sum(1 for f in folds.values() if f == fold) if folds and fold else None
    rows = []
    done = 0
    for row in scorer.score(
        fold_sessions(sessions_path, instrument, folds, fold),
        model=model,
        variant=variant,
        fold=fold,
    ):
        rows.append(row)
        if row["item_id"] == instrument.item_ids[-1]:
            done += 1
            if done % 10 == 0 or done == expected:
                log.info(
                    "%s/%s fold %s: %d/%s sessions",
                    model,
                    variant,
                    fold,
                    done,
                    expected if expected is not None else "?",
                )
    if not rows:
        raise CareInputError(
            folds_path or sessions_path, f"fold {fold} holds no sessions", field="fold"
        )
    rows = sort_rows(rows, instrument)
    write_predictions(out, rows)
    summary = {"model": model, "variant": variant, "fold": fold, **coverage(rows)}
    summary["backend"] = scorer.backend
    summary["answers_cut"] = scorer.stats["answers_cut"]  # stopped at max_new_tokens
    summary["truncated_sessions"] = scorer.stats["truncated_sessions"]
    summary["decoding"] = scorer.decoding.record()  # every parameter, as the backend got it
    write_json(coverage_path(out), summary)  # no run history in it: same inputs, same bytes
    summary["answers"] = dict(scorer.stats)
    log.info(
        "%s/%s fold %s: %d/%d items parsed (%.1f%%), %d answers generated, %d cached",
        model,
        variant,
        fold,
        summary["parsed"],
        summary["rows"],
        100 * (summary["coverage"] or 0),
        scorer.stats["generated"],
        scorer.stats["cached"],
    )
    return summary


def _isnan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
