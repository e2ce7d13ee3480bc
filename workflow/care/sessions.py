"""The session data contract: load, validate and summarise ``sessions.jsonl``.

One JSON object a line (``workflow/schemas/session.schema.yaml``). Beyond the schema, a loaded
corpus is checked against the instrument (known items, ratings on the scale), for unique
session ids, and for clients whose sessions disagree in format (language, or rated vs
unrated). Every problem is a :class:`~care.errors.CareInputError` naming file, line and field;
validation happens before any work so nothing downstream is written from a bad corpus.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

from care.errors import CareInputError, brief, schema_message, shallowest
from care.instrument import Instrument
from care.io import LONE_SURROGATE, json_lines
from care.names import id_problem
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


ID_FIELDS = ("session_id", "client_id", "counselor_id")
RATING_FIELDS = ("client_ratings.", "counselor_ratings.")


def _schema_error(path: Path, line: int, record: object) -> CareInputError | None:
    """The record's first schema problem (the shallowest), worded for a person."""
    errors = list(_validator().iter_errors(record))
    if not errors:
        return None
    err = shallowest(errors)
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
        msg = f"unknown speaker {brief(repr(err.instance), 60)} (expected one of {list(SPEAKERS)})"
    elif err.validator == "minItems" and field_path == "turns":
        msg = "a session needs at least one turn"
    elif err.validator == "type" and field_path.startswith(RATING_FIELDS):
        msg = (
            f"rating {brief(repr(err.instance), 60)} is not a number: write it without quotes; "
            "ratings are never read from text, which may hide a label, a typo or a decimal comma "
            "('5 ', 'five', '4,5' — `care data import` converts and reports such values)"
            if isinstance(err.instance, str)
            else f"rating {brief(repr(err.instance), 60)} is not a number"
        )
    else:
        msg = schema_message(err)
    return CareInputError(path, msg, line=line, field=field_path or None)


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
        # the scale first: math.isnan overflows on an integer too large for a float (10**400)
        if isinstance(value, bool) or not instrument.in_scale(value) or math.isnan(value):
            raise CareInputError(
                path,
                f"rating {brief(repr(value), 40)} is outside the scale "
                f"{instrument.scale_min}..{instrument.scale_max}",
                line=line, field=f"{name}.{item_id}",
            )
        if instrument.integer and not float(value).is_integer():
            raise CareInputError(
                path,
                f"rating {value!r} is not an integer, and {instrument.name}'s scale is "
                "(an instrument of mean or fractional ratings sets `scale.integer: false`)",
                line=line, field=f"{name}.{item_id}",
            )
        out[item_id] = float(value)
    return out


def _surrogate(value: object, field: str = "") -> str | None:
    """The field of the first text (or key) holding a lone surrogate (JSON's ``"\\ud800"``),
    which no UTF-8 file, workbook or cache can store; None when there is none."""
    if isinstance(value, str):
        return field if LONE_SURROGATE.search(value) else None
    if isinstance(value, list):
        value = dict(enumerate(value))
    if not isinstance(value, dict):
        return None
    for key, child in value.items():
        name = ".".join(filter(None, [field, str(key)]))
        found = _surrogate(str(key), name) or _surrogate(child, name)
        if found is not None:
            return found
    return None



def _check_record(path: Path, line: int, rec: dict) -> None:
    """Checks the schema cannot express: text every output can store, ids, blank text, a
    counselor in the dialogue."""
    bad = _surrogate(rec)
    if bad is not None:
        raise CareInputError(
            path, "a lone surrogate (an escape like \\ud800 without its pair): not a character, "
            "and no file can store it as UTF-8", line=line, field=bad,
        )
    for name in ID_FIELDS:
        problem = id_problem(rec[name])
        if problem:
            shown = rec[name] if len(rec[name]) <= 40 else rec[name][:40] + "..."
            raise CareInputError(path, f"{problem}: {shown!r}", line=line, field=name)
    for n, turn in enumerate(rec["turns"]):
        if not turn["text"].strip():
            raise CareInputError(path, "a turn's text is blank", line=line,
                                 field=f"turns.{n}.text")
    if not any(t["speaker"] == "counselor" for t in rec["turns"]):
        raise CareInputError(
            path, "the session has no counselor turns: there is no alliance to rate",
            line=line, field="turns",
        )


def _records(path: Path) -> Iterator[tuple[int, dict | CareInputError]]:
    """(line, record) per non-blank line, or (line, error) where a line is not JSON."""
    for line_no, record in json_lines(path):
        if record is not None:
            yield line_no, record


