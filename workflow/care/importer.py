"""``care data import``: convert common shapes of counseling corpora into the data contract.

Two shapes, one small YAML mapping file that names the source's fields:

- **conversations**: a JSON array or a JSON-lines file, one conversation per record, its
  turns a list of role-tagged objects, its survey scores fields of the record
  (dotted paths reach nested fields: ``survey.seeker.empathy``);
- **turns**: a CSV/TSV/Parquet table with one row per turn (session, client, counselor,
  speaker, text, labels), plus an optional ratings table with one row per session.

Mapping (keys other than ``session_id``, ``turn.speaker``, ``turn.text`` and ``speakers``
are optional)::

    session_id: conversation_id     # field/column of the session id
    client_id: seeker_id            # none: each session is its own client
    counselor_id: null              # none: every session gets counselor "unknown"
    language: en                    # a language code, or {field: lang_column}
    turns: dialog                   # conversations: the field holding the list of turns
    turn: {speaker: speaker, text: content, strategy: strategy, reaction: null,
           order: null}             # turns: a column ordering a session's rows
    speakers: {supporter: counselor, seeker: client}   # other speakers are dropped
    client_ratings: {empathy: survey.empathy}          # item id -> field / column
    counselor_ratings: {}
    ratings_session_id: session     # turns: the ratings table's session column

A corpus without session ids gets them from ``--make-ids`` (conversations only, and then the
mapping names no ``session_id``): ``row``, the record's number in the file (``row-000017``;
stable while the file keeps its order), or ``hash``, a digest of the record's content
(``h-`` and 16 hex digits; stable under reordering, and a conversation given twice gets one
id and is dropped as a duplicate). See :func:`made_id`.

Ratings written as text (``"5"``) are converted and counted; anything not a number is
dropped and reported. A session is written only if it satisfies the contract; every record
dropped is counted with its reason. :func:`instrument_skeleton` writes an instrument file
for the rating fields found, for the user to complete (dimensions, wording, labels).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from care.errors import CareInputError, brief
from care.io import (
    DuplicateKeyError,
    atomic_open,
    loads_strict,
    read_jsonl,
    read_yaml,
    write_jsonl,
)
from care.names import id_problem
from care.sessions import SPEAKERS

UNKNOWN_COUNSELOR = "unknown"
MAPPING_KEYS = {
    "session_id", "client_id", "counselor_id", "language", "session_index", "turns", "turn",
    "speakers", "client_ratings", "counselor_ratings", "ratings_session_id",
}
TURN_KEYS = {"speaker", "text", "strategy", "reaction", "order"}
#: How ``--make-ids`` makes a session id (:func:`made_id`).
ID_MAKERS = ("row", "hash")


@dataclass
class ImportReport:
    """What was mapped and what was dropped, with reasons (counts)."""

    sessions_read: int = 0
    sessions_written: int = 0
    unlabeled_written: int = 0
    turns_written: int = 0
    dropped_sessions: Counter = field(default_factory=Counter)
    dropped_turns: Counter = field(default_factory=Counter)
    dropped_ratings: Counter = field(default_factory=Counter)
    converted_ratings: int = 0
    rating_values: dict[str, list[float]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [
            f"sessions read: {self.sessions_read}; written: {self.sessions_written} labeled, "
            f"{self.unlabeled_written} unlabeled; turns written: {self.turns_written}",
            f"ratings written as text and converted to numbers: {self.converted_ratings}",
        ]
        for title, counter in (("sessions dropped", self.dropped_sessions),
                               ("turns dropped", self.dropped_turns),
                               ("ratings dropped", self.dropped_ratings)):
            for reason, n in sorted(counter.items(), key=lambda kv: -kv[1]):
                out.append(f"{title}: {n} ({reason})")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "sessions_read": self.sessions_read, "sessions_written": self.sessions_written,
            "unlabeled_written": self.unlabeled_written, "turns_written": self.turns_written,
            "converted_ratings": self.converted_ratings,
            "dropped_sessions": dict(self.dropped_sessions),
            "dropped_turns": dict(self.dropped_turns),
            "dropped_ratings": dict(self.dropped_ratings),
        }


# ------------------------------------------------------------------------------ mapping


def load_mapping(path: str | Path, make_ids: str | None = None) -> dict[str, Any]:
    """The mapping, checked; with ``make_ids`` the ids are made, so it names no session id."""
    path = Path(path)
    try:
        mapping = read_yaml(path)
    except (OSError, yaml.YAMLError) as exc:
        raise CareInputError(path, f"cannot read the mapping: {exc}") from None
    if not isinstance(mapping, dict):
        raise CareInputError(path, "the mapping must be a YAML mapping of keys")
    unknown = sorted(set(mapping) - MAPPING_KEYS)
    if unknown:
        raise CareInputError(path, f"unknown key (known: {sorted(MAPPING_KEYS)})", field=unknown[0])
    turn = mapping.get("turn") or {}
    if make_ids and "session_id" in mapping:
        raise CareInputError(path, f"--make-ids {make_ids} makes the session ids: drop this key "
                             "or the option", field="session_id")
    if not make_ids and not isinstance(mapping.get("session_id"), str):
        raise CareInputError(path, "required: the field holding the session id (a corpus "
                             "without one: care data import conversations --make-ids row|hash)",
                             field="session_id")
    for key in ("speaker", "text"):
        if not isinstance(turn.get(key), str):
            raise CareInputError(path, "required: the field of a turn's " + key,
                                 field=f"turn.{key}")
    bad_turn = sorted(set(turn) - TURN_KEYS)
    if bad_turn:
        raise CareInputError(path, f"unknown key (known: {sorted(TURN_KEYS)})",
                             field=f"turn.{bad_turn[0]}")
    speakers = mapping.get("speakers")
    if not isinstance(speakers, dict) or not speakers:
        raise CareInputError(path, "required: source speaker name -> counselor | client",
                             field="speakers")
    for name, role in speakers.items():
        if role not in SPEAKERS:
            raise CareInputError(path, f"{role!r} is not one of {list(SPEAKERS)}",
                                 field=f"speakers.{name}")
    for key in ("client_ratings", "counselor_ratings"):
        if not isinstance(mapping.get(key) or {}, dict):
            raise CareInputError(path, "item id -> source field", field=key)
    language = mapping.get("language", "en")
    if not (isinstance(language, str) or (isinstance(language, dict) and "field" in language)):
        raise CareInputError(path, "a language code or {field: <field>}", field="language")
    return mapping


def _get(record: Any, dotted: str | None) -> Any:
    """A (nested) field by dotted path; None where absent."""
    if not dotted:
        return None
    node = record
    for part in str(dotted).split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip()
    )


def _number(value: Any, report: ImportReport, item: str) -> float | None:
    if isinstance(value, bool):
        report.dropped_ratings[f"item {item}: a boolean is not a rating"] += 1
        return None
    if isinstance(value, (int, float)) and not math.isnan(value):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            report.dropped_ratings[f"item {item}: not a number ({value!r})"] += 1
            return None
        report.converted_ratings += 1
        return number
    report.dropped_ratings[f"item {item}: missing"] += 1
    return None


def _ratings(
    source: Any, fields: dict[str, str], report: ImportReport, client: bool
) -> dict[str, float]:
    out = {}
    for item, where in fields.items():
        value = _number(_get(source, where), report, str(item))
        if value is not None:
            out[str(item)] = int(value) if value.is_integer() else value
            if client:  # the instrument skeleton describes the client's ratings
                report.rating_values.setdefault(str(item), []).append(value)
    return out


# ------------------------------------------------------------------------------ building


def _turn(raw: dict, mapping: dict, report: ImportReport) -> dict | None:
    spec = mapping.get("turn") or {}
    speaker = _get(raw, spec["speaker"])
    role = mapping["speakers"].get(str(speaker)) if speaker is not None else None
    if role is None:
        report.dropped_turns[f"speaker {speaker!r} not in the mapping's speakers"] += 1
        return None
    text = _get(raw, spec["text"])
    if _blank(text):
        report.dropped_turns["empty text"] += 1
        return None
    turn = {"speaker": role, "text": str(text).strip()}
    for label in ("strategy", "reaction"):
        value = _get(raw, spec.get(label))
        if not _blank(value):
            turn[label] = str(value).strip()
    return turn


def made_id(record: Any, number: int, how: str) -> str:
    """A session id for a record that has none: ``row``, its 1-based ``number`` in the file;
    ``hash``, the SHA-256 of its content as canonical JSON (sorted keys), 16 hex digits."""
    if how == "row":
        return f"row-{number:06d}"
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"h-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}"


def _session(record: Any, turns: list[dict], ratings_source: Any, mapping: dict,
             report: ImportReport, sid: str | None = None) -> tuple[dict | None, str | None]:
    """The contract record of one conversation (its id ``sid`` where the import makes ids),
    or (None, why it was dropped)."""
    if sid is None:
        sid = _get(record, mapping["session_id"])
    if _blank(sid):
        return None, "no session id"
    sid = str(sid).strip()
    client = _get(record, mapping.get("client_id"))
    counselor = _get(record, mapping.get("counselor_id"))
    lang_spec = mapping.get("language", "en")
    language = _get(record, lang_spec["field"]) if isinstance(lang_spec, dict) else lang_spec
    rec = {
        "session_id": sid,
        "client_id": sid if _blank(client) else str(client).strip(),
        "counselor_id": UNKNOWN_COUNSELOR if _blank(counselor) else str(counselor).strip(),
        "language": str(language or "en"),
        "turns": turns,
    }
    for key in ("session_id", "client_id", "counselor_id"):
        if id_problem(rec[key]):
            return None, f"invalid {key}: {id_problem(rec[key])}"
    index = _get(record, mapping.get("session_index"))
    if isinstance(index, (int, float)) and not isinstance(index, bool) and index >= 1:
        rec["session_index"] = int(index)
    if not turns:
        return None, "no turn left after mapping"
    if not any(t["speaker"] == "counselor" for t in turns):
        return None, "no counselor turn"
    for key in ("client_ratings", "counselor_ratings"):
        fields = mapping.get(key) or {}
        if fields and ratings_source is not None:
            found = _ratings(ratings_source, fields, report, key == "client_ratings")
            if found:
                rec[key] = found
    return rec, None


def _complete(rec: dict, mapping: dict) -> bool:
    wanted = mapping.get("client_ratings") or {}
    return bool(wanted) and set(map(str, wanted)) <= set(rec.get("client_ratings", {}))


# ------------------------------------------------------------------------------ readers


def read_conversations(path: str | Path) -> list[Any]:
    """A JSON array of conversations, or one conversation per line (JSON lines). Only an
    array is read whole: anything else goes line by line (:func:`care.io.json_lines`, whose
    line cap stops a file without newlines, such as ``/dev/zero``)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64 * 1024).lstrip(b"\xef\xbb\xbf \t\r\n")
            if not head.startswith(b"["):
                return read_jsonl(path)
            data = head + f.read()
        return loads_strict(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CareInputError(path, f"cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CareInputError(path, f"malformed JSON: {exc.msg}", line=exc.lineno) from None
    except DuplicateKeyError as exc:
        raise CareInputError(path, f"{exc}: which one is meant?", field=exc.key) from None
    except (RecursionError, ValueError) as exc:  # nested too deeply; a 5000-digit number
        raise CareInputError(path, f"malformed JSON: {brief(exc) or 'nested too deeply'}") \
            from None


def read_table(path: str | Path):
    """A CSV, TSV or Parquet table (every column read as text, except Parquet's types)."""
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        sep = "\t" if suffix in (".tsv", ".tab") else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                           encoding="utf-8-sig")
    except (OSError, ValueError) as exc:
        raise CareInputError(path, f"cannot read the table: {exc}") from None


# ------------------------------------------------------------------------------ importers


def import_conversations(path: str | Path, mapping: dict,
                         make_ids: str | None = None) -> tuple[list[dict], ImportReport]:
    report = ImportReport()
    out = []
    for number, record in enumerate(read_conversations(path), 1):
        report.sessions_read += 1
        raw_turns = _get(record, mapping.get("turns", "turns"))
        if not isinstance(raw_turns, list):
            report.dropped_sessions["no list of turns in the mapped field"] += 1
            continue
        turns = [t for t in (_turn(r, mapping, report) for r in raw_turns if isinstance(r, dict))
                 if t is not None]
        sid = made_id(record, number, make_ids) if make_ids else None
        rec, why = _session(record, turns, record, mapping, report, sid)
        _keep(rec, why, out, report)
    return out, report


def import_turn_table(turns_path: str | Path, ratings_path: str | Path | None,
                      mapping: dict) -> tuple[list[dict], ImportReport]:
    turns = read_table(turns_path)
    spec = mapping.get("turn") or {}
    _require_columns(turns_path, turns, [mapping["session_id"], spec["speaker"], spec["text"]])
    ratings = {}
    if ratings_path is not None:
        table = read_table(ratings_path)
        key = mapping.get("ratings_session_id", mapping["session_id"])
        wanted = [*(mapping.get("client_ratings") or {}).values(),
                  *(mapping.get("counselor_ratings") or {}).values()]
        _require_columns(ratings_path, table, [key, *wanted])
        for row in table.to_dict("records"):
            ratings[str(row[key]).strip()] = row
    report = ImportReport()
    out = []
    order = spec.get("order")
    rows = turns.to_dict("records")
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row[mapping["session_id"]]).strip(), []).append(row)
    for sid, group in groups.items():
        report.sessions_read += 1
        if order:
            group = sorted(group, key=lambda r: float(r[order]))
        mapped = [t for t in (_turn(r, mapping, report) for r in group) if t is not None]
        rec, why = _session(group[0], mapped, ratings.get(sid), mapping, report)
        _keep(rec, why, out, report)
    return out, report


