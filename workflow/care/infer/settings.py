"""Inference settings: one frozen object for everything that shapes a scorer's answers.

Every backend (:mod:`care.infer.hf`, :mod:`care.infer.vllm_backend`, :mod:`care.infer.api`)
and the engine (:class:`care.infer.engine.Scorer`) take one :class:`InferenceSettings`; the
inference stage, the application, ``care score``, checkpoint selection and the benchmark
build it once. :meth:`InferenceSettings.from_config` reads the config's ``inference`` section
(the rules' ``--settings`` JSON): it knows the section's keys from the config schema, refuses
any other key by name, checks the values against the schema and fills its defaults. The
chat API's client settings (endpoint, key, retries) are the client's own
(:meth:`care.llm.openai_chat.OpenAIChat.from_config`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from care.config import JOB_KEYS, default
from care.errors import CareInputError

SCORINGS = ("generated", "expected")
#: generate: free (greedy) generation, label probabilities read where the score was written;
#: label_probs: each item's score prefix is forced and the next-token distribution over the
#: scale labels read there (multiple-choice style: every item is scored, nothing generated).
MODES = ("generate", "label_probs")
#: Keys of the inference section a scorer does not take: the job's (:data:`care.config.JOB_KEYS`)
#: and the command's own ``--backend``.
NOT_SETTINGS = ("backend", *JOB_KEYS)


@dataclass(frozen=True, kw_only=True)
class InferenceSettings:
    """What a scorer needs besides the model, the instrument and the answer cache."""

    # the run's: answer format asked for, prompt units, context window (command line)
    variant: str
    granularity: str
    max_length: int
    # the inference section's (the schema's defaults)
    max_new_tokens: int | str = default("inference.max_new_tokens")  # auto: the tokenizer's
    batch_size: int = default("inference.batch_size")
    language: str | None = default("inference.language")  # None: each session's own
    scoring: str = default("inference.scoring")
    mode: str = default("inference.mode")
    prefix_sharing: bool = default("inference.prefix_sharing")  # hf
    device: str = default("inference.device")  # hf: auto, cpu, cuda
    dtype: str = default("inference.dtype")  # hf, vllm
    top_logprobs: int = default("inference.top_logprobs")  # vllm: label probabilities read
    gpu_memory_utilization: float = default("inference.gpu_memory_utilization")  # vllm
    tensor_parallel_size: int = 1  # vllm: the job's GPUs
    # the answer budget the dialogue leaves room for (None: max_new_tokens); checkpoint
    # selection generates fewer tokens but reserves the inference budget, as training does
    reserve_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise ValueError(f"unknown scoring {self.scoring!r}; expected one of {SCORINGS}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of {MODES}")
        if self.mode == "label_probs" and self.variant != "score_only":
            raise ValueError(
                "mode label_probs forces the score-only answer: ask for it with the "
                "score_only prompt variant (baselines.prompt_variant: score_only)"
            )

    @classmethod
    def from_config(
        cls, section: Mapping[str, Any], *, source: str = "inference settings", **run: Any
    ) -> InferenceSettings:
        """Settings from the config's inference section plus the run's own (``variant``,
        ``granularity``, ``max_length``, ``tensor_parallel_size``).

        A key the section does not know is refused by name (:class:`CareInputError` naming
        ``source``), as is a value the schema refuses; the schema's defaults fill what is
        unset. A per-answer-format ``max_new_tokens`` is resolved for ``variant``.
        """
        schema = section_schema()
        known = schema["properties"]
        unknown = [key for key in section if key not in known]
        if unknown:
            raise CareInputError(
                source,
                f"unknown inference setting {unknown[0]!r} (known: {', '.join(known)})",
                field=unknown[0],
            )
        _check(dict(section), schema, source)
        values = {**_defaults(schema), **section}
        values = {k: v for k, v in values.items() if k not in NOT_SETTINGS}
        values["max_new_tokens"] = answer_budget(values, run.get("variant"))
        try:
            return cls(**values, **run)
        except ValueError as exc:  # a combination the schema cannot refuse
            raise CareInputError(source, str(exc)) from None

    def replace(self, **changes: Any) -> InferenceSettings:
        return dataclasses.replace(self, **changes)

    def torch_device(self) -> str:
        """``device`` with ``auto`` resolved: a GPU when torch sees one."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def answer_budget(section: Mapping[str, Any], variant: str | None) -> int | str:
    """The section's ``max_new_tokens`` for answer format ``variant`` (it may give one per
    format): tokens, or ``auto`` (the default); a format the mapping leaves out is ``auto``."""
    auto = default("inference.max_new_tokens")
    value = section.get("max_new_tokens", auto)
    value = value.get(variant, auto) if isinstance(value, Mapping) else value
    return value if value == "auto" else int(value)


@lru_cache(maxsize=1)
def section_schema() -> dict:
    """The config schema's ``inference`` section, its references resolvable."""
    from care.config import SCHEMA, _schema

    root = _schema(str(SCHEMA))
    return {**root["properties"]["inference"], "$defs": root.get("$defs", {})}


def _defaults(schema: dict) -> dict:
    return {k: sub["default"] for k, sub in schema["properties"].items() if "default" in sub}


def _check(section: dict, schema: dict, source: str) -> None:
    import jsonschema

    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(section))
    if errors:
        err = min(errors, key=lambda e: (len(e.absolute_path), str(e.message)))
        key = ".".join(str(p) for p in err.absolute_path) or None
        raise CareInputError(source, f"invalid inference setting: {err.message}", field=key)