def _parse(path: Path, line: int, record: object, instrument: Instrument) -> Session:
    error = _schema_error(path, line, record)
    if error:
        raise error
    _check_record(path, line, record)
    return _to_session(path, line, record, instrument)


def iter_sessions(path: str | Path, instrument: Instrument) -> Iterator[Session]:
    """Stream sessions one at a time, each checked on its own (no cross-record checks)."""
    path = Path(path)
    for line, record in _records(path):
        if isinstance(record, CareInputError):
            raise record
        yield _parse(path, line, record, instrument)


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


@dataclass
class CorpusCheck:
    """The outcome of checking a whole corpus: its sessions, every error, and warnings."""

    path: Path
    sessions: list[Session]
    errors: list[CareInputError]
    warnings: list[str]
    more_errors: bool = False  # stopped at the error limit

    def raise_first(self) -> None:
        if self.errors:
            raise self.errors[0]


def check_corpus(
    path: str | Path, instrument: Instrument, *, labeled: bool = True, max_errors: int = 1,
    languages: Iterable[str] | None = None,
) -> CorpusCheck:
    """Check every record of a corpus, collecting up to ``max_errors`` errors.

    ``labeled=True`` requires every session to carry a complete set of client ratings on the
    instrument. ``languages``: those the prompts exist in (others are a warning: they fall
    back to English), besides those the instrument words its items in.
    """
    path = Path(path)
    out = CorpusCheck(path, [], [], [])
    seen: dict[tuple[str, str], tuple[str, int]] = {}
    client_format: dict[str, tuple[str, bool, int]] = {}

    def add(error: CareInputError) -> bool:
        out.errors.append(error)
        out.more_errors = len(out.errors) >= max_errors
        return out.more_errors

    for line, record in _records(path):
        try:
            if isinstance(record, CareInputError):
                raise record
            s = _parse(path, line, record, instrument)
            _check_across(path, s, seen, client_format, instrument, labeled)
        except CareInputError as exc:
            if add(exc):
                return out
            continue
        out.sessions.append(s)
    if not out.sessions and not out.errors:
        add(CareInputError(path, "the corpus holds no sessions"))
    out.warnings += _language_warnings(out.sessions, instrument, languages)
    return out


def _check_across(
    path: Path, s: Session, seen: dict, client_format: dict, instrument: Instrument,
    labeled: bool,
) -> None:
    _check_ids(path, s, seen)
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


def _check_ids(path: Path, s: Session, seen: dict[tuple[str, str], tuple[str, int]]) -> None:
    """Session ids are unique, and no two ids of a kind differ only in case: ids name files
    (:func:`care.names.file_stem`), and macOS and Windows take such names for one file."""
    for name in ID_FIELDS:
        value = getattr(s, name)
        first, first_line = seen.setdefault((name, value.casefold()), (value, s.line))
        if first == value and (name != "session_id" or first_line == s.line):
            continue
        problem = (
            f"duplicate session_id {value!r}" if first == value
            else f"{name} {value!r} differs from {first!r} only in case (ids name files, and "
            "macOS and Windows would take the two for one)"
        )
        raise CareInputError(
            path, f"{problem} (first on line {first_line})", line=s.line, field=name
        )


def _language_warnings(
    sessions: list[Session], instrument: Instrument, prompt_languages: Iterable[str] | None
) -> list[str]:
    """Languages of the corpus that the instrument's wording (or the prompts) lack."""
    used = Counter(s.language for s in sessions)
    worded = instrument.languages
    prompts = set(prompt_languages) if prompt_languages is not None else None
    out = []
    for lang, n in sorted(used.items()):
        base = lang.split("-")[0]
        if lang not in worded and base not in worded:
            out.append(f"{n} sessions in {lang!r}: the instrument has no wording in it; "
                       "its items are shown in English")
        if prompts is not None and base not in prompts:
            out.append(f"{n} sessions in {lang!r}: no prompt templates in it; the English "
                       "ones are used")
    return out


def load_sessions(
    path: str | Path, instrument: Instrument, *, labeled: bool = True
) -> list[Session]:
    """Load and fully validate a corpus; the first problem is raised.

    ``labeled=True`` requires every session to carry a complete set of client ratings on the
    instrument. ``labeled=False`` (an unlabeled corpus to predict) accepts ratings but ignores
    them: they are dropped from the returned sessions, and :func:`count_rated` says how many.
    """
    check = check_corpus(path, instrument, labeled=labeled)
    check.raise_first()
    if not labeled:
        return [_strip_ratings(s) for s in check.sessions]
    return check.sessions


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
