"""Training settings: one frozen object for the ``training`` section of one fine-tune.

The rule passes the section as ``--hp`` (the schema's defaults filled); the command, the
trainer's ranks (through ``job.json``), checkpoint selection and the benchmarks take one
:class:`TrainingSettings`, resolved for the run's variant (``packing`` and ``units_per_row``
may be given per variant). Its defaults are the schema's (:func:`care.config.default`); a
``job.json`` written before the schema held them lacks the keys its config left out, and
:meth:`TrainingSettings.from_config` fills them with the same values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from care.config import default

SECTION = "training"
#: keys that may be given per variant ({rationale: ..., score_only: ...}); a variant the
#: mapping leaves out gets the plain form's default
PER_VARIANT = ("packing", "units_per_row")


def _default(key: str):
    return field(default_factory=lambda: default(f"{SECTION}.{key}"))


@dataclass(frozen=True, kw_only=True)
class ValidationSettings:
    """``training.validation``: scoring each epoch's checkpoint, and choosing among them."""

    max_new_tokens: int | str = _default("validation.max_new_tokens")  # auto: measured
    batch_size: int = _default("validation.batch_size")
    scoring: str = _default("validation.scoring")
    min_parse_rate: float = _default("validation.min_parse_rate")
    max_cut_rate: float = _default("validation.max_cut_rate")
    cut_fallback: bool = _default("validation.cut_fallback")

    def resolved(self, answer_token_limit: int) -> ValidationSettings:
        """``max_new_tokens: auto`` as what the training answers need."""
        if self.max_new_tokens != "auto":
            return self
        return dataclasses.replace(self, max_new_tokens=answer_token_limit)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """What a fine-tune needs of the ``training`` section, for one variant."""

    # the recipe: no default
    learning_rate: float
    per_device_train_batch_size: int
    num_train_epochs: int
    lr_scheduler_type: str = _default("lr_scheduler_type")
    warmup_ratio: float = _default("warmup_ratio")
    gradient_accumulation_steps: int = _default("gradient_accumulation_steps")
    min_steps: int = _default("min_steps")
    optim: str = _default("optim")
    weight_decay: float = _default("weight_decay")
    max_grad_norm: float = _default("max_grad_norm")
    seed: int = _default("seed")
    bf16: str | bool = _default("bf16")
    gradient_checkpointing: bool = _default("gradient_checkpointing")
    deepspeed: str | None = _default("deepspeed")
    answer_logits_only: bool = _default("answer_logits_only")
    packing: str = _default("packing")  # this variant's
    units_per_row: int | None = _default("units_per_row")  # this variant's
    attn_implementation: str = _default("attn_implementation")
    sampling: str = _default("sampling")
    logging_steps: int = _default("logging_steps")
    selection: str = _default("selection")
    inner_val_fraction: float = _default("inner_val_fraction")
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    save_steps: int = _default("save_steps")
    save_minutes: float = _default("save_minutes")
    keep_epoch_weights: bool = _default("keep_epoch_weights")
    cpu_ranks: int = _default("cpu_ranks")
    launcher: str = _default("launcher")

    def __post_init__(self) -> None:
        from care.sft import check_packing

        check_packing(self.packing)

    @classmethod
    def from_config(
        cls, section: Mapping[str, Any], variant: str | None = None
    ) -> TrainingSettings:
        """The settings of ``variant`` from a ``training`` section (``--hp``, or ``job.json``'s
        ``hp``, already resolved): per-variant keys resolved, keys left out at the schema's
        defaults, and the keys that are not the fine-tune's (the job's resources, replicate
        ``seeds``) left out.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in section.items() if k in names}
        for key in PER_VARIANT:
            value = values.get(key, default(f"{SECTION}.{key}"))
            if isinstance(value, Mapping):
                if variant is None:
                    raise ValueError(f"training.{key} is given per variant: name the variant")
                value = value.get(variant, default(f"{SECTION}.{key}"))
            values[key] = value
        validation = ValidationSettings(**values.pop("validation", {}))
        return cls(**values, validation=validation)

    def as_json(self) -> dict[str, Any]:
        """The ``hp`` of ``job.json`` (what the trainer's ranks read back)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainingSettings:
        return dataclasses.replace(self, **changes)
