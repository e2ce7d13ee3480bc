"""Distinctive terms per group: log-odds ratio with an informative Dirichlet prior.

Monroe, Colaresi & Quinn (2008), "Fightin' words", section 3.5. For a term w, a group i and
the rest of the texts j, with counts y, group totals n, and prior pseudo-counts
a_w = a0 * pi_w from a background distribution pi (a0 = sum of the a_w)::

    delta_w = log((y_iw + a_w) / (n_i + a0 - y_iw - a_w))
            - log((y_jw + a_w) / (n_j + a0 - y_jw - a_w))
    var_w   = 1 / (y_iw + a_w) + 1 / (y_jw + a_w)
    z_w     = delta_w / sqrt(var_w)

The default background is the pooled counts of all groups (a0 = their total), the usual
choice when no outside corpus is given; ``prior_texts`` and ``prior_size`` change it.
Terms are unigrams: words for space-delimited languages, jieba words for Chinese.

The paper's Table 5 applies this to each WAI dimension's rationales against the other two;
the application stage uses :func:`top_terms` for per-counselor digests.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from care.config import default

log = logging.getLogger("care.evaluate")
LOG_ODDS = "evaluation.log_odds"  # the config section
COLUMNS = ["group", "term", "log_odds", "z", "count"]
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
_HAS_LETTER = re.compile(r"[^\W\d_]")


def stopword_list(spec: str | Sequence[str]) -> list[str]:
    """Stopwords from a list, or ``"english"`` for scikit-learn's English list."""
    if isinstance(spec, str):
        if spec != "english":
            raise ValueError(f"unknown stopword list {spec!r} (a list of terms or 'english')")
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        return sorted(ENGLISH_STOP_WORDS)
    return list(spec)


def tokenize(text: str, language: str) -> list[str]:
    """Lower-cased unigram terms (jieba words for Chinese); numbers and punctuation dropped."""
    text = text.lower()
    if language.lower().split("-")[0] == "zh":
        import jieba

        jieba.setLogLevel(logging.WARNING)
        return [t.strip() for t in jieba.lcut(text) if _HAS_LETTER.search(t) and t.strip()]
    return _WORD.findall(text)


def count_terms(
    texts: Iterable[str], language: str, stopwords: Collection[str] = frozenset()
) -> Counter:
    counts: Counter = Counter()
    for text in texts:
        if isinstance(text, str):
            counts.update(t for t in tokenize(text, language) if t not in stopwords)
    return counts


def log_odds(
    counts_by_group: Mapping[str, Counter],
    prior: Mapping[str, float] | None = None,
    prior_size: float | None = None,
) -> pd.DataFrame:
    """Every term's log-odds ratio and z-score for each group against the rest.

    ``prior``: background counts (default: the pooled counts of all groups); ``prior_size``
    rescales them to that total (a0). Returns columns group, term, log_odds, z, count.
    """
    vocab = sorted(set().union(*counts_by_group.values()))
    if not vocab:
        return pd.DataFrame(columns=COLUMNS)
    groups = list(counts_by_group)
    y = np.array([[counts_by_group[g].get(w, 0) for w in vocab] for g in groups], dtype=float)
    background = (
        y.sum(axis=0) if prior is None else np.array([prior.get(w, 0.0) for w in vocab], float)
    )
    if prior_size is not None:
        background = background / background.sum() * prior_size
    alpha = np.maximum(background, 1e-9)  # a term unseen in the background keeps a tiny prior
    a0 = alpha.sum()
    frames = []
    for i, group in enumerate(groups):
        y_i, y_j = y[i], y.sum(axis=0) - y[i]
        n_i, n_j = y_i.sum(), y_j.sum()
        delta = np.log((y_i + alpha) / (n_i + a0 - y_i - alpha)) - np.log(
            (y_j + alpha) / (n_j + a0 - y_j - alpha)
        )
        z = delta / np.sqrt(1 / (y_i + alpha) + 1 / (y_j + alpha))
        frames.append(
            pd.DataFrame(
                {"group": group, "term": vocab, "log_odds": delta, "z": z, "count": y_i.astype(int)}
            )
        )
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def top_terms(
    texts_by_group: dict[str, list[str]],
    language: str,
    top_k: int,
    *,
    min_count: int = 1,
    stopwords: Sequence[str] = (),
    prior_texts: Sequence[str] | None = None,
    prior_size: float | None = None,
) -> pd.DataFrame:
    """The ``top_k`` terms of each group by z-score of the log-odds ratio against the rest.

    Terms used fewer than ``min_count`` times in the group are not ranked for it. Rows come
    in the order of ``texts_by_group``, then by decreasing z (ties by term). Columns: group,
    term, log_odds, z, count (the term's count in the group).
    """
    stop = {s.lower() for s in stopwords}
    counts = {g: count_terms(texts, language, stop) for g, texts in texts_by_group.items()}
    prior = None if prior_texts is None else count_terms(prior_texts, language, stop)
    scored = log_odds(counts, prior=prior, prior_size=prior_size)
    scored = scored[scored["count"] >= max(min_count, 1)]
    order = {g: n for n, g in enumerate(texts_by_group)}
    scored = scored.assign(_g=scored["group"].map(order), _z=-scored["z"])
    scored = scored.sort_values(["_g", "_z", "term"], kind="stable")
    top = scored.groupby("_g", sort=True).head(top_k)
    return top[COLUMNS].reset_index(drop=True)


