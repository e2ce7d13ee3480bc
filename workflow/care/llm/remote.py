"""Which endpoints may receive transcripts, and where API keys come from.

Transcripts stay on the machine unless the config opts in: a loopback endpoint (a local vLLM
or ``transformers serve`` at localhost, 127.0.0.0/8 or ::1) is always allowed; any other
host needs ``allow_remote_transcripts: true`` (:data:`OPT_IN`, the one name of this setting
in every config section that names an endpoint). API keys are read from the environment
variable the config names; their value is never logged, stored or put in an error message.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from care.errors import CareInputError

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
OPT_IN = "allow_remote_transcripts"
#: The key sent to a loopback server that needs none (the openai client insists on one).
NO_KEY = "EMPTY"


class RemoteNotAllowedError(CareInputError):
    """A non-loopback endpoint without the explicit opt-in."""


def resolve_base_url(base_url: str | None) -> str:
    """The URL the openai client will really use (it falls back to $OPENAI_BASE_URL)."""
    return base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_DEFAULT_URL


def is_loopback(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def opt_in(spec: Mapping[str, Any]) -> bool:
    """The opt-in of a config section (off unless it says so)."""
    return bool(spec.get(OPT_IN, False))


def require_remote_opt_in(
    base_url: str | None, allow_remote_transcripts: bool, *, section: str = "its config section"
) -> str:
    """Return the resolved base URL; raise unless it is loopback or the opt-in is set."""
    url = resolve_base_url(base_url)
    if not is_loopback(url) and not allow_remote_transcripts:
        host = urlsplit(url).hostname or url
        raise RemoteNotAllowedError(
            "config",
            f"endpoint {host!r} is not on this machine: sending counseling transcripts to it "
            f"needs the explicit opt-in `{OPT_IN}: true` in {section} (loopback servers "
            "need none)",
            field=OPT_IN,
        )
    return url


def check_hop(
    url: str, allow_remote_transcripts: bool, *, base_url: str, section: str
) -> None:
    """Refuse a request (a redirect hop included) to a host the opt-in does not cover.

    The configured URL was checked by :func:`require_remote_opt_in`; a loopback server may
    still redirect elsewhere, and the HTTP client would follow (:mod:`care.llm.http`)."""
    if allow_remote_transcripts or is_loopback(url):
        return
    host = urlsplit(url).hostname or url
    raise RemoteNotAllowedError(
        display_url(base_url),
        f"the endpoint redirected the request to {host!r}, which is not on this machine: "
        f"not sent (transcripts leave the machine only with `{OPT_IN}: true` in {section}; "
        "or point base_url at the final URL)",
        field="base_url",
    )


def read_api_key(env_name: str | None, base_url: str) -> str:
    """The key from ``$env_name``; a loopback server may go without one."""
    key = os.environ.get(env_name) if env_name else None
    if key:
        return key
    if is_loopback(base_url):
        return NO_KEY
    raise CareInputError(
        "environment",
        f"no API key: set the environment variable {env_name or '<api_key_env>'} "
        f"for {urlsplit(base_url).hostname}",
        field="api_key_env",
    )


def display_url(url: str) -> str:
    """The URL without user info, query or fragment: safe to print."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
