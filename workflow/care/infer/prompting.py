"""Prompt building: a session's unit prompts, sharing one dialogue cut to one budget.

A *unit* is one prompt: one item, one dimension's items or the whole session
(``granularity``). Every unit of a session uses the same dialogue text (cut once, to the
budget the longest unit leaves), so a session's prompts share the system message and the
dialogue as a common prefix.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from care.infer.settings import InferenceSettings
from care.instrument import Instrument
from care.prompts import (
    build_messages,
    dialogue_budget,
    session_dialogue,
    units,
)
from care.sessions import Session

log = logging.getLogger("care.infer.engine")  # the engine's log, as before


@dataclass(frozen=True)
class UnitPrompt:
    """One prompt to answer: a session's unit of items, as messages and (local models) ids."""

    session_id: str
    language: str
    items: tuple[str, ...]
    messages: list[dict[str, str]]
    ids: list[int] | None
    prompt_tokens: int
    truncated: bool
    key: str = ""


class PromptBuilder:
    """A session's unit prompts, the dialogue cut to the token budget ``max_length`` leaves.

    ``settings`` gives the answer format, the units, ``max_length``, the answer budget and
    the language; ``count_tokens`` counts a text's tokens and ``render`` turns messages into
    prompt ids (the chat template with the generation prompt), or is ``None`` for chat APIs.
    """

    def __init__(
        self,
        instrument: Instrument,
        settings: InferenceSettings,
        count_tokens: Callable[[str], int],
        render: Callable[[list[dict[str, str]]], list[int]] | None,
    ) -> None:
        self.instrument = instrument
        self.variant = settings.variant
        self.units = units(instrument, settings.granularity)
        self.max_length = settings.max_length
        reserve = settings.reserve_tokens
        self.reserve_tokens = settings.max_new_tokens if reserve is None else reserve
        self.count_tokens = count_tokens
        self.render = render
        self.language = settings.language
        self._overhead: dict[str, int] = {}
        self._warned: set[str] = set()

    def overhead(self, language: str) -> int:
        """Prompt tokens besides the dialogue, for the longest unit (same for every session)."""
        if language not in self._overhead:
            sizes = []
            for unit in self.units:
                messages = build_messages(self.instrument, unit, self.variant, language, "")
                sizes.append(
                    len(self.render(messages))
                    if self.render
                    else sum(self.count_tokens(m["content"]) for m in messages)
                )
            self._overhead[language] = max(sizes)
        return self._overhead[language]

    def dialogue_budget(self, language: str) -> int:
        budget = self.max_length - self.reserve_tokens - self.overhead(language)
        if budget < 1 and language not in self._warned:
            self._warned.add(language)
            log.warning(
                "max_length %d leaves no room for the dialogue (%d prompt tokens besides it, "
                "%d for the answer): prompts will exceed it",
                self.max_length,
                self.overhead(language),
                self.reserve_tokens,
            )
        return dialogue_budget(self.max_length, self.overhead(language), self.reserve_tokens)

    def prompts(self, session: Session) -> list[UnitPrompt]:
        language = self.language or session.language
        dialogue, dropped = session_dialogue(
            session, self.dialogue_budget(language), self.count_tokens
        )
        out = []
        for unit in self.units:
            messages = build_messages(self.instrument, unit, self.variant, language, dialogue)
            ids = self.render(messages) if self.render else None
            n_tokens = (
                len(ids)
                if ids is not None
                else sum(self.count_tokens(m["content"]) for m in messages)
            )
            out.append(
                UnitPrompt(session.session_id, language, unit, messages, ids, n_tokens, dropped > 0)
            )
        return out


def approx_tokens(text: str) -> int:
    """A tokenizer-free token estimate for chat APIs (about 4 characters per token)."""
    return max(1, math.ceil(len(text) / 4))
