"""The answer cache: each unit's answer in SQLite, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from care.infer.prompting import UnitPrompt


@dataclass(frozen=True)
class UnitAnswer:
    """A model's answer to one unit: text, the label distribution at each item's score."""

    text: str
    probs: dict[str, list[float]] = field(default_factory=dict)
    hit_limit: bool = False
    n_generated: int = 0





class AnswerCache:
    """Answers per unit in SQLite, so an interrupted run resumes where it stopped.

    The key hashes the model's fingerprint, the decoding settings and the exact prompt, so
    a retrained model or an edited prompt never reads a stale answer.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=120)
        self.db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT)")
        self.db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, UnitAnswer]:
        out = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for key, value in self.db.execute(
                f"SELECT key, value FROM answers WHERE key IN ({marks})", chunk
            ):
                out[key] = UnitAnswer(**json.loads(value))
        return out

    def put_many(self, answers: dict[str, UnitAnswer]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO answers VALUES (?, ?)",
            [(k, json.dumps(asdict(a), ensure_ascii=False)) for k, a in answers.items()],
        )
        self.db.commit()

    def close(self) -> None:
        self.db.close()


def prompt_key(fingerprint: str, prompt: UnitPrompt) -> str:
    payload = json.dumps(
        [fingerprint, prompt.items, prompt.messages, prompt.ids], ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
