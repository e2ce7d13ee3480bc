"""Prompt rendering and the one answer format shared by training, inference and drafting.

Prompt layout: the dialogue comes first in the user message and the item(s) after it, so
the prompts of one session's items share a long common prefix (the system message and the
dialogue); inference computes that prefix once per session.

Answer format, per item (``rationale`` variant; ``score_only`` keeps only the score line),
in the order the config's ``answer_order`` names (``care --answer-order``)::

    Rationale: <one paragraph citing turns as (turn N)>     (rationale_first: the default)
    Score: <integer on the scale>

    Score: <integer on the scale>                           (score_first: the demo's)
    Rationale: <one paragraph citing turns as (turn N)>

score_first reads the score where the model has seen only the prompt, as a score-only
model does, and the rationale then explains that score; rationale_first makes the score
follow the rationale the model wrote (a chain of thought). docs/learning.md has both measured.

Chinese uses ``理由：`` / ``评分：`` and cites turns as ``（第N轮）``. With several items in one
answer (``dimension`` / ``session`` granularity) each block starts with an ``Item <id>`` line.
The parser accepts either language's labels, full-width punctuation and extra text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from care.instrument import Instrument
from care.resources import resource_path
from care.sessions import Session, Turn

PROMPT_DIR = resource_path("prompts")
# The directory templates are read from unless one is given: the config's `prompts`, which
# every `care` command takes as `care --prompts DIR ...` (set_prompt_dir).
_prompt_dir = PROMPT_DIR


def set_prompt_dir(directory: str | Path) -> None:
    """Read templates from ``directory`` (the config's ``prompts``) in this process."""
    global _prompt_dir
    directory = Path(directory)
    if not (directory / "score.en.txt").is_file():
        from care.errors import CareInputError

        raise CareInputError(directory, "not a prompt directory (no score.en.txt in it)",
                             field="prompts")
    _prompt_dir = directory


def prompt_dir() -> Path:
    return _prompt_dir


ANSWER_ORDERS = ("rationale_first", "score_first")
# The order of a rationale answer's lines unless one is given: the config's `answer_order`,
# which every `care` command that renders or reads answers takes as `care --answer-order`.
_answer_order = ANSWER_ORDERS[0]


def set_answer_order(order: str) -> None:
    """Write and read rationale answers in ``order`` (the config's ``answer_order``)."""
    global _answer_order
    if order not in ANSWER_ORDERS:
        raise ValueError(f"unknown answer order {order!r}; expected one of {ANSWER_ORDERS}")
    _answer_order = order


def answer_order() -> str:
    return _answer_order


def _score_first() -> bool:
    return _answer_order == "score_first"


GRANULARITIES = ("item", "dimension", "session")
VARIANTS = ("rationale", "score_only")

LABELS = {
    "en": {"rationale": "Rationale:", "score": "Score:", "item": "Item",
           "counselor": "Counselor", "client": "Client", "omitted": "turns omitted"},
    "zh": {"rationale": "理由：", "score": "评分：", "item": "条目",
           "counselor": "咨询师", "client": "来访者", "omitted": "轮对话已省略"},
}
UNIT = {
    "en": {"item": "item", "dimension": "items", "session": "items"},
    "zh": {"item": "条目", "dimension": "条目", "session": "条目"},
}


def labels(language: str) -> dict[str, str]:
    return LABELS.get(language.split("-")[0], LABELS["en"])


def units(instrument: Instrument, granularity: str) -> list[tuple[str, ...]]:
    """The item groups that form one example: one item, one dimension, or the whole session."""
    if granularity == "item":
        return [(i,) for i in instrument.item_ids]
    if granularity == "dimension":
        return [d.items for d in instrument.dimensions]
    if granularity == "session":
        return [tuple(instrument.item_ids)]
    raise ValueError(f"unknown granularity {granularity!r}; expected one of {GRANULARITIES}")


def unit_id(item_ids: Sequence[str]) -> str:
    return "+".join(item_ids)


# --------------------------------------------------------------------------- dialogue


def turn_lines(turns: Sequence[Turn], language: str) -> list[str]:
    lab = labels(language)
    return [f"[{n}] {lab[t.speaker]}: {t.text}" for n, t in enumerate(turns, start=1)]


def dialogue_budget(max_length: int, overhead: int, answer_tokens: int) -> int:
    """Tokens left for the dialogue: ``max_length`` less the prompt around it and the answer
    budget (the inference ``max_new_tokens`` of the variant). Training examples, validation
    and inference reserve the same answer budget, so a session is cut the same way in each."""
    return max(1, max_length - overhead - answer_tokens)


def fit_dialogue(
    lines: Sequence[str], budget: int | None, count_tokens: Callable[[str], int], language: str
) -> tuple[str, int]:
    """Join turn lines, cutting whole turns from the middle until the text fits ``budget``.

    The opening and closing turns are kept (they hold the agenda and the wrap-up, where
    goals and tasks are set); an ``[... N turns omitted ...]`` line marks the cut. Returns the
    text and the number of turns dropped.
    """
    text = "\n".join(lines)
    if budget is None or count_tokens(text) <= budget or len(lines) < 3:
        return text, 0
    lab = labels(language)
    middle = len(lines) // 2

    def cut(k: int) -> str:
        """Without ``k`` lines around the middle (one more after it when ``k`` is odd)."""
        lo, hi = middle - k // 2, middle + (k + 1) // 2
        return "\n".join([*lines[:lo], f"[... {k} {lab['omitted']} ...]", *lines[hi:]])

    # The fewest dropped turns that fit. Dropping a turn always removes more tokens than the
    # marker's count can add, so the token count falls with k: a binary search finds it
    # with O(log n) tokenizations instead of one per dropped turn.
    low, high = 1, len(lines) - 2
    if count_tokens(cut(high)) > budget:
        return cut(high), high
    while low < high:
        k = (low + high) // 2
        if count_tokens(cut(k)) <= budget:
            high = k
        else:
            low = k + 1
    return cut(low), low


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PromptTemplates:
    """The plain-text templates (``workflow/prompts/{name}.{lang}.txt``) with ``${slot}``s."""

    directory: Path = field(default_factory=prompt_dir)

    def load(self, name: str, language: str) -> Template:
        lang = language.split("-")[0]
        path = self.directory / f"{name}.{lang}.txt"
        if not path.exists():
            path = self.directory / f"{name}.en.txt"
        return Template(path.read_text(encoding="utf-8").rstrip("\n"))

    def system(self, language: str, instrument: Instrument) -> str:
        """The system message, naming what the instrument measures and its title."""
        return self.load("system", language).safe_substitute(instrument_slots(instrument, language))


def instrument_slots(instrument: Instrument, language: str) -> dict[str, str]:
    """The instrument's texts for a template's ``${title}``, ``${construct}``, ..."""
    meaning = instrument.rating_text(language)
    zh = language.startswith("zh")
    note = (f"；评分表示{meaning}" if zh else f"; a rating is {meaning}") if meaning else ""
    return {
        "title": instrument.display_title(language),
        "construct": instrument.construct_text(language),
        "rating_meaning": meaning,
        "rating_note": note,  # the meaning as a clause after the scale, or nothing
    }


def scale_text(instrument: Instrument, language: str) -> str:
    sep = "，" if language.startswith("zh") else ", "
    return sep.join(
        f"{p} = {instrument.scale_label(p, language)}" for p in instrument.scale_points
    )


def items_text(instrument: Instrument, item_ids: Sequence[str], language: str) -> str:
    lab = labels(language)
    out = []
    for i in item_ids:
        dim = instrument.dimension(instrument.dimension_of(i)).label(language)
        out.append(f"{lab['item']} {i} ({dim}): {instrument.items[i].wording(language)}")
    return "\n".join(out)


def answer_format(
    instrument: Instrument, item_ids: Sequence[str], variant: str, language: str
) -> str:
    lab = labels(language)
    lo, hi = instrument.scale_min, instrument.scale_max
    zh = language.startswith("zh")
    if zh:
        head = "请严格按以下格式作答："
        rat = f"{lab['rationale']}<一段简洁的理由，以（第N轮）引用关键轮次>"
        score = f"{lab['score']}<{lo}到{hi}之间的整数>"
    else:
        head = "Answer in exactly this format:"
        rat = f"{lab['rationale']} <one concise paragraph citing the key turns as (turn N)>"
        score = f"{lab['score']} <an integer from {lo} to {hi}>"
    block = [score] if variant != "rationale" else [score, rat] if _score_first() else [rat, score]
    if len(item_ids) == 1:
        return "\n".join([head, *block])
    lines = [head]
    for i in item_ids:
        lines += [f"{lab['item']} {i}", *block]
    return "\n".join(lines)


def build_messages(
    instrument: Instrument,
    item_ids: Sequence[str],
    variant: str,
    language: str,
    dialogue: str,
    templates: PromptTemplates | None = None,
) -> list[dict[str, str]]:
    """System + user messages for scoring ``item_ids`` of a session (dialogue first)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    templates = templates or PromptTemplates()
    gran = "item" if len(item_ids) == 1 else "session"
    user = templates.load("score", language).substitute(
        dialogue=dialogue,
        unit=UNIT.get(language.split("-")[0], UNIT["en"])[gran],
        instrument=instrument.name,
        scale=scale_text(instrument, language),
        items=items_text(instrument, item_ids, language),
        answer_format=answer_format(instrument, item_ids, variant, language),
    )
    return [
        {"role": "system", "content": templates.system(language, instrument)},
        {"role": "user", "content": user},
    ]


def format_target(
    item_ids: Sequence[str],
    scores: dict[str, float],
    rationales: dict[str, str] | None,
    variant: str,
    language: str,
) -> str:
    """The assistant's answer for training (and the format the parser reads back)."""
    lab = labels(language)
    sep = "" if language.startswith("zh") else " "
    blocks = []
    for i in item_ids:
        lines = [f"{lab['item']} {i}"] if len(item_ids) > 1 else []
        score = f"{lab['score']}{sep}{_fmt_score(scores[i])}"
        if variant != "rationale":
            lines.append(score)
        else:
            rationale = f"{lab['rationale']}{sep}{(rationales or {})[i].strip()}"
            lines += [score, rationale] if _score_first() else [rationale, score]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def score_prefix(language: str) -> str:
    """The text right before the score digit: probabilities are read at the next token."""
    lab = labels(language)
    return lab["score"] + ("" if language.startswith("zh") else " ")


def _fmt_score(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


# --------------------------------------------------------------------------- parsing

_COLON = r"\s*[:：]\s*"
_RAT = re.compile(r"(?:rationale|reason(?:ing)?|explanation|理由|解释|原因)" + _COLON, re.I)
_SCORE = re.compile(
    r"(?:score|rating|评分|得分|分数|评定)\s*\**\s*[:：=]?\s*\**\s*([0-9０-９]+(?:[.．][0-9]+)?)",
    re.I,
)
_ITEM = re.compile(r"^\s*[#*\[]*\s*(?:item|条目|题目)\s*#?\s*([0-9A-Za-z_]+)\s*[\]*:：.]*\s*$",
                   re.I | re.M)
_FULLWIDTH = str.maketrans("０１２３４５６７８９．", "0123456789.")


@dataclass(frozen=True)
class ParsedItem:
    score: float | None
    rationale: str | None
    ok: bool
    error: str | None = None


def parse_output(
    text: str, item_ids: Sequence[str], instrument: Instrument
) -> dict[str, ParsedItem]:
    """Read each item's rationale and score; a missing or off-scale score is a failed parse."""
    spans = item_spans(text, item_ids)
    return {
        i: _parse_block(text[spans[i][0]:spans[i][1]], instrument) if i in spans
        else ParsedItem(None, None, False, "item block missing")
        for i in item_ids
    }


def item_spans(text: str, item_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Character span of each item's answer block (the whole text for a single item)."""
    if len(item_ids) == 1:
        return {item_ids[0]: (0, len(text))}
    spans: dict[str, tuple[int, int]] = {}
    marks = list(_ITEM.finditer(text))
    for n, m in enumerate(marks):
        end = marks[n + 1].start() if n + 1 < len(marks) else len(text)
        spans.setdefault(m.group(1), (m.end(), end))
    return spans


def score_offsets(text: str, item_ids: Sequence[str]) -> dict[str, int]:
    """Where each item's score (the one :func:`parse_output` reads) starts in ``text``.

    Inference reads the model's distribution over the scale labels at the token there.
    Items without a score are absent.
    """
    out = {}
    for item, (start, end) in item_spans(text, item_ids).items():
        score, _ = _read_block(text[start:end])
        if score is not None:
            out[item] = start + score.start(1)
    return out


def _read_block(text: str) -> tuple[re.Match | None, str | None]:
    """A block's score line and rationale, whichever order the model wrote them in.

    With a rationale label, a score before it makes the score-first layout (the rationale
    runs to the end), else the last score after it ends the rationale (rationale-first).
    Without one, the configured order says on which side of the score the rationale is.
    """
    scores = list(_SCORE.finditer(text))
    rat = _RAT.search(text)
    if rat:
        before = [s for s in scores if s.end() <= rat.start()]
        if before:
            return before[0], text[rat.end():].strip() or None
        after = [s for s in scores if s.start() > rat.end()]
        end = after[0].start() if after else len(text)
        return (after[-1] if after else None), text[rat.end():end].strip() or None
    if not scores:
        return None, None
    if _score_first():
        return scores[0], text[scores[0].end():].strip() or None
    return scores[-1], text[: scores[-1].start()].strip() or None


def _parse_block(text: str, instrument: Instrument) -> ParsedItem:
    score, rationale = _read_block(text)
    if score is None:
        return ParsedItem(None, rationale, False, "no score found")
    value = float(score.group(1).translate(_FULLWIDTH))
    if not instrument.in_scale(value):
        return ParsedItem(None, rationale, False, f"score {value:g} outside the scale")
    return ParsedItem(value, rationale, True)


_CITE = re.compile(r"(?:turns?\s*|第\s*|\[)(\d+(?:\s*(?:,|，|、|and|和|-|–)\s*\d+)*)\s*(?:轮|\])?",
                   re.I)


def cited_turns(rationale: str) -> list[int]:
    """Turn numbers a rationale cites, as ``(turn 5)``, ``turns 3 and 4``, ``第5轮`` or ``[5]``."""
    found: set[int] = set()
    for m in _CITE.finditer(rationale or ""):
        found.update(int(n) for n in re.findall(r"\d+", m.group(1)))
    return sorted(found)


def session_dialogue(
    session: Session, budget: int | None = None, count_tokens: Callable[[str], int] = len
) -> tuple[str, int]:
    """The session's numbered dialogue, cut to ``budget`` tokens; (text, turns dropped)."""
    return fit_dialogue(turn_lines(session.turns, session.language), budget, count_tokens,
                        session.language)
