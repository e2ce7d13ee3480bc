"""The session data contract: load, validate and summarise ``sessions.jsonl``.

One JSON object a line (``workflow/schemas/session.schema.yaml``). Beyond the schema, a loaded
corpus is checked against the instrument (known items, ratings on the scale), for unique
session ids, and for clients whose sessions disagree in format (language, or rated vs
unrated). Every problem is a :class:`~care.errors.CareInputError` naming file, line and field;
validation happens before any work so nothing downstream is written from a bad corpus.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

from care.errors import CareInputError
from care.instrument import Instrument
from care.resources import resource_path

SCHEMA = resource_path("schemas", "session.schema.yaml")
SPEAKERS = ("counselor", "client")


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str
    strategy: str | None = None
    reaction: str | None = None


@dataclass(frozen=True)
class Session:
    session_id: str
    client_id: str
    counselor_id: str
    language: str
    turns: tuple[Turn, ...]
    client_ratings: dict[str, float] | None = None
    counselor_ratings: dict[str, float] | None = None
    session_index: int | None = None
    line: int = field(default=0, compare=False)

    @property
    def labeled(self) -> bool:
        return bool(self.client_ratings)


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(yaml.safe_load(SCHEMA.read_text(encoding="utf-8")))


def _schema_error(path: Path, line: int, record: object) -> None:
    errors = list(_validator().iter_errors(record))
    if not errors:
        return
    err = min(errors, key=lambda e: (len(e.absolute_path), str(e.message)))
    field_path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "required":
        missing = next(f for f in err.validator_value if f not in err.instance)
        field_path = ".".join(filter(None, [field_path, missing]))
        msg = "required field is missing"
    elif err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        field_path = ".".join(filter(None, [field_path, extra[0] if extra else ""]))
        msg = "unknown field"
    elif err.validator == "enum" and field_path.endswith("speaker"):
        msg = f"unknown speaker {err.instance!r} (expected one of {list(SPEAKERS)})"
    elif err.validator == "minItems" and field_path == "turns":
        msg = "a session needs at least one turn"
    else:
        msg = err.message
    raise CareInputError(path, msg, line=line, field=field_path or None)


def _check_ratings(
    path: Path, line: int, name: str, ratings: dict, instrument: Instrument
) -> dict[str, float]:
    out = {}
    for item_id, value in ratings.items():
        if item_id not in instrument.items:
            raise CareInputError(
                path, f"item {item_id!r} is not in instrument {instrument.name}",
                line=line, field=f"{name}.{item_id}",
            )
        if isinstance(value, bool) or not instrument.in_scale(value) or math.isnan(value):
            raise CareInputError(
                path,
                f"rating {value!r} is outside the scale "
                f"{instrument.scale_min}..{instrument.scale_max}",
                line=line, field=f"{name}.{item_id}",
            )
        out[item_id] = float(value)
    return out


def iter_sessions(path: str | Path, instrument: Instrument) -> Iterator[Session]:
    """Stream sessions one at a time, each checked on its own (no cross-record checks)."""
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise CareInputError(path, f"cannot open: {exc.strerror}") from None
    with handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CareInputError(
                    path, f"not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})",
                    line=line_no,
                ) from None
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise CareInputError(
                    path, f"malformed JSON: {exc.msg} (column {exc.colno})", line=line_no
                ) from None
            _schema_error(path, line_no, record)
            yield _to_session(path, line_no, record, instrument)


def _to_session(path: Path, line: int, rec: dict, instrument: Instrument) -> Session:
    turns = tuple(Turn(**t) for t in rec["turns"])
    client = rec.get("client_ratings")
    counselor = rec.get("counselor_ratings")
    if client is not None:
        client = _check_ratings(path, line, "client_ratings", client, instrument)
    if counselor is not None:
        counselor = _check_ratings(path, line, "counselor_ratings", counselor, instrument)
    return Session(
        session_id=rec["session_id"], client_id=rec["client_id"],
        counselor_id=rec["counselor_id"], language=rec["language"], turns=turns,
        client_ratings=client, counselor_ratings=counselor,
        session_index=rec.get("session_index"), line=line,
    )


def load_sessions(
    path: str | Path, instrument: Instrument, *, labeled: bool = True
) -> list[Session]:
    """Load and fully validate a corpus.

    ``labeled=True`` requires every session to carry a complete set of client ratings on the
    instrument. ``labeled=False`` (an unlabeled corpus to predict) accepts ratings but ignores
    them: they are dropped from the returned sessions, and :func:`ignored_ratings` says how many.
    """
    path = Path(path)
    sessions: list[Session] = []
    seen: dict[str, int] = {}
    client_format: dict[str, tuple[str, bool, int]] = {}
    for s in iter_sessions(path, instrument):
        if s.session_id in seen:
            raise CareInputError(
                path, f"duplicate session_id {s.session_id!r} (first on line {seen[s.session_id]})",
                line=s.line, field="session_id",
            )
        seen[s.session_id] = s.line
        if labeled:
            _require_complete(path, s, instrument)
        fmt = (s.language, s.labeled)
        first = client_format.setdefault(s.client_id, (*fmt, s.line))
        if first[:2] != fmt:
            what, fld = (
                ("language", "language") if first[0] != fmt[0] else ("rating", "client_ratings")
            )
            raise CareInputError(
                path,
                f"client {s.client_id!r} has sessions in conflicting formats: {what} differs "
                f"from its session on line {first[2]}",
                line=s.line, field=fld,
            )
        sessions.append(s)
    if not sessions:
        raise CareInputError(path, "the corpus holds no sessions")
    if not labeled:
        sessions = [_strip_ratings(s) for s in sessions]
    return sessions


def _require_complete(path: Path, s: Session, instrument: Instrument) -> None:
    if not s.client_ratings:
        raise CareInputError(
            path, "a labeled corpus needs client ratings on every session",
            line=s.line, field="client_ratings",
        )
    missing = [i for i in instrument.item_ids if i not in s.client_ratings]
    if missing:
        raise CareInputError(
            path, f"missing ratings for items {missing}", line=s.line, field="client_ratings"
        )


def _strip_ratings(s: Session) -> Session:
    return Session(
        s.session_id, s.client_id, s.counselor_id, s.language, s.turns,
        None, None, s.session_index, s.line,
    )


def count_rated(path: str | Path, instrument: Instrument) -> int:
    """How many sessions of a file carry client ratings (to say they were ignored)."""
    return sum(1 for s in iter_sessions(path, instrument) if s.labeled)


def session_table(sessions: list[Session], instrument: Instrument) -> pd.DataFrame:
    """One row per session: ids, turn count, and client/counselor dimension scores."""
    rows = []
    for s in sessions:
        row = {
            "session_id": s.session_id, "client_id": s.client_id,
            "counselor_id": s.counselor_id, "language": s.language, "n_turns": len(s.turns),
        }
        client = instrument.dimension_scores(s.client_ratings or {})
        counselor = instrument.dimension_scores(s.counselor_ratings or {})
        for d in instrument.dimension_ids:
            row[d] = client[d]
            row[f"counselor_{d}"] = counselor[d]
        rows.append(row)
    return pd.DataFrame(rows)


def check_min_clients(path: str | Path, sessions: list[Session], n_folds: int) -> None:
    n_clients = len({s.client_id for s in sessions})
    if n_clients < n_folds:
        raise CareInputError(
            path, f"{n_clients} clients cannot fill {n_folds} client-grouped folds",
            field="client_id",
        )
