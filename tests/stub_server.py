"""An offline OpenAI-compatible stub server (standard library only) for tests and dry runs.

It answers ``POST /v1/chat/completions`` with a deterministic text derived from the request,
counts what it receives, and can be told to misbehave: fail the first requests with given
HTTP statuses (429, 500, ...), answer them too late (``"slow"``) or with a broken 200
(:data:`BROKEN`: an HTML page, a body that is not JSON, no ``choices``, empty ``choices``, no
text (``content: null``, as a content filter answers),
bytes that are not UTF-8), or hold every request after the N-th until released (to kill a
client mid-run at a known point). It checks the bearer key when given one.

    with StubServer(fail_first=[429, 500, "no_choices"]) as server:
        OpenAIChat("stub", base_url=server.base_url, ...)

``python -m tests.stub_server --port 8000`` serves it until interrupted (a dry run of the
``openai`` backend without a model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Broken 200 answers: (content type, body).
BROKEN = {
    "html": ("text/html", b"<html><body>502 Bad Gateway</body></html>"),
    "not_json": ("application/json", b"<html>upstream error</html>"),
    "no_choices": ("application/json", b'{"id": "chatcmpl-stub", "object": "chat.completion"}'),
    "empty_choices": ("application/json", b'{"id": "chatcmpl-stub", "choices": []}'),
    "bad_bytes": ("application/json", b'{"choices": [{"message": {"content": "\xff\xfe"}}]}'),
    "null_content": (
        "application/json",
        b'{"choices": [{"message": {"content": null}, "finish_reason": "content_filter"}]}',
    ),
    "empty_content": ("application/json", b'{"choices": [{"message": {"content": ""}}]}'),
}


def echo_responder(request: dict[str, Any]) -> str:
    """A short answer that depends on the whole request (so a mix-up would show)."""
    digest = hashlib.sha256(
        json.dumps(request.get("messages"), sort_keys=True).encode()
    ).hexdigest()[:10]
    return f"The counselor and client discussed the goal (turn 1); stub answer {digest}."


class StubServer:
    def __init__(
        self,
        responder: Callable[[dict[str, Any]], str] = echo_responder,
        *,
        fail_first: list[int | str] | None = None,
        hold_after: int | None = None,
        api_key: str | None = None,
        delay_s: float = 0.0,
        slow_s: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.responder = responder
        self.fail_first = list(fail_first or [])
        self.hold_after = hold_after
        self.api_key = api_key
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.requests: list[dict[str, Any]] = []  # every request received, failures included
        self.answered = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> StubServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for_requests(self, n: int, timeout_s: float = 30) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self.lock:
                if len(self.requests) >= n:
                    return True
            time.sleep(0.01)
        return False

    # ------------------------------------------------------------------ handling

    def _plan(self, request: dict[str, Any]) -> tuple[int | str | None, bool]:
        """(failure status or None, whether to hold) for the request just received."""
        with self.lock:
            self.requests.append(request)
            if self.fail_first:
                return self.fail_first.pop(0), False
            hold = self.hold_after is not None and self.answered >= self.hold_after
            if not hold:
                self.answered += 1
            return None, hold

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": "not found"}})
                if server.api_key and self.headers.get("authorization") != (
                    f"Bearer {server.api_key}"
                ):
                    return self._send(401, {"error": {"message": "bad key"}})
                request = json.loads(body or b"{}")
                status, hold = server._plan(request)
                if status == "slow":  # answer after the client has timed out
                    time.sleep(server.slow_s)
                elif status in BROKEN:
                    return self._send_raw(200, *BROKEN[status])
                elif status is not None:
                    return self._send(
                        status,
                        {"error": {"message": f"stub failure {status}"}},
                        {"retry-after": "0"} if status == 429 else None,
                    )
                if hold:
                    server.release.wait()
                    return self._send(503, {"error": {"message": "held"}})
                time.sleep(server.delay_s)
                text = server.responder(request)
                self._send(
                    200,
                    {
                        "id": "chatcmpl-stub",
                        "object": "chat.completion",
                        "created": 0,
                        "model": request.get("model", "stub"),
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": text},
                            }
                        ],
                        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                    },
                )

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                self._send_raw(status, "application/json", json.dumps(payload).encode(), headers)

            def _send_raw(
                self, status: int, content_type: str, data: bytes, headers: dict | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:  # the client gave up (timed out, or was killed)
                    pass

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server = StubServer(host=args.host, port=args.port)
    print(f"stub OpenAI-compatible server at {server.base_url}", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
