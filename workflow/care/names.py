"""Ids from the corpus: what an id may contain, and the one way a file name is made from one.

An id (session, client, counselor) is any text of 1 to :data:`MAX_ID_LENGTH` characters
without control characters (NUL, newlines, tabs, ...) and without surrounding whitespace:
Unicode, spaces inside, ``/``, ``\\`` and dots are allowed, because real corpora use them
(``clinic/2021/s01``, ``李-01``). Ids therefore never become paths as they are: every file
written per session, counselor or model is named by :func:`file_stem`, which keeps a
portable, readable part of the id and adds a short hash whenever it had to change
something, so two ids never share a file and no name escapes its directory.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_ID_LENGTH = 128
# Names Windows reserves for devices, with or without an extension.
_RESERVED = {"con", "prn", "aux", "nul"} | {f"{p}{n}" for p in ("com", "lpt") for n in range(10)}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_STEM_CHARS = 60


def id_problem(value: str) -> str | None:
    """Why ``value`` is not a valid id, or None when it is."""
    if not value:
        return "an id must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"an id has at most {MAX_ID_LENGTH} characters (this one {len(value)})"
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        return f"an id must not contain control characters (found {bad!r})"
    if value != value.strip():
        return "an id must not start or end with whitespace"
    return None


def file_stem(value: str) -> str:
    """A file name stem for an id: safe in any directory, on any OS, unique per id.

    ``[A-Za-z0-9._-]`` characters are kept (others become ``_``), leading dots are dropped,
    the result is cut to 60 characters, and a Windows device name (``con``, ``nul.txt``) gets
    a leading ``_``; when any of that changed the id, ``-`` and 8 hex digits of its SHA-256
    are appended.
    """
    stem = _UNSAFE.sub("_", value).lstrip(".")[:_STEM_CHARS]
    if stem.split(".")[0].lower() in _RESERVED:
        stem = "_" + stem  # Windows ignores what follows the first dot: "nul.txt" is NUL
    if stem == value:
        return stem
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:8]
    return f"{stem or 'id'}-{digest}"
