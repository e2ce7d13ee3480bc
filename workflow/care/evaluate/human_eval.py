"""Human evaluation of generated rationales: rating sheets out, filled sheets in, a summary.

The paper (sections 4.3 and 5.1) has experts rate rationales on a 1-5 scale for
faithfulness (true to the dialogue and to the client's rating), relevance (about the item's
aspect) and informativeness (specific to this session, not generic); 3 is the acceptability
threshold. :func:`export_sheet` writes an Excel workbook with a seeded sample of sessions
(every item of each), the dialogues, and instructions; each rater fills a copy.
:func:`import_sheets` reads the filled copies (xlsx or csv; the rater is the file's stem),
and :func:`summarize` reports mean and sd per criterion and dimension, and Krippendorff's
alpha across raters.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from care.errors import CareInputError, brief
from care.instrument import Instrument
from care.io import XLSX_READ_ERRORS, from_cell, save_workbook, xlsx_value
from care.sessions import Session

CRITERIA = ["faithfulness", "relevance", "informativeness"]
SHEET = "ratings"
KEY_COLUMNS = [
    "row_id",
    "session_id",
    "dimension",
    "item_id",
    "item",
    "client_rating",
    "rationale",
]  # no model score: a rater who saw it would judge the rationale against it (anchoring)
SHEET_COLUMNS = [*KEY_COLUMNS, *CRITERIA, "comment"]
SUMMARY_COLUMNS = [
    "criterion",
    "dimension",
    "mean",
    "sd",
    "n_ratings",
    "n_units",
    "n_raters",
    "alpha",
]
DEFINITIONS = {
    "faithfulness": "How accurately the rationale reflects the dialogue content and the "
    "client's actual rating.",
    "relevance": "How directly the rationale addresses the aspect the item asks about.",
    "informativeness": "Whether the rationale gives context-specific evidence from this "
    "session rather than generic statements.",
}
log = logging.getLogger("care.evaluate")


def sample_rows(
    pred: pd.DataFrame, instrument: Instrument, n_sessions: int, seed: int, language: str = "en"
) -> pd.DataFrame:
    """A seeded sample of sessions with generated rationales; one row per rated item.

    A rater judges the rationale, so an item whose score did not parse is still rated. A
    model that wrote no rationale at all gives an empty sheet (and a warning), not an error:
    the rest of the DAG does not depend on the rating sheet.
    """
    text = pred["rationale"].astype("string").str.strip()
    rated = pred[text.notna() & (text != "")]
    sessions = np.array(sorted(rated["session_id"].astype(str).unique()))
    if len(sessions) == 0:
        log.warning("no generated rationales to sample: the rating sheet is empty")
    rng = np.random.default_rng(seed)
    size = min(n_sessions, len(sessions))
    chosen = set(rng.choice(sessions, size=size, replace=False)) if size else set()
    rows = rated[rated["session_id"].astype(str).isin(chosen)].copy()
    order = {item: n for n, item in enumerate(instrument.item_ids)}
    rows = rows.assign(_o=rows["item_id"].map(order)).sort_values(["session_id", "_o"])
    sheet = pd.DataFrame(
        {
            "session_id": rows["session_id"].astype(str),
            "dimension": rows["item_id"].map(instrument.dimension_of),
            "item_id": rows["item_id"],
            "item": rows["item_id"].map(lambda i: instrument.items[i].wording(language)),
            "client_rating": rows["client_score"].astype(float).round(2),
            "rationale": rows["rationale"],
        }
    ).reset_index(drop=True)
    sheet.insert(0, "row_id", [f"r{n + 1:04d}" for n in range(len(sheet))])
    for column in [*CRITERIA, "comment"]:
        sheet[column] = None
    return sheet[SHEET_COLUMNS]


def dialogue_rows(sessions: Sequence[Session], session_ids: set[str]) -> pd.DataFrame:
    rows = [
        {"session_id": s.session_id, "turn": n, "speaker": t.speaker, "text": t.text}
        for s in sessions
        if s.session_id in session_ids
        for n, t in enumerate(s.turns, start=1)
    ]
    return pd.DataFrame(rows, columns=["session_id", "turn", "speaker", "text"])


def export_sheet(
    path: str | Path, sheet: pd.DataFrame, dialogues: pd.DataFrame, scale: tuple[int, int] = (1, 5)
) -> None:
    """Write the rating workbook (instructions, ratings with 1-5 validation, dialogues)."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill, Protection
    from openpyxl.worksheet.datavalidation import DataValidation

    book = Workbook()
    about = book.active
    about.title = "instructions"
    lines = [
        "Rate each generated rationale on the 'ratings' sheet; the dialogues are on the "
        "'dialogues' sheet (turn numbers match the rationale's citations).",
        f"Scale: {scale[0]} (poor) to {scale[1]} (excellent); 3 is acceptable. "
        "Leave a cell empty if you cannot judge it.",
        "Save your copy under a file name that identifies you (the rater id is the file name).",
        *[f"{c.capitalize()}: {DEFINITIONS[c]}" for c in CRITERIA],
    ]
    for line in lines:
        about.append([line])
    about.column_dimensions["A"].width = 120

    ratings = book.create_sheet(SHEET)
    ratings.append(SHEET_COLUMNS)
    for record in sheet.itertuples(index=False):
        ratings.append([xlsx_value(v) for v in record])
    editable = {*CRITERIA, "comment"}
    fill = PatternFill("solid", fgColor="FFF4CC")
    for cell in ratings[1]:
        cell.font = Font(bold=True)
        if cell.value in editable:
            cell.fill = fill
    widths = {"rationale": 80, "item": 40, "comment": 30, "row_id": 8}
    for n, column in enumerate(SHEET_COLUMNS, start=1):
        letter = ratings.cell(row=1, column=n).column_letter
        ratings.column_dimensions[letter].width = widths.get(column, 14)
        for cell in ratings[letter][1:]:
            # long text wraps, every cell reads from the top, scores show two decimals
            cell.alignment = Alignment(wrap_text=column in ("rationale", "item", "comment"),
                                       vertical="top")
            if column == "client_rating":
                cell.number_format = "0.00"
            if column in editable:  # only the raters' columns can be typed into
                cell.protection = Protection(locked=False)
                cell.fill = fill
    protect = ratings.protection
    protect.sheet, protect.autoFilter, protect.formatColumns, protect.formatRows = (
        True, False, False, False)
    check = DataValidation(
        type="whole",
        operator="between",
        formula1=str(scale[0]),
        formula2=str(scale[1]),
        allow_blank=True,
        error=f"A whole number from {scale[0]} to {scale[1]}",
    )
    ratings.add_data_validation(check)
    first = SHEET_COLUMNS.index(CRITERIA[0]) + 1
    start = ratings.cell(row=2, column=first).coordinate
    end = ratings.cell(row=max(len(sheet) + 1, 2), column=first + len(CRITERIA) - 1).coordinate
    check.add(f"{start}:{end}")
    ratings.freeze_panes = "B2"

    talk = book.create_sheet("dialogues")
    talk.append(list(dialogues.columns))
    for record in dialogues.itertuples(index=False):
        talk.append([xlsx_value(v) for v in record])
    talk.column_dimensions["D"].width = 100
    for cell in talk["D"][1:]:
        cell.alignment = Alignment(wrap_text=True, vertical="top")
    talk.protection.sheet = about.protection.sheet = True
    save_workbook(book, path)


