"""Pretraining a tiny backbone (``care train pretrain``): causal LM on unlabeled transcripts.

A real backbone arrives pretrained; a tiny demo one starts from random weights, and a random
model fine-tuned on a few hundred rated sessions learns the ratings' marginal and nothing
else. So a tiny backbone is first trained as a language model on text that no test fold
contains (the unlabeled corpus, and any further unlabeled corpora the config names), each
session rendered as the fine-tuning prompt renders it (chat template, system message,
numbered dialogue, one unit's instruction), so the prompt's words and layout are known
before fine-tuning starts. The loss is on every token; no rating is read.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from care.config import default

log = logging.getLogger("care.train")


PRETRAIN = "backbones.*.pretrain"  # the config section of a tiny backbone's pretraining


@dataclass(frozen=True)
class PretrainSpec:
    """``backbones.<name>.tiny.pretrain``: the corpora and the recipe."""

    sessions: tuple[str, ...] = ()
    epochs: int = default(f"{PRETRAIN}.epochs")
    learning_rate: float = default(f"{PRETRAIN}.learning_rate")
    batch_size: int = default(f"{PRETRAIN}.batch_size")
    warmup_ratio: float = default(f"{PRETRAIN}.warmup_ratio")
    weight_decay: float = default(f"{PRETRAIN}.weight_decay")
    max_length: int = default(f"{PRETRAIN}.max_length")
    seed: int = default(f"{PRETRAIN}.seed")

    @classmethod
    def from_config(cls, section: dict) -> PretrainSpec:
        unknown = sorted(set(section) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown pretraining settings: {unknown}")
        return cls(
            **{**section, **{k: tuple(v) for k, v in section.items() if isinstance(v, list)}}
        )


def prompt_texts(paths: Iterable[str | Path], instrument, tokenizer) -> Iterator[str]:
    """Each session as a fine-tuning prompt (chat template applied), its unit rotating over
    the instrument's items and the two answer formats."""
    from care import prompts
    from care.sessions import iter_sessions

    units = prompts.units(instrument, "item")
    n = 0
    for path in paths:
        for session in iter_sessions(path, instrument):
            dialogue, _ = prompts.session_dialogue(session)
            unit = units[n % len(units)]
            variant = prompts.VARIANTS[n % len(prompts.VARIANTS)]
            messages = prompts.build_messages(
                instrument, unit, variant, session.language, dialogue
            )
            yield tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            n += 1


def pretrain(
    backbone: str | Path, spec: PretrainSpec, instrument, out_dir: str | Path, threads: int = 1
) -> dict:
    """Train ``backbone`` as a causal LM on ``spec.sessions``; save the result to ``out_dir``."""
    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from care.model.backbone import atomic_directory, load_causal_lm, load_tokenizer

    torch.set_num_threads(max(1, threads))
    tokenizer = load_tokenizer(backbone)
    model = load_causal_lm(backbone, dtype=torch.float32)
    texts = list(prompt_texts(spec.sessions, instrument, tokenizer))
    if not texts:
        raise ValueError("pretraining: the corpora named hold no session")
    rows = [
        {"input_ids": tokenizer(t, add_special_tokens=False, truncation=True,
                                max_length=spec.max_length)["input_ids"]}
        for t in texts
    ]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with atomic_directory(out_dir) as tmp:
        args = TrainingArguments(
            output_dir=str(Path(tmp) / "trainer"),
            learning_rate=spec.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=spec.warmup_ratio,
            per_device_train_batch_size=spec.batch_size,
            num_train_epochs=spec.epochs,
            weight_decay=spec.weight_decay,
            seed=spec.seed,
            data_seed=spec.seed,
            use_cpu=not torch.cuda.is_available(),
            save_strategy="no",
            logging_steps=max(1, len(rows) // spec.batch_size),
            report_to=[],
            disable_tqdm=True,
        )
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator)
        result = trainer.train()
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if (Path(tmp) / "trainer").exists():  # the Trainer's scratch dir: not part of the model
            shutil.rmtree(Path(tmp) / "trainer")
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        "sessions": len(rows),
        "tokens": sum(len(r["input_ids"]) for r in rows),
        "steps": result.global_step,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }
