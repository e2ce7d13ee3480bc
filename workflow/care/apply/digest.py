"""Counselor digests: recurring problems in a counselor's low-alliance sessions.

For each chosen counselor and each dimension, the sessions whose predicted dimension score is
at most a threshold on the instrument's scale are the counselor's *low-alliance* sessions on
that dimension (``application.low_alliance_threshold``; the paper's section 7 used <= 2 on the
1-5 scale). The threshold is a point of the scale, never a rank within the corpus, so a
counselor is not called low-alliance for being below others; each digest shows where the
threshold lies in the distribution of the counselor's and the corpus' predicted scores, and
the counselor's mean with its 95% interval and n beside the corpus mean.

The model's rationales for that dimension's items in those sessions are contrasted, by the
log-odds ratio with an informative Dirichlet prior (the evaluation stage's
:func:`care.evaluate.logodds.top_terms`), with the rationales of the counselor's other
sessions (``contrast: counselor``) or of every other session in the corpus (``contrast:
corpus``); the terms most over-represented in the low sessions (z >= 1.96; English function
words left out) name the recurring problems. The rationales that contain the most of those
terms (weighted by z; one per session) are quoted as representative, with the turns they
cite. Written as Markdown and HTML (one template each), with an index of each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from care.errors import CareInputError
from care.instrument import Instrument
from care.io import atomic_open
from care.names import file_stem
from care.prompts import cited_turns, labels
from care.sessions import Session

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"
MIN_Z = 1.96  # a term counts as recurring when its log-odds z-score is significant at .05


def stopwords(language: str) -> frozenset[str]:
    """Function words left out of the terms (English: scikit-learn's list; others: none)."""
    if language.split("-")[0] == "en":
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        return ENGLISH_STOP_WORDS
    return frozenset()


@dataclass
class DimensionDigest:
    dimension: str
    label: str
    threshold: float
    n_sessions: int
    n_low: int
    mean: float
    corpus_mean: float
    contrast: str
    ci: tuple[float, float] = (float("nan"), float("nan"))
    histogram: list[dict] = field(default_factory=list)  # per bin: range, counselor, corpus
    terms: list[dict] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)


@dataclass
class CounselorDigest:
    counselor_id: str
    n_sessions: int
    rule: str  # how low-alliance sessions were chosen, in words
    dimensions: list[DimensionDigest]
    notice: object = None  # care.apply.notice.Validity: model, held-out r, what scores are


def low_thresholds(dims: list[str], instrument: Instrument, threshold: float | None
                   ) -> tuple[dict[str, float], str]:
    """Per dimension, the score on the scale at or below which a session is low-alliance."""
    lo, hi = instrument.scale_min, instrument.scale_max
    if threshold is None or not lo <= float(threshold) <= hi:
        raise CareInputError("config", f"low_alliance_threshold must be a point of the "
                             f"instrument's {lo}-{hi} scale (got {threshold!r})",
                             field="application.low_alliance_threshold")
    rule = f"at most {float(threshold):g} on the {lo}–{hi} scale"
    return {d: float(threshold) for d in dims}, rule


def histogram(mine: pd.Series, corpus: pd.Series, instrument: Instrument, threshold: float,
              bins: int = 8) -> list[dict]:
    """Shares of the counselor's and the corpus' sessions per bin of the whole scale."""
    import numpy as np

    edges = np.linspace(instrument.scale_min, instrument.scale_max, bins + 1)
    rows = []
    for n, (low, high) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        last = n == bins - 1
        def share(v, low=low, high=high, last=last):
            v = v.dropna()
            inside = (v >= low) & ((v <= high) if last else (v < high))
            return float(inside.mean()) if len(v) else 0.0
        rows.append({"low": float(low), "high": float(high), "counselor": share(mine),
                     "corpus": share(corpus), "below": high <= threshold + 1e-9})
    return rows


def choose_counselors(scores: pd.DataFrame, counselors: list[str], min_sessions: int) -> list[str]:
    """The configured ids, else every counselor with at least ``min_sessions`` sessions."""
    if counselors:
        return [str(c) for c in counselors]
    counts = scores.groupby("counselor_id")["session_id"].nunique()
    return sorted(counts[counts >= min_sessions].index, key=lambda c: (-counts[c], c))


def _term_weight(text: str, terms: list[dict]) -> float:
    lowered = text.lower()
    return sum(t["z"] for t in terms if str(t["term"]).lower() in lowered)


