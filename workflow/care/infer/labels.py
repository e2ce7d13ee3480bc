"""Label maths: the distribution over the scale labels where an answer writes its score.

A backend's :class:`Generation` carries, per generated token, the log-probabilities of the
scale labels; :func:`read_probs` finds each item's score token and turns them into a
distribution, from which the expected and the argmax scores follow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from care.prompts import (
    score_offsets,
    score_prefix,
)


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