def read_sheet(path: str | Path) -> tuple[pd.DataFrame, str, int]:
    """A filled sheet as text cells; returns (frame, where, first data row number)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".xlsx", ".xlsm"):
            frame = pd.read_excel(path, sheet_name=SHEET, dtype=object)
            return frame, f"sheet '{SHEET}'", 2
        if path.suffix.lower() in (".csv", ".tsv"):
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            return pd.read_csv(path, sep=sep, dtype=object, keep_default_na=False), "", 2
    except XLSX_READ_ERRORS as exc:  # pandas: missing sheet; unreadable workbook or CSV
        raise CareInputError(
            path, f"cannot read rating sheet: {brief(exc)}", where=f"sheet '{SHEET}'"
        ) from None
    raise CareInputError(path, "rating sheets must be .xlsx or .csv files")


def parse_ratings(
    path: str | Path, key: pd.DataFrame | None = None, scale: tuple[int, int] = (1, 5)
) -> pd.DataFrame:
    """One rater's filled sheet as long rows (rater, row_id, criterion, rating); checked."""
    path = Path(path)
    frame, where, first_row = read_sheet(path)
    for column in ["row_id", *CRITERIA]:
        if column not in frame.columns:
            raise CareInputError(path, "missing column", field=column, where=where or None)
    rows = []
    seen: set[str] = set()
    for n, record in enumerate(frame.to_dict("records")):
        line = first_row + n
        row_id = _text(record["row_id"])
        if not row_id:
            raise CareInputError(
                path, "empty row id", line=line, field="row_id", where=where or None
            )
        if row_id in seen:
            raise CareInputError(
                path,
                f"row id {row_id!r} appears twice",
                line=line,
                field="row_id",
                where=where or None,
            )
        seen.add(row_id)
        if key is not None and row_id not in set(key["row_id"]):
            raise CareInputError(
                path,
                f"row id {row_id!r} is not in the exported sheet",
                line=line,
                field="row_id",
                where=where or None,
            )
        for criterion in CRITERIA:
            value = _rating(record[criterion], scale)
            if value is _BAD:
                raise CareInputError(
                    path,
                    f"{record[criterion]!r} is not a whole number from {scale[0]} to {scale[1]}",
                    line=line,
                    field=criterion,
                    where=where or None,
                )
            rows.append(
                {"rater": path.stem, "row_id": row_id, "criterion": criterion, "rating": value}
            )
    return pd.DataFrame(rows, columns=["rater", "row_id", "criterion", "rating"])