def _require_columns(path, table, columns) -> None:
    missing = [c for c in columns if c and c not in table.columns]
    if missing:
        raise CareInputError(path, f"no column {missing[0]!r} (columns: {list(table.columns)})",
                             field=missing[0])


def _keep(rec: dict | None, why: str | None, out: list[dict], report: ImportReport) -> None:
    if rec is None:
        report.dropped_sessions[why] += 1
    else:
        out.append(rec)


def write_import(records: list[dict], mapping: dict, report: ImportReport, out: str | Path,
                 unlabeled_out: str | Path | None) -> None:
    """Labeled sessions to ``out``; sessions without complete client ratings to
    ``unlabeled_out`` (or dropped, counted, when it is not given)."""
    seen: set[str] = set()
    unique = []
    for r in records:
        if r["session_id"] in seen:
            report.dropped_sessions["duplicate session id"] += 1
        else:
            seen.add(r["session_id"])
            unique.append(r)
    records = unique
    labeled = [r for r in records if _complete(r, mapping)]
    unlabeled = [r for r in records if not _complete(r, mapping)]
    # a client's sessions must agree in being rated: partially rated clients go unlabeled
    unrated_clients = {r["client_id"] for r in unlabeled}
    moved = [r for r in labeled if r["client_id"] in unrated_clients]
    labeled = [r for r in labeled if r["client_id"] not in unrated_clients]
    unlabeled = unlabeled + moved
    if unlabeled_out is None and unlabeled:
        report.dropped_sessions["incomplete client ratings (no --unlabeled-out)"] += len(unlabeled)
        unlabeled = []
    for r in unlabeled:
        r.pop("client_ratings", None)
        r.pop("counselor_ratings", None)
    if not labeled and not unlabeled:
        raise CareInputError(out, "no session could be imported: " + "; ".join(report.lines()))
    write_jsonl(out, labeled)
    if unlabeled_out is not None:
        write_jsonl(unlabeled_out, unlabeled)
    report.sessions_written = len(labeled)
    report.unlabeled_written = len(unlabeled)
    report.turns_written = sum(len(r["turns"]) for r in labeled + unlabeled)


