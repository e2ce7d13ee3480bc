"""What a run built and where, printed when it ends; and what running jobs are doing now.

- :func:`run_summary`: how many final outputs of each kind there are and how many this run
  built, Table 2's Pearson r (the README block's rows), and one line for the provenance
  record and the HTML report. The Snakefile prints it ``onsuccess``.
- :func:`status_lines`: one line per job log that shows a progress bar (``care.progress``)
  and was written recently: the job, its stage and its rate and ETA (``care status``).
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from care.errors import CareInputError
from care.progress import PREFIX
from care.provenance import RECORD

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
                instrument: str | Path | None = None, table: str = "results/table2.csv",
                record: str = RECORD) -> str:
    root = Path(root)
    since = _started(started)
    counts: dict[str, list[int]] = {}  # kind -> [outputs, built in this run]
    for path in dict.fromkeys(map(str, targets)):
        full = root / path
        if full.exists():
            kind = counts.setdefault(next(name for name, test in KINDS if test(path)), [0, 0])
            kind[0] += 1
            kind[1] += _new(full, since)
    total, built = (sum(c[i] for c in counts.values()) for i in (0, 1))
    lines = [f"care-alliance: {built} of {total} final outputs built in this run, the others "
             "were up to date:",
             "  " + "; ".join(f"{kind.lower()} {counts[kind][0]} ({counts[kind][1]} built)"
                              for kind, _ in KINDS if kind in counts)]
    if instrument is not None and (root / table).exists():
        try:
            title, *rows = _pearson_table(root / table, instrument)
        except (CareInputError, KeyError, ValueError) as exc:  # a stale table: still a summary
            title, rows = f"{table}: not summarized ({exc})", []
        lines += ["", *textwrap.wrap(title, 92), *rows,
                  f"(every statistic: {Path(table).with_suffix('.md')})"]
    lines += ["", _provenance_line(root / record, record, since),
              "HTML report: snakemake --report results/report.html"]
    return "\n".join(lines) + "\n"


def _new(path: Path, since: float | None) -> bool:
    return since is not None and path.stat().st_mtime >= since - 1


def _pearson_table(table: Path, instrument: str | Path) -> list[str]:
    from care.instrument import load_instrument
    from care.readme import pearson_table
    from care.tableformat import read_table

    inst = load_instrument(instrument)
    labels = {d.id: d.label("en") for d in inst.dimensions}
    return pearson_table(read_table(table), inst.dimension_ids, labels)


def _provenance_line(path: Path, name: str, since: float | None) -> str:
    from care.readme import read_provenance, run_line

    if path.exists() and (since is None or _new(path, since)):
        return f"Provenance: {name} ({run_line(read_provenance(path))})."
    return f"Provenance: none for this run (snakemake --cores all writes {name})."


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
