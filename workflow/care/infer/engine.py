"""The scorer: the backend-independent loop of inference.

A backend turns a group of sessions' unit prompts (:mod:`care.infer.prompting`) into
:class:`~care.infer.labels.Generation` s; the scorer caches each unit's answer
(:mod:`care.infer.answers`, keyed by the model's fingerprint, the decoding and the exact
prompt), reads the label distributions (:mod:`care.infer.labels`), parses the answers and
yields one prediction row per (session, item).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from care.infer.answers import AnswerCache, UnitAnswer, prompt_key
from care.infer.decoding import Decoding
from care.infer.labels import (
    Generation,
    argmax_score,
    expected_score,
    label_distribution,
    read_probs,
)
from care.infer.prompting import PromptBuilder, UnitPrompt
from care.infer.settings import InferenceSettings
from care.instrument import Instrument
from care.prompts import (
    format_target,
    parse_output,
    score_offsets,
    units,
)
from care.sessions import Session

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- scorer


class Scorer:
    """Scores sessions unit by unit; backends implement :meth:`generate_group`.

    ``settings`` (:class:`~care.infer.settings.InferenceSettings`) says how; only the answer
    budget changes after construction (:meth:`set_max_new_tokens`: ``auto`` is resolved once
    the tokenizer is loaded, and ``label_probs`` decodes one step at a time).
    """

    backend = "base"

    def __init__(
        self,
        settings: InferenceSettings,
        *,
        instrument: Instrument,
        cache: AnswerCache | str | Path | None = None,
        fingerprint: str = "",
    ) -> None:
        if not isinstance(settings.max_new_tokens, int):
            raise ValueError(
                f"max_new_tokens {settings.max_new_tokens!r}: resolve it to a number before "
                "the scorer is built (care.infer.budget.auto_budget resolves auto)"
            )
        self.settings = settings
        self.instrument = instrument
        self.decoding = Decoding(settings.max_new_tokens)
        self.cache = AnswerCache(cache) if isinstance(cache, (str, Path)) else cache
        self.fingerprint = fingerprint
        self.units = units(instrument, settings.granularity)
        self.builder = self.prompt_builder()
        self.stats = {
            "units": 0,
            "cached": 0,
            "generated": 0,
            "sessions": 0,
            "answers_cut": 0,  # stopped at max_new_tokens (cached answers included)
            "truncated_sessions": 0,  # dialogue cut to fit max_length
        }

    @property
    def max_new_tokens(self) -> int:
        return self.settings.max_new_tokens

    @property
    def batch_size(self) -> int:
        return max(1, self.settings.batch_size)

    def set_max_new_tokens(self, value: int) -> None:
        """Change the answer budget (``auto`` is resolved once the tokenizer is loaded)."""
        self.settings = self.settings.replace(max_new_tokens=int(value))
        self.decoding = Decoding(self.max_new_tokens)
        self.builder = self.prompt_builder()

    def prompt_builder(self) -> PromptBuilder:
        return PromptBuilder(self.instrument, self.settings, self.count_tokens, self.render)

    # Backends with a local tokenizer (``self.tokenizer``) share these two; the API backend
    # overrides them (it has no tokenizer and sends messages, not token ids).
    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # backends override this

    def generate_group(self, prompts: list[list[UnitPrompt]]) -> list[list[Generation]]:
        """Answer the unit prompts of a group of sessions (one list per session)."""
        raise NotImplementedError

    def sessions_per_group(self) -> int:
        return max(1, self.batch_size // len(self.units))

    def decoding_fingerprint(self) -> str:
        forced = {"mode": self.settings.mode} if self.settings.mode != "generate" else {}
        return json.dumps(
            {
                "backend": self.backend,
                "model": self.fingerprint,
                "decoding": self.decoding.record(),
                **forced,
            },
            sort_keys=True,
        )

    # ------------------------------------------------------------------ label_probs mode
    def forced_answers(self, prompts: list[list[UnitPrompt]]) -> dict[str, UnitAnswer]:
        """Answers read from the label distribution at each item's forced score position.

        The prompt is followed by the answer as training tokenizes it, up to the item's
        score (``Score: ``); one decoding step reads the scale labels' probabilities. In a
        multi-item unit, item ``k`` follows the earlier items answered with their most
        probable label (what constrained greedy decoding would write). The answer text is
        that constrained answer, so its parsed score is the argmax.
        """
        points = self.instrument.scale_points
        chosen = {p.key: {} for session in prompts for p in session}
        probs = {p.key: {} for session in prompts for p in session}
        for r in range(max(len(p.items) for session in prompts for p in session)):
            todo = [[p for p in session if r < len(p.items)] for session in prompts]
            todo = [session for session in todo if session]
            forced = [[self.forced_prompt(p, chosen[p.key], r) for p in s] for s in todo]
            saved = self.max_new_tokens
            self.set_max_new_tokens(1)  # one step: the distribution at the forced position
            try:
                gens = self.generate_group(forced)
            finally:
                self.set_max_new_tokens(saved)
            for session, session_gens in zip(todo, gens, strict=True):
                for p, gen in zip(session, session_gens, strict=True):
                    if not gen.label_logprobs:
                        raise RuntimeError(f"the {self.backend} backend gave no label logprobs")
                    dist = label_distribution(gen.label_logprobs[0])
                    probs[p.key][p.items[r]] = dist
                    chosen[p.key][p.items[r]] = argmax_score(dist, points)
        return {
            p.key: UnitAnswer(
                format_target(p.items, chosen[p.key], None, "score_only", p.language),
                probs[p.key],
            )
            for session in prompts
            for p in session
        }

    def forced_prompt(self, prompt: UnitPrompt, chosen: dict, r: int) -> UnitPrompt:
        """``prompt`` with the answer appended up to the score of its item ``r``."""
        if prompt.ids is None:
            raise ValueError("mode label_probs needs a local model (backend hf or vllm)")
        filler = {i: chosen.get(i, self.instrument.scale_points[0]) for i in prompt.items}
        text = format_target(prompt.items, filler, None, "score_only", prompt.language)
        cut = score_offsets(text, prompt.items)[prompt.items[r]]
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        # the answer's own tokens before the one that holds the label (as in training)
        keep = 0
        while keep < len(ids) and len(self.tokenizer.decode(ids[: keep + 1])) <= cut:
            keep += 1
        return replace(prompt, ids=prompt.ids + ids[:keep])

    # ------------------------------------------------------------------ driving
    def answer(self, sessions: Sequence[Session]) -> list[list[tuple[UnitPrompt, UnitAnswer]]]:
        """Answers for every unit of ``sessions``: from the cache, else generated."""
        fp = self.decoding_fingerprint()
        prompts = [
            [_with_key(p, prompt_key(fp, p)) for p in self.builder.prompts(s)] for s in sessions
        ]
        keys = [p.key for session in prompts for p in session]
        found = self.cache.get_many(keys) if self.cache else {}
        todo = [[p for p in session if p.key not in found] for session in prompts]
        todo = [session for session in todo if session]
        fresh: dict[str, UnitAnswer] = {}
        if todo and self.settings.mode == "label_probs":
            fresh = self.forced_answers(todo)
        elif todo:
            for session, gens in zip(todo, self.generate_group(todo), strict=True):
                for p, gen in zip(session, gens, strict=True):
                    fresh[p.key] = UnitAnswer(
                        gen.text, read_probs(gen, p.items), gen.hit_limit, gen.n_generated
                    )
        if fresh and self.cache:
            self.cache.put_many(fresh)
        self.stats["units"] += len(keys)
        self.stats["cached"] += len(keys) - len(fresh)
        self.stats["generated"] += len(fresh)
        answers = {**found, **fresh}
        self.stats["sessions"] += len(prompts)
        self.stats["answers_cut"] += sum(answers[k].hit_limit for k in keys)
        self.stats["truncated_sessions"] += sum(any(p.truncated for p in s) for s in prompts)
        return [[(p, answers[p.key]) for p in session] for session in prompts]

    def warn_truncation(self) -> None:
        """Warn when more than a small share of answers or dialogues were cut."""
        from care.sft import TRUNCATION_WARN_SHARE

        units, sessions = self.stats["units"], self.stats["sessions"]
        if units and self.stats["answers_cut"] / units > TRUNCATION_WARN_SHARE:
            log.warning(
                "%d of %d answers (%.0f%%) stopped at max_new_tokens %d: raise it (or use "
                "auto, what the training answers need)",
                self.stats["answers_cut"], units, 100 * self.stats["answers_cut"] / units,
                self.max_new_tokens,
            )
        if sessions and self.stats["truncated_sessions"] / sessions > TRUNCATION_WARN_SHARE:
            log.warning(
                "%d of %d sessions (%.0f%%) lost dialogue turns to max_length %d",
                self.stats["truncated_sessions"], sessions,
                100 * self.stats["truncated_sessions"] / sessions, self.settings.max_length,
            )

    def score(
        self,
        sessions: Iterable[Session],
        *,
        model: str | None = None,
        variant: str | None = None,
        fold: int | None = None,
    ) -> Iterator[dict]:
        """One prediction row per (session, item), in session order then item order."""
        from care.progress import bar

        sessions = list(sessions)
        group: list[Session] = []
        with bar(total=len(sessions), desc=f"scoring {model or ''}".strip(),
                 unit="session") as shown:
            for session in sessions:
                group.append(session)
                if len(group) == self.sessions_per_group():
                    yield from self._rows(group, model, variant, fold)
                    shown.update(len(group))
                    group = []
            if group:
                yield from self._rows(group, model, variant, fold)
                shown.update(len(group))
        self.warn_truncation()

    def _rows(self, sessions, model, variant, fold) -> Iterator[dict]:
        for session, answered in zip(sessions, self.answer(sessions), strict=True):
            by_item = {}
            for prompt, ans in answered:
                parsed = parse_output(ans.text, prompt.items, self.instrument)
                for item in prompt.items:
                    by_item[item] = self.row(session, prompt, ans, item, parsed[item])
            for item in self.instrument.item_ids:
                row = by_item[item]
                row.update(model=model, variant=variant or self.settings.variant, fold=fold)
                yield row

    def row(self, session: Session, prompt: UnitPrompt, ans: UnitAnswer, item, parsed) -> dict:
        points = self.instrument.scale_points
        probs = ans.probs.get(item)
        generated = parsed.score if parsed.ok else math.nan
        expected = expected_score(probs, points) if probs else math.nan
        error = parsed.error
        if error and ans.hit_limit:
            error += " (generation stopped at max_new_tokens)"
        return {
            "session_id": session.session_id,
            "client_id": session.client_id,
            "item_id": item,
            "dimension": self.instrument.dimension_of(item),
            "score": generated if self.settings.scoring == "generated" else expected,
            "score_generated": generated,
            "score_expected": expected,
            "score_argmax": argmax_score(probs, points) if probs else math.nan,
            "probs": list(probs) if probs else None,
            "rationale": parsed.rationale if self.settings.variant != "score_only" else None,
            "raw_text": ans.text,
            "parsed": bool(parsed.ok),
            "parse_error": error,
            "prompt_tokens": prompt.prompt_tokens,
            "truncated": prompt.truncated,
            "answer_cut": ans.hit_limit,  # stopped at max_new_tokens (not in the parquet)
            "client_score": (session.client_ratings or {}).get(item, math.nan),
        }


def _with_key(prompt: UnitPrompt, key: str) -> UnitPrompt:
    return UnitPrompt(
        prompt.session_id,
        prompt.language,
        prompt.items,
        prompt.messages,
        prompt.ids,
        prompt.prompt_tokens,
        prompt.truncated,
        key,
    )
