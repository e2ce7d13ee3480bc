"""On-disk response cache: one small JSON file per answered request.

The key is the SHA-256 of the canonical JSON of (backend, model, messages or prompt,
decoding parameters). Each entry is written to a temporary file and renamed into place, so
an interrupted run loses only the requests still in flight, and several processes (parallel
Snakemake jobs, threads) can share one directory: two writers of the same key write the
same answer and the last rename wins. Entries live in 256 subdirectories (the key's first
two hex digits) to keep directories small at the paper's scale (10^4 requests).

The directory holds model answers about transcripts, so it is created private (mode 0700).
Prompts are not stored, only the answer and what produced it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def cache_key(backend: str, model: str, request: Any, params: dict[str, Any]) -> str:
    """Hash of everything that determines an answer: backend, model, prompt, decoding."""
    material = {"backend": backend, "model": model, "request": request, "params": params}
    return hashlib.sha256(canonical_json(material).encode("utf-8")).hexdigest()


class ResponseCache:
    """A directory of cached answers, keyed by :func:`cache_key`."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The cached answer, or None; a corrupt entry (never written by us) counts as absent."""
        try:
            with open(self._path(key), encoding="utf-8") as f:
                return json.load(f)["response"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, response: str, meta: dict[str, Any] | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"response": response, **(meta or {})}, f, ensure_ascii=False)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def __contains__(self, key: str) -> bool:
        return self._path(key).exists()

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("??/*.json"))
