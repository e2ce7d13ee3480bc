"""Chat completions from any OpenAI-compatible endpoint, cached, concurrent and retried.

The official ``openai`` client does the HTTP; its own retries are off (``max_retries=0``) so
the policy is ours and counted: 429, 5xx, timeouts, connection errors and a 200 that carries
no completion (a body that is not JSON or not UTF-8, no ``choices``, empty ``choices``: a
proxy's error page, a server mid-restart) are retried with exponential backoff plus jitter
(honouring a server's ``Retry-After`` when it sends one, up to the cap); any other error
(400, 401, 403, 404, ...) fails at once. Either way the failure ends in one
:class:`EndpointError` line that names the endpoint and the setting to fix (the key's
variable, ``base_url``, ``model``, ``timeout_s``), never a key or a response body (which may
echo a transcript). Every answer goes to the :class:`~care.llm.cache.ResponseCache` as soon
as it arrives, so a failed or interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import Any

from care.errors import CareInputError
from care.io import LONE_SURROGATE
from care.llm.cache import ResponseCache, cache_key
from care.llm.http import deadline, guarded_client
from care.llm.remote import check_hop, display_url, read_api_key, require_remote_opt_in

log = logging.getLogger(__name__)

Messages = Sequence[dict[str, str]]
RETRY_STATUS = {408, 409, 429}
DEFAULT_CACHE = Path("results/cache/llm")
# Their DEBUG records carry request bodies (transcripts) and per-request noise.
CHATTY_LOGGERS = ("openai", "httpx", "httpx2", "httpcore", "httpcore2")
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: An endpoint's config keys besides ``model`` and the opt-in (:meth:`OpenAIChat.from_config`);
#: ``backoff_s`` is no config key, but tests shorten the retries' waits with it.
CONFIG_KEYS = ("base_url", "api_key_env", "concurrency", "max_retries", "timeout_s", "backoff_s")


class EndpointError(CareInputError):
    """The endpoint refused the requests, or kept failing: one line saying what to fix."""


#: The reason of a 200 whose answer holds no text (``content: null`` or ``""``).
NO_TEXT = "no text"


class MalformedResponse(Exception):
    """An HTTP 200 without a usable chat completion; ``reason`` says what was wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OpenAIChat:
    """One model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    backend = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        allow_remote_transcripts: bool = False,
        concurrency: int = 4,
        max_retries: int = 5,
        timeout_s: float = 120,
        cache_dir: str | Path | None = DEFAULT_CACHE,
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        max_tokens_field: str = "max_tokens",
        seed: int | None = None,
        opt_in_section: str = "its config section",
    ) -> None:
        import openai  # light enough, but keep `care --help` free of it

        self.base_url = require_remote_opt_in(
            base_url, allow_remote_transcripts, section=opt_in_section
        )
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.concurrency = max(1, int(concurrency))
        self.max_retries = int(max_retries)
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.max_tokens_field = max_tokens_field
        # None: the caller caches the answers itself (the scoring engine's answer cache)
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self.stats = {"calls": 0, "cache_hits": 0, "retries": 0}
        self._lock = threading.Lock()
        self._jitter = random.Random(seed)
        allowed = allow_remote_transcripts
        hop = partial(check_hop, allow_remote_transcripts=allowed, base_url=self.base_url,
                      section=opt_in_section)
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=read_api_key(api_key_env, self.base_url),
            max_retries=0,
            timeout=timeout_s,
            http_client=guarded_client(self.base_url, hop, timeout_s),
        )
        self._openai = openai
        for name in CHATTY_LOGGERS:
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)

    @classmethod
    def from_config(
        cls, spec: dict[str, Any], *, section: str, cache_dir: str | Path | None = DEFAULT_CACHE
    ) -> OpenAIChat:
        """The client a config section describes (``rationales.openai``, a zero-shot
        entry): ``model``, the endpoint keys of :data:`CONFIG_KEYS` (unset: the defaults
        above) and the remote opt-in, checked by :func:`care.llm.remote.opt_in`."""
        from care.llm.remote import opt_in

        return cls(
            spec["model"],
            **{key: spec[key] for key in CONFIG_KEYS if key in spec},
            allow_remote_transcripts=opt_in(spec),
            opt_in_section=section,
            cache_dir=cache_dir,
        )

    def __repr__(self) -> str:  # never shows the client (it holds the key)
        return f"OpenAIChat(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def model_name(self) -> str:
        return self.model

    def count_tokens(self, text: str) -> int:
        """Characters: a conservative stand-in for an unknown remote tokenizer."""
        return len(text)

    # ------------------------------------------------------------------ public API

    def complete_many(
        self,
        message_lists: Sequence[Messages],
        max_tokens: int,
        temperature: float = 0.0,
        **decoding: Any,
    ) -> list[str]:
        """Answers for each message list, in input order; cached ones cost no request."""
        params = {self.max_tokens_field: max_tokens, "temperature": temperature, **decoding}
        keys = [self.key(m, params) for m in message_lists]
        answers: list[str | None] = [self.cache.get(k) if self.cache else None for k in keys]
        todo = [n for n, a in enumerate(answers) if a is None]
        self._count("cache_hits", len(answers) - len(todo))
        if todo:
            log.info(
                "%s: %d requests to %s (%d cached)",
                self.model,
                len(todo),
                self.base_url,
                len(answers) - len(todo),
            )
            from care.progress import bar

            with (ThreadPoolExecutor(self.concurrency, thread_name_prefix="openai") as pool,
                  bar(total=len(todo), desc=f"{self.model} requests", unit="request") as shown):
                futures = {
                    pool.submit(self._answer, message_lists[n], keys[n], params): n for n in todo
                }
                for fut in futures:
                    fut.add_done_callback(lambda _: shown.update())
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
                for fut in pending:
                    fut.cancel()
                for fut in done:
                    answers[futures[fut]] = fut.result()  # re-raises the first failure
        log.info(
            "%s: %d calls, %d cache hits, %d retries so far",
            self.model,
            self.stats["calls"],
            self.stats["cache_hits"],
            self.stats["retries"],
        )
        return [a if a is not None else "" for a in answers]

    def key(self, messages: Messages, params: dict[str, Any]) -> str:
        return cache_key(self.backend, self.model, list(messages), params)

    # ------------------------------------------------------------------ internals

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n

    def _answer(self, messages: Messages, key: str, params: dict[str, Any]) -> str:
        text = self._request(messages, params)
        if self.cache is not None:
            self.cache.put(key, text, {"backend": self.backend, "model": self.model})
        return text

    def _request(self, messages: Messages, params: dict[str, Any]) -> str:
        for attempt in range(self.max_retries + 1):
            try:
                self._count("calls")
                return completion_text(self._create(messages, params))
            except (self._openai.APIError, MalformedResponse) as exc:
                if not self._retryable(exc):
                    raise self._refusal(exc) from None
                if attempt >= self.max_retries:
                    raise self._gave_up(exc, attempt + 1) from None
                delay = self._delay(attempt, exc)
                log.warning(
                    "%s: %s; retry %d/%d in %.2fs",
                    self.model,
                    _describe(exc),
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                self._count("retries")
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _create(self, messages: Messages, params: dict[str, Any]) -> Any:
        try:  # timeout_s bounds the whole request, not each read (care.llm.http)
            with deadline(self.timeout_s):
                return self._client.chat.completions.create(
                    model=self.model, messages=list(messages), **params
                )
        except UnicodeDecodeError:  # the client decodes a 200's body as JSON
            raise MalformedResponse("a body that is not valid UTF-8") from None
        except ValueError:
            raise MalformedResponse("a body that is not JSON") from None

    def _retryable(self, exc: Exception) -> bool:
        o = self._openai
        if isinstance(exc, o.APIStatusError):
            return exc.status_code in RETRY_STATUS or exc.status_code >= 500
        return isinstance(exc, o.APITimeoutError | o.APIConnectionError | MalformedResponse)

    def _delay(self, attempt: int, exc: Exception) -> float:
        with self._lock:
            jitter = self._jitter.uniform(0, self.backoff_s)
        delay = self.backoff_s * 2**attempt + jitter
        retry_after = _retry_after(exc)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.max_backoff_s)

    # ------------------------------------------------------------------ what to tell the user

    def _error(self, message: str, field: str | None) -> EndpointError:
        return EndpointError(display_url(self.base_url), message, field=field)

    def _refusal(self, exc: Exception) -> EndpointError:
        """A failure a retry would not fix: say which setting to change."""
        status = getattr(exc, "status_code", None)
        key = f"${self.api_key_env}" if self.api_key_env else "no key (api_key_env is unset)"
        if status == 401:
            return self._error(
                f"HTTP 401: the endpoint refused the API key ({key}); set "
                f"{self.api_key_env or 'api_key_env'} to a valid key for this endpoint",
                "api_key_env",
            )
        if status == 403:
            return self._error(
                f"HTTP 403: the API key ({key}) may not use model {self.model!r} here; "
                "check the key's permissions, the model or base_url",
                "api_key_env",
            )
        if status == 404:
            return self._error(
                f"HTTP 404: no model {self.model!r} or no chat completions at this URL; "
                "check model and base_url",
                "model",
            )
        return self._error(
            f"{_describe(exc)}: the endpoint rejected the request (not retried)", None
        )

    def _gave_up(self, exc: Exception, attempts: int) -> EndpointError:
        """A transient failure that outlasted the retries."""
        tail = f"after {attempts} attempt(s); answers received so far are cached, rerun to resume"
        o = self._openai
        if isinstance(exc, o.APITimeoutError):
            return self._error(
                f"no answer within {self.timeout_s:g} s {tail} (or raise timeout_s)", "timeout_s"
            )
        if isinstance(exc, o.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            why = f" ({_oneline(cause)})" if cause is not None else ""
            return self._error(
                f"cannot connect{why} {tail}; is the server running and base_url right?",
                "base_url",
            )
        if isinstance(exc, MalformedResponse) and exc.reason.startswith(NO_TEXT):
            return self._error(
                f"the model answered {exc.reason} {tail}; a content filter refuses the same "
                "prompt again: check the session, or use another model",
                "model",
            )
        if isinstance(exc, MalformedResponse):
            return self._error(
                f"HTTP 200 without a chat completion ({exc.reason}) {tail}; is base_url an "
                "OpenAI-compatible endpoint (ending in /v1)?",
                "base_url",
            )
        return self._error(f"{_describe(exc)} {tail}", "max_retries")


def completion_text(response: Any) -> str:
    """The first choice's text, or :class:`MalformedResponse` saying what is missing."""
    if isinstance(response, str | bytes):  # the client's answer to a non-JSON content type
        raise MalformedResponse("a body that is not JSON")
    choices = getattr(response, "choices", None)
    if choices is None:
        raise MalformedResponse("no 'choices'")
    if not choices:
        raise MalformedResponse("empty 'choices'")
    message = getattr(choices[0], "message", None)
    if message is None:
        raise MalformedResponse("no 'message' in the first choice")
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        raise MalformedResponse("a 'content' that is not text")
    if not content:  # a content filter, a refusal: an answer to ask again, never to cache
        finish = getattr(choices[0], "finish_reason", None)
        raise MalformedResponse(NO_TEXT + (f" (finish_reason {finish!r})" if finish else ""))
    # a lone surrogate ("\ud800" in the JSON) could not be cached, drafted or exported
    return LONE_SURROGATE.sub("\ufffd", content)


def _oneline(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _describe(exc: Exception) -> str:
    """Status, class and error code only: error bodies may echo the request (transcripts)."""
    if isinstance(exc, MalformedResponse):
        return f"HTTP 200 without a chat completion ({exc.reason})"
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "code", None)
    code = f", {code}" if isinstance(code, str) and _IDENTIFIER.fullmatch(code) else ""
    return f"{type(exc).__name__}" + (f" (HTTP {status}{code})" if status else "")
