"""The demo corpus: determinism, contract validity, and the signal its text carries."""

from __future__ import annotations

import numpy as np
import pandas as pd
from care.corpus import CorpusSpec, generate, write_corpus
from care.prompts import cited_turns
from care.sessions import load_sessions, session_table
from scipy import stats


def test_same_seed_gives_identical_bytes(tmp_path, instrument, small_spec):
    paths = []
    for run in ("a", "b"):
        d = tmp_path / run
        write_corpus(small_spec, instrument, d / "s.jsonl", d / "r.jsonl", d / "u.jsonl", 3)
        paths.append(d)
    for name in ("s.jsonl", "r.jsonl", "u.jsonl"):
        assert (paths[0] / name).read_bytes() == (paths[1] / name).read_bytes()
    other = CorpusSpec(**{**small_spec.__dict__, "seed": small_spec.seed + 1})
    write_corpus(other, instrument, tmp_path / "c/s.jsonl", tmp_path / "c/r.jsonl")
    assert (tmp_path / "c/s.jsonl").read_bytes() != (paths[0] / "s.jsonl").read_bytes()


def test_demo_corpus_shape_and_contract(tmp_path, instrument):
    spec = CorpusSpec()
    write_corpus(spec, instrument, tmp_path / "s.jsonl", tmp_path / "r.jsonl",
                 tmp_path / "u.jsonl", 10)
    sessions = load_sessions(tmp_path / "s.jsonl", instrument)
    per_client = pd.Series([s.client_id for s in sessions]).value_counts()
    assert len(per_client) == 40 and per_client.between(4, 10).all()
    per_counselor = pd.Series([s.counselor_id for s in sessions]).value_counts()
    assert len(per_counselor) >= 5 and per_counselor.iloc[0] >= 3 * per_counselor.median()
    assert all(t.strategy for s in sessions for t in s.turns if t.speaker == "counselor")
    assert all(t.reaction for s in sessions for t in s.turns if t.speaker == "client")
    unlabeled = load_sessions(tmp_path / "u.jsonl", instrument, labeled=False)
    assert unlabeled and not {s.client_id for s in unlabeled} & {s.client_id for s in sessions}


def test_alliance_is_skewed_and_counselor_ratings_agree_weakly(instrument):
    records, _ = generate(CorpusSpec(n_clients=120), instrument)
    table = session_table(load_sessions_from(records, instrument), instrument)
    for d in instrument.dimension_ids:
        assert stats.skew(table[d]) < -0.3, d  # negatively skewed, as in Appendix A
        r = stats.pearsonr(table[d], table[f"counselor_{d}"])[0]
        assert 0.0 < r < 0.45, (d, r)


def test_text_carries_the_alliance(instrument):
    """Share of positive client reactions tracks the client's mean rating."""
    records, _ = generate(CorpusSpec(n_clients=60), instrument)
    positive = [np.mean([t["reaction"] == "positive" for t in r["turns"]
                         if t["speaker"] == "client"]) for r in records]
    mean_rating = [np.mean(list(r["client_ratings"].values())) for r in records]
    assert stats.pearsonr(positive, mean_rating)[0] > 0.5


def test_reference_rationales_cite_turns_on_their_dimension(instrument):
    records, refs = generate(CorpusSpec(n_clients=10), instrument)
    by_session = {r["session_id"]: r for r in records}
    assert len(refs) == len(records) * len(instrument.item_ids)
    cited = 0
    for ref in refs:
        turns = cited_turns(ref["rationale"])
        n_turns = len(by_session[ref["session_id"]]["turns"])
        assert all(1 <= t <= n_turns for t in turns)
        cited += bool(turns)
    assert cited / len(refs) > 0.8


def test_chinese_corpus(tmp_path, instrument):
    spec = CorpusSpec(n_clients=4, sessions_per_client=(2, 2), language="zh")
    write_corpus(spec, instrument, tmp_path / "s.jsonl", tmp_path / "r.jsonl")
    sessions = load_sessions(tmp_path / "s.jsonl", instrument)
    assert all(s.language == "zh" for s in sessions)
    assert "第" in (tmp_path / "r.jsonl").read_text(encoding="utf-8")


def load_sessions_from(records, instrument):
    import json
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return load_sessions(path, instrument)