_BAD = object()


def _text(value) -> str:
    """A cell's text as exported (:func:`care.io.from_cell`), without surrounding space."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return from_cell(str(value)).strip()


def _rating(value, scale: tuple[int, int]):
    text = _text(value)
    if not text:
        return np.nan
    try:
        number = float(text)
    except ValueError:
        return _BAD
    if not number.is_integer() or not scale[0] <= number <= scale[1]:
        return _BAD
    return number


def import_sheets(
    paths: Sequence[str | Path], key: pd.DataFrame | None = None, scale: tuple[int, int] = (1, 5)
) -> pd.DataFrame:
    """All raters' ratings, long: rater, row_id, criterion, rating (+ dimension from the key)."""
    stems = [Path(p).stem for p in paths]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise CareInputError(
            paths[stems.index(duplicates[0])],
            f"two sheets name the same rater {duplicates[0]!r} (file stem)",
        )
    frames = [parse_ratings(p, key, scale) for p in paths]
    ratings = pd.concat(frames, ignore_index=True)
    if key is not None:
        ratings = ratings.merge(key[["row_id", "dimension"]], on="row_id", how="left")
    return ratings


def krippendorff_alpha(ratings: pd.DataFrame, level: str = "ordinal") -> float:
    """Alpha across raters (units = rated rows); NaN with fewer than two raters or no spread."""
    import krippendorff

    table = ratings.pivot_table(index="rater", columns="row_id", values="rating", aggfunc="first")
    if table.shape[0] < 2 or table.notna().sum().ge(2).sum() == 0:
        return np.nan
    try:
        return float(
            krippendorff.alpha(
                reliability_data=table.to_numpy(dtype=float), level_of_measurement=level
            )
        )
    except ValueError:  # a single value in the whole domain: agreement is undefined
        return np.nan


def summarize(
    ratings: pd.DataFrame, dimensions: Sequence[str], level: str = "ordinal"
) -> pd.DataFrame:
    """Per criterion, per dimension and overall ('all'): mean, sd, counts and alpha."""
    rows = []
    for criterion in CRITERIA:
        of_criterion = ratings[ratings["criterion"] == criterion]
        for dimension in [*dimensions, "all"]:
            part = (
                of_criterion
                if dimension == "all"
                else of_criterion[of_criterion["dimension"] == dimension]
            )
            values = part["rating"].dropna()
            rows.append(
                {
                    "criterion": criterion,
                    "dimension": dimension,
                    "mean": float(values.mean()) if len(values) else np.nan,
                    "sd": float(values.std(ddof=1)) if len(values) > 1 else np.nan,
                    "n_ratings": len(values),
                    "n_units": part.dropna(subset=["rating"])["row_id"].nunique(),
                    "n_raters": part.dropna(subset=["rating"])["rater"].nunique(),
                    "alpha": krippendorff_alpha(part, level),
                }
            )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
