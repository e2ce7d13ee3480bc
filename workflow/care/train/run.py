"""One fine-tune end to end: examples, training ranks, checkpoint selection, the model dir.

Steps (``care train run``), under an exclusive lock on the checkpoint directory:

1. Split the fold's sessions: training folds (minus an inner client-grouped validation share
   with ``selection: inner_split``) and the validation sessions.
2. Build the SFT examples (:mod:`care.sft`) with the backbone's tokenizer and write them, with
   a job file, into the checkpoint directory (outside the rule's outputs;
   :mod:`care.train.checkpoints` describes it). The directory is keyed by a fingerprint of
   everything that defines the trained weights (examples, hyperparameters, DeepSpeed config,
   backbone, world size and effective batch); a rerun with the same fingerprint resumes, a
   changed one starts afresh and says why.
3. Train the epochs in one launch (:mod:`care.train.launch`, :mod:`care.train.trainer`), with
   resumable checkpoints every ``save_steps`` steps or ``save_minutes``; as soon as an epoch
   is saved, score it while the training ranks wait (no exit, no reload) on the validation
   sessions over all ranks (:mod:`care.train.select`), append its record to
   ``scores.jsonl`` (keyed by the validation settings) and keep only what resuming and
   selection still need.
4. Choose the best epoch among all of them (an epoch missing is an error, never a silent
   partial view); write the model (HF format, tokenizer included), ``train_log.csv`` and
   ``selection.json`` atomically into the output directory; drop the optimizer state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from care import prompts
from care.config import JOB_KEYS, default
from care.errors import CareInputError
from care.train import checkpoints, select
from care.train.launch import Plan, launch
from care.train.settings import TrainingSettings

log = logging.getLogger("care.train")


@dataclass(frozen=True)
class FineTune:
    """What one (backbone, variant, fold) run needs; the ``training`` section is ``settings``."""

    backbone: Path
    sessions: Path
    folds: Path
    instrument: Path
    fold: int
    variant: str
    granularity: str
    max_length: int
    settings: TrainingSettings
    checkpoint_dir: Path
    out: Path
    rationales: Path | None = None
    gpus: int = 0
    threads: int = 1
    answer_tokens: int | str | None = None  # inference max_new_tokens (or auto): the answer budget


def validation_settings(settings: TrainingSettings, stats=None) -> dict[str, Any]:
    """The ``training.validation`` settings as selection records them; ``max_new_tokens:
    auto`` (the default) is what the training answers need (:func:`care.sft.answer_token_limit`,
    from ``stats``)."""
    validation = settings.validation
    if stats is not None:
        validation = validation.resolved(stats.as_dict()["answer_token_limit"])
    return validation.as_dict()


def prepare(run: FineTune):
    """Sessions split, SFT examples and their stats; nothing written yet."""
    from care.instrument import load_instrument
    from care.model.backbone import check_causal_lm_dir, load_end_of_turn_ids, load_tokenizer
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
        selection=run.settings.selection,
        inner_val_fraction=run.settings.inner_val_fraction,
        seed=run.settings.seed,
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
    rows = training_rows(
        examples,
        stats,
        run.settings.packing,
        run.settings.units_per_row,
        seed=run.settings.seed,
    )
    return instrument, train, val, rows, stats


#: ``training`` keys that do not change the weights: left out of the training fingerprint.
NOT_WEIGHTS = (
    *JOB_KEYS,
    "validation",
    "cpu_ranks",
    "launcher",
    "save_steps",
    "save_minutes",
    "keep_epoch_weights",
)
#: Validation settings that only choose among scored epochs: changing them rescores nothing.
CHOICE_KEYS = ("min_parse_rate", "max_cut_rate", "cut_fallback")


def effective_batch(settings: TrainingSettings, ranks: int) -> int:
    """The configured batch: per-device examples x accumulation x ranks (the fingerprint's)."""
    return settings.per_device_train_batch_size * settings.gradient_accumulation_steps * ranks


def examples_per_step(settings: TrainingSettings, ranks: int, rows) -> float:
    """The examples one optimizer step trains on: packed, a device takes whole rows
    (:func:`care.sft.rows_per_step`, at least one: 12 item examples of a session), so this
    can exceed :func:`effective_batch` (1 x 2 x 8 GPUs configured, 192 trained)."""
    from care.sft import rows_per_step

    if not rows:
        return float(effective_batch(settings, ranks))
    per_row = sum(r.n_examples for r in rows) / len(rows)
    steps = settings.gradient_accumulation_steps * ranks
    return round(rows_per_step(settings.per_device_train_batch_size, rows) * per_row * steps, 1)


def backbone_files(backbone: Path, old_job: dict[str, Any] | None) -> dict[str, str]:
    """The backbone's content digest and file signature; the digest the last job here
    recorded is reused while the signature is unchanged (hashing 16 GB of weights at every
    start, retries and resumes included, kept 8 GPUs waiting)."""
    from care.model.fingerprint import directory_signature, model_fingerprint

    signature = directory_signature(backbone) if backbone.is_dir() else str(backbone)
    known = (old_job or {}).get("backbone_files") or {}
    if known.get("signature") == signature and known.get("digest"):
        return known
    return {"signature": signature, "digest": model_fingerprint(backbone)}


def fingerprint(
    run: FineTune,
    examples_blob: bytes,
    ranks: int = 1,
    backbone_digest: str | None = None,
    keys: Collection[str] | None = None,
) -> str:
    """Everything that determines the trained weights (checkpoints of another run differ).

    The world size is part of it: ZeRO state saved on n ranks does not load on m, and the
    effective batch (per-device batch x accumulation x ranks) changes the training itself.
    ``keys``: only these settings (a ``job.json`` written before the schema held every
    default: :func:`same_run_before_defaults`).
    """
    from care.model.fingerprint import model_fingerprint

    if backbone_digest is None:
        backbone_digest = model_fingerprint(run.backbone)
    digest = hashlib.sha256(examples_blob)
    deepspeed = run.settings.deepspeed
    hp = {k: v for k, v in run.settings.as_json().items() if k not in NOT_WEIGHTS}
    digest.update(
        json.dumps(
            {
                "hp": {k: v for k, v in hp.items() if keys is None or k in keys},
                "deepspeed": Path(deepspeed).read_text(encoding="utf-8") if deepspeed else None,
                "backbone": backbone_digest,
                "world_size": ranks,
                "effective_batch": effective_batch(run.settings, ranks),
            },
            sort_keys=True,
        ).encode()
    )
    return digest.hexdigest()


def stage_checkpoint_dir(run: FineTune, examples, plan: Plan) -> dict[str, Any]:
    """Write the examples and job file; keep existing checkpoints only if the run is the same."""
    from care.io import atomic_open, write_json
    from care.sft import rows_per_step

    blob = "".join(json.dumps(e.to_record(), separators=(",", ":")) + "\n" for e in examples)
    job_file = run.checkpoint_dir / "job.json"
    old = json.loads(job_file.read_text(encoding="utf-8")) if job_file.is_file() else None
    backbone = backbone_files(Path(run.backbone), old)
    key = fingerprint(run, blob.encode(), plan.ranks, backbone["digest"])
    same = old is not None and (
        old.get("fingerprint") == key
        or same_run_before_defaults(old, run, blob.encode(), plan.ranks, backbone["digest"])
    )
    if old is not None and not same:
        log.warning("%s: %s", run.checkpoint_dir, restart_reason(old, run.settings, plan.ranks))
        checkpoints.clear(run.checkpoint_dir)
    run.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(run.checkpoint_dir / "train.jsonl") as handle:
        handle.write(blob)
    job = {
        "fingerprint": key,
        "backbone": str(run.backbone),
        "backbone_files": backbone,
        "checkpoint_dir": str(run.checkpoint_dir),
        "data": str(run.checkpoint_dir / "train.jsonl"),
        "hp": run.settings.as_json(),
        "device": plan.device,
        "threads": plan.threads_per_rank,
        "ranks": plan.ranks,
        "effective_batch": effective_batch(run.settings, plan.ranks),
        "examples_per_step": examples_per_step(run.settings, plan.ranks, examples),
        "rows_per_device": rows_per_step(run.settings.per_device_train_batch_size, examples),
        "save_steps": int(run.settings.save_steps),
        "save_minutes": float(run.settings.save_minutes),
        "pause_at_epoch_end": False,  # each epoch is scored while the ranks wait (EpochLoop)
        "rotate": True,
    }
    write_json(job_file, job)
    return job


def same_run_before_defaults(
    old_job: dict[str, Any], run: FineTune, examples_blob: bytes, ranks: int, backbone_digest: str
) -> bool:
    """A ``job.json`` written before the schema held every training default: its ``hp`` lacks
    the keys its config left out, which trained with the values that are now the defaults.
    The same run if its fingerprint matches over its own keys and every other key is at its
    default."""
    old_keys = set(old_job.get("hp", {}))
    current = run.settings.as_json()
    left_out = [k for k in current if k not in old_keys and k not in NOT_WEIGHTS]
    if not old_keys or any(current[k] != default(f"training.{k}") for k in left_out):
        return False
    key = fingerprint(run, examples_blob, ranks, backbone_digest, keys=old_keys)
    return old_job.get("fingerprint") == key


def restart_reason(old_job: dict[str, Any], settings: TrainingSettings, ranks: int) -> str:
    old_ranks = old_job.get("ranks")
    if old_ranks is not None and old_ranks != ranks:
        return (
            f"its checkpoints were trained on {old_ranks} ranks (effective batch "
            f"{old_job.get('effective_batch')}), this run has {ranks} (effective batch "
            f"{effective_batch(settings, ranks)}): ZeRO state does not carry over to another world "
            "size and the batch changes the training, so it starts afresh"
        )
    return "its checkpoints belong to another configuration: starting afresh"


def validation_job(run: FineTune, plan: Plan, val, settings, stats) -> select.ValidationJob:
    """What scoring needs; its key covers every setting and session that changes the scores."""
    # the dialogue leaves room for the inference answer budget (auto: what inference reads
    # from selection.json), as the training examples did
    reserve = run.answer_tokens
    if reserve == "auto":
        reserve = stats.as_dict()["answer_token_limit"]
    scorer = {
        "variant": run.variant,
        "granularity": run.granularity,
        "max_length": run.max_length,
        "max_new_tokens": settings["max_new_tokens"],
        "batch_size": settings["batch_size"],
        "scoring": settings["scoring"],
    }
    dtype = "bfloat16" if _bf16(run.settings, plan) else "float32"
    digest = hashlib.sha256()
    for session in val:
        record = dataclasses.asdict(session)
        record.pop("line", None)
        digest.update(json.dumps(record, sort_keys=True, default=str).encode())
    material = {
        "settings": {k: v for k, v in settings.items() if k not in CHOICE_KEYS},
        "scorer": scorer,
        "dtype": dtype,
        "answer_tokens": reserve,
        "instrument": Path(run.instrument).read_text(encoding="utf-8"),
        "sessions": digest.hexdigest(),
    }
    return select.ValidationJob(
        key=hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest(),
        sessions=str(run.sessions),
        session_ids=[s.session_id for s in val],
        instrument=str(run.instrument),
        scorer=scorer,
        device=plan.device,
        dtype=dtype,
        threads=plan.threads_per_rank,
        answer_tokens=reserve,
    )


def steps_per_epoch(settings: TrainingSettings, rows, ranks: int) -> int:
    """Optimizer steps in one pass over the training rows (the Trainer's count)."""
    from care.sft import rows_per_step

    per_step = rows_per_step(settings.per_device_train_batch_size, rows) * ranks
    batches = math.ceil(len(rows) / per_step)
    return max(1, batches // settings.gradient_accumulation_steps)


def with_step_floor(run: FineTune, rows, plan: Plan) -> FineTune:
    """``training.min_steps``: more epochs where the corpus is too small for the configured
    ones to reach that many optimizer steps. A tiny model learns the ratings' marginal within
    ~50 steps and their dependence on the dialogue only after a few hundred, so a small
    corpus needs the steps, not the epochs, of a large one."""
    floor = int(run.settings.min_steps)
    per_epoch = steps_per_epoch(run.settings, rows, plan.ranks)
    epochs = int(run.settings.num_train_epochs)
    needed = max(epochs, math.ceil(floor / per_epoch))
    if needed == epochs:
        return run
    log.info(
        "training.min_steps %d: %d optimizer steps per epoch, so %d epochs instead of %d",
        floor, per_epoch, needed, epochs,
    )
    return dataclasses.replace(run, settings=run.settings.replace(num_train_epochs=needed))


def finetune(run: FineTune) -> dict[str, Any]:
    """Run one fine-tune; returns the selection record written to ``selection.json``."""
    plan = Plan.make(run.gpus, run.settings.cpu_ranks, run.threads, run.settings.launcher)
    started = time.perf_counter()
    with checkpoints.exclusive(run.checkpoint_dir) as lock:
        instrument, train, val, examples, stats = prepare(run)
        log.info(
            "fold %d: %d training sessions, %d validation sessions, examples %s",
            run.fold,
            len(train),
            len(val),
            stats.as_dict(),
        )
        stats.warn_truncation(log, f"fold {run.fold} training examples")
        run = with_step_floor(run, examples, plan)
        settings = validation_settings(run.settings, stats)  # max_new_tokens auto: resolved
        vjob = validation_job(run, plan, val, settings, stats)
        loop = EpochLoop(run, plan, examples, vjob, settings, lock)
        loop.run()
        record = loop.select_and_export(instrument, val, stats)
    record["timing_s"] = {
        "total": round(time.perf_counter() - started, 1),
        "training": round(loop.seconds["training"], 1),
        "selection": round(loop.seconds["selection"], 1),
    }
    return record


class EpochLoop:
    """Train the epochs, scoring each as soon as it is saved, under the retention rules.

    Each turn: drop half-written checkpoints, check that every trained epoch is scored or
    still has its weights (else start afresh when settings changed, or fail loudly), score the
    epochs not yet scored (a killed job's), then train the remaining epochs in one launch,
    whose ranks wait after each epoch-end save while :meth:`score_saved` scores it.
    """

    def __init__(self, run: FineTune, plan: Plan, examples, vjob, settings, lock=None):
        self.run_, self.plan, self.examples, self.vjob, self.lock = run, plan, examples, vjob, lock
        self.dir = run.checkpoint_dir
        self.settings = settings
        self.epochs = int(run.settings.num_train_epochs)
        self.seconds = {"training": 0.0, "selection": 0.0}
        self.train_seconds: dict[int, float] = {}  # per epoch trained by this job: rerun costs
        self.shown = None  # the selection bar, while run() shows it
        self.mark = 0.0  # when the current stretch of training began (train, score_saved)
        self.stage()

    def stage(self) -> None:
        self.job = stage_checkpoint_dir(self.run_, self.examples, self.plan)
        self.vjob.write(self.dir / "validation.json")

    def run(self) -> None:
        with self.progress() as shown:
            self.shown = shown
            while True:
                checkpoints.drop_incomplete(self.dir)
                trained = self.trained_epochs()
                if not self.consistent(trained):
                    shown.reset(total=self.epochs)  # started afresh: nothing scored
                    continue
                for epoch in range(1, trained + 1):
                    if epoch not in self.scored():
                        self.score(epoch)
                        shown.update()
                if trained >= self.epochs:
                    return
                self.train()

    def progress(self):
        """Epochs scored of all, with ETA (training between them included), in the job log."""
        from care.progress import bar

        done = len([e for e in self.scored() if e <= self.epochs])
        return bar(total=self.epochs, initial=done, desc="selection", unit="epoch")

    def scored(self) -> dict[int, dict[str, Any]]:
        return {r["epoch"]: r for r in select.read_scores(self.dir, self.vjob.key)}

    def trained_epochs(self) -> int:
        latest = checkpoints.latest_full_state(self.dir)
        seen = [int(latest.epoch + 1e-6)] if latest else []
        seen += list(checkpoints.epoch_weights(self.dir))
        seen += [r["epoch"] for r in select.read_scores(self.dir)]
        return max(seen, default=0)

    def consistent(self, trained: int) -> bool:
        """Can selection still see every epoch? False after starting afresh."""
        scored = self.scored()
        for epoch in range(1, trained + 1):
            if epoch in scored or checkpoints.weights_of(self.dir, epoch):
                continue
            if any(r["epoch"] == epoch for r in select.read_scores(self.dir)):
                return self.afresh(
                    f"the validation settings changed and epoch {epoch}'s weights were not "
                    "kept (training.keep_epoch_weights: false), so the epochs cannot all be "
                    "rescored: starting afresh"
                )
            raise CareInputError(
                self.dir,
                f"epoch {epoch} was trained but neither its validation scores nor its weights "
                "are here (deleted by another process?), so selection would miss it. Delete "
                "the directory to train again.",
            )
        best = self.best(scored)
        if best is not None and not checkpoints.weights_of(self.dir, best):
            return self.afresh(
                f"the selection settings now choose epoch {best}, whose weights were not kept: "
                "starting afresh"
            )
        return True

    def afresh(self, reason: str) -> bool:
        log.warning("%s: %s", self.dir, reason)
        checkpoints.clear(self.dir)
        self.stage()
        return False

    def strict(self, scored: dict[int, dict[str, Any]]) -> tuple[list[int], list, int | None]:
        """(epochs, their records, the index of the best within max_cut_rate or None)."""
        epochs = sorted(scored)
        records = [select.from_json(scored[e]) for e in epochs]
        k = select.choose(records, self.min_parse_rate, float(self.settings["max_cut_rate"]))
        return epochs, records, k

    @property
    def min_parse_rate(self) -> float:
        return float(self.settings["min_parse_rate"])

    def best(self, scored: dict[int, dict[str, Any]]) -> int | None:
        """The epoch to export: the best within max_cut_rate; when none is (and cut_fallback),
        the best of the epochs with the fewest cut answers."""
        epochs, records, k = self.strict(scored)
        if k is None and self.settings["cut_fallback"]:
            k = select.fallback(records, self.min_parse_rate)
        return None if k is None else epochs[k]

    def needed(self, scored: dict[int, dict[str, Any]]) -> set[int]:
        """Epochs whose weights selection needs: the best; when no epoch is within
        max_cut_rate, every epoch some max_cut_rate chooses (so that the rerun the warning or
        error suggests rescores and retrains nothing)."""
        epochs, records, k = self.strict(scored)
        keep = {k} if k is not None else select.choosable(records, self.min_parse_rate)
        return {epochs[i] for i in keep}

    def cut_problem(self, scored: dict[int, dict[str, Any]]) -> str | None:
        """Why no epoch is within max_cut_rate, and what each rerun costs; None if one is."""
        epochs, records, k = self.strict(scored)
        if k is not None:
            return None
        return " ".join(
            (
                select.no_choice_message(
                    [scored[e] for e in epochs],
                    self.settings["max_new_tokens"],
                    float(self.settings["max_cut_rate"]),
                ),
                select.rerun_costs(
                    records, self.min_parse_rate, self.run_.settings.keep_epoch_weights
                ),
            )
        )

    def train(self) -> None:
        """Train the remaining epochs in one launch; each is scored as soon as it is saved,
        while the ranks wait (no exit, no reload of the backbone or optimizer state)."""
        self.mark = time.perf_counter()
        before = checkpoints.latest_full_state(self.dir)
        launch(self.plan, self.job, self.dir / "job.json", keep_fds=self.keep_fds(),
               on_epoch_saved=self.score_saved)
        free_accelerator_memory()
        after = checkpoints.latest_full_state(self.dir)
        if after is None or (before is not None and after.step <= before.step):
            raise RuntimeError(f"training saved no new checkpoint under {self.dir}")
        self.seconds["training"] += time.perf_counter() - self.mark

    def score_saved(self, epoch: int) -> None:
        """An epoch the waiting ranks just saved: its training time, then its score."""
        now = time.perf_counter()
        self.train_seconds[epoch] = now - self.mark
        self.seconds["training"] += now - self.mark
        if epoch not in self.scored():
            self.score(epoch)
            if self.shown is not None:
                self.shown.update()
        self.mark = time.perf_counter()  # scoring is not training time

    def keep_fds(self) -> tuple[int, ...]:
        return () if self.lock is None else (self.lock,)

    def score(self, epoch: int) -> None:
        """Score one epoch, record it, and keep only the weights selection still needs."""
        from care.instrument import load_instrument

        started = time.perf_counter()
        state = next(
            (s for s in checkpoints.full_states(self.dir) if s.epoch_end == epoch), None
        )
        weights = checkpoints.keep_epoch(self.dir, state) if state else None
        weights = weights or checkpoints.epoch_weights(self.dir)[epoch]
        step = json.loads((weights / "epoch.json").read_text(encoding="utf-8"))["step"]
        work = self.dir / "validation" / f"{self.vjob.key[:16]}-epoch-{epoch}"
        rows = select.score_epoch(
            self.vjob, self.dir / "validation.json", weights, work, self.plan.ranks, self.plan.env()
        )
        metrics = select.epoch_metrics(rows, load_instrument(self.vjob.instrument))
        record = {"validation_key": self.vjob.key, "epoch": epoch, "step": step, **metrics}
        record["seconds"] = round(time.perf_counter() - started, 1)
        if epoch in self.train_seconds:
            record["train_seconds"] = round(self.train_seconds[epoch], 1)
        select.append_score(self.dir, record)
        shutil.rmtree(work, ignore_errors=True)
        log.info(
            "epoch %d (step %d): validation r %s, parsed %.2f, answers cut %d of %d",
            epoch,
            step,
            {k: round(v, 3) for k, v in metrics["pearson"].items()},
            metrics["parse_rate"],
            metrics["answers_cut"],
            metrics["items"],
        )
        self.retain()
        self.seconds["selection"] += time.perf_counter() - started

    def retain(self) -> None:
        if self.run_.settings.keep_epoch_weights:
            return
        checkpoints.drop_epochs(self.dir, self.needed(self.scored()))

    def select_and_export(self, instrument, val, stats) -> dict[str, Any]:
        """Choose among every epoch's scores, export the model, drop the training state."""
        from care.model.backbone import atomic_directory

        scored = self.scored()
        missing = [e for e in range(1, self.epochs + 1) if e not in scored]
        if missing:
            raise CareInputError(
                self.dir, f"selection expects epochs 1-{self.epochs}; missing: {missing}"
            )
        best, problem = self.best(scored), self.cut_problem(scored)
        if best is None:
            raise CareInputError(self.dir, f"{problem} (training.validation.cut_fallback: false)")
        if problem:
            log.warning(
                "%s: %s Exporting epoch %d, the best of those with the fewest cut answers "
                "(training.validation.cut_fallback).", self.dir, problem, best,
            )
        if not any((scored[e].get("parse_rate") or 0) > 0 for e in scored):
            log.warning(
                "%s: no validation answer of any epoch parsed: the model has not learned the "
                "answer format, so training was too short (raise training.min_steps or "
                "num_train_epochs); epoch %d is exported, its scores are not usable",
                self.dir, best,
            )
        record = self.selection_record(scored, best, val, stats)
        if problem:
            record["cut_fallback"] = problem
        chosen = checkpoints.epoch_weights(self.dir)[best]
        with atomic_directory(self.run_.out) as tmp:
            for f in checkpoints.model_files(chosen):
                checkpoints.link_or_copy(f, tmp / f.name)
            shutil.copy2(self.dir / "train_log.csv", tmp / "train_log.csv")
            (tmp / "selection.json").write_text(
                json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
        checkpoints.rotate(self.dir, keep=None)  # the run is over: no optimizer state
        if not self.run_.settings.keep_epoch_weights:
            checkpoints.drop_epochs(self.dir, self.needed(scored) | {best})
        shutil.rmtree(self.dir / "validation", ignore_errors=True)
        return record

    def selection_record(self, scored, best: int, val, stats) -> dict[str, Any]:
        from care.infer.decoding import Decoding

        epochs = [scored[e] for e in sorted(scored)]
        fields = ("epoch", "step", "pearson", "mean_pearson", "parse_rate")
        fields += ("items", "answers_cut", "cut_rate")
        return {
            "selection": self.run_.settings.selection,
            "answer_order": prompts.answer_order(),
            "validation": {
                **self.settings,
                "key": self.vjob.key,
                "sessions": self.vjob.session_ids,
            },
            "validation_sessions": len(val),
            "chosen": {k: scored[best][k] for k in ("epoch", "step", "mean_pearson")},
            "epochs": [{k: r.get(k) for k in fields} for r in epochs],
            "sft": stats.as_dict(),
            "validation_decoding": Decoding(self.settings["max_new_tokens"]).record(),
            "ranks": self.plan.ranks,
            "effective_batch": effective_batch(self.run_.settings, self.plan.ranks),
            "examples_per_step": examples_per_step(
                self.run_.settings, self.plan.ranks, self.examples
            ),
            "device": self.plan.device,
        }


def free_accelerator_memory() -> None:
    """After in-process training: give the GPU memory back before scoring loads a model."""
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _bf16(settings: TrainingSettings, plan: Plan) -> bool:
    from care.train.trainer import resolve_bf16

    return resolve_bf16(settings.bf16, plan.device == "cpu")
