"""Drafting: one rationale per (session, item), given the dialogue, the item and the real rating.

The paper's model-in-the-loop step (section 4.2): an LLM drafts, an expert edits. The prompt
(``workflow/prompts/draft.{lang}.txt``, system message ``draft_system.{lang}.txt``) holds
the full dialogue (numbered turns, cut in the middle only if ``dialogue_budget`` is set),
the item with its dimension, the client's rating with its scale label, and the instruction
to combine a session-level analysis with the critical turns, cited as (turn N).

Backends: ``openai`` (:class:`~care.llm.openai_chat.OpenAIChat`), ``hf``
(:class:`~care.llm.hf_chat.HFChat`) and ``extractive`` (no LLM,
:class:`~care.rationales.extractive.ExtractiveDrafter`). LLM answers are cached on disk, so an
interrupted or repeated drafting run sends only the requests not yet answered.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from care.config import default
from care.instrument import Instrument
from care.prompts import (
    PromptTemplates,
    instrument_slots,
    items_text,
    scale_text,
    session_dialogue,
)
from care.sessions import Session

log = logging.getLogger(__name__)

BACKENDS = ("extractive", "openai", "hf")
DRAFT_FIELDS = ("session_id", "item_id", "dimension", "rating", "draft", "backend", "model")


def format_rating(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def drafting_messages(
    instrument: Instrument,
    session: Session,
    item_id: str,
    dialogue: str,
    templates: PromptTemplates | None = None,
) -> list[dict[str, str]]:
    """System + user messages asking for the rationale of the client's rating of one item."""
    templates = templates or PromptTemplates()
    lang = session.language
    rating = session.client_ratings[item_id]
    point = round(rating)
    label = instrument.scale_label(point, lang) if point in instrument.scale_points else ""
    user = templates.load("draft", lang).safe_substitute(
        instrument_slots(instrument, lang),
        dialogue=dialogue,
        instrument=instrument.name,
        scale=scale_text(instrument, lang),
        items=items_text(instrument, [item_id], lang),
        rating=format_rating(rating),
        rating_label=label,
    )
    system = templates.load("draft_system", lang).safe_substitute(
        instrument_slots(instrument, lang)
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


_LABEL = re.compile(r"^\s*\**\s*(?:rationale|理由|解释)\s*\**\s*[:：]\s*\**\s*", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # never valid in a draft
_SCORE_LINE = re.compile(r"\n\s*(?:\*\*)?(?:score|rating|评分|得分)\s*[:：].*", re.I | re.S)


def clean_draft(text: str) -> str:
    """One paragraph: no echoed ``Rationale:`` label, no score line, no control characters."""
    text = _CONTROL.sub("", text)
    text = _SCORE_LINE.sub("", text.strip())
    text = _LABEL.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def make_backend(name: str, spec: dict[str, Any], cache_dir: str | Path) -> Any:
    """The chat backend ``name`` built from its config section (None for ``extractive``)."""
    if name == "openai":
        from care.llm.openai_chat import OpenAIChat

        return OpenAIChat.from_config(spec, section="rationales.openai", cache_dir=cache_dir)
    if name == "hf":
        from care.llm.hf_chat import HFChat

        if not spec.get("path"):
            raise ValueError("the hf drafting backend needs `rationales.hf.path`")
        return HFChat(
            spec["path"],
            batch_size=spec.get("batch_size", default("rationales.hf.batch_size")),
            cache_dir=cache_dir,
            dtype=spec.get("dtype", default("rationales.hf.dtype")),
        )
    if name == "extractive":
        return None
    raise ValueError(f"unknown drafting backend {name!r}; expected one of {BACKENDS}")


def draft_rationales(
    sessions: Sequence[Session],
    instrument: Instrument,
    backend: str,
    spec: dict[str, Any],
    *,
    cache_dir: str | Path,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    dialogue_budget: int | None = None,
    templates: PromptTemplates | None = None,
) -> list[dict[str, Any]]:
    """Draft records (``DRAFT_FIELDS``), sorted by session id then the instrument's item order."""
    ordered = sorted(sessions, key=lambda s: s.session_id)
    pairs = [(s, i) for s in ordered for i in instrument.item_ids]
    if backend == "extractive":
        texts, model = _extractive(pairs, instrument, spec)
    else:
        chat = make_backend(backend, spec, cache_dir)
        model = chat.model_name
        texts = _chat(
            chat, pairs, instrument, max_new_tokens, temperature, dialogue_budget, templates
        )
        stats = chat.stats
        log.info(
            "drafting: %d drafts, %d requests made, %d answered from the cache, %d retries",
            len(pairs),
            stats["calls"],
            stats["cache_hits"],
            stats["retries"],
        )
    empty = sum(1 for t in texts if not t)
    if empty:
        log.warning("%d drafts are empty; the expert must write those rationales", empty)
    return [
        {
            "session_id": s.session_id,
            "item_id": i,
            "dimension": instrument.dimension_of(i),
            "rating": float(s.client_ratings[i]),
            "draft": text,
            "backend": backend,
            "model": model,
        }
        for (s, i), text in zip(pairs, texts, strict=True)
    ]


def _extractive(pairs, instrument: Instrument, spec: dict[str, Any]) -> tuple[list[str], str]:
    from care.rationales.extractive import ExtractiveDrafter

    max_turns = spec.get("max_turns", default("rationales.extractive.max_turns"))
    drafter = ExtractiveDrafter(instrument, max_turns=int(max_turns))
    from care.progress import bar

    texts = [drafter.draft(s, i, s.client_ratings[i])
             for s, i in bar(pairs, desc="drafting", unit="draft")]
    log.info("drafting: %d extractive drafts (no model calls)", len(texts))
    return texts, f"extractive(max_turns={drafter.max_turns})"


def _chat(chat, pairs, instrument, max_new_tokens, temperature, budget, templates) -> list[str]:
    dialogues: dict[str, str] = {}
    requests = []
    for s, i in pairs:
        if s.session_id not in dialogues:
            text, dropped = session_dialogue(s, budget, chat.count_tokens)
            if dropped:
                log.info("%s: %d middle turns cut to fit %d tokens", s.session_id, dropped, budget)
            dialogues[s.session_id] = text
        requests.append(drafting_messages(instrument, s, i, dialogues[s.session_id], templates))
    answers = chat.complete_many(requests, max_tokens=max_new_tokens, temperature=temperature)
    return [clean_draft(a) for a in answers]
