"""What a run built and where, printed when it ends; and what running jobs are doing now.

- :func:`run_summary`: the workflow's final outputs grouped by kind, each marked as built in
  this run or already up to date, then Table 2 (the paper's main table) and where the
  provenance record and the HTML report are. The Snakefile prints it ``onsuccess``.
- :func:`status_lines`: one line per job log that shows a progress bar (``care.progress``)
  and was written recently: the job, its stage and its rate and ETA (``care status``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from care.progress import PREFIX

KINDS = (  # (heading, test on the path), first match wins
    ("Tables", lambda p: Path(p).name.startswith("table")),
    ("Figures", lambda p: p.endswith((".png", ".pdf"))),
    ("Fine-tuned models", lambda p: p.startswith("results/models/")),
    ("Predictions", lambda p: p.startswith("results/predictions/")),
    ("Application", lambda p: p.startswith("results/application/")),
    ("Rationales and data", lambda p: True),
)


def _started(started: str | None) -> float | None:
    if not started:
        return None
    try:
        return datetime.fromisoformat(started).timestamp()
    except ValueError:
        return None


def run_summary(targets: Iterable[str], started: str | None = None, root: str | Path = ".",
                table: str = "results/table2.md") -> str:
    root = Path(root)
    since = _started(started)
    groups: dict[str, list[str]] = {}
    built = 0
    for path in dict.fromkeys(map(str, targets)):
        full = root / path
        if not full.exists():
            continue
        new = since is not None and full.stat().st_mtime >= since - 1
        built += new
        kind = next(name for name, test in KINDS if test(path))
        groups.setdefault(kind, []).append(f"{'*' if new else ' '} {path}")
    lines = [f"care-alliance: {built} of {sum(map(len, groups.values()))} final outputs built "
             "in this run (*), the others were up to date."]
    for kind, _ in KINDS:
        if kind in groups:
            lines += ["", f"{kind}:", *(f"  {line}" for line in groups[kind])]
    if (root / table).exists():
        lines += ["", (root / table).read_text(encoding="utf-8").rstrip()]
    lines += ["", "Provenance: results/provenance.json. HTML report: "
              "snakemake --report results/report.html"]
    return "\n".join(lines) + "\n"


def status_lines(logs: str | Path = "logs", within_s: float = 600.0,
                 now: float | None = None, finished: bool = False) -> list[str]:
    """``job: last progress line`` for every log with a bar written in the last minutes
    (bars at 100% only with ``finished``)."""
    now = time.time() if now is None else now
    out = []
    for path in sorted(Path(logs).rglob("*.log")):
        age = now - path.stat().st_mtime
        if age > within_s:
            continue
        last = _last_progress(path)
        if last is not None and (finished or "100%|" not in last):
            job = os.path.relpath(path.with_suffix(""), logs)
            out.append(f"{job}: {last} ({age:.0f} s ago)")
    return out


def _last_progress(path: Path, tail: int = 16384) -> str | None:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - tail))
        text = handle.read().decode("utf-8", errors="replace")
    lines = [line for line in text.splitlines() if line.startswith(f"{PREFIX} ")]
    return lines[-1][len(PREFIX) + 1:] if lines else None
