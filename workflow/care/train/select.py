"""Checkpoint selection: score every epoch's checkpoint on the validation sessions.

ZeRO-3 shards the model across ranks, so nothing is generated inside a training callback:
each epoch's checkpoint holds the gathered weights in HF format, and after training one
process loads them in turn and scores the validation sessions with the shared inference
engine (:class:`care.infer.hf.HFScorer`, the code path of the inference stage). The metric is
the tables' own: per dimension, Pearson's r between the session's predicted dimension score
and the client's, both from :func:`care.evaluate.metrics.dimension_scores` (a session whose
items did not all parse has no score), with the inference ``scoring`` the tables report; the
checkpoint with the best mean r over dimensions is kept (ties: the earlier epoch; an
undefined r, e.g. constant predictions, ranks lowest). A checkpoint whose answers parse for
fewer than ``min_parse_rate`` of the validation items is eligible only when none reaches it:
an r over the few sessions that parsed says little about the model.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("care.train")

#: Files of a Trainer checkpoint that are training state, not part of the HF model dir.
TRAINING_STATE = {
    "trainer_state.json",
    "training_args.bin",
    "optimizer.pt",
    "scheduler.pt",
    "latest",
    "zero_to_fp32.py",
}


def epoch_checkpoints(checkpoint_dir: str | Path) -> list[dict[str, Any]]:
    """Complete checkpoints in step order: path, step and epoch (from the trainer state)."""
    out = []
    for path in Path(checkpoint_dir).glob("checkpoint-*"):
        state_file = path / "trainer_state.json"
        if not state_file.is_file():
            continue
        state = json.loads(state_file.read_text(encoding="utf-8"))
        out.append(
            {
                "path": path,
                "step": int(state["global_step"]),
                "epoch": round(float(state["epoch"]), 4),
            }
        )
    return sorted(out, key=lambda c: c["step"])


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


def score_checkpoint(
    path: Path,
    sessions: Sequence,
    instrument,
    scorer_args: dict[str, Any],
    device: str,
    dtype: str,
    answer_tokens: int | None = None,
) -> dict[str, Any]:
    """Validation metrics of one checkpoint (parse rate and Pearson per dimension).

    ``answer_tokens``: the inference answer budget; the dialogue leaves room for it (as in
    training and inference) even where validation generates fewer tokens.
    """
    from care.backbone import load_causal_lm, load_tokenizer
    from care.infer.hf import HFScorer

    model = load_causal_lm(path, dtype=dtype, device=device)
    tokenizer = load_tokenizer(path)
    scorer = HFScorer(model, tokenizer, instrument=instrument, prefix_sharing=True, **scorer_args)
    if answer_tokens is not None:
        scorer.builder.reserve_tokens = answer_tokens
    rows = list(scorer.score(sessions))
    per_dim = pearson_by_dimension(rows, instrument)
    parsed = sum(bool(r["parsed"]) for r in rows)
    return {
        "pearson": per_dim,
        "mean_pearson": mean_r(per_dim),
        "parse_rate": parsed / len(rows) if rows else math.nan,
    }


def choose(scored: list[dict[str, Any]], min_parse_rate: float = 0.0) -> int:
    """Index of the best checkpoint by mean r (NaN lowest; ties: earliest; all NaN: last).

    Only checkpoints parsing at least ``min_parse_rate`` of the items compete, unless none
    does; then the best-parsing ones do.
    """
    rates = [s.get("parse_rate", 1.0) for s in scored]
    rates = [0.0 if math.isnan(r) else r for r in rates]
    floor = min_parse_rate if max(rates) >= min_parse_rate else max(rates)
    eligible = [k for k in range(len(scored)) if rates[k] >= floor]
    if all(math.isnan(scored[k]["mean_pearson"]) for k in eligible):
        return eligible[-1]
    return max(
        eligible,
        key=lambda k: (
            -math.inf if math.isnan(scored[k]["mean_pearson"]) else scored[k]["mean_pearson"],
            -k,
        ),
    )


def export_model(checkpoint: Path, dest: Path) -> None:
    """Copy the HF model files of a checkpoint (weights, config, tokenizer) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(checkpoint.iterdir()):
        if (
            f.is_dir()
            or f.name in TRAINING_STATE
            or f.name.startswith("rng_state")
            or f.suffix == ".py"
        ):
            continue
        shutil.copy2(f, dest / f.name)


def prune(checkpoints: list[dict[str, Any]], keep: Path) -> None:
    """Delete every checkpoint but the chosen one (they hold optimizer states: large)."""
    for c in checkpoints:
        if c["path"] != keep:
            shutil.rmtree(c["path"], ignore_errors=True)


def to_json_number(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else round(value, 6)
