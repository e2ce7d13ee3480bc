"""Checkpoint selection: score each epoch on the validation sessions as soon as it is saved.

ZeRO-3 shards the live model across ranks, so scoring reads the epoch's saved 16-bit
HF-format weights: after each epoch-end save the training ranks wait (their model, optimizer
state and engine kept: no exit, no reload; :mod:`care.train.trainer`) while the epoch is
scored with the shared inference engine (:class:`care.infer.hf.HFScorer`, the code path of
the inference stage), data parallel: rank ``r`` of ``n`` (one process per GPU, beside the
waiting training rank, or per CPU rank) scores its share of the validation sessions
(:func:`shard`) and writes its answers to a file; a one-rank run scores in its training
process. A rank's file, once written, is reused by a retried job, and each epoch's record
is appended to ``scores.jsonl`` as soon as it is computed (:func:`append_score`), keyed by
the validation settings: a job killed during selection resumes where it stopped, and every
epoch's scores are kept.

The metric is the tables' own: per dimension, Pearson's r between the session's predicted
dimension score and the client's, both from :func:`care.evaluate.metrics.dimension_scores`
(a session whose items did not all parse has no score), with the inference ``scoring`` the
tables report; the checkpoint with the best mean r over dimensions is kept (ties: the earlier
epoch; an undefined r, e.g. constant predictions, ranks lowest). Two guards (:func:`choose`):
an epoch whose answers were cut at ``max_new_tokens`` more often than ``max_cut_rate`` is
chosen only when every epoch is (its scores judge answers the model did not finish; then
:func:`fallback` picks among the fewest cut, and :func:`rerun_costs` says what raising the
limit or the rate costs); an epoch whose
answers parse for fewer than ``min_parse_rate`` of the validation items is eligible only when
none reaches it (an r over the few sessions that parsed says little about the model).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("care.train")

SCORES = "scores.jsonl"
#: The prediction-row fields selection reads (the tables' dimension score needs the client's).
ROW_FIELDS = (
    "session_id",
    "client_id",
    "item_id",
    "dimension",
    "score",
    "parsed",
    "client_score",
    "answer_cut",
)


@dataclass(frozen=True)
class ValidationJob:
    """What a scoring rank needs (written to ``validation.json`` in the checkpoint dir)."""

    key: str  # fingerprint of the validation settings and sessions
    sessions: str  # the corpus file
    session_ids: list[str]  # the validation sessions, in order
    instrument: str
    scorer: dict[str, Any]  # InferenceSettings fields (answer format, units, decoding)
    device: str
    dtype: str
    threads: int
    answer_tokens: int | None = None  # the dialogue leaves room for this answer budget

    def write(self, path: Path) -> None:
        from care.io import write_json

        write_json(path, asdict(self))

    def settings(self):
        """The inference settings of validation scoring (prefix-shared, as inference)."""
        from care.infer.settings import InferenceSettings

        return InferenceSettings(
            **self.scorer, device=self.device, dtype=self.dtype, reserve_tokens=self.answer_tokens
        )

    @classmethod
    def read(cls, path: str | Path) -> ValidationJob:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))

    def load(self):
        """(instrument, the validation sessions in order)."""
        from care.instrument import load_instrument
        from care.sessions import load_sessions

        instrument = load_instrument(self.instrument)
        by_id = {s.session_id: s for s in load_sessions(self.sessions, instrument)}
        missing = [sid for sid in self.session_ids if sid not in by_id]
        if missing:
            from care.errors import CareInputError

            raise CareInputError(
                self.sessions, f"validation session {missing[0]!r} is gone", field="session_id"
            )
        return instrument, [by_id[sid] for sid in self.session_ids]


# --------------------------------------------------------------------------- scoring


def shard(sessions: Sequence, rank: int, ranks: int) -> list:
    """Rank ``rank``'s share: sessions dealt out longest first, so the shares' work is even."""
    size = {id(s): sum(len(t.text) for t in s.turns) for s in sessions}
    order = sorted(range(len(sessions)), key=lambda k: (-size[id(sessions[k])], k))
    return [sessions[k] for n, k in enumerate(order) if n % ranks == rank]


def score_rows(weights: Path, sessions: Sequence, instrument, job: ValidationJob) -> list[dict]:
    """One row per (session, item) of a checkpoint's validation answers (fields selection uses).

    The dialogue leaves room for ``job.answer_tokens`` (the inference answer budget, as in
    training and inference) even where validation generates fewer tokens.
    """
    from care.infer.hf import HFScorer

    scorer = HFScorer.from_pretrained(weights, job.settings(), instrument=instrument)
    return [{k: row.get(k) for k in ROW_FIELDS} for row in scorer.score(sessions)]


def score_epoch(
    job: ValidationJob,
    job_path: Path,
    weights: Path,
    work: Path,
    ranks: int,
    env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Every validation row of one epoch, scored over ``ranks`` processes (in-process for one).

    Rank files already in ``work`` (a killed job's) are reused; the others are computed.
    """
    from care.io import read_jsonl, write_jsonl

    work.mkdir(parents=True, exist_ok=True)
    files = [work / f"rank-{r}-of-{ranks}.jsonl" for r in range(ranks)]
    todo = [r for r in range(ranks) if not files[r].is_file()]
    if ranks == 1 and todo:
        instrument, sessions = job.load()
        rows = score_rows(weights, sessions, instrument, job)
        write_jsonl(files[0], rows)
    elif todo:
        run_ranks(job_path, weights, files, todo, env or dict(os.environ), job.device)
    return [row for f in files for row in read_jsonl(f)]


