"""Hostile inputs: tiny files built to exhaust memory, crash a parser, or change data
unseen. Each kind goes through ``care data validate`` (and a few through the Snakemake run
up to the expert sheet): one line naming file, record and field, exit 2 (1 for Snakemake),
no traceback, nothing written."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from care.errors import CareInputError
from care.instrument import load_instrument
from care.sessions import load_sessions

from .conftest import copy_workflow, run_snakemake

REPO = Path(__file__).resolve().parent.parent
WAI = REPO / "workflow/instruments/wai_sr.yaml"


def lines(records) -> list[str]:
    return [json.dumps(r, ensure_ascii=False) for r in records]


def mutated(records, fn) -> list[str]:
    records = copy.deepcopy(records[:4])
    fn(records)
    return lines(records)


def replaced(records, n: int, old: str, new: str) -> list[str]:
    """The JSON text of the first records with one piece of line ``n`` (1-based) rewritten:
    for what ``json.dumps`` cannot write (a duplicate key, a 5000-digit number)."""
    text = lines(records[:4])
    assert old in text[n - 1]
    text[n - 1] = text[n - 1].replace(old, new, 1)
    return text


def _rating(value):
    return lambda r: r[1]["client_ratings"].__setitem__("4", value)


def _ids(first: str, second: str, field: str):
    def fn(r):
        r[0][field], r[2][field] = first, second

    return fn


def _turn_text(text: str):
    return lambda r: r[2]["turns"][0].__setitem__("text", text)


# kind -> (file lines from the small corpus's records, line, field, message)
CORPUS_CASES = {
    "rating 10**400": (lambda r: mutated(r, _rating(10**400)), 2, "client_ratings.4",
                       "outside the scale"),
    "rating of 5000 digits": (lambda r: replaced(r, 2, '"4": ', '"4": ' + "9" * 5000 + ", \"x\": "),
                              2, None, "malformed JSON"),
    "rating NaN": (lambda r: replaced(r, 2, '"4": ', '"4": NaN, "x": '), 2, "client_ratings.4",
                   "outside the scale"),
    "rating Infinity": (lambda r: mutated(r, _rating(float("inf"))), 2, "client_ratings.4",
                        "outside the scale"),
    "lone surrogate in a turn": (lambda r: [
        *lines(r[:2]), lines(r[2:3])[0].replace('"text": "', '"text": "\\ud800', 1)
    ], 3, "turns.0.text", "lone surrogate"),
    "lone surrogate in an id": (lambda r: [
        lines(r[:1])[0].replace('"session_id": "', '"session_id": "\\udfff', 1)
    ], 1, "session_id", "lone surrogate"),
    "duplicate key": (lambda r: replaced(r, 3, '"language": ', '"language": "zh", "language": '),
                      3, "language", "duplicate key"),
    "session ids differing in case": (
        lambda r: mutated(r, _ids("c001-s01", "C001-S01", "session_id")), 3, "session_id",
        "only in case"),
    "counselor ids differing in case": (
        lambda r: mutated(r, _ids("Dr. Lee", "dr. lee", "counselor_id")), 3, "counselor_id",
        "only in case"),
    "nested too deeply": (lambda r: [*lines(r[:1]), "[" * 100_000 + "]" * 100_000], 2, None,
                          "nested too deeply"),
    "a 2 MB speaker": (lambda r: mutated(
        r, lambda x: x[0]["turns"][0].__setitem__("speaker", "s" * 2_000_000)), 1,
        "turns.0.speaker", "unknown speaker"),
    "NUL in an id": (lambda r: mutated(r, _ids("a\x00b", "c", "client_id")), 1, "client_id",
                     "control characters"),
    "blank text": (lambda r: mutated(r, _turn_text(" \u3000\n")), 3, "turns.0.text", "blank"),
    "turns not a list": (lambda r: mutated(r, lambda x: x[3].__setitem__("turns", {"a": 1})),
                         4, "turns", "is not of type 'array'"),
    "a record that is a list": (lambda r: [*lines(r[:1]), "[1, 2, 3]"], 2, None,
                                "is not of type 'object'"),
    "an empty object": (lambda r: [*lines(r[:1]), "{}"], 2, "session_id", "required"),
    "a turn text that is a number": (lambda r: mutated(r, _turn_text(5)), 3, "turns.0.text",
                                     "is not of type 'string'"),
    "ratings as a list": (lambda r: mutated(r, lambda x: x[1].__setitem__("client_ratings",
                                                                          [4, 4])),
                          2, "client_ratings", "is not of type 'object'"),
    "rating -Infinity": (lambda r: mutated(r, _rating(float("-inf"))), 2, "client_ratings.4",
                         "outside the scale"),
    "duplicate rating key": (lambda r: replaced(r, 2, '"4": ', '"4": 1, "4": '), 2, "4",
                             "duplicate key"),
    "an id of 200 characters": (lambda r: mutated(r, _ids("s" * 200, "t", "session_id")), 1,
                                "session_id", "at most 128 characters"),
    "an id with surrounding space": (lambda r: mutated(r, _ids(" s1", "t", "session_id")), 1,
                                     "session_id", "whitespace"),
    "speaker in another case": (lambda r: mutated(
        r, lambda x: x[0]["turns"][0].__setitem__("speaker", "Counselor")), 1,
        "turns.0.speaker", "unknown speaker"),
}


def write_case(tmp_path: Path, records, kind: str) -> Path:
    path = tmp_path / "sessions.jsonl"
    path.write_text("\n".join(CORPUS_CASES[kind][0](records)) + "\n", encoding="utf-8")
    return path


def care(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "care.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def assert_one_line(proc, code: int, *fragments: str) -> str:
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert len(errors[0]) < 600  # names the value, never dumps it
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("kind", sorted(CORPUS_CASES))
def test_each_hostile_corpus_is_one_line(kind, small_corpus, instrument, tmp_path):
    _, records, _ = small_corpus
    assert records[0]["client_id"] == records[1]["client_id"]
    path = write_case(tmp_path, records, kind)
    _, line, field, message = CORPUS_CASES[kind]
    with pytest.raises(CareInputError, match=message) as err:
        load_sessions(path, instrument)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), line, field)
    assert len(str(err.value)) < 600


@pytest.mark.parametrize("kind", ["rating 10**400", "lone surrogate in a turn", "duplicate key",
                                  "session ids differing in case", "a 2 MB speaker"])
def test_validate_command_on_hostile_corpora(kind, small_corpus, tmp_path):
    path = write_case(tmp_path, small_corpus[1], kind)
    out = tmp_path / "table.tsv"
    proc = care("data", "validate", "--sessions", str(path), "--instrument", str(WAI),
                "--out", str(out))
    assert_one_line(proc, 2, f"{path}:{CORPUS_CASES[kind][1]}:", CORPUS_CASES[kind][3])
    assert not out.exists() and not list(tmp_path.glob(".table.tsv*"))


def test_a_file_without_newlines_is_not_read_whole(tmp_path):
    """``data.sessions: /dev/zero``: one endless line, refused at the line cap."""
    out = tmp_path / "table.tsv"
    proc = care("data", "validate", "--sessions", "/dev/zero", "--instrument", str(WAI),
                "--out", str(out))
    assert_one_line(proc, 2, "/dev/zero:1:", "longer than")
    assert not out.exists()


def test_the_line_cap_names_the_line(tmp_path, monkeypatch):
    import care.io

    path = tmp_path / "s.jsonl"
    path.write_text('{"a": 1}\n' + "x" * 5000 + "\n", encoding="utf-8")
    monkeypatch.setattr(care.io, "MAX_LINE_BYTES", 4096)
    with pytest.raises(CareInputError, match="longer than 4,096 bytes") as err:
        care.io.read_jsonl(path)  # the default is read when called
    assert err.value.line == 2


def test_the_importer_reads_no_endless_file_whole(tmp_path):
    """``care data import`` takes a JSON array or JSON lines: only an array is read whole.
    Before: ``/dev/zero`` was read into memory until it ran out."""
    from care.importer import read_conversations

    with pytest.raises(CareInputError, match="longer than") as err:
        read_conversations("/dev/zero")
    assert err.value.line == 1
    array = tmp_path / "conversations.json"
    array.write_text('[{"id": 1, "id": 2}]', encoding="utf-8")
    with pytest.raises(CareInputError, match="duplicate key 'id'"):
        read_conversations(array)
    array.write_text('\n [{"id": 1}]', encoding="utf-8")
    assert read_conversations(array) == [{"id": 1}]


# ------------------------------------------------------------------ YAML: aliases, nesting

def _anchors(form: str, sep: str = "") -> str:
    """Eight more levels over ``&a`` (nine values), each nine aliases of the one before:
    9^9 values from under 1 KB of YAML."""
    return sep.join(
        form.format(c, ", ".join([f"*{p}"] * 9))
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )


NINE = "[x, x, x, x, x, x, x, x, x]"
BOMB = f"a: &a {NINE}\n" + _anchors("{0}: &{0} [{1}]\n")
RECURSIVE = "name: &n [*n]\n"


@pytest.mark.parametrize(("text", "message"), [
    (BOMB, "YAML aliases"),
    (RECURSIVE, "YAML aliases"),
    ("a: " + "[" * 3_000 + "]" * 3_000 + "\n", "nested too deeply"),
])
def test_an_instrument_alias_bomb_is_refused(tmp_path, text, message):
    """9^9 values from 1 KB: before, `care data validate` grew past 1.3 GB in 180 s."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(text, encoding="utf-8")
    assert len(text) < 50_000
    with pytest.raises(CareInputError, match=message) as err:
        load_instrument(bomb)
    assert err.value.path == str(bomb)
    proc = care("data", "validate", "--sessions", str(tmp_path / "none.jsonl"), "--instrument",
                str(bomb))
    assert_one_line(proc, 2, str(bomb), message)


