"""The HTTP transport of every remote-capable client: each hop checked, each request bounded.

Two things the ``openai`` client's own HTTP client (httpx2) does not do:

- It follows redirects, and the remote opt-in checked only the configured URL: a loopback
  server answering ``307 -> http://elsewhere/`` sent the transcripts elsewhere. Here every
  request the transport sends, redirect hops included, is checked against the opt-in
  (:func:`care.llm.remote.check_hop`) before a byte leaves.
- Its ``timeout`` bounds each read, not the request: a server sending a byte a second never
  times out. Here :func:`deadline` sets a total time for everything a request does (connect,
  TLS, every write and read of every hop): each socket operation gets what is left of it and
  the request fails with a timeout once it is spent.

The deadline is kept per thread (the clients' worker threads each send one request at a
time) and applied by a network backend wrapped around httpcore2's: the one place every
socket operation passes through. httpx2's transport exposes no backend option, so the
pool's backend attribute is replaced (checked by :func:`backend_problem`; the tests fail when
a release renames it).
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpcore2
import httpx2

_local = threading.local()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Everything this thread's requests do inside the block ends within ``seconds``."""
    previous = getattr(_local, "end", None)
    _local.end = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.end = previous


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """The timeout for one socket operation: the caller's, cut to what the deadline leaves."""
    end = getattr(_local, "end", None)
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise error("the request's total time limit is spent")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore2.NetworkStream):
    def __init__(self, stream: httpcore2.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        stream = self._stream.start_tls(
            ssl_context, server_hostname, _left(timeout, httpcore2.ConnectTimeout)
        )
        return _DeadlineStream(stream)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore2.NetworkBackend):
    def __init__(self, backend: httpcore2.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        timeout = _left(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(
            self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        timeout = _left(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def backend_problem(transport: httpx2.HTTPTransport) -> str | None:
    """Why the deadline cannot be installed on ``transport`` (an httpx2 release changed)."""
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(backend, httpcore2.NetworkBackend):
        return "httpx2's transport no longer keeps its network backend at _pool._network_backend"
    return None


class GuardedTransport(httpx2.HTTPTransport):
    """httpx2's transport, checking every request's host with ``check`` (a callable taking
    the URL; it raises to refuse) and bounding it by the thread's :func:`deadline`."""

    def __init__(self, check, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        problem = backend_problem(self)
        if problem:
            raise RuntimeError(problem)
        self._pool._network_backend = _DeadlineBackend(self._pool._network_backend)
        self._check = check

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self._check(str(request.url))
        return super().handle_request(request)


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``NO_PROXY``, ...), as
    httpx2 would use it: a client given its own transport no longer reads them itself."""
    parts = urlsplit(url)
    if urllib.request.proxy_bypass_environment(parts.hostname or ""):
        return None
    return urllib.request.getproxies_environment().get(parts.scheme)


def guarded_client(base_url: str, check, timeout: float) -> httpx2.Client:
    """The HTTP client for an ``openai.OpenAI``: openai's defaults (redirects followed),
    through a :class:`GuardedTransport`."""
    import openai

    transport = GuardedTransport(check, proxy=env_proxy(base_url))
    return openai.DefaultHttpxClient(transport=transport, timeout=timeout)
