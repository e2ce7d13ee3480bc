"""What every application page says about itself: which model, how valid, what the scores are.

A counselor or supervisor reading a digest or a session page must see that the numbers are a
model's predictions, how well that model agreed with clients on sessions it never saw (its
held-out fold: Pearson r per dimension with a 95% Fisher-z interval and n), and, for
synthetic data, that the page is a demonstration. :func:`model_validity` computes it once;
the templates and Figure 2 print it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from markupsafe import Markup, escape

from care.instrument import Instrument

PREDICTIONS_NOTE = (
    "Scores are a language model's predictions of how the client would rate {construct}, "
    "not the client's ratings, a clinical judgement or an appraisal of the counselor."
)
POOLED = ("Pearson r pooled over the held-out folds of this model's recipe, each session scored "
          "by the fold model that never saw it; 95% Fisher-z CI; sessions")
DEMO_NOTE = (
    "Demonstration: synthetic sessions scored by a tiny model trained on synthetic data. "
    "Nothing here describes real clients or counselors."
)


@dataclass
class Validity:
    model: str
    scale: str
    construct: str  # what the instrument measures ("the working alliance")
    dimensions: list[dict] = field(default_factory=list)  # label, r, low, high, n
    synthetic: bool = False
    source: str = ""

    @property
    def predictions_note(self) -> str:
        return PREDICTIONS_NOTE.format(construct=self.construct)

    def r_text(self) -> str:
        parts = []
        for d in self.dimensions:
            if d["r"] is None:
                parts.append(f"{d['label']} n/a (n={d['n']})")
            else:
                parts.append(f"{d['label']} r = {_r(d['r'])} [{_r(d['low'])}, {_r(d['high'])}]"
                             f" (n={d['n']})")
        return "; ".join(parts)

    @property
    def unshown(self) -> list[str]:
        """Dimensions on which the model has not shown it can rank: no r, or an interval
        that includes 0."""
        return [d["label"] for d in self.dimensions
                if d["r"] is None or not math.isfinite(d.get("low", math.nan)) or d["low"] <= 0]

    def ranking_text(self) -> str:
        if not self.unshown:
            return ""
        return (f"The model has not shown that it can rank sessions or counselors on "
                f"{', '.join(self.unshown)}: its held-out r's interval includes 0 there, so "
                "differences between sessions or counselors on the pages may be noise.")

    def lines(self) -> list[str]:
        out = [f"Model: {self.model}. Held-out agreement with clients' ratings ({POOLED}): "
               f"{self.r_text()}.", self.predictions_note]
        if self.unshown:
            out.insert(1, self.ranking_text())
        if self.synthetic:
            out.insert(0, DEMO_NOTE)
        return out

    def markdown(self) -> str:
        return "\n".join(f"> {line}  " for line in self.lines()) + "\n"

    def html(self) -> Markup:
        demo = (f'<p class="demo"><strong>{escape(DEMO_NOTE)}</strong></p>'
                if self.synthetic else "")
        return Markup(
            '<aside class="notice" style="border:1px solid #d9a400;background:#fffbea;'
            'color:#1f2933;padding:.5rem .9rem;margin:1rem 0;font-size:.9rem">'
            f"{demo}<p><strong>Model:</strong> {escape(self.model)}. "
            f"<strong>Held-out agreement with clients' ratings</strong> ({POOLED}): "
            f"{escape(self.r_text())}. Scale: {escape(self.scale)}.</p>"
            + (f"<p><strong>{escape(self.ranking_text())}</strong></p>" if self.unshown else "")
            + f"<p>{escape(self.predictions_note)}</p></aside>"
        )


def _r(value: float) -> str:
    from care.tableformat import number

    return number(value, 2)


def fisher_interval(r: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Fisher-z interval of a Pearson r from n pairs (NaN bounds for n < 4)."""
    from scipy import stats

    if n < 4 or not math.isfinite(r) or abs(r) >= 1:
        return math.nan, math.nan
    z, half = math.atanh(r), stats.norm.ppf(0.5 + confidence / 2) / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def model_validity(heldout: list[str | Path] | None, instrument: Instrument, *, model: str,
                   synthetic: bool, language: str = "en") -> Validity:
    """Per dimension, the Pearson r with the client over every held-out fold of the model's
    recipe (``heldout``: one predictions file per fold), not one fold's r: one fold of a few
    clients can show r = .46 for a recipe whose pooled r is .07."""
    from care.evaluate.metrics import EVALUATED_COLUMNS, correlations, dimension_scores
    from care.infer.run import read_predictions

    scale = (f"{instrument.scale_min}–{instrument.scale_max} "
             f"({instrument.name}; dimension score = mean of its items)")
    validity = Validity(model, scale, instrument.construct_text(language), synthetic=synthetic,
                        source=", ".join(map(str, heldout or [])))
    if not heldout:
        validity.dimensions = [{"label": d.label(language), "r": None, "n": 0}
                               for d in instrument.dimensions]
        return validity
    scores = dimension_scores(read_predictions(list(heldout), EVALUATED_COLUMNS), instrument)
    for dim in instrument.dimensions:
        part = scores[scores["dimension"] == dim.id].dropna(subset=["predicted", "client"])
        r = correlations(part["predicted"].to_numpy(), part["client"].to_numpy())["pearson"]
        low, high = fisher_interval(r, len(part))
        ok = math.isfinite(r)
        validity.dimensions.append({"label": dim.label(language), "r": r if ok else None,
                                    "low": low, "high": high, "n": len(part)})
    return validity
