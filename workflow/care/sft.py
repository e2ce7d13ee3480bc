"""Supervised fine-tuning examples: one per (session, unit), rendered with the chat template.

A unit is one item, one dimension's items or the whole session (``granularity``; see
:func:`care.prompts.units`). The prompt is :func:`care.prompts.build_messages` (system
message, then the dialogue, the instruction and the answer format, and last the item(s):
everything before the item is shared by a session's examples) and the target is
:func:`care.prompts.format_target`: the rationale then the score (``rationale``) or the
score alone (``score_only``), the same format inference parses.

Rendering: the prompt is the chat template with the generation prompt (exactly what
inference feeds the model); the answer is what the template adds for the assistant's turn.
Both are tokenized separately and concatenated, so training sees the very prompt tokens
inference will. Labels are -100 everywhere except the answer up to and including its
end-of-turn token (``<|eot_id|>`` / ``<|im_end|>``); what a template writes after it (Qwen2's
newline) carries no label.

Truncation policy: the dialogue is cut once per session (every unit of a session shares it,
as at inference) to the budget ``max_length`` leaves after the longest unit's prompt
overhead and answer, dropping whole turns from the middle (keeping the opening and the
closing; :func:`care.prompts.fit_dialogue`). Cut sessions and dropped turns are counted; an
example that still does not fit is left out and counted.

Packing (``training.packing: shared_prefix``, :func:`pack_shared_prefix`): a session's
examples share their prompt up to the unit's question (system message and dialogue), so they
are packed into one training row holding that prefix once and each example's remainder (its
question, answer and end-of-turn) as a *branch*: ``[prefix][branch 1][branch 2]...``. The
trainer (:mod:`care.train.packing`) lets each branch attend to the prefix and to itself only
and restarts its position ids where the prefix ends, so every answer token sees exactly the
context and positions of its unpacked example: the same loss, for far fewer tokens.
``training.units_per_row`` caps the branches of a row: a session's units are then dealt into
several rows (a seeded shuffle per session), so a batch of rows spans more sessions (more
varied gradients per step) at the price of repeating the prefix once per row.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from care import prompts
from care.errors import CareInputError
from care.instrument import Instrument
from care.sessions import Session

IGNORE = -100
SELECTIONS = ("inner_split", "heldout_fold")
PACKINGS = ("none", "shared_prefix")
#: ``max_new_tokens: auto``: the longest training answer times this, plus this many tokens.
ANSWER_MARGIN = (1.25, 8)
#: Above this share of cut answers (or of sessions whose dialogue lost turns) the log warns.
TRUNCATION_WARN_SHARE = 0.01


def answer_token_limit(answer_tokens: Iterable[int]) -> int:
    """The answer budget (``max_new_tokens``) that fits every training answer with a margin.

    ``answer_tokens`` are the training answers' lengths in the model's tokens (labelled
    tokens: the answer and its end-of-turn token), so a fine-tuned model that answers as
    it was taught is never cut; the margin covers a somewhat longer rationale.
    """
    factor, extra = ANSWER_MARGIN
    longest = max(answer_tokens, default=0)
    return math.ceil(longest * factor) + extra


def target_token_lengths(count_tokens, instrument, sessions, rationales, variant, granularity):
    """The training answers' lengths (:func:`care.prompts.format_target`, + end of turn) in a
    model's tokens, for a model not fine-tuned here (a zero-shot baseline's ``auto``)."""
    out = []
    for s in sessions:
        if not s.client_ratings:
            continue
        for unit in prompts.units(instrument, granularity):
            texts = {i: rationales[(s.session_id, i)] for i in unit} if rationales else None
            target = prompts.format_target(unit, s.client_ratings, texts, variant, s.language)
            out.append(count_tokens(target) + 1)
    return out


@dataclass(frozen=True)
class Row:
    """A training row: token ids and labels for some of one session's items."""

    session_id: str
    items: tuple[str, ...]
    input_ids: list[int]
    labels: list[int]

    @property
    def n_examples(self) -> int:
        """How many (session, unit) examples the row holds."""
        return 1

    def to_record(self) -> dict:
        """The row as the JSON-lines record the trainer reads (tuples become lists)."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in vars(self).items()
            if name not in self.internal_fields
        }

    internal_fields = ()


@dataclass(frozen=True)
class Example(Row):
    """One (session, unit) example; ``prompt_tokens`` ids precede the answer."""

    prompt_tokens: int

    internal_fields = ("prompt_tokens",)


@dataclass
class SFTStats:
    """Counts of a built example set (reported in ``selection.json``)."""

    sessions: int = 0
    examples: int = 0
    truncated_sessions: int = 0
    dropped_turns: int = 0
    dropped_examples: int = 0
    tokens: int = 0
    answer_tokens: int = 0
    max_tokens: int = 0
    packed_rows: int = 0
    packed_tokens: int = 0
    packed_max_tokens: int = 0
    max_answer_tokens: int = 0
    lengths: list[int] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        mean = self.tokens / self.examples if self.examples else 0.0
        return {
            "sessions": self.sessions,
            "examples": self.examples,
            "truncated_sessions": self.truncated_sessions,
            "dropped_turns": self.dropped_turns,
            "dropped_examples": self.dropped_examples,
            "tokens": self.tokens,
            "answer_tokens": self.answer_tokens,
            "mean_tokens": round(mean, 2),
            "max_tokens": self.max_tokens,
            # training rows and the tokens one epoch processes (= examples/tokens unpacked)
            "rows": self.packed_rows or self.examples,
            "row_tokens": self.packed_tokens or self.tokens,
            "max_row_tokens": self.packed_max_tokens or self.max_tokens,
            "max_answer_tokens": self.max_answer_tokens,
            "answer_token_limit": answer_token_limit([self.max_answer_tokens]),
        }

    def warn_truncation(self, log, what: str) -> None:
        """Warn when more than a small share of sessions or examples lost something."""
        share = self.truncated_sessions / self.sessions if self.sessions else 0.0
        if share > TRUNCATION_WARN_SHARE:
            log.warning(
                "%s: %d of %d sessions (%.0f%%) lost %d dialogue turns to max_length",
                what, self.truncated_sessions, self.sessions, 100 * share, self.dropped_turns,
            )
        if self.dropped_examples:
            log.warning(
                "%s: %d examples do not fit max_length even with the dialogue cut: left out",
                what, self.dropped_examples,
            )


class ExampleBuilder:
    """Renders a session's training examples for one tokenizer, variant and granularity."""

    def __init__(
        self,
        tokenizer,
        instrument: Instrument,
        *,
        variant: str,
        granularity: str,
        max_length: int,
        end_of_turn: Sequence[int],
        answer_tokens: int | str | None = None,
    ) -> None:
        if variant not in prompts.VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {prompts.VARIANTS}")
        self.tokenizer = tokenizer
        self.instrument = instrument
        self.variant = variant
        self.units = prompts.units(instrument, granularity)
        self.max_length = max_length
        # the inference answer budget (max_new_tokens of the variant): the dialogue is cut as
        # at inference. "auto": the budget inference derives from these training answers
        # (answer_token_limit), resolved by build_examples; None: the longest target of the
        # session (older behaviour)
        self.answer_tokens = answer_tokens
        self.end_of_turn = set(end_of_turn)
        if not self.end_of_turn:
            raise ValueError("the tokenizer and model define no end-of-turn token")
        self._overhead: dict[str, int] = {}

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render(self, messages: list[dict], answer: str) -> tuple[list[int], list[int]]:
        """(prompt ids, answer ids) of a conversation, as the chat template renders it."""
        prompt = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        full = self.tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": answer}], tokenize=False
        )
        if not full.startswith(prompt):
            raise ValueError(
                "the chat template renders the assistant's turn so that the "
                "conversation does not extend the generation prompt"
            )
        return self.encode(prompt), self.encode(full[len(prompt) :])

    def overhead(self, language: str) -> int:
        """Prompt tokens besides the dialogue for the longest unit (as at inference)."""
        if language not in self._overhead:
            self._overhead[language] = max(
                len(
                    self.render(
                        prompts.build_messages(self.instrument, unit, self.variant, language, ""),
                        "",
                    )[0]
                )
                for unit in self.units
            )
        return self._overhead[language]

    def targets(self, session: Session, rationales: dict | None) -> list[str]:
        scores = session.client_ratings or {}
        out = []
        for unit in self.units:
            if self.variant == "rationale":
                missing = [i for i in unit if (session.session_id, i) not in (rationales or {})]
                if missing:
                    raise CareInputError(
                        "rationales",
                        f"no rationale for session {session.session_id!r} item {missing[0]!r}",
                        field="final",
                    )
            out.append(
                prompts.format_target(
                    unit,
                    scores,
                    {i: rationales[(session.session_id, i)] for i in unit} if rationales else None,
                    self.variant,
                    session.language,
                )
            )
        return out

    def session_examples(
        self, session: Session, rationales: dict | None, stats: SFTStats
    ) -> list[Example]:
        targets = self.targets(session, rationales)
        # the answer's rendered length: its text plus the template's end-of-turn tokens
        answer_max = max(self.count_tokens(t) for t in targets) + 4
        reserve = answer_max if self.answer_tokens is None else self.answer_tokens
        budget = prompts.dialogue_budget(self.max_length, self.overhead(session.language), reserve)
        dialogue, dropped = prompts.session_dialogue(session, budget, self.count_tokens)
        stats.sessions += 1
        stats.truncated_sessions += dropped > 0
        stats.dropped_turns += dropped
        out = []
        for unit, target in zip(self.units, targets, strict=True):
            messages = prompts.build_messages(
                self.instrument, unit, self.variant, session.language, dialogue
            )
            prompt_ids, answer_ids = self.render(messages, target)
            labels = self.answer_labels(answer_ids)
            ids = prompt_ids + answer_ids
            if len(ids) > self.max_length:
                stats.dropped_examples += 1
                continue
            out.append(
                Example(
                    session.session_id,
                    unit,
                    ids,
                    [IGNORE] * len(prompt_ids) + labels,
                    len(prompt_ids),
                )
            )
            stats.examples += 1
            stats.tokens += len(ids)
            answer_tokens = sum(1 for v in labels if v != IGNORE)
            stats.answer_tokens += answer_tokens
            stats.max_answer_tokens = max(stats.max_answer_tokens, answer_tokens)
            stats.max_tokens = max(stats.max_tokens, len(ids))
        return out

    def answer_lengths(self, sessions: Iterable[Session], rationales: dict | None) -> list[int]:
        """Every training answer's labelled length (answer and end of turn), in tokens."""
        out = []
        for session in sessions:
            for unit, target in zip(self.units, self.targets(session, rationales), strict=True):
                messages = prompts.build_messages(
                    self.instrument, unit, self.variant, session.language, ""
                )
                labels = self.answer_labels(self.render(messages, target)[1])
                out.append(sum(1 for v in labels if v != IGNORE))
        return out

    def answer_labels(self, answer_ids: list[int]) -> list[int]:
        """The answer's labels: its tokens through the first end-of-turn token, then -100."""
        end = next((k for k, t in enumerate(answer_ids) if t in self.end_of_turn), None)
        if end is None:
            raise ValueError(
                "the chat template does not end the assistant's turn with an "
                f"end-of-turn token (ids {sorted(self.end_of_turn)})"
            )
        return answer_ids[: end + 1] + [IGNORE] * (len(answer_ids) - end - 1)


