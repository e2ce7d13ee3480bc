"""A seeded synthetic counseling corpus in the data contract's format (the embedded demo).

Generative model
----------------
Counselors ``c`` have a skill per dimension ``s[c,d] ~ N(0, 0.5)`` and a rating leniency
``l[c] ~ N(0, 0.4)``. Clients are assigned to counselors with Zipf-like weights, so a few
counselors see many clients (as in the paper's section 7). Each client ``i`` has a general
alliance ``g[i] ~ N(0, 0.7)`` and a dimension-specific effect ``e[i,d] ~ N(0, 0.35)``; session
``t`` of the client adds a small course trend and noise ``n ~ N(0, 0.5)``::

    z[d]  = g[i] + e[i,d] + s[c,d] + 0.08 * (t - 1) + n
    A[d]  = 1 + 4 * sigmoid(1.1 + z[d])          # latent alliance on the 1-5 scale

The logistic link skews ``A`` toward the top of the scale (negative skew, as the client
ratings in the paper's Appendix A). The dialogue carries ``A``: after an opening, each
exchange is a counselor turn on one dimension (goal, task or bond) and the client's reply.
The counselor turn is *good* (agreed goals, actionable tasks, empathic responses) with
probability ``p = (A[d] - 1) / 4`` sharpened by ``p**2 / (p**2 + (1-p)**2)``, else *poor*
(drifting goals, vague tasks, mechanical responses: a poor bond turn is often supportive in
form, rote reassurance or reflection, so Supporting-Negative patterns occur); the client
reacts positively to good turns (80%) and negatively to poor ones (70%), otherwise
neutrally, and the reply's wording follows the reaction. Counselor turns carry a strategy
label (reflection, affirmation, restatement, inquiry, suggestion, information, challenge,
self_disclosure) and client turns a reaction label (positive, neutral, negative).

Ratings: client item ratings are ``round(A[d] + b[item] + N(0, 0.55))`` clipped to the scale,
with a small item bias ``b``. Counselor ratings follow the counselor's own, mostly separate
impression, ``0.25 * z[d] + N(0, 0.95) + l[c]`` through the same link, so they correlate only
weakly with the client's (the paper's human r of about 0.2-0.3).

Reference rationales: for each (session, item) the turns on the item's dimension whose
quality matches the rating's direction are cited as ``(turn N)``, followed by a session-level
summary naming what the item is about; they play the expert-edited rationales in the demo.

The unlabeled corpus uses the same model with other client and session ids and no ratings.
Everything is drawn from one ``numpy`` generator seeded from the config, and records are
written in a fixed order, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from care.corpus_text import ASPECT, CITE, EN, SLOTS, SUMMARY, ZH
from care.instrument import Instrument
from care.io import write_jsonl

BANKS = {"en": EN, "zh": ZH}
STRATEGY = {
    ("goal", "good"): ["restatement", "inquiry", "challenge"],
    ("goal", "poor"): ["information", "challenge"],
    ("task", "good"): ["suggestion", "challenge", "information"],
    ("task", "poor"): ["suggestion", "information"],
    ("bond", "good"): ["reflection", "affirmation", "self_disclosure"],
    # mechanical reassurance and rote reflection are supportive in form, not in effect
    ("bond", "poor"): ["affirmation", "reflection", "inquiry", "information"],
}
OPEN_STRATEGY = "inquiry"
CLOSE_STRATEGY = "information"


@dataclass(frozen=True)
class CorpusSpec:
    n_clients: int = 40
    sessions_per_client: tuple[int, int] = (4, 10)
    n_counselors: int = 8
    turns_per_session: tuple[int, int] = (14, 22)
    language: str = "en"
    seed: int = 2024


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _alliance(z: float) -> float:
    return 1.0 + 4.0 * _sigmoid(1.1 + z)


class _Generator:
    def __init__(self, spec: CorpusSpec, instrument: Instrument, prefix: str, labeled: bool):
        self.spec, self.ins, self.prefix, self.labeled = spec, instrument, prefix, labeled
        self.lang = "zh" if spec.language.startswith("zh") else "en"
        self.bank = BANKS[self.lang]
        self.rng = np.random.default_rng([spec.seed, 0 if labeled else 1])
        self.dims = instrument.dimension_ids
        k = spec.n_counselors
        self.skill = self.rng.normal(0, 0.5, size=(k, len(self.dims)))
        self.leniency = self.rng.normal(0, 0.4, size=k)
        weights = 1.0 / np.arange(1, k + 1) ** 0.8
        self.counselor_weights = weights / weights.sum()
        self.item_bias = {i: float(self.rng.normal(0, 0.15)) for i in instrument.item_ids}

    def pick(self, options: list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def fill(self, template: str, slots: dict[str, str]) -> str:
        return template.format(**slots)

    def clients(self):
        for n in range(1, self.spec.n_clients + 1):
            client_id = f"{self.prefix}c{n:03d}"
            counselor = int(self.rng.choice(len(self.counselor_weights), p=self.counselor_weights))
            g = self.rng.normal(0, 0.7)
            e = self.rng.normal(0, 0.35, size=len(self.dims))
            lo, hi = self.spec.sessions_per_client
            n_sessions = int(self.rng.integers(lo, hi + 1))
            bank = SLOTS[self.lang]
            goal, other = (str(x) for x in self.rng.choice(bank["goal"], 2, replace=False))
            slots = {"goal": goal, "other": other, "task": self.pick(bank["task"]),
                     "feeling": self.pick(bank["feeling"]), "topic": self.pick(bank["topic"])}
            for t in range(1, n_sessions + 1):
                yield self.session(client_id, counselor, g, e, t, slots)

    def session(self, client_id, counselor, g, e, t, slots) -> tuple[dict, list[dict]]:
        z = {d: g + e[k] + self.skill[counselor, k] + 0.08 * (t - 1) + self.rng.normal(0, 0.5)
             for k, d in enumerate(self.dims)}
        alliance = {d: _alliance(z[d]) for d in self.dims}
        turns, marks = self.dialogue(alliance, slots)
        record = {
            "session_id": f"{client_id}-s{t:02d}",
            "client_id": client_id,
            "counselor_id": f"{self.prefix}t{counselor + 1:02d}",
            "language": self.lang,
            "session_index": t,
            "turns": turns,
        }
        if self.labeled:
            ratings = self.client_ratings(alliance)
            record["client_ratings"] = ratings
            record["counselor_ratings"] = self.counselor_ratings(z, counselor)
        else:  # rationale text only (no ratings written), drawing nothing from the rng
            ratings = self.expected_ratings(alliance)
        refs = [
            {"session_id": record["session_id"], "item_id": i,
             "rationale": self.rationale(i, ratings[i], marks)}
            for i in self.ins.item_ids
        ]
        return record, refs

    def dialogue(self, alliance: dict[str, float], slots: dict[str, str]):
        """Turns plus, per dimension, the (turn number, quality, speaker) that carried it."""
        lo, hi = self.spec.turns_per_session
        n_exchanges = int(self.rng.integers(lo, hi + 1)) // 2
        turns: list[dict] = []
        marks: dict[str, list[tuple[int, str, str]]] = {d: [] for d in self.dims}

        def say(speaker, text, **labels):
            turns.append({"speaker": speaker, "text": text, **labels})

        say("counselor", self.fill(self.pick(self.bank[("filler", "open", "counselor")]), slots),
            strategy=OPEN_STRATEGY)
        say("client", self.fill(self.pick(self.bank[("filler", "open", "client")]), slots),
            reaction="neutral")
        focus_dims = [d for d in self.dims if (d, "good", "counselor") in self.bank]
        for _ in range(max(n_exchanges - 2, 1)):
            d = focus_dims[int(self.rng.integers(len(focus_dims)))] if focus_dims else None
            if d is None:
                break
            p = (alliance[d] - 1) / 4
            p = p * p / (p * p + (1 - p) * (1 - p))
            quality = "good" if self.rng.random() < p else "poor"
            say("counselor", self.fill(self.pick(self.bank[(d, quality, "counselor")]), slots),
                strategy=self.pick(STRATEGY[(d, quality)]))
            marks[d].append((len(turns), quality, "counselor"))
            r = self.rng.random()
            if quality == "good":
                reaction = "positive" if r < 0.8 else "neutral"
            else:
                reaction = "negative" if r < 0.7 else "neutral"
            reply_quality = {"positive": "good", "negative": "poor"}.get(reaction)
            if reply_quality is None:
                reply = self.fill(self.pick(self.bank[("filler", "open", "client")]), slots)
            else:
                reply = self.fill(self.pick(self.bank[(d, reply_quality, "client")]), slots)
                marks[d].append((len(turns) + 1, reply_quality, "client"))
            say("client", reply, reaction=reaction)
        say("counselor", self.pick(self.bank[("filler", "close", "counselor")]),
            strategy=CLOSE_STRATEGY)
        say("client", self.pick(self.bank[("filler", "close", "client")]), reaction="neutral")
        return turns, marks

    def client_ratings(self, alliance: dict[str, float]) -> dict[str, int]:
        lo, hi = self.ins.scale_min, self.ins.scale_max
        out = {}
        for i in self.ins.item_ids:
            a = alliance[self.ins.dimension_of(i)]
            scaled = lo + (a - 1) / 4 * (hi - lo)
            v = scaled + self.item_bias[i] + self.rng.normal(0, 0.55)
            out[i] = int(min(hi, max(lo, round(v))))
        return out

    def expected_ratings(self, alliance: dict[str, float]) -> dict[str, int]:
        """Noise-free ratings (what the rationales of an unlabeled session are written for)."""
        lo, hi = self.ins.scale_min, self.ins.scale_max
        return {
            i: int(min(hi, max(lo, round(lo + (alliance[self.ins.dimension_of(i)] - 1) / 4
                                     * (hi - lo) + self.item_bias[i]))))
            for i in self.ins.item_ids
        }

    def counselor_ratings(self, z: dict[str, float], counselor: int) -> dict[str, int]:
        lo, hi = self.ins.scale_min, self.ins.scale_max
        out = {}
        impression = {d: 0.25 * z[d] + self.rng.normal(0, 0.95) + self.leniency[counselor]
                      for d in self.dims}
        for i in self.ins.item_ids:
            a = _alliance(impression[self.ins.dimension_of(i)])
            v = lo + (a - 1) / 4 * (hi - lo) + self.rng.normal(0, 0.4)
            out[i] = int(min(hi, max(lo, round(v))))
        return out

    def rationale(self, item_id: str, rating: int, marks) -> str:
        d = self.ins.dimension_of(item_id)
        mid = (self.ins.scale_min + self.ins.scale_max) / 2
        level = "high" if rating > mid + 0.5 else "low" if rating < mid - 0.5 else "mid"
        want = {"high": ["good"], "low": ["poor"], "mid": ["good", "poor"]}[level]
        cited = [m for m in marks[d] if m[1] in want] or marks[d]
        cited = cited[:3]
        cite = CITE[self.lang]
        zh = self.lang == "zh"
        parts = [
            (f"{cite[(d, q, s)]}（第{n}轮）" if zh else f"{cite[(d, q, s)]} (turn {n})")
            for n, q, s in cited if (d, q, s) in cite
        ]
        aspect = ASPECT[self.lang].get(item_id) or self.ins.dimension(d).description.get(
            self.lang, d)
        summary = SUMMARY[self.lang][level].format(aspect=aspect)
        if not parts:
            return summary + ("，但对话很少涉及这一方面。" if zh else
                              ", though the dialogue rarely touched on it.")
        if zh:
            body = "；".join(parts)
            return f"{body[0:]}。{summary}。"
        body = "; ".join(parts)
        return f"{body[0].upper()}{body[1:]}. {summary}."


def generate(
    spec: CorpusSpec, instrument: Instrument, *, labeled: bool = True, prefix: str = ""
) -> tuple[list[dict], list[dict]]:
    """Return (sessions, reference rationales) as plain records in the contract's format."""
    gen = _Generator(spec, instrument, prefix, labeled)
    sessions, refs = [], []
    for record, rationales in gen.clients():
        sessions.append(record)
        refs.extend(rationales)
    return sessions, refs


