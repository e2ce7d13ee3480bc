"""The backend-independent part of inference: prompts, the answer cache, prediction rows.

A *unit* is one prompt: one item, one dimension's items or the whole session
(``granularity``). Every unit of a session uses the same dialogue text (cut once, to the
budget the longest unit leaves), so a session's prompts share the system message and the
dialogue as a common prefix. A backend turns a group of sessions' unit prompts into
:class:`UnitAnswer`s; this module caches them per unit (keyed by the model's fingerprint and
the exact prompt), parses them and yields one prediction row per (session, item).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from care.infer.decoding import Decoding
from care.instrument import Instrument
from care.prompts import (
    build_messages,
    dialogue_budget,
    format_target,
    parse_output,
    score_offsets,
    score_prefix,
    session_dialogue,
    units,
)
from care.sessions import Session

log = logging.getLogger(__name__)

SCORINGS = ("generated", "expected")
#: generate: free (greedy) generation, label probabilities read where the score was written;
#: label_probs: each item's score prefix is forced and the next-token distribution over the
#: scale labels read there (multiple-choice style: every item is scored, nothing generated).
MODES = ("generate", "label_probs")


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


@dataclass(frozen=True)
class UnitAnswer:
    """A model's answer to one unit: text, the label distribution at each item's score."""

    text: str
    probs: dict[str, list[float]] = field(default_factory=dict)
    hit_limit: bool = False
    n_generated: int = 0


@dataclass
class Generation:
    """A backend's raw output for one prompt, before the score distribution is read.

    ``label_logprobs[j]`` holds, for generated token ``j``, the log-probability of each
    scale label (summed over the label's token spellings); ``char_end(j)`` is the length of
    the text decoded from tokens ``0..j``. Either may be ``None`` (an API without logprobs).
    """

    text: str
    n_generated: int
    hit_limit: bool
    label_logprobs: Sequence[Sequence[float]] | None = None
    char_end: Callable[[int], int] | None = None


# --------------------------------------------------------------------------- labels


def label_distribution(logprobs: Sequence[float]) -> list[float]:
    """Renormalise label log-probabilities into a distribution over the scale points."""
    top = max(logprobs)
    if top == -math.inf:
        return [1.0 / len(logprobs)] * len(logprobs)
    weights = [math.exp(v - top) for v in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def expected_score(probs: Sequence[float], points: Sequence[int]) -> float:
    return float(sum(p * v for p, v in zip(probs, points, strict=True)))


def argmax_score(probs: Sequence[float], points: Sequence[int]) -> float:
    return float(points[max(range(len(probs)), key=lambda k: (probs[k], -k))])


def token_at(char_end: Callable[[int], int], n_tokens: int, offset: int) -> int | None:
    """Index of the generated token whose text covers character ``offset`` (binary search)."""
    lo, hi = 0, n_tokens
    while lo < hi:
        mid = (lo + hi) // 2
        if char_end(mid) > offset:
            hi = mid
        else:
            lo = mid + 1
    return lo if lo < n_tokens else None


def read_probs(gen: Generation, items: Sequence[str]) -> dict[str, list[float]]:
    """Each item's distribution over the scale labels at the token of its parsed score.

    The token must start at the score's first digit or with only whitespace before it
    (``" 4"`` after ``"Score:"``); a token that merges the label into other text
    (``": 4"``) gives no clean distribution and the item gets none.
    """
    if gen.label_logprobs is None or gen.char_end is None:
        return {}
    out = {}
    for item, offset in score_offsets(gen.text, items).items():
        j = token_at(gen.char_end, gen.n_generated, offset)
        if j is None or j >= len(gen.label_logprobs):
            continue
        start = gen.char_end(j - 1) if j > 0 else 0
        if gen.text[start:offset].strip():
            continue
        out[item] = label_distribution(gen.label_logprobs[j])
    return out


def label_token_ids(tokenizer, points: Sequence[int], languages: Iterable[str]) -> list[list[int]]:
    """Token ids that spell each scale label right after the score prefix.

    A label can be its own token (``"4"``) or carry the preceding space (``" 4"``); the id
    is found by tokenizing ``prefix + label`` and taking the last token when it decodes to
    the label, plus the label's bare and space-prefixed single-token spellings.
    """
    found: list[list[int]] = []
    for p in points:
        label = str(p)
        ids: set[int] = set()
        candidates = [label, " " + label] + [score_prefix(lang) + label for lang in languages]
        for text in candidates:
            enc = tokenizer(text, add_special_tokens=False)["input_ids"]
            if enc and tokenizer.decode([enc[-1]]).strip() == label:
                ids.add(enc[-1])
        if not ids:
            raise ValueError(f"the tokenizer has no token for the scale label {label!r}")
        found.append(sorted(ids))
    return found


# --------------------------------------------------------------------------- prompts


class PromptBuilder:
    """A session's unit prompts, the dialogue cut to the token budget ``max_length`` leaves.

    ``count_tokens`` counts a text's tokens and ``render`` turns messages into prompt ids
    (the chat template with the generation prompt), or is ``None`` for chat APIs.
    """

    def __init__(
        self,
        instrument: Instrument,
        variant: str,
        granularity: str,
        max_length: int,
        max_new_tokens: int,
        count_tokens: Callable[[str], int],
        render: Callable[[list[dict[str, str]]], list[int]] | None,
        language: str | None = None,
    ) -> None:
        self.instrument = instrument
        self.variant = variant
        self.units = units(instrument, granularity)
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        # the answer budget the dialogue leaves room for; validation generates fewer tokens
        # but reserves the inference budget (care.train.select), as training does
        self.reserve_tokens = max_new_tokens
        self.count_tokens = count_tokens
        self.render = render
        self.language = language
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


# --------------------------------------------------------------------------- cache


class AnswerCache:
    """Answers per unit in SQLite, so an interrupted run resumes where it stopped.

    The key hashes the model's fingerprint, the decoding settings and the exact prompt, so
    a retrained model or an edited prompt never reads a stale answer.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=120)
        self.db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT)")
        self.db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, UnitAnswer]:
        out = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for key, value in self.db.execute(
                f"SELECT key, value FROM answers WHERE key IN ({marks})", chunk
            ):
                out[key] = UnitAnswer(**json.loads(value))
        return out

    def put_many(self, answers: dict[str, UnitAnswer]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO answers VALUES (?, ?)",
            [(k, json.dumps(asdict(a), ensure_ascii=False)) for k, a in answers.items()],
        )
        self.db.commit()

    def close(self) -> None:
        self.db.close()