def _quote(session: Session | None, turn_no: int, language: str, width: int = 180) -> dict:
    if session is None or not 1 <= turn_no <= len(session.turns):
        return {"turn": turn_no, "speaker": "", "text": ""}
    turn = session.turns[turn_no - 1]
    text = turn.text if len(turn.text) <= width else turn.text[: width - 1] + "…"
    return {"turn": turn_no, "speaker": labels(language)[turn.speaker], "text": text}


def dimension_digest(
    counselor: str, dim: str, predictions: pd.DataFrame, scores: pd.DataFrame,
    instrument: Instrument, sessions: dict[str, Session], *, threshold: float, contrast: str,
    top_k: int, n_examples: int, language: str,
) -> DimensionDigest:
    from care.apply.profiles import mean_interval
    from care.evaluate.logodds import top_terms

    mine = scores[scores["counselor_id"] == counselor]
    low_ids = set(mine.loc[mine[dim] <= threshold, "session_id"])
    if contrast == "corpus":
        rest_ids = set(scores.loc[~scores["session_id"].isin(low_ids), "session_id"])
    else:
        rest_ids = set(mine.loc[mine[dim] > threshold, "session_id"])
    digest = DimensionDigest(
        dim, instrument.dimension(dim).label(language), threshold, int(mine[dim].notna().sum()),
        len(low_ids), float(mine[dim].mean()), float(scores[dim].mean()), contrast,
        mean_interval(mine[dim], 0.95)[1:],
        histogram(mine[dim], scores[dim], instrument, threshold),
    )
    rows = predictions[(predictions["dimension"] == dim) & predictions["rationale"].notna()]
    low = rows[rows["session_id"].isin(low_ids)]
    rest = rows[rows["session_id"].isin(rest_ids)]
    if low.empty:
        return digest
    if not rest.empty:
        terms = top_terms({"low": low["rationale"].tolist(), "rest": rest["rationale"].tolist()},
                          language, top_k, stopwords=stopwords(language))
        terms = terms[(terms["group"] == "low") & (terms["z"] >= MIN_Z)]
        digest.terms = [
            {"term": str(r.term), "z": float(r.z), "log_odds": float(r.log_odds),
             "count": int(r.count)} for r in terms.head(top_k).itertuples()
        ]
    digest.examples = _examples(low, digest.terms, sessions, instrument, n_examples, language)
    return digest


def _examples(low, terms, sessions, instrument, n_examples, language) -> list[dict]:
    ranked = low.assign(
        weight=low["rationale"].map(lambda t: _term_weight(t, terms)),
    ).sort_values(["weight", "score", "session_id", "item_id"],
                  ascending=[False, True, True, True])
    examples, seen = [], set()
    for r in ranked.itertuples():
        if r.rationale in seen or r.session_id in seen:
            continue  # one example per session: items of a dimension often read alike
        seen.update((r.rationale, r.session_id))
        session = sessions.get(r.session_id)
        examples.append({
            "session_id": r.session_id, "item_id": r.item_id,
            "item": instrument.items[r.item_id].wording(language),
            "score": None if pd.isna(r.score) else float(r.score),
            "rationale": r.rationale,
            "cited": [_quote(session, n, language) for n in cited_turns(r.rationale)][:3],
        })
        if len(examples) == n_examples:
            break
    return examples


def counselor_digest(counselor, predictions, scores, instrument, sessions, *, thresholds,
                     rule, notice=None, **options) -> CounselorDigest:
    dims = [dimension_digest(counselor, d, predictions, scores, instrument, sessions,
                             threshold=thresholds[d], **options)
            for d in instrument.dimension_ids]
    n = int(scores.loc[scores["counselor_id"] == counselor, "session_id"].nunique())
    return CounselorDigest(counselor, n, rule, dims, notice)


def compare(x: DimensionDigest) -> str:
    """Lower / higher than the corpus only where the counselor's 95% interval excludes it."""
    low, high = x.ci
    if not (pd.notna(low) and pd.notna(high)):
        return "too few sessions for an interval"
    if high < x.corpus_mean:
        return "lower (interval below the corpus mean)"
    if low > x.corpus_mean:
        return "higher (interval above the corpus mean)"
    return "no clear difference"


def _environment():
    import jinja2

    from care.evaluate.figures import dimension_color
    from care.tableformat import number

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals.update(num=lambda v: "n/a" if v is None or pd.isna(v) else number(v, 2),
                       color=dimension_color, compare=compare, hist=histogram_svg)
    return env


def render(digest: CounselorDigest, fmt: str) -> str:
    return _environment().get_template(f"digest.{fmt}.j2").render(d=digest)