def build_examples(
    builder: ExampleBuilder, sessions: Iterable[Session], rationales: dict | None
) -> tuple[list[Example], SFTStats]:
    stats = SFTStats()
    examples = []
    sessions = list(sessions)
    if builder.answer_tokens == "auto":  # the budget inference will read from selection.json
        builder.answer_tokens = answer_token_limit(builder.answer_lengths(sessions, rationales))
    for session in sessions:
        examples.extend(builder.session_examples(session, rationales, stats))
    return examples, stats


# --------------------------------------------------------------------------- packing


@dataclass(frozen=True)
class PackedSession(Row):
    """One training row: a session's shared prompt prefix once, then each example's rest.

    ``branches`` are the lengths of the branches after the ``prefix_len`` prefix tokens.
    """

    prefix_len: int
    branches: tuple[int, ...]

    @property
    def n_examples(self) -> int:
        return len(self.branches)


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix, leaving every prompt at least one token.

    Each branch then starts with a prompt token (label -100), so no logit of one branch is
    scored against the next branch's first token.
    """
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def pack_session(examples: Sequence[Example]) -> PackedSession:
    """Pack one session's examples (all of the same session) into a shared-prefix row."""
    sessions = {e.session_id for e in examples}
    if len(sessions) != 1:
        raise ValueError(f"a packed row holds one session's examples, got {sorted(sessions)}")
    n = shared_prefix_length([e.input_ids[: e.prompt_tokens] for e in examples])
    ids, labels = list(examples[0].input_ids[:n]), [IGNORE] * n
    for e in examples:
        ids.extend(e.input_ids[n:])
        labels.extend(e.labels[n:])
    return PackedSession(
        examples[0].session_id,
        tuple(i for e in examples for i in e.items),
        ids,
        labels,
        n,
        tuple(len(e.input_ids) - n for e in examples),
    )