def prompt_key(fingerprint: str, prompt: UnitPrompt) -> str:
    payload = json.dumps(
        [fingerprint, prompt.items, prompt.messages, prompt.ids], ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- scorer


class Scorer:
    """Scores sessions unit by unit; backends implement :meth:`generate_group`."""

    backend = "base"

    def __init__(
        self,
        *,
        instrument: Instrument,
        variant: str,
        granularity: str,
        max_length: int,
        max_new_tokens: int,
        batch_size: int,
        language: str | None = None,
        scoring: str = "generated",
        cache: AnswerCache | str | Path | None = None,
        fingerprint: str = "",
        mode: str = "generate",
    ) -> None:
        if scoring not in SCORINGS:
            raise ValueError(f"unknown scoring {scoring!r}; expected one of {SCORINGS}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        if mode == "label_probs" and variant != "score_only":
            raise ValueError(
                "mode label_probs forces the score-only answer: ask for it with the "
                "score_only prompt variant (baselines.prompt_variant: score_only)"
            )
        self.mode = mode
        self.instrument = instrument
        self.variant = variant
        self.granularity = granularity
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        self.decoding = Decoding(max_new_tokens)
        self.batch_size = max(1, batch_size)
        self.language = language
        self.scoring = scoring
        self.cache = AnswerCache(cache) if isinstance(cache, (str, Path)) else cache
        self.fingerprint = fingerprint
        self.units = units(instrument, granularity)
        self.builder = self.prompt_builder()
        self.stats = {
            "units": 0,
            "cached": 0,
            "generated": 0,
            "sessions": 0,
            "answers_cut": 0,  # stopped at max_new_tokens (cached answers included)
            "truncated_sessions": 0,  # dialogue cut to fit max_length
        }

    def set_max_new_tokens(self, value: int) -> None:
        """Change the answer budget (``auto`` is resolved once the tokenizer is loaded)."""
        self.max_new_tokens = int(value)
        self.decoding = Decoding(self.max_new_tokens)
        self.builder = self.prompt_builder()

    def prompt_builder(self) -> PromptBuilder:
        return PromptBuilder(
            self.instrument,
            self.variant,
            self.granularity,
            self.max_length,
            self.max_new_tokens,
            self.count_tokens,
            self.render,
            self.language,
        )

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
        forced = {"mode": self.mode} if self.mode != "generate" else {}
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
        if todo and self.mode == "label_probs":
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
                100 * self.stats["truncated_sessions"] / sessions, self.max_length,
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
        group: list[Session] = []
        for session in sessions:
            group.append(session)
            if len(group) == self.sessions_per_group():
                yield from self._rows(group, model, variant, fold)
                group = []
        if group:
            yield from self._rows(group, model, variant, fold)
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
                row.update(model=model, variant=variant or self.variant, fold=fold)
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
            "score": generated if self.scoring == "generated" else expected,
            "score_generated": generated,
            "score_expected": expected,
            "score_argmax": argmax_score(probs, points) if probs else math.nan,
            "probs": list(probs) if probs else None,
            "rationale": parsed.rationale if self.variant != "score_only" else None,
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