def _wai(old: str, new: str) -> str:
    text = WAI.read_text(encoding="utf-8")
    assert old in text
    return text.replace(old, new, 1)


# kind -> (instrument file text, field, message)
INSTRUMENT_CASES = {
    "a scale of 10^9 points": (lambda: _wai("  max: 5\n", "  max: 1000000000\n"),
                               "scale/labels", "labels must cover every point"),
    "a label key that is not a number": (lambda: _wai("    1: {en:", "    one: {en:"),
                                         "scale/labels", "label keys must be"),
    "a list, not a mapping": (lambda: "- 1\n- 2\n", None, "is not of type 'object'"),
    "an unclosed bracket": (lambda: "name: [WAI\n", None, "cannot read instrument"),
}


@pytest.mark.parametrize("kind", sorted(INSTRUMENT_CASES))
def test_each_hostile_instrument_is_one_line(kind, tmp_path):
    text, field, message = INSTRUMENT_CASES[kind]
    path = tmp_path / "instrument.yaml"
    path.write_text(text(), encoding="utf-8")
    with pytest.raises(CareInputError, match=message) as err:
        load_instrument(path)
    assert (err.value.path, err.value.field) == (str(path), field)


def test_expanded_size_counts_aliases_without_expanding():
    from care.io import expanded_size

    shared = ["x"] * 10
    assert expanded_size({"a": shared, "b": shared}, limit=100) == 1 + 2 + 2 * 11
    assert expanded_size([[shared] * 10] * 10, limit=50) > 50