# --------------------------------------------------------------------------- Table 5


def rationale_texts(instrument, *, expert=None, predictions=None) -> tuple[pd.DataFrame, str]:
    """The rationales Table 5 contrasts, with their dimension, and a note of their source.

    ``expert``: the rationale table (``results/rationales.parquet``, its ``final`` text);
    else ``predictions``: prediction files, whose parsed answers' rationales are used.
    """
    from care.errors import CareInputError
    from care.evaluate.metrics import EVALUATED_COLUMNS
    from care.infer.run import read_predictions
    from care.rationales.stats import reference_label

    if expert:
        texts = pd.read_parquet(expert)
        for column in ("item_id", "final"):
            if column not in texts.columns:
                raise CareInputError(expert, "missing column", field=column)
        texts = texts.assign(text=texts["final"])
        source = reference_label(texts)
    else:
        texts = read_predictions(predictions, EVALUATED_COLUMNS)
        texts = texts[texts["parsed"].astype(bool)].assign(text=texts["rationale"])
        source = "generated: " + ", ".join(sorted(set(texts["model"] + "/" + texts["variant"])))
    texts = texts.dropna(subset=["text"])
    return texts.assign(dimension=texts["item_id"].map(instrument.dimension_of)), source


def table5(
    texts: pd.DataFrame, source: str, instrument, language: str, spec: Mapping
) -> tuple[pd.DataFrame, list[str]]:
    """Table 5: each dimension's distinctive terms (against the other dimensions) and its
    rationales' length; with the table's notes."""
    from care.evaluate import tables

    dims = instrument.dimension_ids
    by_dim = {d: list(texts.loc[texts["dimension"] == d, "text"]) for d in dims}
    if len(dims) < 2:
        # log-odds contrast a dimension with the others: with one there is nothing to rank
        log.warning("Table 5: the instrument has one dimension; no distinctive terms")
        terms = pd.DataFrame(columns=COLUMNS)
    else:
        terms = top_terms(
            by_dim,
            language,
            int(spec.get("top_k", default(f"{LOG_ODDS}.top_k"))),
            min_count=int(spec.get("min_count", default(f"{LOG_ODDS}.min_count"))),
            stopwords=stopword_list(spec.get("stopwords", default(f"{LOG_ODDS}.stopwords"))),
            prior_size=spec.get("prior_size"),
        )
    lengths = (
        texts.assign(n=texts["text"].str.len())
        .groupby("dimension")["n"]
        .agg(length_mean="mean", length_sd="std")
        .reset_index()
    )
    notes = [
        f"Rationales: {source}. Unigrams ({language}); log-odds ratio with an informative "
        "Dirichlet prior (Monroe et al. 2008), each dimension against the other dimensions; "
        "z-scores in parentheses (|z| > 1.96: p < .05). Length: characters, mean ± sd.",
    ]
    if len(dims) < 2:
        notes.append(
            f"The instrument ({instrument.name}) has a single dimension: distinctive terms "
            "need another dimension to contrast with, so none are listed."
        )
    return tables.table5(terms, lengths, source), notes