def write_digests(
    predictions: pd.DataFrame, scores: pd.DataFrame, instrument: Instrument,
    sessions: list[Session], out_dir: str | Path, *, counselors: list[str], min_sessions: int,
    threshold: float | None = None, contrast: str = "counselor",
    top_k: int = 10, n_examples: int = 3, language: str = "en", notice=None,
) -> list[CounselorDigest]:
    """Write ``{counselor}.md`` and ``.html`` per chosen counselor, and an index of each."""
    out_dir = Path(out_dir)
    by_id = {s.session_id: s for s in sessions}
    thresholds, rule = low_thresholds(instrument.dimension_ids, instrument, threshold)
    chosen = choose_counselors(scores, counselors, min_sessions)
    unknown = sorted(set(chosen) - set(scores["counselor_id"]))
    if unknown:
        raise CareInputError("config", f"counselor {unknown[0]!r} has no predicted sessions",
                             field="application.digest.counselors")
    digests = []
    for counselor in chosen:
        digest = counselor_digest(
            counselor, predictions, scores, instrument, by_id, thresholds=thresholds, rule=rule,
            contrast=contrast, top_k=top_k, n_examples=n_examples, language=language,
            notice=notice,
        )
        for fmt in ("md", "html"):
            with atomic_open(out_dir / f"{file_stem(str(counselor))}.{fmt}") as f:
                f.write(render(digest, fmt))
        digests.append(digest)
        log.info("digest for %s: %s low-alliance sessions (%s)", counselor,
                 "/".join(str(d.n_low) for d in digest.dimensions),
                 "/".join(d.dimension for d in digest.dimensions))
    env = _environment()
    for fmt in ("md", "html"):
        with atomic_open(out_dir / f"index.{fmt}") as f:
            f.write(env.get_template(f"digest_index.{fmt}.j2").render(
                digests=digests, rule=rule, safe_name=lambda c: file_stem(str(c)),
                notice=notice))
    return digests


def write_combined(digests: list[CounselorDigest], path: str | Path) -> None:
    """Every digest on one self-contained page (the HTML report embeds single files only)."""
    pages = [render(d, "html") for d in digests]
    if not pages:
        body, head = "<p>No counselor has enough sessions for a digest.</p>", "<head></head>"
    else:
        head = pages[0].split("<body>", 1)[0]
        body = "\n<hr>\n".join(p.split("<body>", 1)[1].rsplit("</body>", 1)[0] for p in pages)
    with atomic_open(path) as f:
        f.write(f"{head}<body>\n{body}\n</body>\n</html>\n")



def histogram_svg(x: DimensionDigest, color: str, width: int = 320, height: int = 90):
    """The counselor's (colour) and the corpus' (grey) share of sessions per bin of the whole
    scale, the low-alliance region shaded: where the threshold lies in the distribution."""
    from markupsafe import Markup

    rows = x.histogram
    if not rows:
        return Markup("")
    lo, hi = rows[0]["low"], rows[-1]["high"]
    plot_h, top = height - 18, max(max(r["counselor"], r["corpus"]) for r in rows) or 1.0
    def px(v):
        return (v - lo) / (hi - lo) * width
    slot = width / len(rows)
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="distribution of predicted {x.label} scores">',
             f'<rect x="0" y="0" width="{px(min(x.threshold, hi)):.1f}" height="{plot_h}" '
             'fill="#fde8e8"><title>low-alliance region</title></rect>']
    for n, r in enumerate(rows):
        for k, (key, fill) in enumerate((("counselor", color), ("corpus", "#9aa5b1"))):
            h = r[key] / top * (plot_h - 4)
            parts.append(f'<rect x="{n * slot + 2 + k * (slot - 4) / 2:.1f}" y="{plot_h - h:.1f}" '
                         f'width="{(slot - 4) / 2:.1f}" height="{h:.1f}" fill="{fill}">'
                         f'<title>{key}: {100 * r[key]:.0f}% of sessions in '
                         f'{r["low"]:.1f}–{r["high"]:.1f}</title></rect>')
    parts.append(f'<line x1="{px(x.threshold):.1f}" x2="{px(x.threshold):.1f}" y1="0" '
                 f'y2="{plot_h}" stroke="#b42318" stroke-dasharray="3 2"/>')
    for v in range(int(lo), int(hi) + 1):
        anchor = "start" if v == lo else "end" if v == hi else "middle"
        parts.append(f'<text x="{px(v):.1f}" y="{height - 3}" font-size="11" '
                     f'text-anchor="{anchor}">{v}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