def test_instrument_schema_error_prints_no_whole_value(tmp_path):
    bad = tmp_path / "inst.yaml"
    text = WAI.read_text(encoding="utf-8")
    name = next(line for line in text.splitlines() if line.startswith("name:"))
    bad.write_text(text.replace(name, "name: [" + "1, " * 20_000 + "1]"), encoding="utf-8")
    with pytest.raises(CareInputError, match="is not of type 'string'") as err:
        load_instrument(bad)
    assert err.value.field == "name" and len(str(err.value)) < 400


#: The bomb inside a config value the schema checks item by item.
CONFIG_BOMB = f"variants: [rationale, &a {NINE}, " + _anchors("&{0} [{1}]", ", ") + "]"


def test_a_config_alias_bomb_is_one_line(tmp_path):
    """Before: a MemoryError traceback (the schema check walked the expanded config)."""
    work = copy_workflow(tmp_path)
    text = (REPO / ".test/config.yaml").read_text(encoding="utf-8")
    assert "variants: [rationale, score_only]" in text
    (work / "bomb.yaml").write_text(
        text.replace("variants: [rationale, score_only]", CONFIG_BOMB), encoding="utf-8")
    done = run_snakemake(work, "-n", "--configfile", "bomb.yaml", timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-2000:]
    assert "Traceback" not in output and "MemoryError" not in output
    assert "bomb.yaml" in output and "YAML aliases" in output


