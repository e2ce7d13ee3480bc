"""The training worker: HF ``Trainer`` + DeepSpeed ZeRO on the prepared SFT examples.

Run once per rank (``python -m care.train.trainer --job JOB.json`` under torchrun or the
DeepSpeed launcher; a one-rank run is called in-process by :mod:`care.train.launch`). The job
file (written by :mod:`care.train.run`) names the backbone, the tokenized examples and the
``training`` config section. A checkpoint is saved at every epoch end (ZeRO-3 weights
gathered into an HF-format ``model.safetensors``, the tokenizer beside them), and every
``save_steps`` steps (or ``save_minutes``) within an epoch; after each epoch-end save the
ranks wait, their state kept, while :mod:`care.train.run` scores the epoch and applies the
retention rules (:mod:`care.train.checkpoints`), then train the next epoch. A killed or
retried run resumes from its last complete checkpoint: model, optimizer, scheduler, data
order and RNG states are restored and the run ends where an uninterrupted one ends.

Loss: cross-entropy on the answer tokens only (labels -100 elsewhere). With
``answer_logits_only`` the collator left-pads and asks the model for logits only over the
answers at the end of the rows (``logits_to_keep``): the same loss without projecting every
prompt token onto the vocabulary (most of the compute of a small model, most of the memory
of a 128k-vocabulary one).

Packing (``training.packing: shared_prefix``): the rows are packed sessions
(:mod:`care.train.packing`): their collator, and a block attention mask built on the
model's device just before each forward pass.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("care.train")

IGNORE = -100
LOG_FIELDS = ("step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_second")


class Collator:
    """Pads a batch of examples; with ``answer_logits_only``, trims the logits to the answers.

    Trimming pads on the left, so every row's answer ends at the last position and the
    logits needed are only the last ``longest answer + 1`` positions; explicit position ids
    (counted from each row's first real token) keep the computation that of right padding.
    """

    def __init__(self, pad_id: int, answer_logits_only: bool = True) -> None:
        self.pad_id = pad_id
        self.answer_logits_only = answer_logits_only

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        left = self.answer_logits_only
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for n, r in enumerate(rows):
            k = len(r["input_ids"])
            span = slice(width - k, width) if left else slice(0, k)
            ids[n, span] = torch.tensor(r["input_ids"])
            mask[n, span] = 1
            labels[n, span] = torch.tensor(r["labels"])
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if not left:
            return batch
        batch["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        labelled = (labels != IGNORE).any(dim=0).nonzero()
        if len(labelled):
            # logits at position t predict token t+1: keep from the first answer token - 1
            keep = width - int(labelled[0]) + 1
            batch["labels"] = labels[:, width - keep :]
            batch["logits_to_keep"] = keep
        return batch


def resolve_bf16(setting: Any, use_cpu: bool) -> bool:
    """``bf16: auto`` means bf16 where the device computes it natively (a recent GPU)."""
    if setting != "auto":
        return bool(setting)
    if use_cpu:
        return False
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def job_settings(job: dict[str, Any]):
    """The training settings of a ``job.json`` (its ``hp``, resolved for the run's variant)."""
    from care.train.settings import TrainingSettings

    return TrainingSettings.from_config(job["hp"])


def training_arguments(job: dict[str, Any]):
    """``TrainingArguments`` from the job: every Table 7 hyperparameter comes from config."""
    import dataclasses

    from transformers import TrainingArguments

    # transformers 5.x renamed gradient_checkpointing (a deprecated alias until v6)
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    checkpointing = (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )

    hp = job_settings(job)
    use_cpu = job["device"] == "cpu"
    deepspeed = None
    if hp.deepspeed:
        deepspeed = json.loads(Path(hp.deepspeed).read_text(encoding="utf-8"))
    return TrainingArguments(
        output_dir=job["checkpoint_dir"],
        learning_rate=hp.learning_rate,
        lr_scheduler_type=hp.lr_scheduler_type,
        warmup_steps=float(hp.warmup_ratio),  # a float < 1 is a ratio
        # rows: examples per step over the examples a row holds (care.sft.rows_per_step)
        per_device_train_batch_size=job.get("rows_per_device", hp.per_device_train_batch_size),
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        num_train_epochs=hp.num_train_epochs,
        optim=hp.optim,
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        seed=hp.seed,
        data_seed=hp.seed,
        bf16=resolve_bf16(hp.bf16, use_cpu),
        **{checkpointing: hp.gradient_checkpointing},
        deepspeed=deepspeed,
        use_cpu=use_cpu,
        train_sampling_strategy=hp.sampling,
        save_strategy="epoch",
        save_only_model=False,
        logging_strategy="steps",
        logging_steps=hp.logging_steps,
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def make_trainer(job: dict[str, Any], args, model, tokenizer, dataset):
    from transformers import Trainer

    from care.model.attention import attention_inputs
    from care.train.packing import PackedCollator

    class SFTTrainer(Trainer):
        """Adds tokens/s (non-padding tokens per second since the last log) to each log;
        gives packed rows their block attention mask."""

        _last = None

        def compute_loss(self, model, inputs, *args, **kwargs):
            if "branch_ids" in inputs:
                config = self.model.config
                inputs = attention_inputs(inputs, config._attn_implementation, self.model.dtype)
            return super().compute_loss(model, inputs, *args, **kwargs)

        def log(self, logs, start_time=None):
            now = time.perf_counter()
            seen = self.state.num_input_tokens_seen
            if self._last is not None and "loss" in logs:
                tokens, then = seen - self._last[0], self._last[1]
                logs["tokens_per_second"] = round(tokens / max(now - then, 1e-9), 1)
            self._last = (seen, now)
            super().log(logs, start_time)

    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    settings = job_settings(job)
    collator = PackedCollator if settings.packing == "shared_prefix" else Collator
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=collator(pad_id, settings.answer_logits_only),
        callbacks=[progress_callback()],
    )


def progress_callback():
    """Optimizer steps with rate, ETA and epoch in the job log (the first rank only)."""
    from transformers import TrainerCallback

    from care.progress import bar

    class Progress(TrainerCallback):
        steps = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.steps = bar(total=state.max_steps, initial=state.global_step,
                                 desc="training", unit="step")

        def on_step_end(self, args, state, control, **kwargs):
            if self.steps is not None:
                self.steps.set_postfix_str(f"epoch {state.epoch:.2f}", refresh=False)
                self.steps.update(state.global_step - self.steps.n)

        def on_train_end(self, args, state, control, **kwargs):
            if self.steps is not None:
                self.steps.close()

    return Progress()


def read_examples(path: str | Path) -> list[dict[str, Any]]:
    from care.io import read_jsonl

    return read_jsonl(path)


def lifecycle_callback(job: dict[str, Any], on_epoch_saved=None):
    """The checkpoint lifecycle inside the training loop (see :mod:`care.train.checkpoints`).

    - ``save_steps`` > 0: a resumable checkpoint every that many optimizer steps, besides the
      one at each epoch end (a mid-epoch kill then repeats at most that many steps);
    - ``save_minutes`` > 0: one when that many minutes of training passed since the last save
      (or the start): the overhead of a save stays the same share on any GPU, where a step
      count sized for one GPU saves every few minutes on a faster one;
    - ``rotate``: once a save is complete, the older ``checkpoint-*`` dirs go (the run loop has
      scored and kept the weights of every earlier epoch it still needs);
    - ``pause_at_epoch_end``: training stops after each epoch-end save, so the run loop scores
      that epoch before the next one trains (and the job can resume from there);
    - ``on_epoch_saved(epoch)`` (a one-rank run in the run loop's process) or
      :data:`HANDSHAKE_ENV` (ranks of a launcher the run loop listens to, through marker
      files: :func:`epoch_handshake`): after each epoch-end save the ranks wait while the run
      loop scores that epoch, then train on: no exit, no reload of the backbone or the
      optimizer state.
    """
    from transformers import TrainerCallback

    from care.train import checkpoints

    if on_epoch_saved is None and os.environ.get(HANDSHAKE_ENV):
        on_epoch_saved = epoch_handshake(job)

    save_steps = int(job.get("save_steps") or 0)
    save_seconds = 60.0 * float(job.get("save_minutes") or 0)

    class Lifecycle(TrainerCallback):
        last_save = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.last_save = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            # the epoch end saves by itself (save_strategy="epoch"): no second save there
            if checkpoints.is_epoch_end(state.epoch):
                return control
            if save_steps and state.global_step % save_steps == 0:
                control.should_save = True
            if save_seconds and due(time.monotonic() - self.last_save >= save_seconds, args):
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kwargs):
            self.last_save = time.monotonic()
            if job.get("rotate", True) and state.is_world_process_zero:
                checkpoints.rotate(args.output_dir, keep=f"{checkpoints.PREFIX}{state.global_step}")
            if job.get("pause_at_epoch_end", True) and checkpoints.is_epoch_end(state.epoch):
                control.should_training_stop = True
            elif on_epoch_saved is not None and checkpoints.is_epoch_end(state.epoch):
                with aside():
                    on_epoch_saved(round(state.epoch))
                self.last_save = time.monotonic()  # scoring is not training time
            return control

    return Lifecycle()


#: Set by the launcher for ranks whose epoch-end saves the run loop scores (marker files).
HANDSHAKE_ENV = "CARE_EPOCH_HANDSHAKE"


def handshake_dir(checkpoint_dir: str | Path) -> Path:
    return Path(checkpoint_dir) / "handshake"


def epoch_handshake(job: dict[str, Any]):
    """For ranks in processes of their own: the first announces each epoch-end save
    (``saved-{epoch}``); every rank waits for the run loop's ``scored-{epoch}``."""
    import torch.distributed as dist

    markers = handshake_dir(job["checkpoint_dir"])
    limit = float(job.get("validation_timeout_s", 6 * 3600))

    def wait(epoch: int) -> None:
        if not dist.is_initialized() or dist.get_rank() == 0:
            markers.mkdir(parents=True, exist_ok=True)
            (markers / f"saved-{epoch}").touch()
        started = time.monotonic()
        while not (markers / f"scored-{epoch}").exists():
            if time.monotonic() - started > limit:
                raise RuntimeError(f"epoch {epoch} was not scored within {limit:.0f} s")
            time.sleep(1.0)

    return wait


@contextlib.contextmanager
def aside():
    """Scoring while training waits leaves training as it was: the random number generators
    (data order, dropout) are restored, a model loaded meanwhile is not partitioned by the
    Trainer's global ZeRO-3 config (transformers keeps it in a module global), and the GPU
    memory the allocator caches goes back first (a scoring process shares the GPU)."""
    import gc
    import random

    import numpy as np
    import torch
    from transformers.integrations import deepspeed as hf_deepspeed

    def release() -> None:
        gc.collect()
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    states = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    zero3 = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    release()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        release()
        hf_deepspeed._hf_deepspeed_config_weak_ref = zero3
        random.setstate(states[0])
        np.random.set_state(states[1])


def due(mine: bool, args) -> bool:
    """One decision for every rank (any rank's clock says so): a ZeRO save is collective, so
    ranks that disagreed on saving would wait for each other forever."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return mine
    flag = torch.tensor([int(mine)], device=args.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def run_worker(job: dict[str, Any], on_epoch_saved=None) -> dict[str, Any]:
    """Train (or resume) one fine-tune on this rank; returns the final trainer state.

    ``on_epoch_saved(epoch)``: a one-rank run's in-process scoring of each saved epoch."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from care.model import attention
    from care.model.backbone import check_causal_lm_dir, load_tokenizer
    from care.train import checkpoints

    torch.set_num_threads(max(1, int(job.get("threads", 1))))
    args = training_arguments(job)  # before the model: ZeRO-3 partitions it while loading
    _ = args.device  # sets up the process group ...
    if args.deepspeed:  # ... and DeepSpeed's view of it, so ZeRO-3's init sees every rank
        import deepspeed

        deepspeed.init_distributed()
    check_causal_lm_dir(job["backbone"])
    attention.register()  # the shared_prefix_sdpa attention implementation
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        job["backbone"],
        dtype=dtype,
        local_files_only=True,
        attn_implementation=job_settings(job).attn_implementation,
    )
    model.config.use_cache = False
    tokenizer = load_tokenizer(job["backbone"])
    trainer = make_trainer(job, args, model, tokenizer, read_examples(job["data"]))
    trainer.add_callback(lifecycle_callback(job, on_epoch_saved))
    latest = checkpoints.latest_full_state(job["checkpoint_dir"])
    resume = str(latest.path) if latest else None
    if resume:
        log.info("resuming from %s (step %d, epoch %.3f)", resume, latest.step, latest.epoch)
    try:
        trainer.train(resume_from_checkpoint=resume)
    finally:  # the global ZeRO-3 config would make later model loads in this process shard
        unset_hf_deepspeed_config()
    state = trainer.state
    if trainer.is_world_process_zero():
        write_train_log(Path(job["checkpoint_dir"]) / "train_log.csv", state.log_history)
    return {"global_step": state.global_step, "epoch": state.epoch}


def write_train_log(path: Path, history: list[dict[str, Any]]) -> None:
    """One row per logged training step (the loss entries of the Trainer's log history)."""
    from care.io import atomic_open

    with atomic_open(path) as handle:
        writer = csv.DictWriter(
            handle, fieldnames=LOG_FIELDS, extrasaction="ignore", lineterminator="\n"
        )
        writer.writeheader()
        for entry in history:
            if "loss" in entry:
                writer.writerow({k: entry.get(k, "") for k in LOG_FIELDS})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one rank of a care fine-tune")
    parser.add_argument("--job", required=True, help="job file written by care train run")
    # launchers that pass the rank as an argument (the rank is read from LOCAL_RANK)
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s rank{os.environ.get('RANK', '0')} %(levelname)s %(name)s: %(message)s",
    )
    run_worker(json.loads(Path(args.job).read_text(encoding="utf-8")))
    close_process_group()
    return 0


def close_process_group() -> None:
    """Tear the process group down before the rank exits: gloo's threads left to the
    interpreter's exit can abort a finished rank ("terminate called without an active
    exception", SIGABRT), failing a run whose work is saved."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
