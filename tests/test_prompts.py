"""The shared prompt and answer format: rendering, truncation, parsing, citations."""

from __future__ import annotations

import pytest
from care import prompts
from care.prompts import (
    ANSWER_ORDERS,
    answer_format,
    build_messages,
    cited_turns,
    fit_dialogue,
    format_target,
    parse_output,
    score_offsets,
    units,
)


@pytest.mark.parametrize("granularity,sizes", [("item", [1] * 12), ("dimension", [4, 4, 4]),
                                               ("session", [12])])
def test_units(instrument, granularity, sizes):
    assert [len(u) for u in units(instrument, granularity)] == sizes


@pytest.fixture(params=ANSWER_ORDERS)
def order(request):
    """Each answer order in turn, restored afterwards (it is process-wide, as --prompts)."""
    before = prompts.answer_order()
    prompts.set_answer_order(request.param)
    yield request.param
    prompts.set_answer_order(before)


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("variant", ["rationale", "score_only"])
@pytest.mark.parametrize("granularity", ["item", "dimension", "session"])
def test_target_round_trips_through_parser(instrument, language, variant, granularity, order):
    items = units(instrument, granularity)[0]
    scores = {i: (n % 5) + 1 for n, i in enumerate(items)}
    rationales = {i: f"Reason {i} (turn {n + 2})." for n, i in enumerate(items)}
    text = format_target(items, scores, rationales, variant, language)
    parsed = parse_output(text, items, instrument)
    assert {i: p.score for i, p in parsed.items()} == scores
    if variant == "rationale":
        assert {i: p.rationale for i, p in parsed.items()} == rationales


def test_the_answer_order_orders_target_and_format_alike(instrument, order):
    target = format_target(["4"], {"4": 2}, {"4": "they agreed (turn 2)."}, "rationale", "en")
    asked = answer_format(instrument, ["4"], "rationale", "en")
    first = "Score:" if order == "score_first" else "Rationale:"
    assert target.startswith(first)
    assert asked.splitlines()[1].startswith(first)


@pytest.mark.parametrize("text, score, rationale", [
    # the layout decides which score is the answer, whatever order was asked for
    ("Score: 2\nRationale: the rating: 5 was out of reach (turn 3).", 2.0,
     "the rating: 5 was out of reach (turn 3)."),
    ("Rationale: the rating: 5 was out of reach (turn 3).\nScore: 2", 2.0, None),
])
def test_the_score_line_is_found_in_either_layout(instrument, order, text, score, rationale):
    got = parse_output(text, ["4"], instrument)["4"]
    assert got.score == score
    if rationale is not None:
        assert got.rationale == rationale
    assert text[score_offsets(text, ["4"])["4"]] == "2"


def test_without_labels_the_order_says_where_the_rationale_is(instrument, order):
    got = parse_output("Score: 4 they felt heard (turn 2).", ["4"], instrument)["4"]
    assert got.score == 4.0
    assert got.rationale == (None if order == "rationale_first" else "they felt heard (turn 2).")


def test_prompts_of_a_session_share_the_dialogue_prefix(instrument):
    dialogue = "[1] Counselor: hi\n[2] Client: hello"
    a = build_messages(instrument, ["4"], "rationale", "en", dialogue)
    b = build_messages(instrument, ["9"], "rationale", "en", dialogue)
    assert a[0] == b[0]
    prefix = a[1]["content"].split("Rate the session")[0]
    assert b[1]["content"].startswith(prefix) and dialogue in prefix


@pytest.mark.parametrize("text, score, rationale", [
    ("Rationale: fine.\nScore: 4", 4.0, "fine."),
    ("理由：咨询师很共情。\n评分：５", 5.0, "咨询师很共情。"),
    ("理由：来访者感到被理解（第3轮）。\n评分：４", 4.0, "来访者感到被理解（第3轮）。"),
    ("Sure! Here is my answer.\nRationale: they agreed (turn 2).\nScore: 5\nHope this helps",
     5.0, "they agreed (turn 2)."),
    ("Some preamble. **Score:** 3/5 because...", 3.0, None),
    ("**Score**: 3", 3.0, None),
    ("评分: 2分", 2.0, None),
    ("Rationale: no score given", None, "no score given"),
    ("Score: 9", None, None),  # off the scale
])
def test_parser_cases(instrument, text, score, rationale):
    got = parse_output(text, ["4"], instrument)["4"]
    assert got.score == score
    assert got.ok is (score is not None)
    if rationale is not None:
        assert got.rationale == rationale
    if score is None:
        assert got.error


def test_multi_item_parse_a_missing_block_and_score_offsets(instrument):
    items = ("4", "6", "8")
    answered = ("4", "6")  # the third block is missing
    text = "Here you go.\n" + format_target(
        answered, {"4": 2, "6": 5}, {i: "x (turn 1)." for i in answered}, "rationale", "en"
    )
    parsed = parse_output(text, items, instrument)
    assert [parsed[i].score for i in items] == [2.0, 5.0, None]
    assert not parsed["8"].ok and parsed["8"].error == "item block missing"
    offsets = score_offsets(text, items)
    assert sorted(offsets) == ["4", "6"]
    assert text[offsets["4"]] == "2" and text[offsets["6"]] == "5"


def test_fit_dialogue_cuts_whole_middle_turns():
    lines = [f"[{n}] turn {n}" for n in range(1, 21)]
    text, dropped = fit_dialogue(lines, 40, lambda s: len(s.split()), "en")
    kept = text.splitlines()
    assert dropped > 0 and kept[0] == lines[0] and kept[-1] == lines[-1]
    assert any("turns omitted" in k for k in kept) and len(text.split()) <= 40
    assert fit_dialogue(lines, None, len, "en") == ("\n".join(lines), 0)


def test_cited_turns():
    assert cited_turns("Empathy (turn 5); the client agreed (turns 7 and 9). 第12轮") == [5, 7, 9,
                                                                                      12]