def run_ranks(job_path, weights, files, todo, env, device) -> None:
    """One scoring process per rank in ``todo``, each on its own GPU (or CPU share)."""
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    procs = []
    for r in todo:
        rank_env = dict(env)
        if device == "cuda":
            rank_env["CUDA_VISIBLE_DEVICES"] = visible[r] if len(visible) > r else str(r)
        cmd = [sys.executable, "-m", "care.train.select", "--job", str(job_path)]
        cmd += ["--weights", str(weights), "--rank", str(r), "--ranks", str(len(files))]
        cmd += ["--out", str(files[r])]
        procs.append((r, subprocess.Popen(cmd, env=rank_env)))
    log.info("scoring %s over %d ranks (%s)", weights.name, len(files), device)
    failed = [r for r, p in procs if p.wait() != 0]
    if failed:
        raise RuntimeError(f"validation scoring failed on ranks {failed} (see the log above)")


def rank_main(argv: list[str] | None = None) -> int:
    """``python -m care.train.select``: one scoring rank, its share of the sessions to a file."""
    import torch

    from care.io import write_jsonl

    p = argparse.ArgumentParser(description="score one rank's share of the validation sessions")
    p.add_argument("--job", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--ranks", type=int, required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    job = ValidationJob.read(args.job)
    torch.set_num_threads(max(1, job.threads))
    instrument, sessions = job.load()
    mine = shard(sessions, args.rank, args.ranks)
    rows = score_rows(Path(args.weights), mine, instrument, job)
    write_jsonl(args.out, rows)
    return 0


# --------------------------------------------------------------------------- metrics


def pearson_by_dimension(rows: Iterable[dict], instrument) -> dict[str, float]:
    """Pearson r per dimension over the validation sessions, computed exactly as the tables
    compute a fold's r: :func:`care.evaluate.metrics.dimension_scores` (every item parsed, else
    the session has no score) and :func:`care.evaluate.metrics.correlations`."""
    import pandas as pd

    from care.evaluate import metrics

    frame = pd.DataFrame(list(rows)).assign(model="", variant="", fold=0)
    if "client_id" not in frame:
        frame["client_id"] = frame["session_id"]
    per_fold = metrics.fold_metrics(metrics.dimension_scores(frame, instrument))
    found = dict(zip(per_fold["dimension"], per_fold["pearson"], strict=True))
    return {d: float(found.get(d, math.nan)) for d in instrument.dimension_ids}


def mean_r(per_dim: dict[str, float]) -> float:
    values = list(per_dim.values())
    return math.nan if any(math.isnan(v) for v in values) else sum(values) / len(values)


def epoch_metrics(rows: list[dict], instrument) -> dict[str, Any]:
    """Validation metrics of one epoch: Pearson per dimension, parse rate, cut answers."""
    per_dim = pearson_by_dimension(rows, instrument)
    n = len(rows)
    cut = sum(bool(r.get("answer_cut")) for r in rows)
    return {
        "pearson": per_dim,
        "mean_pearson": mean_r(per_dim),
        "parse_rate": sum(bool(r["parsed"]) for r in rows) / n if n else math.nan,
        "items": n,
        "answers_cut": cut,
        "cut_rate": cut / n if n else math.nan,
    }


def choose(
    scored: list[dict[str, Any]], min_parse_rate: float = 0.0, max_cut_rate: float = 0.0
) -> int | None:
    """Index of the best epoch by mean r (NaN lowest; ties: earliest; all NaN: last).

    Epochs with more than ``max_cut_rate`` of their answers cut never compete (None when
    that leaves none). Of the rest, only those parsing at least ``min_parse_rate`` of the
    items compete, unless none does; then the best-parsing ones do.
    """
    whole = [k for k, s in enumerate(scored) if _rate(s, "cut_rate", 0.0) <= max_cut_rate]
    if not whole:
        return None
    rates = {k: _rate(scored[k], "parse_rate", 1.0) for k in whole}
    floor = min(min_parse_rate, max(rates.values()))
    eligible = [k for k in whole if rates[k] >= floor]
    if all(math.isnan(scored[k]["mean_pearson"]) for k in eligible):
        return eligible[-1]
    return max(
        eligible,
        key=lambda k: (
            -math.inf if math.isnan(scored[k]["mean_pearson"]) else scored[k]["mean_pearson"],
            -k,
        ),
    )


def fallback(scored: list[dict[str, Any]], min_parse_rate: float = 0.0) -> int | None:
    """The choice when every epoch has more answers cut than ``max_cut_rate`` allows: the best
    of the epochs with the fewest cut (None: nothing scored)."""
    if not scored:
        return None
    return choose(scored, min_parse_rate, min(_rate(s, "cut_rate", 0.0) for s in scored))


def choosable(scored: list[dict[str, Any]], min_parse_rate: float = 0.0) -> set[int]:
    """Every index :func:`choose` returns for some ``max_cut_rate``: the weights a rerun that
    only changes ``max_cut_rate`` exports (it rescores nothing)."""
    rates = {_rate(s, "cut_rate", 0.0) for s in scored}
    return {k for rate in rates if (k := choose(scored, min_parse_rate, rate)) is not None}


def _rate(record: dict, name: str, default: float) -> float:
    value = record.get(name, default)
    if value is None or math.isnan(value):
        return 0.0 if name == "parse_rate" else 1.0
    return value


def no_choice_message(scored: list[dict], max_new_tokens: int, max_cut_rate: float) -> str:
    cuts = ", ".join(f"epoch {s['epoch']}: {s['answers_cut']} of {s['items']}" for s in scored)
    return (
        f"every epoch's validation answers were cut at max_new_tokens={max_new_tokens} more "
        f"often than max_cut_rate={max_cut_rate} allows ({cuts}); the scores judge "
        "unfinished answers."
        + (
            " No answer of any epoch parsed either: the model has not learned the answer "
            "format, so training was too short (raise training.min_steps or num_train_epochs)."
            if not any(s.get("parse_rate") for s in scored)
            else ""
        )
    )


def rerun_costs(scored: list[dict], min_parse_rate: float, weights_kept: bool) -> str:
    """What each way out of :func:`no_choice_message` costs a rerun, from this run's records
    (``seconds`` of scoring and ``train_seconds`` of training per epoch)."""
    best = scored[choose(scored, min_parse_rate, 1.0)]
    n = len(scored)
    scoring = sum(s.get("seconds") or 0.0 for s in scored)
    trained = [s["train_seconds"] for s in scored if s.get("train_seconds")]
    # epochs trained by an earlier job have no time: the mean of the timed ones stands in
    training = "training"
    if trained:
        training = f"~{duration(sum(trained) / len(trained) * n)} of training"
    if weights_kept:
        tokens = (
            f"rescores all {n} epochs from their kept weights (~{duration(scoring)} of scoring "
            "at the old length, more with longer answers) and trains nothing"
        )
    else:
        tokens = (
            f"retrains all {n} epochs from the start ({training}: their weights were not kept, "
            f"training.keep_epoch_weights: false) and scores them again (~{duration(scoring)})"
        )
    return (
        f"A rerun with training.validation.max_cut_rate: {_rate(best, 'cut_rate', 0.0):g} "
        f"exports epoch {best['epoch']} (best r; its weights are kept) and rescores and trains "
        f"nothing. Raising training.validation.max_new_tokens {tokens}."
    )


def duration(seconds: float) -> str:
    """Seconds as a person reads them: 40 s, 35 min, 7.2 h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------- records


def read_scores(checkpoint_dir: str | Path, key: str | None = None) -> list[dict[str, Any]]:
    """The epoch records in ``scores.jsonl`` (those of validation ``key`` if given)."""
    from care.io import read_jsonl

    path = Path(checkpoint_dir) / SCORES
    if not path.is_file():
        return []
    return [r for r in read_jsonl(path) if key is None or r["validation_key"] == key]


def append_score(checkpoint_dir: str | Path, record: dict[str, Any]) -> None:
    """Add one epoch's record (replacing an older one of the same key and epoch), atomically."""
    from care.io import write_jsonl

    same = (record["validation_key"], record["epoch"])
    kept = [
        r for r in read_scores(checkpoint_dir) if (r["validation_key"], r["epoch"]) != same
    ]
    write_jsonl(Path(checkpoint_dir) / SCORES, [*kept, to_json(record)])


def to_json(record: dict[str, Any]) -> dict[str, Any]:
    """A record with NaN as null (strict JSON)."""
    if isinstance(record, dict):
        return {k: to_json(v) for k, v in record.items()}
    return to_json_number(record) if isinstance(record, float) else record


def from_json(record: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`to_json` for the metric fields."""
    out = dict(record)
    out["pearson"] = {d: math.nan if r is None else r for d, r in record["pearson"].items()}
    for name in ("mean_pearson", "parse_rate", "cut_rate"):
        out[name] = math.nan if record.get(name) is None else record[name]
    return out


def to_json_number(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else round(value, 6)


if __name__ == "__main__":
    sys.exit(rank_main())
