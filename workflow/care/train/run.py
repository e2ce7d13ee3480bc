"""One fine-tune end to end: examples, training ranks, checkpoint selection, the model dir.

Steps (``care train``):

1. Split the fold's sessions: training folds (minus an inner client-grouped validation share
   with ``selection: inner_split``) and the validation sessions.
2. Build the SFT examples (:mod:`care.sft`) with the backbone's tokenizer and write them, with
   a job file, into the checkpoint directory (outside the rule's outputs).
3. Train (:mod:`care.train.launch`, :mod:`care.train.trainer`). The checkpoint directory is
   keyed by a fingerprint of everything that defines the run (examples, hyperparameters,
   DeepSpeed config, backbone); a rerun with the same fingerprint resumes from its last
   checkpoint, a changed one starts afresh.
4. Score each epoch's checkpoint on the validation sessions and keep the best
   (:mod:`care.train.select`); write the model (HF format, tokenizer included),
   ``train_log.csv`` and ``selection.json`` atomically into the output directory, then
   delete the other checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from care.train.launch import Plan, launch

log = logging.getLogger("care.train")


@dataclass(frozen=True)
class FineTune:
    """What one (backbone, variant, fold) run needs; the ``training`` section is ``hp``."""

    backbone: Path
    sessions: Path
    folds: Path
    instrument: Path
    fold: int
    variant: str
    granularity: str
    max_length: int
    hp: dict[str, Any]
    checkpoint_dir: Path
    out: Path
    rationales: Path | None = None
    gpus: int = 0
    threads: int = 1
    answer_tokens: int | str | None = None  # inference max_new_tokens (or auto): the answer budget


def validation_settings(hp: dict[str, Any], stats=None) -> dict[str, Any]:
    """The ``training.validation`` settings; ``max_new_tokens: auto`` (the default) is what
    the training answers need (:func:`care.sft.answer_token_limit`, from ``stats``)."""
    settings = {
        "max_new_tokens": "auto",
        "batch_size": 48,
        "scoring": "generated",
        **hp.get("validation", {}),
    }
    if settings["max_new_tokens"] == "auto" and stats is not None:
        settings["max_new_tokens"] = stats.as_dict()["answer_token_limit"]
    return settings


def prepare(run: FineTune):
    """Sessions split, SFT examples and their stats; nothing written yet."""
    from care.backbone import check_causal_lm_dir, load_end_of_turn_ids, load_tokenizer
    from care.instrument import load_instrument
    from care.sessions import load_sessions
    from care.sft import (
        ExampleBuilder,
        build_examples,
        load_folds,
        load_rationales,
        split_sessions,
        training_rows,
    )

    check_causal_lm_dir(run.backbone)
    instrument = load_instrument(run.instrument)
    sessions = load_sessions(run.sessions, instrument)
    train, val = split_sessions(
        sessions,
        load_folds(run.folds),
        run.fold,
        selection=run.hp.get("selection", "inner_split"),
        inner_val_fraction=run.hp.get("inner_val_fraction", 0.15),
        seed=run.hp.get("seed", 123),
        folds_path=run.folds,
    )
    tokenizer = load_tokenizer(run.backbone)
    builder = ExampleBuilder(
        tokenizer,
        instrument,
        variant=run.variant,
        granularity=run.granularity,
        max_length=run.max_length,
        end_of_turn=load_end_of_turn_ids(run.backbone, tokenizer),
        answer_tokens=run.answer_tokens,
    )
    rationales = None
    if run.variant == "rationale":
        if run.rationales is None:
            raise ValueError("the rationale variant needs --rationales")
        rationales = load_rationales(run.rationales)
    examples, stats = build_examples(builder, train, rationales)
    rows = training_rows(examples, stats, run.hp.get("packing", "none"))
    return instrument, train, val, rows, stats


def fingerprint(run: FineTune, examples_blob: bytes) -> str:
    """Everything that determines the trained weights (checkpoints of another run differ)."""
    from care.fingerprint import model_fingerprint

    digest = hashlib.sha256(examples_blob)
    deepspeed = run.hp.get("deepspeed")
    digest.update(
        json.dumps(
            {
                "hp": {
                    k: v
                    for k, v in run.hp.items()
                    if k not in ("validation", "gpus", "cpu_ranks", "launcher", "threads")
                },
                "deepspeed": Path(deepspeed).read_text(encoding="utf-8") if deepspeed else None,
                "backbone": model_fingerprint(run.backbone),
            },
            sort_keys=True,
        ).encode()
    )
    return digest.hexdigest()


def stage_checkpoint_dir(run: FineTune, examples, plan: Plan) -> dict[str, Any]:
    """Write the examples and job file; keep existing checkpoints only if the run is the same."""
    from care.io import atomic_open, write_json

    blob = "".join(json.dumps(e.to_record(), separators=(",", ":")) + "\n" for e in examples)
    key = fingerprint(run, blob.encode())
    job_file = run.checkpoint_dir / "job.json"
    if job_file.is_file():
        old = json.loads(job_file.read_text(encoding="utf-8")).get("fingerprint")
        if old != key:
            log.info(
                "checkpoints in %s belong to another configuration: starting afresh",
                run.checkpoint_dir,
            )
            shutil.rmtree(run.checkpoint_dir)
    run.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(run.checkpoint_dir / "train.jsonl") as handle:
        handle.write(blob)
    job = {
        "fingerprint": key,
        "backbone": str(run.backbone),
        "checkpoint_dir": str(run.checkpoint_dir),
        "data": str(run.checkpoint_dir / "train.jsonl"),
        "hp": run.hp,
        "device": plan.device,
        "threads": plan.threads_per_rank,
    }
    write_json(job_file, job)
    return job


def finetune(run: FineTune) -> dict[str, Any]:
    """Run one fine-tune; returns the selection record written to ``selection.json``."""
    from care.backbone import atomic_directory

    hp = run.hp
    plan = Plan.make(run.gpus, hp.get("cpu_ranks", 1), run.threads, hp.get("launcher", "torchrun"))
    started = time.perf_counter()
    instrument, train, val, examples, stats = prepare(run)
    log.info(
        "fold %d: %d training sessions, %d validation sessions, examples %s",
        run.fold,
        len(train),
        len(val),
        stats.as_dict(),
    )
    stats.warn_truncation(log, f"fold {run.fold} training examples")
    job = stage_checkpoint_dir(run, examples, plan)
    launch(plan, job, run.checkpoint_dir / "job.json")
    trained = time.perf_counter()
    record = select_and_export(run, plan, instrument, val, stats, atomic_directory)
    record["timing_s"] = {
        "prepare_and_train": round(trained - started, 1),
        "selection": round(time.perf_counter() - trained, 1),
    }
    return record


def select_and_export(run: FineTune, plan: Plan, instrument, val, stats, atomic_directory):
    from care.infer.decoding import Decoding
    from care.train import select

    checkpoints = select.epoch_checkpoints(run.checkpoint_dir)
    if not checkpoints:
        raise RuntimeError(f"training wrote no checkpoint under {run.checkpoint_dir}")
    settings = validation_settings(run.hp, stats)
    dtype = "bfloat16" if _bf16(run.hp, plan) else "float32"
    scorer_args = {
        "variant": run.variant,
        "granularity": run.granularity,
        "max_length": run.max_length,
        "max_new_tokens": settings["max_new_tokens"],
        "batch_size": settings["batch_size"],
        "scoring": settings["scoring"],
    }
    # the dialogue leaves room for the inference answer budget (auto: what inference reads
    # from selection.json), as the training examples did
    reserve = run.answer_tokens
    if reserve == "auto":
        reserve = stats.as_dict()["answer_token_limit"]
    scored = []
    for c in checkpoints:
        metrics = select.score_checkpoint(
            c["path"], val, instrument, scorer_args, plan.device, dtype, reserve
        )
        log.info(
            "epoch %s (step %d): validation r %s",
            c["epoch"],
            c["step"],
            {k: round(v, 3) for k, v in metrics["pearson"].items()},
        )
        scored.append({"epoch": c["epoch"], "step": c["step"], **metrics})
    best = select.choose(scored, float(settings.get("min_parse_rate", 0.0)))
    record = {
        "selection": run.hp.get("selection", "inner_split"),
        "validation_sessions": len(val),
        "chosen": {
            "epoch": scored[best]["epoch"],
            "step": scored[best]["step"],
            "mean_pearson": select.to_json_number(scored[best]["mean_pearson"]),
        },
        "epochs": [
            {
                "epoch": s["epoch"],
                "step": s["step"],
                "pearson": {d: select.to_json_number(r) for d, r in s["pearson"].items()},
                "mean_pearson": select.to_json_number(s["mean_pearson"]),
                "parse_rate": select.to_json_number(s["parse_rate"]),
            }
            for s in scored
        ],
        "sft": stats.as_dict(),
        "validation_decoding": Decoding(settings["max_new_tokens"]).record(),
        "ranks": plan.ranks,
        "device": plan.device,
    }
    chosen = checkpoints[best]["path"]
    with atomic_directory(run.out) as tmp:
        select.export_model(chosen, tmp)
        shutil.copy2(run.checkpoint_dir / "train_log.csv", tmp / "train_log.csv")
        (tmp / "selection.json").write_text(
            json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    select.prune(checkpoints, chosen)
    return record


def _bf16(hp: dict[str, Any], plan: Plan) -> bool:
    from care.train.trainer import resolve_bf16

    return resolve_bf16(hp.get("bf16", "auto"), plan.device == "cpu")
