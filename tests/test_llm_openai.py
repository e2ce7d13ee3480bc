"""The ``openai`` backend against a real local OpenAI-compatible server (the stdlib stub).

The stub speaks HTTP like any OpenAI-compatible endpoint, so these tests exercise the official
client, the retry policy, the cache and the thread pool for real; ``test_llm_local_models.py``
runs the same backend against ``transformers serve``.
"""

from __future__ import annotations

import json
import logging

import pytest
from care.llm.openai_chat import EndpointError, OpenAIChat

from tests.stub_server import BROKEN, StubServer, echo_responder

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
        with pytest.raises(EndpointError, match=r"BadRequestError \(HTTP 400\).*not retried"):
            chat.complete_many(conversations(1), max_tokens=8)
    assert chat.stats["calls"] == 1 and chat.stats["retries"] == 0


def test_exhausted_retries_fail_but_keep_what_was_answered(tmp_path):
    msgs = conversations(4)
    with StubServer(fail_first=[500, 500, 500], api_key=KEY) as server:
        chat = make_chat(server, tmp_path, concurrency=1, max_retries=2)
        with pytest.raises(EndpointError, match="HTTP 500.* after 3 attempt") as err:
            chat.complete_many(msgs, max_tokens=8)
        assert err.value.field == "max_retries" and "rerun to resume" in str(err.value)
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
        with pytest.raises(EndpointError) as err:
            chat.complete_many(conversations(1), max_tokens=8)
    assert "sk-wrong-key-77" not in str(err.value) and "sk-wrong-key-77" not in repr(chat)
    assert "HTTP 401" in str(err.value) and "CARE_TEST_KEY" in str(err.value)
    assert err.value.field == "api_key_env" and chat.stats["retries"] == 0


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


# ------------------------------------------------------------------ broken endpoints


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_a_broken_200_is_retried_as_transient(tmp_path, broken):
    """An error page, no JSON, no or empty choices, bytes that are not UTF-8: retried."""
    msgs = conversations(3)
    with StubServer(fail_first=[broken], api_key=KEY) as server:
        chat = make_chat(server, tmp_path, concurrency=1)
        assert chat.complete_many(msgs, max_tokens=8) == expected(msgs)
    assert chat.stats == {"calls": 4, "cache_hits": 0, "retries": 1}


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ("html", "a body that is not JSON"),
        ("not_json", "a body that is not JSON"),
        ("no_choices", "no 'choices'"),
        ("empty_choices", "empty 'choices'"),
        ("bad_bytes", "a body that is not valid UTF-8"),
        ("null_content", "no text (finish_reason 'content_filter')"),
        ("empty_content", "no text"),
    ],
)
def test_a_broken_200_that_persists_ends_in_one_line(tmp_path, broken, reason):
    msgs = conversations(1)
    with StubServer(fail_first=[broken] * 3, api_key=KEY) as server:
        chat = make_chat(server, tmp_path, concurrency=1, max_retries=2)
        with pytest.raises(EndpointError) as err:
            chat.complete_many(msgs, max_tokens=8)
        assert len(server.requests) == 3  # bounded: the first try and two retries
        message = str(err.value)
        assert "\n" not in message and reason in message and "after 3 attempt" in message
        fix = "model" if broken.endswith("_content") else "base_url"  # a filter: not the URL
        assert err.value.field == fix and err.value.path == server.base_url
        # nothing was answered, nothing cached; the rerun asks for everything and succeeds
        assert not list((tmp_path / "cache").rglob("*.json"))
        assert make_chat(server, tmp_path).complete_many(msgs, max_tokens=8) == expected(msgs)


def test_forbidden_names_the_key_variable_and_the_model(tmp_path):
    with StubServer(fail_first=[403], api_key=KEY) as server:
        chat = make_chat(server, tmp_path)
        with pytest.raises(EndpointError) as err:
            chat.complete_many(conversations(1), max_tokens=8)
    message = str(err.value)
    assert message.startswith(server.base_url) and "HTTP 403" in message
    assert "CARE_TEST_KEY" in message and "stub-model" in message and KEY not in message
    assert chat.stats["retries"] == 0


def test_unreachable_endpoint_ends_in_one_line(tmp_path):
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    chat = OpenAIChat(
        "stub-model", base_url=url, api_key_env="CARE_TEST_KEY", cache_dir=tmp_path / "cache",
        max_retries=2, backoff_s=0.01,
    )  # fmt: skip
    with pytest.raises(EndpointError) as err:
        chat.complete_many(conversations(1), max_tokens=8)
    message = str(err.value)
    assert message.startswith(url) and "cannot connect" in message and "after 3 attempt" in message
    assert "\n" not in message and err.value.field == "base_url" and chat.stats["retries"] == 2


def test_a_failure_mid_run_keeps_every_answer_received(tmp_path):
    """Answers before a refusal stay cached; the rerun sends only the rest."""
    msgs = conversations(6)
    with StubServer(api_key=KEY) as server:
        chat = make_chat(server, tmp_path, concurrency=1)
        chat.complete_many(msgs[:4], max_tokens=8)
        server.fail_first = [401]
        with pytest.raises(EndpointError, match="HTTP 401"):
            chat.complete_many(msgs, max_tokens=8)
        cached = len(list((tmp_path / "cache").rglob("*.json")))
        assert 4 <= cached < 6  # (the one worker may answer a queued request before it stops)
        before = len(server.requests)
        rerun = make_chat(server, tmp_path)
        assert rerun.complete_many(msgs, max_tokens=8) == expected(msgs)
        assert len(server.requests) - before == 6 - cached == 6 - rerun.stats["cache_hits"]
