"""Drafting: the prompt, the backends, the cache across runs and an interrupted run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from care.corpus import CorpusSpec, generate
from care.io import write_jsonl
from care.rationales.draft import clean_draft, draft_rationales, drafting_messages
from care.sessions import load_sessions

from tests.stub_server import StubServer, echo_responder

from .conftest import care_in_process

KEY = "sk-draft-SECRET-0042"


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory, instrument):
    records, _ = generate(
        CorpusSpec(n_clients=2, sessions_per_client=(1, 2), seed=9, turns_per_session=(8, 10)),
        instrument,
    )
    path = tmp_path_factory.mktemp("draft") / "sessions.jsonl"
    write_jsonl(path, records)
    return path


def care(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "care.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def draft_args(sessions, instrument, spec: dict, out, cache) -> list[str]:
    return [
        "rationales",
        "draft",
        "--sessions",
        str(sessions),
        "--instrument",
        instrument.path,
        "--backend",
        "openai",
        "--spec",
        json.dumps(spec),
        "--max-new-tokens",
        "64",
        "--cache-dir",
        str(cache),
        "--out",
        str(out),
    ]


@pytest.mark.parametrize(
    "language,label,cite", [("en", "Very often", "(turn N)"), ("zh", "经常", "（第N轮）")]
)
def test_prompt_holds_dialogue_item_rating_and_instruction(
    instrument, small_corpus, language, label, cite
):
    records, _ = generate(
        CorpusSpec(n_clients=1, sessions_per_client=(1, 1), language=language), instrument
    )
    path = small_corpus[0].parent / f"one-{language}.jsonl"
    write_jsonl(path, records)
    session = load_sessions(path, instrument)[0]
    session.client_ratings["4"] = 4.0
    system, user = drafting_messages(instrument, session, "4", "[1] DIALOGUE")
    assert system["role"] == "system" and user["role"] == "user"
    assert "[1] DIALOGUE" in user["content"]
    assert instrument.items["4"].wording(language) in user["content"]
    assert "4" in user["content"] and label in user["content"]
    assert cite in user["content"] and "${" not in user["content"]


def test_clean_draft_strips_labels_and_scores():
    assert clean_draft("Rationale: The counselor agreed (turn 3).\nScore: 4") == (
        "The counselor agreed (turn 3)."
    )
    assert clean_draft("**Rationale:** a\n\nb") == "a b"
    assert clean_draft("理由：咨询师共情（第5轮）。\n评分：5") == "咨询师共情（第5轮）。"


def test_extractive_drafts_cover_every_session_and_item(instrument, small_corpus):
    sessions = load_sessions(small_corpus[0], instrument)
    drafts = draft_rationales(
        sessions, instrument, "extractive", {"max_turns": 2}, cache_dir="unused"
    )
    assert len(drafts) == len(sessions) * 12
    keys = [(d["session_id"], d["item_id"]) for d in drafts]
    assert keys == [
        (s, i) for s in sorted(x.session_id for x in sessions) for i in instrument.item_ids
    ]
    by_id = {s.session_id: s for s in sessions}
    assert all(d["rating"] == by_id[d["session_id"]].client_ratings[d["item_id"]] for d in drafts)
    assert all(
        d["draft"] and d["dimension"] == instrument.dimension_of(d["item_id"]) for d in drafts
    )


def test_openai_drafts_through_the_cache(instrument, tiny_corpus, tmp_path, caplog):
    sessions = load_sessions(tiny_corpus, instrument)
    total = len(sessions) * 12
    caplog.set_level(logging.INFO)
    with StubServer(fail_first=[429]) as server:
        spec = {"model": "stub", "base_url": server.base_url, "backoff_s": 0.01}
        drafts = draft_rationales(
            sessions,
            instrument,
            "openai",
            spec,
            cache_dir=tmp_path / "c",
            max_new_tokens=64,
            dialogue_budget=200,
        )
        assert len(server.requests) == total + 1
        again = draft_rationales(
            sessions,
            instrument,
            "openai",
            spec,
            cache_dir=tmp_path / "c",
            max_new_tokens=64,
            dialogue_budget=200,
        )
        assert len(server.requests) == total + 1 and again == drafts
    assert f"{total} answered from the cache" in caplog.text
    assert drafts[0]["backend"] == "openai" and drafts[0]["model"] == "stub"
    first = server.requests[-1]["messages"][1]["content"]
    assert "turns omitted" in first  # the dialogue budget cut middle turns
    answers = {echo_responder({"messages": r["messages"]}) for r in server.requests}
    assert {d["draft"] for d in drafts} <= answers


def test_remote_endpoint_refused_without_opt_in(instrument, tiny_corpus, tmp_path):
    out = tmp_path / "drafts.jsonl"
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    spec = {"model": "gpt-4o", "base_url": "https://api.example.com/v1"}
    proc = care(*draft_args(tiny_corpus, instrument, spec, out, tmp_path / "c"), env=env)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "allow_remote_transcripts: true" in stderr and "api.example.com" in stderr
    assert KEY not in stderr + stdout
    assert not out.exists()


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("wrong key", ["HTTP 401", "CARE_KEY", "api_key_env"]),
        ("unreachable", ["cannot connect", "base_url", "after 2 attempt"]),
        ("no choices", ["no 'choices'", "base_url", "after 2 attempt"]),
    ],
)
def test_endpoint_faults_end_in_one_line(instrument, tiny_corpus, tmp_path, fault, says):
    """No traceback: one line naming the endpoint and what to fix; no drafts written."""
    out = tmp_path / "drafts.jsonl"
    key = "sk-wrong-0000" if fault == "wrong key" else KEY
    env = {**os.environ, "CARE_KEY": key}
    with StubServer(api_key=KEY, fail_first=["no_choices"] * 50) as server:
        url = server.base_url
        if fault == "unreachable":
            server.stop()
        elif fault == "wrong key":
            server.fail_first = []
        spec = {"model": "stub", "base_url": url, "api_key_env": "CARE_KEY", "max_retries": 1,
                "backoff_s": 0.01}  # fmt: skip
        proc = care(*draft_args(tiny_corpus, instrument, spec, out, tmp_path / "c"), env=env)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    # every other line is a timestamped log record (retries) or a progress bar line
    errors = [line for line in stderr.splitlines()
              if not line[:4].isdigit() and not line.startswith("progress ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert errors[0].startswith(f"care rationales draft: error: {url}")
    assert all(s in errors[0] for s in says), errors[0]
    assert key not in stderr + stdout and not out.exists()


@pytest.mark.slow
def test_killed_run_resumes_with_only_the_missing_calls(
    instrument, tiny_corpus, tmp_path, monkeypatch
):
    """Kill drafting after N answers; the rerun sends exactly total - N requests."""
    total = len(load_sessions(tiny_corpus, instrument)) * 12
    answered_before_kill = 7
    out, cache = tmp_path / "drafts.jsonl", tmp_path / "cache"
    env = {**os.environ, "CARE_KEY": KEY}
    with StubServer(hold_after=answered_before_kill, api_key=KEY) as server:
        spec = {
            "model": "stub",
            "base_url": server.base_url,
            "api_key_env": "CARE_KEY",
            "concurrency": 1,
        }
        args = draft_args(tiny_corpus, instrument, spec, out, cache)
        proc = care("-v", *args, env=env)
        # request N+1 arrives only after answer N is cached (one request in flight)
        assert server.wait_for_requests(answered_before_kill + 1, timeout_s=60)
        proc.kill()
        _, first_log = proc.communicate(timeout=30)
        assert not out.exists()
        cached = len(list(cache.rglob("*.json")))
        assert cached == answered_before_kill

        server.hold_after = None
        seen_before = len(server.requests)
        proc = care("-v", *args, env=env)
        _, second_log = proc.communicate(timeout=120)
        assert proc.returncode == 0, second_log
        assert len(server.requests) - seen_before == total - answered_before_kill
        assert f"{answered_before_kill} answered from the cache" in second_log

        # the result equals an uninterrupted run's (one this process runs: it is not killed)
        clean_out = tmp_path / "clean.jsonl"
        monkeypatch.setenv("CARE_KEY", KEY)
        care_in_process(*draft_args(tiny_corpus, instrument, spec, clean_out, tmp_path / "c2"))
    assert out.read_bytes() == clean_out.read_bytes()
    # the key reached the server (it checks it) but no log, output or cache entry
    for text in (
        first_log,
        second_log,
        out.read_text(encoding="utf-8"),
        *(p.read_text(encoding="utf-8") for p in cache.rglob("*.json")),
    ):
        assert KEY not in text


def test_clean_draft_drops_control_characters():
    assert clean_draft("G6\x14lient\x00 (turn 2)") == "G6lient (turn 2)"