def deal_units(
    examples: Sequence[Example], units_per_row: int | None, seed: int
) -> list[list[Example]]:
    """One session's examples dealt into rows of at most ``units_per_row`` (None: one row).

    The examples are shuffled with a seed derived from ``seed`` and the session, then dealt
    round-robin, so rows differ by at most one example and mix the instrument's dimensions;
    within a row they keep their original order.
    """
    if units_per_row is None or len(examples) <= units_per_row:
        return [list(examples)]
    n_rows = math.ceil(len(examples) / units_per_row)
    order = list(range(len(examples)))
    random.Random(f"{seed}:{examples[0].session_id}").shuffle(order)
    return [[examples[i] for i in sorted(order[r::n_rows])] for r in range(n_rows)]


def pack_shared_prefix(
    examples: Sequence[Example],
    stats: SFTStats,
    units_per_row: int | None = None,
    seed: int = 0,
) -> list[PackedSession]:
    """Packed rows per session (sessions in first-seen order); the counts go into ``stats``."""
    by_session: dict[str, list[Example]] = {}
    for e in examples:
        by_session.setdefault(e.session_id, []).append(e)
    rows = [
        pack_session(part)
        for group in by_session.values()
        for part in deal_units(group, units_per_row, seed)
    ]
    stats.packed_rows = len(rows)
    stats.packed_tokens = sum(len(r.input_ids) for r in rows)
    stats.packed_max_tokens = max((len(r.input_ids) for r in rows), default=0)
    return rows


