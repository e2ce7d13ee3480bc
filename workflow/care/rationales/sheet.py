"""The expert sheet: export drafts to one .xlsx a reviewer edits, and import the edited sheet.

Workbook layout (``workflow/schemas/expert_sheet.schema.yaml`` describes a row):

- ``rationales``: one row per (session, item): ids, dimension, item wording, the client's
  rating and its label, the draft, the turns the draft cites (their text, so the evidence
  sits beside the claim), then the two editable columns ``final_rationale`` (prefilled with
  the draft: an expert edits it in place) and ``editor_id``, and a ``dialogue`` link to the
  session's transcript. The sheet is protected
  (no password: it guards against slips, not against the reviewer) with only the editable
  columns unlocked; filtering and resizing stay allowed. With a list of known editors the
  ``editor_id`` cells offer it as a drop-down.
- ``dialogues``: every session's numbered turns, each session headed by a link back to its
  rows in ``rationales``. Fully locked.
- ``instructions``: what to do, in a few lines.

Import reads the edited workbook (or a CSV with the same columns), checks it against the
drafts and writes the rationale table. A row left untouched (``final_rationale`` still the
draft, or emptied, and no editor id) accepts the draft (``unedited``); ``allow_unedited:
false`` turns that into an error. A reviewer who accepts a draft as it is puts their id.
Known editors: when the config lists ``editors``, every ``editor_id`` must be one of them;
with an empty list any non-empty id is accepted. An editor id is required on every row whose
final rationale was changed; a row that accepts the draft may leave it empty. Every problem
names the file, the sheet, the row and the column, and no output is written while any remains.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from care.errors import CareInputError, brief
from care.instrument import Instrument
from care.io import (
    XLSX_READ_ERRORS,
    copy_workbook,
    from_cell,
    save_workbook,
    workbook_writes,
    xlsx_value,
)
from care.prompts import labels
from care.sessions import Session

log = logging.getLogger(__name__)

SHEET = "rationales"
DIALOGUES = "dialogues"
INSTRUCTIONS = "instructions"
# (header, width, wrapped, editable)
COLUMNS = (
    ("session_id", 16, False, False),
    ("item_id", 8, False, False),
    ("dimension", 11, False, False),
    ("item", 40, True, False),
    ("rating", 8, False, False),
    ("rating_label", 14, False, False),
    ("draft", 50, True, False),
    ("cited_turns", 50, True, False),
    ("final_rationale", 60, True, True),
    ("editor_id", 14, False, True),
    ("dialogue", 12, False, False),
)
REQUIRED = ("session_id", "item_id", "rating", "final_rationale", "editor_id")
OUTPUT_COLUMNS = (
    "session_id",
    "item_id",
    "dimension",
    "rating",
    "draft",
    "final",
    "editor_id",
    "edited",
    "unedited",
    "edit_distance",
    "n_chars",
)
MAX_LOGGED = 20  # problems listed in the log besides the one raised
MAX_CELL_CHARS = 32_767  # what an Excel cell holds (longer text is cut by readers)
#: Columns the sheet protects, besides the keys (session, item) and the rating, which an edit
#: makes an error: an edit to one of these is ignored, and reported.
LOCKED = ("dimension", "item", "rating_label", "draft", "cited_turns")

INSTRUCTIONS_LINES = (
    "Expert review of draft rationales",
    'Each row of the sheet "rationales" is one questionnaire item of one session, with the '
    "rating the client gave.",
    'The column "cited_turns" shows the turns the draft cites; the link in the last column '
    'opens the whole dialogue on the sheet "dialogues".',
    '"final_rationale" starts as a copy of the draft: edit it in place.',
    "  - explain why the client gave this rating, combining the session as a whole with the "
    "turns that mattered most, cited as (turn N);",
    "  - keep what is right in the draft and correct what is not; a row you leave untouched "
    "accepts the draft as it is.",
    'Put your editor id in the column "editor_id" on every row you edit, and on a row whose '
    "draft you accept after reading it (it then counts as reviewed).",
    "Only those two columns can be edited; the others are locked so that ids and ratings stay "
    "exactly as exported.",
    'Save the file as .xlsx (or export the sheet "rationales" as CSV) and hand it back for import.',
)


# --------------------------------------------------------------------------- export


def export_sheet(
    drafts: Sequence[dict[str, Any]],
    sessions: Sequence[Session],
    instrument: Instrument,
    out: str | Path,
    *,
    editors: Sequence[str] = (),
    source: str | Path = "the sessions file",
) -> int:
    """Write the expert workbook for ``drafts``; returns the number of rationale rows.

    A turn longer than a cell holds (:data:`MAX_CELL_CHARS`) is cut with a note naming the
    line of ``source`` (the sessions file) that holds it whole, and a warning counts them.

    The workbook is streamed (openpyxl's write-only mode): every row is written once and
    nothing asks a sheet for its size, so time and memory grow linearly with the corpus.
    Both sheets' row numbers are computed up front, which is what lets each link point
    forward to a row not yet written.
    """
    from openpyxl import Workbook

    by_id = {s.session_id: s for s in sessions}
    first_item_row: dict[str, int] = {}
    for n, d in enumerate(drafts, start=2):
        first_item_row.setdefault(d["session_id"], n)
    unknown = sorted(set(first_item_row) - set(by_id))
    if unknown:
        raise CareInputError(
            "drafts", f"session {unknown[0]!r} is not in the sessions file", field="session_id"
        )
    reviewed = [by_id[s] for s in first_item_row]
    first_turn_row = _dialogue_head_rows(reviewed)
    wb = Workbook(write_only=True)
    style = _Styles(wb)
    with workbook_writes(wb, out):
        _write_items(
            wb.create_sheet(SHEET), drafts, by_id, instrument, first_turn_row, editors, style
        )
        cut = _write_dialogues(
            wb.create_sheet(DIALOGUES), reviewed, first_item_row, style, source
        )
        _write_instructions(wb.create_sheet(INSTRUCTIONS), style)
        save_workbook(wb, out)
    if cut:
        log.warning(
            "%s: %d turn(s) longer than a cell's %s characters are cut on the sheet '%s'; "
            "each says where its whole text is", out, cut, f"{MAX_CELL_CHARS:,}", DIALOGUES,
        )
    return len(drafts)


class _Styles:
    """The sheet's cell styles, registered once as named styles of the workbook.

    A cell then takes its whole style by name (a copy of a prepared style record); setting
    font, fill, alignment and protection one by one would hash each of them for every cell,
    which costs more than writing the cell.
    """

    def __init__(self, wb) -> None:
        from openpyxl.styles import Alignment, Font, NamedStyle, PatternFill, Protection

        fill = PatternFill("solid", fgColor="FFF4CC")
        top = Alignment(vertical="top")
        wrapped = Alignment(wrap_text=True, vertical="top")
        link_font = Font(color="0563C1", underline="single")
        unlocked = Protection(locked=False)
        specs = {
            "header": {"font": Font(bold=True)},
            "header editable": {"font": Font(bold=True), "fill": fill},
            "title": {"font": Font(bold=True, size=13)},
            "locked": {"alignment": top},
            "locked wrapped": {"alignment": wrapped},
            "editable": {"alignment": top, "fill": fill, "protection": unlocked},
            "editable wrapped": {"alignment": wrapped, "fill": fill, "protection": unlocked},
            "link": {"alignment": top, "font": link_font},
        }
        self.names = {}
        for key, attrs in specs.items():
            name = f"care {key}"
            wb.add_named_style(NamedStyle(name=name, **attrs))
            self.names[key] = name

    def apply(self, cell, key: str) -> None:
        cell.style = self.names[key]

    @staticmethod
    def column(wrap: bool, editable: bool) -> str:
        return ("editable" if editable else "locked") + (" wrapped" if wrap else "")


def cited_text(session: Session, rationale: str, width: int = 300) -> str:
    """The turns a rationale cites, numbered as in the dialogue, one per line."""
    from care.prompts import cited_turns

    names = labels(session.language)
    lines = []
    for n in cited_turns(rationale or ""):
        if 1 <= n <= len(session.turns):
            turn = session.turns[n - 1]
            text = turn.text if len(turn.text) <= width else turn.text[: width - 1] + "…"
            lines.append(f"({n}) {names[turn.speaker]} {text}")
    return "\n".join(lines)


def _dialogue_head_rows(sessions: Sequence[Session]) -> dict[str, int]:
    """Row of each session's header on the dialogues sheet: header row, then head + turns."""
    rows, row = {}, 2
    for s in sessions:
        rows[s.session_id] = row
        row += 1 + len(s.turns)
    return rows


def _cell(ws, styles: _Styles, value, key: str, link: str | None = None):
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.worksheet.hyperlink import Hyperlink

    cell = WriteOnlyCell(ws, value=xlsx_value(value))
    styles.apply(cell, key)
    if link is not None:
        cell.hyperlink = Hyperlink(ref="A1", location=link)  # ref is set when written
    return cell


def _write_items(ws, drafts, by_id, instrument, first_turn_row, editors, style) -> None:
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    link_col = len(COLUMNS)
    last = len(drafts) + 1
    _declare_size(ws, last, link_col)
    for col, (_, width, _, _) in enumerate(COLUMNS, start=1):
        ws.column_dimensions[get_column_letter(col)].width = width
    ws.freeze_panes = "C2"  # layout before the first row: a streamed sheet writes it first
    ws.append(
        [
            _cell(ws, style, name, "header editable" if editable else "header")
            for name, _, _, editable in COLUMNS
        ]
    )
    column_styles = [style.column(wrap, editable) for _, _, wrap, editable in COLUMNS]
    for d in drafts:
        exported = row_values(d, by_id[d["session_id"]], instrument)
        values = [exported.get(name) for name, *_ in COLUMNS[:-1]]
        row = [_cell(ws, style, v, s) for v, s in zip(values, column_styles, strict=False)]
        target = f"'{DIALOGUES}'!A{first_turn_row[d['session_id']]}"
        row.append(_cell(ws, style, "dialogue", "link", link=target))
        ws.append(row)
    ws.auto_filter.ref = f"A1:{get_column_letter(link_col)}{last}"
    if editors:
        col = get_column_letter(_col_index("editor_id"))
        dv = DataValidation(
            type="list",
            formula1='"' + ",".join(editors) + '"',
            allow_blank=True,
            showErrorMessage=True,
            errorTitle="Unknown editor",
            error="Pick an id from the list.",
        )
        dv.add(f"{col}2:{col}{last}")
        ws.data_validations.append(dv)
    _protect(ws)


def row_values(d: dict[str, Any], session: Session, instrument: Instrument) -> dict[str, Any]:
    """The exported values of a draft's row, by column (the link column aside)."""
    lang = session.language
    rating = d["rating"]
    point = round(rating)
    return {
        "session_id": d["session_id"],
        "item_id": d["item_id"],
        "dimension": instrument.dimension(d["dimension"]).label(lang),
        "item": instrument.items[d["item_id"]].wording(lang),
        "rating": int(rating) if rating == point else rating,
        "rating_label": (
            instrument.scale_label(point, lang) if point in instrument.scale_points else ""
        ),
        "draft": d["draft"],
        "cited_turns": cited_text(session, d["draft"]) or None,
        "final_rationale": d["draft"],  # prefilled: edited in place; untouched = accepted
        "editor_id": None,
    }


def _cut_turn(text: str, session: Session, n: int, source: str) -> str | None:
    """The turn cut to what a cell holds, saying where the whole turn is; None if it fits."""
    if len(xlsx_value(text)) <= MAX_CELL_CHARS:
        return None
    note = (
        f" … [cut: a cell holds at most {MAX_CELL_CHARS:,} characters; the whole turn is "
        f"turns[{n - 1}] of line {session.line} of {source}]"
    )
    return text[: MAX_CELL_CHARS - len(note) - 1] + note


def _write_dialogues(
    ws, sessions: Sequence[Session], first_item_row: dict[str, int], style, source: str
) -> int:
    """Write the dialogues; returns how many turns had to be cut to fit a cell."""
    _declare_size(ws, 1 + sum(1 + len(s.turns) for s in sessions), 6)
    for col, width in zip("ABCDEF", (16, 6, 12, 100, 14, 10), strict=True):
        ws.column_dimensions[col].width = width
    ws.freeze_panes = "A2"
    cut = 0
    header = ["session_id", "turn", "speaker", "text", "strategy", "reaction"]
    ws.append([_cell(ws, style, h, "header") for h in header])
    for s in sessions:
        back = f"'{SHEET}'!A{first_item_row[s.session_id]}"
        ws.append(
            [
                _cell(ws, style, s.session_id, "header"),
                None,
                None,
                _cell(ws, style, "back to this session's items", "link", link=back),
            ]
        )
        lab = labels(s.language)
        for n, t in enumerate(s.turns, start=1):
            shown = _cut_turn(t.text, s, n, source)
            cut += shown is not None
            text = _cell(ws, style, shown or t.text, "locked wrapped")
            speaker = lab[t.speaker].rstrip(":：")
            values = (s.session_id, n, speaker, text, t.strategy, t.reaction)
            ws.append([xlsx_value(v) for v in values])
    _protect(ws)
    return cut


def _write_instructions(ws, style) -> None:
    _declare_size(ws, len(INSTRUCTIONS_LINES), 1)
    ws.column_dimensions["A"].width = 120
    for n, line in enumerate(INSTRUCTIONS_LINES):
        ws.append([_cell(ws, style, line, "title") if n == 0 else line])
    ws.protection.sheet = True


def _declare_size(ws, rows: int, columns: int) -> None:
    """Have a streamed sheet state its size (``<dimension>``) like a saved one does.

    Without it a reader has to parse the whole sheet to learn its size: openpyxl's read-only
    mode does, for every sheet of the workbook, before the first row is read. The writer
    takes it from ``calculate_dimension``, as for a normal sheet; set before the first row.
    """
    from openpyxl.utils import get_column_letter

    ref = f"A1:{get_column_letter(columns)}{max(rows, 1)}"
    ws.calculate_dimension = lambda: ref


def _protect(ws) -> None:
    """Lock the sheet but keep reading aids: filters, column widths, row heights."""
    p = ws.protection
    p.sheet = True
    p.autoFilter = False
    p.formatColumns = False
    p.formatRows = False


def _col_index(header: str) -> int:
    return [c[0] for c in COLUMNS].index(header) + 1


# --------------------------------------------------------------------------- simulated edits


def fill_sheet(
    sheet: str | Path, finals: dict[tuple[str, str], str], editor: str, out: str | Path
) -> int:
    """Write ``finals`` into the sheet's editable columns as a reviewer would; returns rows filled.

    The demo's stand-in for the expert: the corpus's reference rationales become the edits.
    Only the ``rationales`` sheet changes, so it is edited as a stream of rows (lxml) and
    every other part of the workbook is copied as it is: time and memory grow linearly, where
    loading and saving the whole workbook with openpyxl holds every cell of both sheets.
    """
    sheet = Path(sheet)
    try:
        with zipfile.ZipFile(sheet) as z:
            part, strings = _sheet_part(z, SHEET), _shared_strings(z)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise CareInputError(sheet, f"cannot read the workbook: {exc}") from None
    filled = []

    def fill(part_in, part_out) -> None:
        filled.append(_fill_rows(sheet, part_in, part_out, finals, editor, strings))

    copy_workbook(sheet, out, {part: fill})
    return filled[0]


_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_CELL_REF = re.compile(r"([A-Z]+)(\d+)")


def _sheet_part(z: zipfile.ZipFile, name: str) -> str:
    """The zip part of the worksheet called ``name`` (workbook.xml and its relationships)."""
    from lxml import etree

    book = etree.fromstring(z.read("xl/workbook.xml"))
    rels = etree.fromstring(z.read("xl/_rels/workbook.xml.rels"))
    targets = {r.get("Id"): r.get("Target") for r in rels}
    for sheet in book.iter(f"{_NS}sheet"):
        if sheet.get("name") == name:
            target = targets[sheet.get(f"{_REL_NS}id")]
            return target.lstrip("/") if target.startswith("/") else f"xl/{target}"
    raise KeyError(f"no sheet named '{name}'")


def _shared_strings(z: zipfile.ZipFile) -> list[str]:
    from lxml import etree

    if "xl/sharedStrings.xml" not in z.namelist():
        return []
    table = etree.fromstring(z.read("xl/sharedStrings.xml"), etree.XMLParser(huge_tree=True))
    return ["".join(si.itertext()) for si in table.iter(f"{_NS}si")]


def _fill_rows(path, part_in, part_out, finals, editor, strings) -> int:
    """Copy the sheet part row by row, writing final rationale and editor where ``finals`` has
    the row's (session, item); returns the number of rows filled."""
    from lxml import etree

    data = part_in.read()
    start, end = data.find(b"<sheetData>"), data.rfind(b"</sheetData>")
    if start < 0 or end < 0:
        raise CareInputError(path, "no rows", where=f"sheet '{SHEET}'")
    part_out.write(data[: start + len(b"<sheetData>")])
    rows = etree.iterparse(
        io.BytesIO(data), events=("end",), tag=f"{_NS}row", huge_tree=True,
        resolve_entities=False, no_network=True,
    )  # fmt: skip
    columns: dict[str, str] = {}
    filled = 0
    for _, row in rows:
        cells = {_column_of(path, c): c for c in row.iter(f"{_NS}c")}
        values = {col: _cell_value(c, strings) for col, c in cells.items()}
        if not columns:  # the header row
            columns = {v: col for col, v in values.items()}
            missing = [c for c in REQUIRED if c not in columns]
            if missing:
                raise CareInputError(path, f"missing column(s) {missing}", line=1)
        else:
            key = (_text(values.get(columns["session_id"])), _text(values.get(columns["item_id"])))
            if key in finals:
                _set_text(row, cells, columns["final_rationale"], finals[key])
                _set_text(row, cells, columns["editor_id"], editor)
                filled += 1
        part_out.write(etree.tostring(row))
        row.clear()
        while row.getprevious() is not None:  # rows already written: free them
            del row.getparent()[0]
    part_out.write(data[end:])
    return filled


def _column_of(path, cell) -> str:
    match = _CELL_REF.fullmatch(cell.get("r", ""))
    if match is None:
        raise CareInputError(path, f"a cell without a reference: {cell.get('r')!r}")
    return match.group(1)


def _cell_value(cell, strings: list[str]) -> str:
    kind = cell.get("t")
    if kind == "inlineStr":
        text = cell.find(f"{_NS}is")  # absent for an empty string
        return "" if text is None else "".join(text.itertext())
    value = cell.findtext(f"{_NS}v") or ""
    return strings[int(value)] if kind == "s" and value else value


def _set_text(row, cells: dict, column: str, text: str) -> None:
    """Make the row's cell in ``column`` an inline string (keeping its style)."""
    from lxml import etree

    cell = cells.get(column)
    if cell is None:
        cell = etree.Element(f"{_NS}c", r=f"{column}{row.get('r')}")
        later = [c for col, c in cells.items() if (len(col), col) > (len(column), column)]
        if later:
            later[0].addprevious(cell)
        else:
            row.append(cell)
        cells[column] = cell
    for child in list(cell):
        cell.remove(child)
    cell.set("t", "inlineStr")
    t = etree.SubElement(etree.SubElement(cell, f"{_NS}is"), f"{_NS}t")
    t.text = xlsx_value(text)
    t.set("{http://www.w3.org/XML/1998/namespace}space", "preserve")


# --------------------------------------------------------------------------- import


@dataclass(frozen=True)
class SheetRow:
    values: dict[str, Any]
    row: int  # as the reviewer sees it: 1-based, the header is row 1


@dataclass(frozen=True)
class Sheet:
    path: Path
    name: str | None  # worksheet name; None for CSV
    columns: dict[str, str]  # header -> column letter (CSV: the header itself)
    rows: list[SheetRow]

    def error(self, message: str, row: int | None = None, column: str | None = None):
        field = None
        if column is not None:
            letter = self.columns.get(column)
            field = f"{column} (column {letter})" if letter and letter != column else column
        where = f"sheet '{self.name}'" if self.name else None
        return CareInputError(self.path, message, line=row, field=field, where=where)


def read_sheet(path: str | Path) -> Sheet:
    """The ``rationales`` rows of an edited workbook, or of a CSV export of it."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    from openpyxl import load_workbook
    from openpyxl.utils import get_column_letter

    try:  # rows are parsed as they are read: a broken part may show only now
        wb = load_workbook(path, read_only=True, data_only=True)
        if SHEET not in wb.sheetnames:
            raise CareInputError(path, f"no sheet named '{SHEET}' (sheets: {wb.sheetnames})")
        rows = wb[SHEET].iter_rows(values_only=True)
        header = [_text(h) for h in next(rows, ())]
        columns = {h: get_column_letter(n) for n, h in enumerate(header, start=1) if h}
        data = [
            SheetRow(dict(zip(header, values, strict=False)), n)
            for n, values in enumerate(rows, start=2)
            if any(v not in (None, "") for v in values)
        ]
        wb.close()
    except XLSX_READ_ERRORS as exc:
        raise CareInputError(path, f"cannot read the workbook: {brief(exc)}") from None
    return _checked(Sheet(path, SHEET, columns, data))


def _read_csv(path: Path) -> Sheet:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            data = [
                SheetRow(dict(r), n)
                for n, r in enumerate(reader, start=2)
                if any((v or "").strip() for v in r.values())
            ]
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CareInputError(path, f"cannot read the CSV: {exc}") from None
    return _checked(Sheet(path, None, {h: h for h in header}, data))


def _checked(sheet: Sheet) -> Sheet:
    missing = [c for c in REQUIRED if c not in sheet.columns]
    if missing:
        raise sheet.error(
            f"missing column(s) {missing} in the header row", row=1, column=missing[0]
        )
    return sheet


def import_edits(
    sheet: Sheet,
    drafts: Sequence[dict[str, Any]],
    instrument: Instrument,
    *,
    editors: Sequence[str] = (),
    allow_unedited: bool = True,
    sessions: Sequence[Session] = (),
) -> pd.DataFrame:
    """Validate the edited sheet against the drafts and build the rationale table.

    Every problem is collected; the first is raised (the others are logged), so nothing is
    written from a sheet with any problem. An edit to a locked column (:data:`LOCKED`) is
    ignored and reported, a warning per column with the count: against the exported values
    when ``sessions`` (the exported ones) are given, else the draft column alone.
    """
    expected = {(d["session_id"], d["item_id"]): d for d in drafts}
    known_sessions = {d["session_id"] for d in drafts}
    by_id = {s.session_id: s for s in sessions}
    problems: list[CareInputError] = []
    seen: dict[tuple[str, str], int] = {}
    locked_edits: dict[str, list[int]] = {}
    out = []
    for r in sheet.rows:
        rec = _import_row(
            sheet, r, expected, known_sessions, seen, editors, allow_unedited, instrument, problems
        )
        if rec is not None:
            out.append(rec)
            exported = _exported(expected[(rec["session_id"], rec["item_id"])], by_id, instrument)
            for column in _locked_edited(r.values, exported):
                locked_edits.setdefault(column, []).append(r.row)
    for column, rows in locked_edits.items():
        log.warning(
            "%s", sheet.error(
                f"the locked column {column!r} was edited on {len(rows)} row(s) (first: row "
                f"{rows[0]}); the edits are ignored (write the rationale in final_rationale)",
                column=column,
            )
        )
    missing = [k for k in expected if k not in seen]
    if missing:
        s, i = missing[0]
        problems.append(
            sheet.error(
                f"{len(missing)} (session, item) pair(s) of the drafts are missing from the sheet, "
                f"first: session {s!r} item {i!r}",
                column="session_id",
            )
        )
    if problems:
        for p in problems[1:MAX_LOGGED]:
            log.error("%s", p)
        if len(problems) > MAX_LOGGED:
            log.error("... and %d more", len(problems) - MAX_LOGGED)
        first = problems[0]
        if len(problems) > 1:
            first.message += f" (and {len(problems) - 1} more problem(s), see the log)"
        raise first
    return rationale_table(out, instrument)


def _import_row(
    sheet, r, expected, known_sessions, seen, editors, allow_unedited, instrument, problems
) -> dict[str, Any] | None:
    v = r.values
    session_id, item_id = _text(v.get("session_id")), _text(v.get("item_id"))

    def bad(message: str, column: str) -> None:
        problems.append(sheet.error(message, row=r.row, column=column))

    if session_id not in known_sessions:
        bad(
            f"unknown session id {session_id!r}" if session_id else "empty session id", "session_id"
        )
        return None
    if (session_id, item_id) not in expected:
        bad(
            f"unknown item id {item_id!r} for session {session_id!r}"
            if item_id
            else "empty item id",
            "item_id",
        )
        return None
    key = (session_id, item_id)
    if key in seen:
        bad(
            f"session {session_id!r} item {item_id!r} appears twice (first on row {seen[key]})",
            "item_id",
        )
        return None
    seen[key] = r.row
    draft = expected[key]
    rating = _number(v.get("rating"))
    if rating is None or rating != draft["rating"]:
        bad(
            f"rating changed: exported {draft['rating']:g}, found {v.get('rating')!r} "
            "(ratings are the client's and must stay untouched)",
            "rating",
        )
    final = _text(v.get("final_rationale"))
    editor = _text(v.get("editor_id"))
    # untouched: still the prefilled draft (or emptied) and nobody signed it
    unedited = not final or (_norm(final) == _norm(draft["draft"]) and not editor)
    if unedited:
        if not allow_unedited:
            bad(
                "draft left untouched (allow_unedited is false: edit it, or put your editor id "
                "on the row to accept it as reviewed)",
                "final_rationale",
            )
        elif not draft["draft"].strip():
            bad("empty final rationale and the draft is empty too", "final_rationale")
        final = draft["draft"].strip()
    elif not editor:
        bad("a written final rationale needs an editor id", "editor_id")
    if editor and editors and editor not in editors:
        bad(f"unknown editor id {editor!r} (known: {list(editors)})", "editor_id")
    return {
        **{k: draft[k] for k in ("session_id", "item_id", "dimension", "rating", "draft")},
        "final": final,
        "editor_id": editor or None,
        "unedited": unedited,
    }


def _exported(draft: dict[str, Any], by_id: dict, instrument: Instrument) -> dict[str, Any]:
    """The locked values the export wrote on the draft's row (the draft alone when the
    session is not known)."""
    session = by_id.get(draft["session_id"])
    if session is None:
        return {"draft": draft["draft"]}
    return row_values(draft, session, instrument)


def _locked_edited(values: dict[str, Any], exported: dict[str, Any]) -> list[str]:
    """The locked columns (sheet protection has no password) whose text differs from the
    export's: their edits would otherwise be lost unseen."""
    return [
        column for column in LOCKED
        if column in values and column in exported
        and _norm(_text(values[column])) != _norm(_text(xlsx_value(exported[column])))
    ]


