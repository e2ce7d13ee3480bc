"""``care data validate --summary``: the counts a user checks before a run.

Sessions, clients, counselors, languages; the distribution of every item's client ratings;
how many sessions the counselor baseline can score per dimension; the strategy and reaction
labels found (what ``application.patterns`` must list); turns and dialogue length in tokens
of a given tokenizer (what ``max_length`` must hold).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from care.instrument import Instrument
from care.sessions import Session


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "none"
    a = np.asarray(values, dtype=float)
    q = np.percentile(a, [50, 90])
    return f"min {a.min():g}, median {q[0]:g}, p90 {q[1]:g}, max {a.max():g}"


def _counts(counter: Counter) -> str:
    ranked = sorted(counter.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {n}" for k, n in ranked) or "none"


def summarize(
    sessions: Sequence[Session], instrument: Instrument,
    count_tokens: Callable[[str], int] | None = None, token_unit: str = "tokens",
) -> str:
    """A plain-text summary of a validated corpus (one fact per line)."""
    clients = {s.client_id for s in sessions}
    counselors = Counter(s.counselor_id for s in sessions)
    lines = [
        f"sessions: {len(sessions)}",
        f"clients: {len(clients)}",
        f"counselors: {len(counselors)} (sessions per counselor: "
        f"{_spread(list(counselors.values()))})",
        f"languages: {_counts(Counter(s.language for s in sessions))}",
        f"labeled sessions (client ratings): {sum(s.labeled for s in sessions)}",
    ]
    lines.append(f"client ratings per item (scale {instrument.scale_min}..{instrument.scale_max}):")
    for d in instrument.dimensions:
        for i in d.items:
            vals = [s.client_ratings[i] for s in sessions if s.labeled and i in s.client_ratings]
            dist = Counter(vals)
            shown = " ".join(f"{v:g}:{dist[v]}" for v in sorted(dist))
            mean = f", mean {np.mean(vals):.2f}" if vals else ""
            lines.append(f"  {d.id}/{i}: n {len(vals)}{mean}; {shown or 'no ratings'}")
    lines.append("counselor ratings (the human-counselor baseline):")
    rated = [s for s in sessions if s.counselor_ratings]
    lines.append(f"  sessions with any: {len(rated)}")
    for d in instrument.dimensions:
        full = sum(all(i in (s.counselor_ratings or {}) for i in d.items) for s in sessions)
        missing = Counter(
            i for s in rated for i in d.items if i not in (s.counselor_ratings or {})
        )
        note = f"; missing items: {_counts(missing)}" if missing else ""
        lines.append(f"  {d.id}: scorable in {full} of {len(sessions)} sessions{note}")
    strategies = Counter(t.strategy for s in sessions for t in s.turns if t.strategy)
    reactions = Counter(t.reaction for s in sessions for t in s.turns if t.reaction)
    lines.append(f"strategy labels: {_counts(strategies)}")
    lines.append(f"reaction labels: {_counts(reactions)}")
    lines.append(f"turns per session: {_spread([len(s.turns) for s in sessions])}")
    if count_tokens is not None:
        lengths = [count_tokens("\n".join(t.text for t in s.turns)) for s in sessions]
        lines.append(f"dialogue length ({token_unit}): {_spread(lengths)}")
    return "\n".join(lines)


def tokenizer_counter(path: str) -> Callable[[str], int]:
    """Token counts of a model directory's tokenizer, loaded as training loads it."""
    from care.model.backbone import load_tokenizer

    tok = load_tokenizer(path)
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])
