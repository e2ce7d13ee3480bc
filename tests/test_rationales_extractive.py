"""The extractive drafter: grounded in the dialogue, follows the rating, deterministic."""

from __future__ import annotations

import pytest
from care.corpus import CorpusSpec, generate
from care.prompts import cited_turns
from care.rationales.extractive import ExtractiveDrafter, quote
from care.sessions import Session, Turn


def as_session(rec: dict) -> Session:
    return Session(
        rec["session_id"],
        rec["client_id"],
        rec["counselor_id"],
        rec["language"],
        tuple(Turn(**t) for t in rec["turns"]),
        {k: float(v) for k, v in rec["client_ratings"].items()},
    )


def session_of(turns, language="en") -> Session:
    return Session("s1", "c1", "t1", language, tuple(Turn(*t) for t in turns))


MIXED = [
    ("counselor", "Welcome back. Where would you like to start?", "inquiry", None),
    ("client", "Work has been hard lately.", None, "neutral"),
    (
        "counselor",
        "Let's agree on the goal: you want to sleep better, shall we focus on that?",
        "restatement",
        None,
    ),
    ("client", "Yes, sleeping better is exactly the change I want.", None, "positive"),
    ("counselor", "Just try to relax more, I guess.", "suggestion", None),
    ("client", "I do not see how that would help me.", None, "negative"),
    ("counselor", "That sounds painful, and I appreciate you sharing it.", "reflection", None),
    ("client", "Thank you, I feel understood.", None, "positive"),
]


def test_cites_turns_that_exist_and_match_the_dimension(instrument):
    drafter = ExtractiveDrafter(instrument)
    s = session_of(MIXED)
    goal = drafter.draft(s, "4", 5.0)  # item 4: deciding goals together
    assert 3 in cited_turns(goal) and set(cited_turns(goal)) <= set(range(1, 9))
    assert "goals of counseling" in goal  # the dimension's session-level summary
    bond = drafter.draft(s, "7", 5.0)
    assert set(cited_turns(bond)) & {7, 8}


def test_direction_follows_the_rating(instrument):
    drafter = ExtractiveDrafter(instrument)
    s = session_of(MIXED)
    high = cited_turns(drafter.draft(s, "1", 5.0))  # task item, client pleased
    low = cited_turns(drafter.draft(s, "1", 1.0))  # task item, client displeased
    assert 6 in low and 5 in low  # the vague advice and the client's doubt
    assert 6 not in high
    assert "fell short" in drafter.draft(s, "1", 1.0)
    assert "only partly" in drafter.draft(s, "1", 3.0)


def test_reaction_lexicon_when_turns_are_unlabeled(instrument):
    drafter = ExtractiveDrafter(instrument)
    bare = session_of([(sp, text, None, None) for sp, text, _, _ in MIXED])
    assert 6 in cited_turns(drafter.draft(bare, "1", 1.0))


def test_no_relevant_turn_gives_a_session_level_sentence(instrument):
    s = session_of([("counselor", "Hello.", None, None), ("client", "Hi.", None, "neutral")])
    text = ExtractiveDrafter(instrument).draft(s, "4", 2.0)
    assert cited_turns(text) == [] and "rarely addressed" in text


@pytest.mark.parametrize("language", ["en", "zh"])
def test_corpus_drafts_are_grounded_and_deterministic(instrument, language):
    records, _ = generate(
        CorpusSpec(n_clients=3, sessions_per_client=(1, 2), seed=3, language=language), instrument
    )
    drafter = ExtractiveDrafter(instrument, max_turns=2)
    for rec in records:
        s = as_session(rec)
        for item in instrument.item_ids:
            text = drafter.draft(s, item, s.client_ratings[item])
            assert text == ExtractiveDrafter(instrument, max_turns=2).draft(
                s, item, s.client_ratings[item]
            )
            turns = cited_turns(text)
            assert len(turns) <= 2 and all(1 <= n <= len(s.turns) for n in turns)
            if language == "zh" and turns:
                assert f"（第{turns[0]}轮）" in text
            if language == "en" and turns:
                assert f"(turn {turns[0]})" in text


def test_quotes_are_short_and_cut_at_words():
    long = "This week, could you try a ten-minute breathing exercise before bed and note it?"
    q = quote(long, "en")
    assert q.endswith("...") and len(q) <= 40 and long.startswith(q[:-3])
    assert quote("谢谢。下周见。", "zh") == "谢谢"
