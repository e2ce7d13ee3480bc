"""The data contract: instrument loading and every bad-input case of the session loader."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from care.errors import CareInputError
from care.instrument import load_instrument
from care.sessions import load_sessions, session_table

from .conftest import REPO


def write_lines(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return path


def test_wai_sr_items_and_subscales(instrument):
    assert instrument.name == "WAI-SR"
    assert instrument.scale_points == [1, 2, 3, 4, 5]
    dims = {d.id: set(d.items) for d in instrument.dimensions}
    assert dims == {"task": {"1", "2", "10", "12"}, "bond": {"3", "5", "7", "9"},
                    "goal": {"4", "6", "8", "11"}}
    for item in instrument.items.values():
        assert item.wording("en") and item.wording("zh")
    assert instrument.scale_label(5, "zh") == "总是"


def test_dimension_score_is_mean_of_items(instrument):
    ratings = {i: 5 for i in instrument.item_ids} | {"4": 1, "6": 2}
    scores = instrument.dimension_scores(ratings)
    assert scores["goal"] == pytest.approx((1 + 2 + 5 + 5) / 4)
    assert scores["bond"] == 5


def test_other_instrument_loads_the_same_way(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: Mini\nscale: {min: 0, max: 6, labels: {0: {en: never}, 1: {en: a}, 2: {en: b},"
        " 3: {en: c}, 4: {en: d}, 5: {en: e}, 6: {en: always}}}\n"
        "dimensions: [{id: trust, items: [a, b]}]\n"
        "items: [{id: a, text: {en: A}}, {id: b, text: {en: B}}]\n", encoding="utf-8")
    ins = load_instrument(path)
    assert ins.item_ids == ["a", "b"] and ins.scale_points == list(range(7))


def test_instrument_with_orphan_item_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: Bad\nscale: {min: 1, max: 2, labels: {1: {en: x}, 2: {en: y}}}\n"
        "dimensions: [{id: d, items: [a]}]\n"
        "items: [{id: a, text: {en: A}}, {id: b, text: {en: B}}]\n",
        encoding="utf-8")
    with pytest.raises(CareInputError, match="items in no dimension"):
        load_instrument(path)


def test_valid_corpus_loads(small_corpus, instrument):
    path, records, _ = small_corpus
    sessions = load_sessions(path, instrument)
    assert len(sessions) == len(records)
    table = session_table(sessions, instrument)
    assert {"goal", "task", "bond", "counselor_goal"} <= set(table.columns)


def _mutate(records, fn):
    records = copy.deepcopy(records)
    fn(records)
    return records


def _set(rec, key, value):
    rec[key] = value


BAD_CASES = {
    "malformed json": (None, 2, None, "malformed JSON"),
    "missing field": (lambda r: r[1].pop("counselor_id"), 2, "counselor_id", "required"),
    "unknown field": (lambda r: _set(r[0], "mood", "ok"), 1, "mood", "unknown field"),
    "rating off scale": (lambda r: r[2]["client_ratings"].__setitem__("4", 7), 3,
                         "client_ratings.4", "outside the scale"),
    "unknown item": (lambda r: r[0]["client_ratings"].__setitem__("13", 3), 1,
                     "client_ratings.13", "not in instrument"),
    "duplicate session": (lambda r: _set(r[3], "session_id", r[0]["session_id"]), 4,
                          "session_id", "duplicate session_id"),
    "empty turns": (lambda r: _set(r[1], "turns", []), 2, "turns", "at least one turn"),
    "unknown speaker": (lambda r: r[0]["turns"][1].__setitem__("speaker", "therapist"), 1,
                        "turns.1.speaker", "unknown speaker"),
    "conflicting formats": (lambda r: _set(r[1], "language", "zh"), 2, "language",
                            "conflicting formats"),
    "missing ratings": (lambda r: r[0].pop("client_ratings"), 1, "client_ratings",
                        "needs client ratings"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_names_file_line_and_field(case, small_corpus, instrument, tmp_path):
    _, records, _ = small_corpus
    mutate, line, field, message = BAD_CASES[case]
    path = tmp_path / "bad.jsonl"
    if mutate is None:
        write_lines(path, records[:3])
        text = path.read_text(encoding="utf-8").splitlines()
        text[1] = text[1][:-5]
        path.write_text("\n".join(text) + "\n", encoding="utf-8")
    else:
        # sessions 0 and 1 belong to the same client in the demo corpus
        assert records[0]["client_id"] == records[1]["client_id"]
        write_lines(path, _mutate(records[:5], mutate))
    with pytest.raises(CareInputError, match=message) as err:
        load_sessions(path, instrument)
    assert err.value.path == str(path) and err.value.line == line
    assert err.value.field == field
    assert str(path) in str(err.value) and f":{line}:" in str(err.value)


def test_non_utf8_bytes(small_corpus, instrument, tmp_path):
    _, records, _ = small_corpus
    path = write_lines(tmp_path / "latin.jsonl", records[:2])
    path.write_bytes(path.read_bytes() + b'{"session_id": "caf\xe9"}\n')
    with pytest.raises(CareInputError, match="not valid UTF-8") as err:
        load_sessions(path, instrument)
    assert err.value.line == 3


def test_unlabeled_corpus_drops_ratings(small_corpus, instrument):
    path, _, _ = small_corpus
    sessions = load_sessions(path, instrument, labeled=False)
    assert all(s.client_ratings is None and s.counselor_ratings is None for s in sessions)


def _care(*args, cwd):
    return subprocess.run([sys.executable, "-m", "care.cli", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_cli_error_exits_nonzero_and_writes_nothing(small_corpus, tmp_path):
    _, records, _ = small_corpus
    no_turns = _mutate(records[:4], lambda r: _set(r[2], "turns", []))
    bad = write_lines(tmp_path / "bad.jsonl", no_turns)
    out = tmp_path / "table.tsv"
    proc = _care("data", "validate", "--sessions", str(bad), "--instrument",
                 "workflow/instruments/wai_sr.yaml", "--out", str(out), cwd=REPO)
    assert proc.returncode == 2
    assert f"{bad}:3: field 'turns'" in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".table.tsv*"))


def test_fewer_clients_than_folds(small_corpus, tmp_path):
    path, _, _ = small_corpus
    out = tmp_path / "table.tsv"
    proc = _care("data", "validate", "--sessions", str(path), "--instrument",
                 "workflow/instruments/wai_sr.yaml", "--min-clients", "50", "--out", str(out),
                 cwd=REPO)
    assert proc.returncode == 2 and "cannot fill 50 client-grouped folds" in proc.stderr
    assert "field 'client_id'" in proc.stderr and not out.exists()