# ------------------------------------------------------------------ through the workflow

WORKFLOW_KINDS = ["rating 10**400", "lone surrogate in a turn", "session ids differing in case",
                  "instrument alias bomb"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The workflow, configured for a corpus and an instrument of the user's own (data/)."""
    work = copy_workflow(tmp_path_factory.mktemp("hostile"))
    text = (REPO / ".test/config.yaml").read_text(encoding="utf-8")
    for old, new in [("sessions: results/demo/sessions.jsonl", "sessions: data/sessions.jsonl"),
                     ("instrument: workflow/instruments/wai_sr.yaml",
                      "instrument: data/instrument.yaml"),
                     ("  enabled: true", "  enabled: false")]:
        assert old in text
        text = text.replace(old, new, 1)
    (work / "own.yaml").write_text(text, encoding="utf-8")
    (work / "data").mkdir()
    return work


@pytest.mark.parametrize("kind", WORKFLOW_KINDS)
def test_the_workflow_stops_before_the_expert_sheet(kind, workdir, small_corpus):
    """Validation and drafting both read the corpus and the instrument: each fails with the
    one line, Snakemake exits 1, and nothing of either stage (nor the expert sheet) is
    written."""
    corpus, instrument = workdir / "data/sessions.jsonl", workdir / "data/instrument.yaml"
    if kind in CORPUS_CASES:
        _, line, _, message = CORPUS_CASES[kind]
        where = f"data/sessions.jsonl:{line}:"
        corpus.write_text("\n".join(CORPUS_CASES[kind][0](small_corpus[1])) + "\n",
                          encoding="utf-8")
        instrument.write_text(WAI.read_text(encoding="utf-8"), encoding="utf-8")
    else:
        where, message = "data/instrument.yaml:", "YAML aliases"
        corpus.write_text("\n".join(lines(small_corpus[1])) + "\n", encoding="utf-8")
        instrument.write_text(BOMB, encoding="utf-8")
    done = run_snakemake(workdir, "--keep-going", "--configfile", "own.yaml", "--",
                         "results/data/sessions.tsv", "results/rationales/expert_sheet.xlsx",
                         timeout=300)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    for log in ("logs/validate_sessions.log", "logs/rationales/draft.log"):
        text = (workdir / log).read_text(encoding="utf-8")
        assert "Traceback" not in text
        errors = [t for t in text.splitlines() if ": error: " in t]
        assert len(errors) == 1 and where in errors[0] and message in errors[0], text[-2000:]
    for stage in ("results/data", "results/rationales"):
        assert not (workdir / stage).exists() or not any((workdir / stage).iterdir())
