"""Issue 24, items 1 and 3: where requests go (every hop checked against the opt-in) and how
long one may take (``timeout_s`` bounds the whole request, not each read)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import care.llm.remote as remote
import pytest
from care.llm.http import GuardedTransport, backend_problem
from care.llm.openai_chat import EndpointError, OpenAIChat
from care.llm.remote import RemoteNotAllowedError

from tests.stub_server import StubServer, echo_responder

MESSAGES = [[{"role": "user", "content": "Session 1 transcript: I felt heard today."}]]


class _Server:
    """A loopback HTTP server running ``handle(handler)`` for every POST."""

    def __init__(self, handle) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    handle(self)
                except OSError:  # the client gave up
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> _Server:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def redirect_to(target: str):
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(307)
        h.send_header("location", f"{target}/chat/completions")
        h.send_header("content-length", "0")
        h.end_headers()

    return handle


def chat(base_url: str, tmp_path, **kwargs) -> OpenAIChat:
    return OpenAIChat("stub-model", base_url=base_url, api_key_env=None, concurrency=1,
                      cache_dir=tmp_path / "cache", backoff_s=0.01, **kwargs)


@pytest.fixture
def elsewhere(monkeypatch):
    """A second stub server at 127.0.0.2 that the guard takes for another machine: the
    stand-in for a non-loopback host (a network namespace is not needed to show the hop)."""
    real = remote.is_loopback
    monkeypatch.setattr(remote, "is_loopback", lambda url: "127.0.0.2" not in url and real(url))
    with StubServer(host="127.0.0.2") as server:
        yield server


def test_a_redirect_off_the_machine_is_not_followed(tmp_path, elsewhere):
    with _Server(redirect_to(elsewhere.base_url)) as local:
        client = chat(local.base_url, tmp_path, max_retries=3)
        with pytest.raises(RemoteNotAllowedError) as err:
            client.complete_many(MESSAGES, max_tokens=8)
    assert elsewhere.requests == []  # not one body reached the other host
    message = str(err.value)
    assert "\n" not in message and "'127.0.0.2'" in message
    assert "allow_remote_transcripts" in message
    assert err.value.field == "base_url" and client.stats["retries"] == 0
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_with_the_opt_in_a_redirect_is_followed(tmp_path, elsewhere):
    with _Server(redirect_to(elsewhere.base_url)) as local:
        client = chat(local.base_url, tmp_path, allow_remote_transcripts=True)
        assert client.complete_many(MESSAGES, max_tokens=8) == [echo_responder(
            {"messages": MESSAGES[0]})]
    assert len(elsewhere.requests) == 1


def test_a_redirect_between_loopback_servers_is_followed(tmp_path):
    with StubServer() as target, _Server(redirect_to(target.base_url)) as local:
        answers = chat(local.base_url, tmp_path).complete_many(MESSAGES, max_tokens=8)
    assert answers == [echo_responder({"messages": MESSAGES[0]})] and len(target.requests) == 1


def trickle(h: BaseHTTPRequestHandler) -> None:
    """A 200 whose body comes one byte every 0.1 s: each read is quick, the whole is not."""
    body = b'{"choices": [{"message": {"content": "%s"}}]}' % (b"x" * 300)
    h.send_response(200)
    h.send_header("content-type", "application/json")
    h.send_header("content-length", str(len(body)))
    h.end_headers()
    for byte in body:
        h.wfile.write(bytes([byte]))
        h.wfile.flush()
        time.sleep(0.1)


def test_timeout_bounds_the_whole_request(tmp_path):
    """Before: ``timeout_s`` bounded each read, and this answer (35 s) arrived in full."""
    with _Server(trickle) as server:
        client = chat(server.base_url, tmp_path, timeout_s=1.0, max_retries=1)
        with pytest.raises(EndpointError) as err:
            client.complete_many(MESSAGES, max_tokens=8)
    assert err.value.field == "timeout_s" and "no answer within 1 s after 2 attempt" in str(
        err.value)
    assert client.stats == {"calls": 2, "cache_hits": 0, "retries": 1}


def test_the_transport_hook_matches_httpx2():
    assert backend_problem(GuardedTransport(lambda url: None)) is None


def test_a_lone_surrogate_in_an_answer_is_replaced(tmp_path):
    """Model output is not validated like transcripts: a ``"\\ud800"`` in the JSON answer is
    replaced (U+FFFD), since no cache, drafts file or sheet can store it. Before: a
    UnicodeEncodeError traceback when the answer was cached."""
    with StubServer(lambda request: "Heard (turn 1) \ud800 ok") as server:
        client = chat(server.base_url, tmp_path)
        assert client.complete_many(MESSAGES, max_tokens=8) == ["Heard (turn 1) \ufffd ok"]
        again = chat(server.base_url, tmp_path).complete_many(MESSAGES, max_tokens=8)
    assert again == ["Heard (turn 1) \ufffd ok"] and len(server.requests) == 1  # cached


def test_the_environment_proxy_is_still_used(monkeypatch):
    """A client given its own transport no longer reads HTTPS_PROXY itself: env_proxy does."""
    from care.llm.http import env_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert env_proxy("https://api.openai.com/v1") == "http://proxy.invalid:3128"
    assert env_proxy("http://127.0.0.1:8000/v1") is None