def write_corpus(
    spec: CorpusSpec,
    instrument: Instrument,
    sessions_path: str | Path,
    references_path: str | Path,
    unlabeled_path: str | Path | None = None,
    unlabeled_clients: int = 0,
    unlabeled_references_path: str | Path | None = None,
) -> dict[str, int]:
    """Write the labeled corpus, its reference rationales and an optional unlabeled corpus.

    The unlabeled corpus's rationales (``unlabeled_references_path``) are text outside the
    labeled corpus: the demo trains its tiny backbones' tokenizer on them.
    """
    sessions, refs = generate(spec, instrument, labeled=True)
    write_jsonl(sessions_path, sessions)
    write_jsonl(references_path, refs)
    stats = {"sessions": len(sessions), "clients": spec.n_clients, "rationales": len(refs)}
    if unlabeled_path is not None:
        uspec = CorpusSpec(
            n_clients=unlabeled_clients, sessions_per_client=spec.sessions_per_client,
            n_counselors=spec.n_counselors, turns_per_session=spec.turns_per_session,
            language=spec.language, seed=spec.seed,
        )
        unlabeled, unlabeled_refs = generate(uspec, instrument, labeled=False, prefix="u")
        write_jsonl(unlabeled_path, unlabeled)
        if unlabeled_references_path is not None:
            write_jsonl(unlabeled_references_path, unlabeled_refs)
        stats["unlabeled_sessions"] = len(unlabeled)
    return stats


def dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)
