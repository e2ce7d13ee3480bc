"""``care bench scale``: how the CPU stages grow with the corpus.

Builds the demo corpus at several multiples of its number of clients (1x, 4x, 16x by
default) and runs, at each size, the stages a user runs on a real corpus before any model is
involved, each exactly as its rule does (the ``care`` command in a forked process, reading
and writing files): the demo corpus itself, validate, folds (+ Table 1), extractive drafts,
the expert sheet (export, the demo's simulated edits, import), rationale statistics, metrics
of three runs of synthetic predictions, Table 2 with its bootstrap, and Table 5.

Per stage and size it prints wall time, CPU time (the stage process's own, from
``wait4``: robust to other load on the machine, so growth is computed from it) and peak
memory (the process's peak resident set above what it inherited), then the growth factor
per 4x the corpus. Linear stages grow by about 4 (less while fixed costs dominate); the
target is at most ``--max-growth`` (4.5). The expert sheet's round trip at the largest size
(export and import: the reviewer's editing in between is the demo's simulated edits, shown
on their own line) is checked against ``--round-trip-s`` (60 s) in CPU seconds, which do not
depend on what else the machine runs; wall seconds are printed beside them. ``--check``
makes a missed target exit 1.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# What the stages import, loaded once before forking so no stage pays for imports.
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "scipy.stats",
    "sklearn.model_selection",
    "openpyxl",
    "jsonschema",
    "rapidfuzz",
    "care.cli",
    "care.sessions",
    "care.folds",
    "care.corpus",
    "care.rationales.draft",
    "care.rationales.sheet",
    "care.rationales.stats",
    "care.evaluate.metrics",
    "care.evaluate.tables",
    "care.evaluate.logodds",
    "care.evaluate.synthetic",
)
# What the workflow does around the reviewer; the demo's simulated reviewer is timed apart.
ROUND_TRIP = ("sheet export", "sheet import")
# Synthetic runs for metrics and Table 2: (model, kind, noise); the counselor run scores
# with the counselors' own ratings.
RUNS = (
    ("counselor", "counselor", 0.0),
    ("zero_shot", "zero_shot", 1.2),
    ("care", "fine_tuned", 0.6),
)


def add_arguments(parser) -> None:
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--clients", type=int, default=40, help="clients of the 1x corpus")
    parser.add_argument("--resamples", type=int, default=1000, help="Table 2 bootstrap")
    parser.add_argument("--max-growth", type=float, default=4.5, help="per 4x the corpus")
    parser.add_argument("--round-trip-s", type=float, default=60.0, help="largest corpus")
    parser.add_argument("--workdir", help="keep the corpora and outputs here (default: temp)")
    parser.add_argument("--out", help="also write the measurements as CSV")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")


@dataclass(frozen=True)
class Measure:
    stage: str
    scale: int
    sessions: int
    wall_s: float
    cpu_s: float
    peak_mb: float


def run(args) -> int:
    for name in PRELOAD:
        importlib.import_module(name)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="care-bench-scale-") as tmp:
        root = Path(args.workdir or tmp)
        measures = []
        for scale in sorted(set(args.scales)):
            measures += _scale(root / f"x{scale}", scale, args)
    print()
    failures = report(measures, args.max_growth, args.round_trip_s)
    if args.out:
        import pandas as pd

        from care.io import write_table

        write_table(args.out, pd.DataFrame([m.__dict__ for m in measures]))
    return 1 if failures and args.check else 0


# ----------------------------------------------------------------------------- measuring


def measure(stage: str, work: Callable[[], int], log: Path) -> tuple[float, float, float]:
    """(wall s, CPU s, peak MB above its start) of ``work()`` run in a forked process.

    A forked process starts with part of its parent's pages resident; it reports that
    starting size through a pipe, and its peak comes from ``wait4``.
    """
    read_end, write_end = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the stage: its output goes to the log, its exit status is work()'s
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, str(_rss_kb()).encode())
            os.close(write_end)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = int(work() or 0)
        except BaseException:  # noqa: BLE001 (anything: report it in the log, exit non-zero)
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        start_kb = int(pipe.read() or 0)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"care bench scale: stage {stage!r} failed; see {log}")
    peak_mb = max(usage.ru_maxrss - start_kb, 0) / 1024  # ru_maxrss is in KiB on Linux
    return wall, usage.ru_utime + usage.ru_stime, peak_mb


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _cli(*argv: str) -> Callable[[], int]:
    def work() -> int:
        from care.cli import main

        return main([str(a) for a in argv])

    return work


# ----------------------------------------------------------------------------- the stages


def _scale(d: Path, scale: int, args) -> list[Measure]:
    from care.instrument import load_instrument

    d.mkdir(parents=True, exist_ok=True)
    inst = load_instrument().path
    log = d / "stages.log"
    spec = {"seed": 2024, "n_clients": args.clients * scale, "unlabeled_clients": 0}
    runs = [{"model": m, "variant": "rationale", "label": m, "kind": k} for m, k, _ in RUNS]
    scores = [d / f"{m}.scores.parquet" for m, _, _ in RUNS]
    stages = [
        ("demo corpus", _cli(
            "data", "demo-corpus", "--spec", json.dumps(spec), "--instrument", inst,
            "--sessions", d / "sessions.jsonl", "--references", d / "references.jsonl",
        )),
        ("validate", _cli(
            "data", "validate", "--sessions", d / "sessions.jsonl", "--instrument", inst,
            "--min-clients", 5, "--out", d / "sessions.tsv",
        )),
        ("folds + table1", _cli(
            "data", "folds", "--sessions-table", d / "sessions.tsv", "--instrument", inst,
            "--spec", json.dumps({"n_folds": 5, "n_strata": 3, "seed": 123}),
            "--folds", d / "folds.tsv", "--table1", d / "table1.csv",
        )),
        ("extractive drafts", _cli(
            "rationales", "draft", "--sessions", d / "sessions.jsonl", "--instrument", inst,
            "--backend", "extractive", "--cache-dir", d / "cache", "--out", d / "drafts.jsonl",
        )),
        ("sheet export", _cli(
            "rationales", "export", "--drafts", d / "drafts.jsonl", "--sessions",
            d / "sessions.jsonl", "--instrument", inst, "--editors", '["e1"]',
            "--out", d / "sheet.xlsx",
        )),
        ("simulated edits", _cli(
            "rationales", "simulate-edits", "--sheet", d / "sheet.xlsx", "--references",
            d / "references.jsonl", "--editor", "e1", "--out", d / "edited.xlsx",
        )),
        ("sheet import", _cli(
            "rationales", "import", "--sheet", d / "edited.xlsx", "--drafts", d / "drafts.jsonl",
            "--instrument", inst, "--editors", '["e1"]', "--out", d / "rationales.parquet",
        )),
        ("rationale stats", _cli(
            "rationales", "stats", "--rationales", d / "rationales.parquet",
            "--instrument", inst, "--out", d / "rationale_stats.csv",
        )),
        ("predictions (setup)", lambda: _predictions(d, inst)),
        # run files are listed when the stage runs: they exist only after the setup
        ("metrics (3 runs)", lambda: max(_metrics_cli(d, m, inst)() for m, _, _ in RUNS)),
        ("table2 + bootstrap", _cli(
            "evaluate", "table2", "--runs", json.dumps(runs), "--scores", *scores,
            "--folds", d / "folds.tsv", "--sessions-table", d / "sessions.tsv",
            "--instrument", inst,
            "--bootstrap", json.dumps({"n_resamples": args.resamples}), "--out", d / "table2.csv",
        )),
        ("table5 (log-odds)", _cli(
            "evaluate", "table5", "--expert", d / "rationales.parquet", "--sessions-table",
            d / "sessions.tsv", "--instrument", inst, "--out", d / "table5.csv",
        )),
    ]  # fmt: skip
    out = []
    for stage, work in stages:
        wall, cpu, peak = measure(stage, work, log)
        sessions = _count_lines(d / "sessions.jsonl")
        out.append(Measure(stage, scale, sessions, wall, cpu, peak))
        print(
            f"{scale:>3}x {sessions:>6} sessions  {stage:<20} {wall:8.2f} s wall "
            f"{cpu:8.2f} s CPU {peak:8.1f} MB",
            flush=True,
        )
    return out


def _metrics_cli(d: Path, model: str, inst: str) -> Callable[[], int]:
    return _cli(
        "evaluate", "metrics", "--predictions", *sorted(d.glob(f"pred/{model}/*.parquet")),
        "--instrument", inst, "--scores", d / f"{model}.scores.parquet",
        "--fold-metrics", d / f"{model}.fold_metrics.csv",
    )  # fmt: skip


def _predictions(d: Path, inst: str) -> int:
    """Three runs of synthetic predictions on the folds (not a workflow stage: setup)."""
    import pandas as pd

    from care.evaluate import synthetic
    from care.instrument import load_instrument
    from care.io import read_jsonl, write_table

    instrument = load_instrument(inst)
    sessions = read_jsonl(d / "sessions.jsonl")
    refs = read_jsonl(d / "references.jsonl")
    folds = pd.read_csv(d / "folds.tsv", sep="\t", dtype={"session_id": str, "client_id": str})
    for n, (model, kind, noise) in enumerate(RUNS):
        ratings = "counselor_ratings" if kind == "counselor" else "client_ratings"
        per_fold = synthetic.predictions(
            sessions, refs, folds, instrument, model, "rationale",
            noise=noise, seed=n, client_ratings=ratings,
        )  # fmt: skip
        for fold, frame in per_fold.items():
            write_table(d / "pred" / model / f"fold{fold}.parquet", frame)
    return 0


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


# ----------------------------------------------------------------------------- the report


def growth_per_4x(cpu_a: float, cpu_b: float, scale_a: int, scale_b: int) -> float:
    """CPU growth from one size to the next, expressed per 4x the corpus."""
    if cpu_a <= 0 or cpu_b <= 0:
        return math.nan
    return (cpu_b / cpu_a) ** (math.log(4) / math.log(scale_b / scale_a))


def report(measures: list[Measure], max_growth: float, round_trip_s: float) -> list[str]:
    """Print the growth table; return the targets missed."""
    scales = sorted({m.scale for m in measures})
    stages = list(dict.fromkeys(m.stage for m in measures))
    at = {(m.stage, m.scale): m for m in measures}
    sessions = {m.scale: m.sessions for m in measures}
    head = "".join(f"{f'{s}x ({sessions[s]})':>26}" for s in scales)
    steps = list(zip(scales, scales[1:], strict=False))
    growth_head = "".join(f"{f'{a}x→{b}x':>9}" for a, b in steps)
    print(f"{'stage':<20}{head}   growth per 4x (CPU){'':>3}")
    print(f"{'':<20}{'   wall s   CPU s   peak MB' * len(scales)}  {growth_head}")
    failures = []
    for stage in stages:
        cells = "".join(
            f"{at[stage, s].wall_s:9.2f}{at[stage, s].cpu_s:8.2f}{at[stage, s].peak_mb:10.1f}"
            for s in scales
        )
        factors = [growth_per_4x(at[stage, a].cpu_s, at[stage, b].cpu_s, a, b) for a, b in steps]
        over = [f for f in factors if f > max_growth]
        if over and "(setup)" not in stage:
            failures.append(f"{stage}: grows {max(over):.2f}x per 4x (target ≤ {max_growth})")
        marks = "".join(f"{f:9.2f}" for f in factors)
        print(f"{stage:<20}{cells}  {marks}{'  over target' if over else ''}")
    largest = scales[-1]
    wall = sum(at[s, largest].wall_s for s in ROUND_TRIP if (s, largest) in at)
    cpu = sum(at[s, largest].cpu_s for s in ROUND_TRIP if (s, largest) in at)
    print(
        f"\nexpert sheet round trip at {largest}x ({sessions[largest]} sessions; export + "
        f"import): {cpu:.1f} s CPU (target < {round_trip_s:g} s), {wall:.1f} s wall"
    )
    if cpu >= round_trip_s:
        failures.append(f"sheet round trip at {largest}x: {cpu:.1f} s CPU (> {round_trip_s:g})")
    print("targets met" if not failures else "targets missed:\n  " + "\n  ".join(failures))
    return failures
