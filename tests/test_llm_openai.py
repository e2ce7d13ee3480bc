"""The ``openai`` backend against a real local OpenAI-compatible server (the stdlib stub).

The stub speaks HTTP like any OpenAI-compatible endpoint, so these tests exercise the official
client, the retry policy, the cache and the thread pool for real; ``test_llm_local_models.py``
runs the same backend against ``transformers serve``.
"""

from __future__ import annotations

import json
import logging

import openai
import pytest
from care.llm.openai_chat import OpenAIChat
from care.llm.stub_server import StubServer, echo_responder

KEY = "sk-test-KEEP-THIS-SECRET-42"


def conversations(n: int) -> list[list[dict[str, str]]]:
    return [
        [
            {"role": "system", "content": "You explain ratings."},
            {"role": "user", "content": f"Session {k}: why did the client rate 4?"},
        ]
        for k in range(n)
    ]


def expected(msgs) -> list[str]:
    return [echo_responder({"messages": m}) for m in msgs]


def make_chat(server: StubServer, tmp_path, **kwargs) -> OpenAIChat:
    kwargs.setdefault("backoff_s", 0.01)
    return OpenAIChat(
        "stub-model",
        base_url=server.base_url,
        api_key_env="CARE_TEST_KEY",
        cache_dir=tmp_path / "cache",
        **kwargs,
    )


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("CARE_TEST_KEY", KEY)


def test_answers_in_input_order_with_concurrency(tmp_path):
    msgs = conversations(12)
    with StubServer(api_key=KEY, delay_s=0.02) as server:
        chat = make_chat(server, tmp_path, concurrency=4)
        assert chat.complete_many(msgs, max_tokens=32) == expected(msgs)
    assert chat.stats == {"calls": 12, "cache_hits": 0, "retries": 0}
    assert all(
        r["model"] == "stub-model" and r["max_tokens"] == 32 and r["temperature"] == 0.0
        for r in server.requests
    )
    received = sorted(json.dumps(r["messages"]) for r in server.requests)
    assert received == sorted(json.dumps(m) for m in msgs)  # each conversation once


def test_429_and_500_are_retried_then_cached(tmp_path):
    msgs = conversations(5)
    with StubServer(fail_first=[429, 500, 503], api_key=KEY) as server:
        chat = make_chat(server, tmp_path, concurrency=2)
        assert chat.complete_many(msgs, max_tokens=16) == expected(msgs)
        assert chat.stats == {"calls": 8, "cache_hits": 0, "retries": 3}
        assert len(server.requests) == 8
        # a rerun (new process = new client, same cache) makes no request at all
        again = make_chat(server, tmp_path)
        assert again.complete_many(msgs, max_tokens=16) == expected(msgs)
        assert again.stats == {"calls": 0, "cache_hits": 5, "retries": 0}
        assert len(server.requests) == 8
        # other decoding parameters are other requests
        again.complete_many(msgs[:1], max_tokens=17)
        assert len(server.requests) == 9


def test_timeouts_are_retried(tmp_path):
    msgs = conversations(1)
    with StubServer(fail_first=["slow"], slow_s=1.5, api_key=KEY) as server:
        chat = make_chat(server, tmp_path, timeout_s=0.3)
        assert chat.complete_many(msgs, max_tokens=8) == expected(msgs)
    assert chat.stats["retries"] == 1 and chat.stats["calls"] == 2


def test_client_errors_are_not_retried(tmp_path):
    with StubServer(fail_first=[400], api_key=KEY) as server:
        chat = make_chat(server, tmp_path)
        with pytest.raises(openai.BadRequestError):
            chat.complete_many(conversations(1), max_tokens=8)
    assert chat.stats["calls"] == 1 and chat.stats["retries"] == 0


def test_exhausted_retries_fail_but_keep_what_was_answered(tmp_path):
    msgs = conversations(4)
    with StubServer(fail_first=[500, 500, 500], api_key=KEY) as server:
        chat = make_chat(server, tmp_path, concurrency=1, max_retries=2)
        with pytest.raises(openai.InternalServerError):
            chat.complete_many(msgs, max_tokens=8)
        # the failure stopped the run; the rerun asks only for what is still missing
        rerun = make_chat(server, tmp_path, concurrency=1)
        before = len(server.requests)
        assert rerun.complete_many(msgs, max_tokens=8) == expected(msgs)
        answered_before = 4 - (len(server.requests) - before)
        assert rerun.stats["cache_hits"] == answered_before


def test_wrong_key_is_an_error_and_never_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("CARE_TEST_KEY", "sk-wrong-key-77")
    with StubServer(api_key=KEY) as server:
        chat = make_chat(server, tmp_path)
        with pytest.raises(openai.AuthenticationError) as err:
            chat.complete_many(conversations(1), max_tokens=8)
    assert "sk-wrong-key-77" not in str(err.value) and "sk-wrong-key-77" not in repr(chat)


def test_key_never_reaches_logs_or_cache(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.DEBUG)  # as chatty as it gets
    with StubServer(fail_first=[429], api_key=KEY) as server:
        chat = make_chat(server, tmp_path)
        chat.complete_many(conversations(2), max_tokens=8)
    out, err = capfd.readouterr()
    assert caplog.records  # there was logging to inspect
    assert KEY not in caplog.text and KEY not in out and KEY not in err
    assert KEY not in repr(chat) and KEY not in str(vars(chat).get("base_url"))
    for entry in (tmp_path / "cache").rglob("*.json"):
        assert KEY not in entry.read_text(encoding="utf-8")
