"""The ``extractive`` drafter: a grounded rationale without an LLM (the demo's drafter, a baseline).

For one (session, item, rating) it ranks the turns by

- relevance: overlap of the turn's words with the item's wording (weight 2) and with cue words
  of the item's dimension (weight 1; built in for goal/task/bond, the dimension's description
  for other instruments), and
- direction: the client's reaction (the turn's ``reaction`` label, else a small polarity
  lexicon; a counselor turn takes the reaction of the client turn that answers it) matching
  the rating: positive for a rating above the scale's midpoint, negative below it, either at
  the midpoint,

keeps up to ``max_turns`` relevant turns whose direction matches (else relevant neutral ones),
and writes two sentences: the cited turns, each quoted briefly as ``(turn N)`` / ``（第N轮）``,
then a session-level summary of the dimension. Deterministic: no sampling, ties go to the
earlier turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from care.instrument import Instrument
from care.sessions import Session, Turn

CUES = {
    "en": {
        "goal": "goal aim focus want change agree together same page direction hope achieve "
        "matter priority main work toward decide",
        "task": "try step plan practise practice exercise homework method approach week "
        "concrete help work way technique write doable next time",
        "bond": "feel understand hear care appreciate trust respect value safe listen sorry "
        "thank painful courage open glad like",
    },
    "zh": {
        "goal": "目标 重点 改变 方向 达到 希望 一起 共识 认同 想要 解决 主要 商定",
        "task": "练习 计划 步骤 方法 试试 尝试 记录 作业 帮助 具体 回顾 有用 这周 下次",
        "bond": "理解 感受 信任 尊重 重视 关心 倾听 痛苦 谢谢 勇气 难过 喜欢 安全 陪伴",
    },
}
POLARITY = {
    "en": {
        "+": "yes exactly right agree helped help like thank sound doable good better clear "
        "trust understood glad",
        "-": "not no never unsure doubt why still confused pointless useless wrong",
    },
    "zh": {
        "+": "对 没错 是的 帮助 喜欢 谢谢 可以 清楚 信任 理解 有用 愿意",
        "-": "不 没有 不知道 怀疑 为什么 还是 没用 不清楚 困惑",
    },
}
STOP_EN = set(
    "a an the and or but if of to in on for with at by from about as is are was were be been "
    "i me my you your we our us they them he she it its this that these those what which who "
    "how when where there here so do does did can could would should will shall may might "
    "have has had am not no just very really more most much some any all one each even still "
    "think things thing".split()
)
STOP_ZH = set(
    "我们 你们 他们 这个 那个 一个 什么 自己 咨询 咨询师 来访者 觉得 就是 还是 这样".split()
)

TEXT = {
    "en": {
        "lead": {
            "high": "In the key exchanges, ",
            "low": "In the key exchanges, ",
            "mid": "The session was mixed: ",
        },
        "piece": {
            "counselor": 'the counselor said "{q}" (turn {n})',
            "client": 'the client said "{q}" (turn {n})',
        },
        "summary": {
            "high": "Overall the session supported {aspect}.",
            "low": "Overall the session fell short on {aspect}.",
            "mid": "Overall {aspect} was only partly established.",
        },
        "none": {
            "high": "The dialogue touched on {aspect} only in passing, and nothing in it "
            "worked against it.",
            "low": "The dialogue rarely addressed {aspect}, leaving the client little to build on.",
            "mid": "The dialogue gave {aspect} little explicit attention.",
        },
    },
    "zh": {
        "lead": {"high": "在关键交流中，", "low": "在关键交流中，", "mid": "本次咨询喜忧参半："},
        "piece": {"counselor": "咨询师说“{q}”（第{n}轮）", "client": "来访者说“{q}”（第{n}轮）"},
        "summary": {
            "high": "整体而言，本次咨询支持了{aspect}。",
            "low": "整体而言，本次咨询在{aspect}上有所欠缺。",
            "mid": "整体而言，{aspect}只是部分建立。",
        },
        "none": {
            "high": "对话只是顺带涉及{aspect}，但没有任何内容与之相悖。",
            "low": "对话很少涉及{aspect}，来访者缺乏可以依靠的基础。",
            "mid": "对话对{aspect}着墨不多。",
        },
    },
}
QUOTE_CHARS = {"en": 36, "zh": 14}


def _lang(language: str) -> str:
    return "zh" if language.startswith("zh") else "en"


def _stem(word: str) -> str:
    for suffix, repl in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + repl
    return word


@lru_cache(maxsize=4096)
def terms(text: str, lang: str) -> frozenset[str]:
    """Content words: stemmed English words, or jieba words of two characters and more."""
    if lang == "zh":
        import jieba

        jieba.setLogLevel(60)  # its dictionary-loading chatter
        words = (w for w in jieba.lcut(text, HMM=False) if len(w.strip()) >= 2)
        return frozenset(w for w in words if w not in STOP_ZH)
    words = re.findall(r"[a-z]+", text.lower().replace("'", ""))
    return frozenset(_stem(w) for w in words if w not in STOP_EN and len(w) > 2)


def _lexicon(words: str, lang: str) -> frozenset[str]:
    if lang == "zh":
        return frozenset(words.split())
    return frozenset(_stem(w) for w in words.split())


@dataclass(frozen=True)
class ExtractiveDrafter:
    """Writes a rationale from the dialogue alone; ``max_turns`` turns are cited at most."""

    instrument: Instrument
    max_turns: int = 3

    def cue_weights(self, item_id: str, lang: str) -> dict[str, float]:
        dim = self.instrument.dimension(self.instrument.dimension_of(item_id))
        cue_text = CUES[lang].get(dim.id) or dim.description.get(lang, "")
        weights = {t: 1.0 for t in terms(cue_text, lang) | _lexicon(cue_text, lang)}
        for t in terms(self.instrument.items[item_id].wording(lang), lang):
            weights[t] = 2.0
        return weights

    def polarity(self, turns: tuple[Turn, ...], index: int, lang: str) -> int:
        """+1, 0 or -1: the client's reaction to turn ``index`` (0-based)."""
        turn = turns[index]
        if turn.speaker == "counselor":
            nxt = index + 1
            return self.polarity(turns, nxt, lang) if nxt < len(turns) else 0
        if turn.reaction:
            return {"positive": 1, "negative": -1}.get(turn.reaction, 0)
        words = terms(turn.text, lang) | frozenset(turn.text.split())
        score = len(words & _lexicon(POLARITY[lang]["+"], lang)) - len(
            words & _lexicon(POLARITY[lang]["-"], lang)
        )
        return (score > 0) - (score < 0)

    def level(self, rating: float) -> str:
        mid = (self.instrument.scale_min + self.instrument.scale_max) / 2
        return "high" if rating > mid else "low" if rating < mid else "mid"

    def select(self, session: Session, item_id: str, rating: float) -> list[int]:
        """0-based indices of the turns to cite, in dialogue order."""
        lang = _lang(session.language)
        weights = self.cue_weights(item_id, lang)
        level = self.level(rating)
        scored = []
        for n, turn in enumerate(session.turns):
            rel = sum(weights.get(t, 0.0) for t in terms(turn.text, lang))
            if rel > 0:
                scored.append((n, rel, self.polarity(session.turns, n, lang)))

        def matches(pol: int) -> bool:
            return pol > 0 if level == "high" else pol < 0 if level == "low" else pol != 0

        pool = [s for s in scored if matches(s[2])] or [s for s in scored if s[2] == 0]
        pool.sort(key=lambda s: (-s[1], s[0]))
        return sorted(s[0] for s in pool[: self.max_turns])

    def draft(self, session: Session, item_id: str, rating: float) -> str:
        lang = _lang(session.language)
        text = TEXT[lang]
        level = self.level(rating)
        dim = self.instrument.dimension(self.instrument.dimension_of(item_id))
        aspect = dim.description.get(lang) or dim.label(lang)
        chosen = self.select(session, item_id, rating)
        if not chosen:
            return text["none"][level].format(aspect=aspect)
        pieces = [
            text["piece"][session.turns[n].speaker].format(
                q=quote(session.turns[n].text, lang), n=n + 1
            )
            for n in chosen
        ]
        summary = text["summary"][level].format(aspect=aspect)
        if lang == "zh":
            return f"{text['lead'][level]}{'；'.join(pieces)}。{summary}"
        return f"{text['lead'][level]}{_join_en(pieces)}. {summary}"


def quote(text: str, lang: str) -> str:
    """The turn's first clause, cut at a word boundary to a short quotation."""
    limit = QUOTE_CHARS[lang]
    if lang == "zh":
        clause = re.split(r"(?<=[。？！；])", text.strip(), maxsplit=1)[0].rstrip("。？！；")
        return clause if len(clause) <= limit else clause[:limit] + "……"
    clause = re.split(r"(?<=[.?!;:])\s", text.strip(), maxsplit=1)[0].rstrip(".?!;:")
    if len(clause) <= limit:
        return clause
    return clause[:limit].rsplit(" ", 1)[0].rstrip(",") + "..."


def _join_en(pieces: list[str]) -> str:
    return pieces[0] if len(pieces) == 1 else ", ".join(pieces[:-1]) + " and " + pieces[-1]