def rationale_table(records: list[dict[str, Any]], instrument: Instrument) -> pd.DataFrame:
    """The contract's ``rationales.parquet`` frame: fixed columns and dtypes, sorted rows."""
    from rapidfuzz.distance import Levenshtein

    frame = pd.DataFrame(records)
    frame["edited"] = [
        _norm(f) != _norm(d) for f, d in zip(frame["final"], frame["draft"], strict=True)
    ]
    frame["edit_distance"] = [
        Levenshtein.normalized_distance(_norm(d), _norm(f))
        for d, f in zip(frame["draft"], frame["final"], strict=True)
    ]
    frame["n_chars"] = frame["final"].str.len()
    order = {i: n for n, i in enumerate(instrument.item_ids)}
    frame = (
        frame.assign(_order=frame["item_id"].map(order))
        .sort_values(["session_id", "_order"], kind="stable")
        .drop(columns="_order")
    )
    frame = frame[list(OUTPUT_COLUMNS)].reset_index(drop=True)
    return frame.astype(
        {
            "session_id": "string",
            "item_id": "string",
            "dimension": "string",
            "rating": "float64",
            "draft": "string",
            "final": "string",
            "editor_id": "string",
            "edited": "bool",
            "unedited": "bool",
            "edit_distance": "float64",
            "n_chars": "int64",
        }
    )


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def _text(value: Any) -> str:
    """A cell's text as exported (:func:`care.io.from_cell`), without surrounding space."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # an id Excel turned into a number
    return from_cell(str(value)).strip()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(str(value).strip()) if value not in (None, "") else None
    except ValueError:
        return None