def check_packing(packing: str) -> None:
    if packing not in PACKINGS:
        raise ValueError(f"unknown training.packing {packing!r}; expected one of {PACKINGS}")


def rows_per_step(examples_per_step: int, rows: Sequence[Row]) -> int:
    """Per-device rows that hold about ``examples_per_step`` examples.

    ``per_device_train_batch_size`` counts examples, packed or not (Table 7's meaning); a
    packed row holds several, so a step takes that many examples' worth of rows (at least 1).
    """
    held = sum(r.n_examples for r in rows)
    if not held:
        return examples_per_step
    return max(1, round(examples_per_step * len(rows) / held))


def training_rows(
    examples: Sequence[Example],
    stats: SFTStats,
    packing: str,
    units_per_row: int | None = None,
    seed: int = 0,
) -> list[Example] | list[PackedSession]:
    """The rows one epoch trains on: the examples themselves or packed rows per session."""
    check_packing(packing)
    if packing == "none":
        return list(examples)
    return pack_shared_prefix(examples, stats, units_per_row, seed)


# --------------------------------------------------------------------------- inputs


def load_rationales(path: str | Path) -> dict[tuple[str, str], str]:
    """(session_id, item_id) -> rationale, from ``rationales.parquet`` (column ``final``) or
    a JSON-lines file of ``{session_id, item_id, rationale}`` records."""
    import pandas as pd

    path = Path(path)
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        column = "final"
    else:
        frame = pd.read_json(path, lines=True, dtype={"session_id": str, "item_id": str})
        column = "rationale"
    for name in ("session_id", "item_id", column):
        if name not in frame.columns:
            raise CareInputError(path, "required column is missing", field=name)
    out = {}
    for row, (sid, item, text) in enumerate(
        zip(frame["session_id"], frame["item_id"], frame[column], strict=True), start=1
    ):
        if not isinstance(text, str) or not text.strip():
            raise CareInputError(path, "empty rationale", line=row, field=column)
        out[(str(sid), str(item))] = text
    return out


def load_folds(path: str | Path) -> dict[str, int]:
    import pandas as pd

    frame = pd.read_csv(path, sep="\t", dtype={"session_id": str, "client_id": str})
    for name in ("session_id", "fold"):
        if name not in frame.columns:
            raise CareInputError(path, "required column is missing", field=name)
    return dict(zip(frame["session_id"], frame["fold"].astype(int), strict=True))


def split_sessions(
    sessions: Sequence[Session],
    folds: dict[str, int],
    fold: int,
    *,
    selection: str,
    inner_val_fraction: float,
    seed: int,
    folds_path: str | Path = "folds.tsv",
) -> tuple[list, list]:
    """(training sessions, validation sessions) of one fold.

    ``inner_split``: validation is a client-grouped share of the training folds (the test
    fold stays unseen); ``heldout_fold``: validation is the test fold itself (the paper's
    public configs; selection then peeks at the test fold).
    """
    from sklearn.model_selection import GroupShuffleSplit

    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; expected one of {SELECTIONS}")
    missing = [s.session_id for s in sessions if s.session_id not in folds]
    if missing:
        raise CareInputError(folds_path, f"session {missing[0]!r} has no fold", field="session_id")
    if fold not in set(folds.values()):
        raise CareInputError(folds_path, f"fold {fold} does not exist", field="fold")
    train = [s for s in sessions if folds[s.session_id] != fold]
    test = [s for s in sessions if folds[s.session_id] == fold]
    if selection == "heldout_fold":
        return train, test
    n_clients = len({s.client_id for s in train})
    share = max(1, math.ceil(inner_val_fraction * n_clients))
    if n_clients < 2:
        raise CareInputError(
            folds_path,
            "an inner validation split needs at least two training clients",
            field="client_id",
        )
    splitter = GroupShuffleSplit(n_splits=1, test_size=min(share, n_clients - 1), random_state=seed)
    fit_idx, val_idx = next(splitter.split(train, groups=[s.client_id for s in train]))
    return [train[i] for i in sorted(fit_idx)], [train[i] for i in sorted(val_idx)]
