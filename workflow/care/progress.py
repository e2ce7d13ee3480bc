"""Progress bars with rate and ETA for long loops (drafting, training, selection, inference).

On a terminal a tqdm bar redraws in place. In a job log (stderr redirected to a file) the same
bar is written as one plain line per update, at most every ``LOG_INTERVAL`` seconds plus the
final one, so ``tail logs/...`` and ``care status`` show where a job is and when it will end.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

LOG_INTERVAL = 15.0  # seconds between lines in a log file
PREFIX = "progress"  # every log line starts with it: care status finds them


class _Lines:
    """A stream that turns tqdm's carriage-return redraws into whole lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        for part in text.replace("\r", "\n").split("\n"):
            if part.strip():
                self.stream.write(f"{PREFIX} {part.strip()}\n")

    def flush(self) -> None:
        self.stream.flush()


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str,
        unit: str = "it", **kwargs: Any):
    """A tqdm bar on stderr (``with bar(total=n, desc=...) as b: b.update()`` or wrapping)."""
    from tqdm import tqdm

    stream = sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    options = {"mininterval": 0.5} if tty else {
        "file": _Lines(stream), "mininterval": LOG_INTERVAL, "ncols": 100, "ascii": True,
        "position": 0,
    }
    return (tqdm if tty else _log_bar())(iterable, total=total, desc=desc, unit=unit,
                                         dynamic_ncols=tty, **{**options, **kwargs})


@lru_cache(maxsize=1)
def _log_bar():
    """tqdm for a log: lines in turn, never positioned. Its own registry of bars, so a bar
    inside another (selection's around inference's, a library's weight-loading bar) takes
    position 0 too and writes no cursor movement into the log."""
    from weakref import WeakSet

    from tqdm import tqdm

    return type("LogBar", (tqdm,), {"_instances": WeakSet()})