def instrument_skeleton(report: ImportReport, out: str | Path, name: str = "my-instrument") -> None:
    """An instrument file for the rating fields found: one dimension per item, the observed
    range as the scale, placeholder wording. Edit it before use (see its comments)."""
    if not report.rating_values:
        raise CareInputError(out, "no client rating was found: nothing to describe")
    values = [v for vs in report.rating_values.values() for v in vs]
    integer = all(float(v).is_integer() for v in values)
    lo, hi = math.floor(min(values)), math.ceil(max(values))
    if lo == hi:
        hi = lo + 1
    skeleton = {
        "name": name,
        "title": {"en": name},
        "construct": {"en": "the client's experience of the session"},
        "rating": {"en": "how strongly the client agreed with the item"},
        "scale": {"min": lo, "max": hi, "integer": integer,
                  "labels": {p: {"en": str(p)} for p in range(lo, hi + 1)}},
        "dimensions": [
            {"id": _dim_id(item), "name": {"en": item}, "items": [item]}
            for item in report.rating_values
        ],
        "items": [{"id": item, "text": {"en": item}} for item in report.rating_values],
    }
    header = (
        "# Instrument skeleton written by `care data import` from the rating fields it found.\n"
        "# Before use: group the items into dimensions (a dimension's score is the mean of\n"
        "# its items), write each item's wording and each scale point's label, check the\n"
        f"# scale (observed: {min(values):g}..{max(values):g}) and the title/construct texts\n"
        "# the prompts and titles use. Format: workflow/schemas/instrument.schema.yaml.\n"
    )
    with atomic_open(out) as f:
        f.write(header + yaml.safe_dump(skeleton, allow_unicode=True, sort_keys=False))


def _dim_id(item: str) -> str:
    import re

    ident = re.sub(r"[^a-z0-9_]", "_", item.lower()).strip("_") or "dim"
    return ident if ident[0].isalpha() else f"d_{ident}"
