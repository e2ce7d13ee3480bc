"""Interaction patterns and predicted alliance (the paper's Appendix D, Table 8).

A *pattern* is a counselor turn followed directly by the client's reply, named by the
counselor strategy's category and the client reaction's polarity (``Supporting-Negative``:
a supporting strategy met by a negative reaction). The taxonomy maps each turn label of the
corpus to its category or polarity and is config (``application.patterns``); a label the
taxonomy does not know is an error naming file, line and field, never silently dropped.

Per session, a pattern's *rate* is its count over the session's labeled exchanges (pairs
whose two turns both carry a label). Per dimension, an OLS (statsmodels) regresses the
session's predicted dimension score on the rates of the configured predictor patterns; the
patterns left out form the reference category (the rates of a session sum to 1). Sessions are
nested in clients and counselors, so standard errors are cluster-robust by client by default
(:class:`Regression`: client | counselor | none, then ``cov_type``, e.g. HC3), with t tests on
G - 1 degrees of freedom for G clusters. A predictor that never varies
in the data (e.g. never observed) cannot be estimated: it is left out of the fit and reported
as such. Sessions without labeled exchanges (a corpus may be only partly annotated, as the
paper's 300 of 2,236) are left out and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from care.errors import CareInputError
from care.instrument import Instrument
from care.sessions import Session

log = logging.getLogger(__name__)
INTERCEPT = "(Intercept)"
STAT_COLUMNS = ["dimension", "term", "coef", "se", "t", "p", "p_adjusted", "ci_low", "ci_high",
                "stars", "n_sessions", "n_clusters", "r2", "outcome_sd", "note"]
CLUSTERS = {"client": "client_id", "counselor": "counselor_id", "none": None}


@dataclass(frozen=True)
class Regression:
    """How Table 8's standard errors are computed (``application.regression``)."""

    cluster: str = "client"        # client | counselor | none
    cov_type: str = "nonrobust"    # statsmodels cov_type when cluster is none (HC3, ...)

    def describe(self) -> str:
        if self.cluster != "none":
            return (f"cluster-robust by {self.cluster} (statsmodels CR1, t on G - 1 df, "
                    "G clusters in the table)")
        return {"nonrobust": "classical OLS"}.get(self.cov_type, self.cov_type)

    def fit(self, model, data: pd.DataFrame):
        column = CLUSTERS[self.cluster]
        if column is None:
            return model.fit(cov_type=self.cov_type)
        groups = pd.factorize(data[column].astype(str))[0]
        return model.fit(cov_type="cluster", cov_kwds={"groups": groups}, use_t=True)

    def n_clusters(self, data: pd.DataFrame) -> float:
        column = CLUSTERS[self.cluster]
        return float(data[column].nunique()) if column else np.nan


@dataclass(frozen=True)
class Taxonomy:
    strategies: dict[str, str]   # counselor strategy label -> category
    reactions: dict[str, str]    # client reaction label -> polarity
    predictors: tuple[tuple[str, str], ...]  # (category, polarity) pairs regressed on

    @classmethod
    def from_config(cls, spec: dict, where: str = "application.patterns") -> Taxonomy:
        strategies = dict(spec.get("strategies") or {})
        reactions = dict(spec.get("reactions") or {})
        categories, polarities = set(strategies.values()), set(reactions.values())
        predictors = []
        for n, name in enumerate(spec.get("predictors") or []):
            category, _, polarity = str(name).rpartition("-")
            if category not in categories or polarity not in polarities:
                raise CareInputError(
                    "config", f"predictor {name!r} is not <category>-<polarity> with a category "
                    f"in {sorted(categories)} and a polarity in {sorted(polarities)}",
                    field=f"{where}.predictors.{n}",
                )
            predictors.append((category, polarity))
        if not predictors:
            raise CareInputError("config", "no predictor patterns", field=f"{where}.predictors")
        return cls(strategies, reactions, tuple(predictors))

    @property
    def patterns(self) -> list[tuple[str, str]]:
        """Every (category, polarity) pair, in the taxonomy's order of first appearance."""
        cats = list(dict.fromkeys(self.strategies.values()))
        pols = list(dict.fromkeys(self.reactions.values()))
        return [(c, p) for c in cats for p in pols]


def pattern_name(category: str, polarity: str) -> str:
    return f"{category}-{polarity}"


def display_name(category: str, polarity: str) -> str:
    return f"{category} - {polarity}"


# --------------------------------------------------------------------------- rates


def check_labels(path: str | Path, session: Session, taxonomy: Taxonomy) -> None:
    """Every counselor strategy and client reaction label must be in the taxonomy."""
    for k, turn in enumerate(session.turns):
        if turn.speaker == "counselor" and turn.strategy is not None:
            known, label, field, key = taxonomy.strategies, turn.strategy, "strategy", "strategies"
        elif turn.speaker == "client" and turn.reaction is not None:
            known, label, field, key = taxonomy.reactions, turn.reaction, "reaction", "reactions"
        else:
            continue
        if label not in known:
            raise CareInputError(
                path,
                f"{field} label {label!r} is not in the pattern taxonomy "
                f"(application.patterns.{key}: {sorted(known)})",
                line=session.line, field=f"turns.{k}.{field}",
            )


def exchanges(session: Session, taxonomy: Taxonomy) -> list[tuple[str, str] | None]:
    """Each counselor turn answered directly by a client turn: its pattern, or None if unlabeled."""
    out = []
    for prev, turn in zip(session.turns, session.turns[1:], strict=False):
        if prev.speaker != "counselor" or turn.speaker != "client":
            continue
        if prev.strategy is None or turn.reaction is None:
            out.append(None)
        else:
            out.append((taxonomy.strategies[prev.strategy], taxonomy.reactions[turn.reaction]))
    return out


def pattern_rates(
    sessions: list[Session], taxonomy: Taxonomy, path: str | Path = "corpus"
) -> pd.DataFrame:
    """One row per session: labeled exchange count and the rate of every pattern."""
    names = [pattern_name(*p) for p in taxonomy.patterns]
    rows = []
    for session in sessions:
        check_labels(path, session, taxonomy)
        labeled = [e for e in exchanges(session, taxonomy) if e is not None]
        counts = pd.Series([pattern_name(*e) for e in labeled], dtype=object).value_counts()
        row = {"session_id": session.session_id, "client_id": session.client_id,
               "counselor_id": session.counselor_id, "n_exchanges": len(labeled)}
        for name in names:
            row[name] = counts.get(name, 0) / len(labeled) if labeled else np.nan
        rows.append(row)
    return pd.DataFrame(rows).sort_values("session_id").reset_index(drop=True)


# --------------------------------------------------------------------------- regression


def stars(p: float) -> str:
    if pd.isna(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def fit_dimension(
    data: pd.DataFrame, dim: str, predictors: list[str], regression: Regression | None = None
) -> list[dict]:
    """OLS of ``dim`` on the predictor rates; one stats row per term (intercept first)."""
    import statsmodels.api as sm

    regression = regression or Regression()
    data = data.dropna(subset=[dim, *predictors])
    n, clusters = len(data), regression.n_clusters(data)
    usable = [p for p in predictors if data[p].nunique() > 1]
    rows = []
    if n < len(usable) + 2 or clusters < 2:
        note = f"too few sessions ({n}) or clusters ({clusters:g}) for {len(usable)} predictors"
        return [_nan_row(dim, t, n, clusters, note) for t in [INTERCEPT, *predictors]]
    if data[dim].nunique() < 2:
        note = "predicted scores do not vary"  # e.g. a model that always answers the same
        return [_nan_row(dim, t, n, clusters, note) for t in [INTERCEPT, *predictors]]
    design = sm.add_constant(data[usable].astype(float), has_constant="add")
    fit = regression.fit(sm.OLS(data[dim].astype(float), design), data)
    ci = fit.conf_int()
    for term, col in [(INTERCEPT, "const"), *((p, p) for p in predictors)]:
        if col not in fit.params:
            never = (data[col] == 0).all()
            note = "never observed" if never else "no variation"
            rows.append(_nan_row(dim, term, n, clusters, note))
            continue
        rows.append({
            "dimension": dim, "term": term, "coef": fit.params[col], "se": fit.bse[col],
            "t": fit.tvalues[col], "p": fit.pvalues[col], "ci_low": ci.loc[col, 0],
            "ci_high": ci.loc[col, 1], "stars": stars(fit.pvalues[col]), "n_sessions": n,
            "n_clusters": clusters, "r2": fit.rsquared, "note": "",
        })
    spread = float(data[dim].std(ddof=1)) if n > 1 else np.nan
    return [{**row, "outcome_sd": spread} for row in rows]


def _nan_row(dim: str, term: str, n: int, clusters: float, note: str) -> dict:
    return {"dimension": dim, "term": term, "coef": np.nan, "se": np.nan, "t": np.nan,
            "p": np.nan, "ci_low": np.nan, "ci_high": np.nan, "stars": "", "n_sessions": n,
            "n_clusters": clusters, "r2": np.nan, "outcome_sd": np.nan, "note": note}


def regress(
    rates: pd.DataFrame, scores: pd.DataFrame, instrument: Instrument, taxonomy: Taxonomy,
    regression: Regression | None = None, multiple_testing: str = "holm",
) -> pd.DataFrame:
    """Table 8 in long form: one row per (dimension, term). ``p`` is each test's own p-value;
    ``p_adjusted`` and the stars adjust it over every coefficient of the table
    (``multiple_testing``, :mod:`care.evaluate.multiplicity`)."""
    data = rates[rates["n_exchanges"] > 0].merge(
        scores.drop(columns=["counselor_id", "client_id"], errors="ignore"),
        on="session_id", how="inner",
    )
    dropped = len(rates) - int((rates["n_exchanges"] > 0).sum())
    if dropped:
        log.info("%d sessions without labeled exchanges left out of the regression", dropped)
    predictors = [pattern_name(*p) for p in taxonomy.predictors]
    rows = []
    if data.empty:
        # e.g. a corpus without reaction labels: the table says why it holds no estimates
        note = "no labeled exchanges (counselor strategy and client reaction labels)"
        log.warning("Table 8: no session has %s; the table holds no estimates", note[3:])
        for dim in instrument.dimension_ids:
            rows += [_nan_row(dim, t, 0, np.nan, note) for t in [INTERCEPT, *predictors]]
    for dim in instrument.dimension_ids if not data.empty else ():
        rows += fit_dimension(data, dim, predictors, regression)
    table = adjust_stars(pd.DataFrame(rows, columns=STAT_COLUMNS), multiple_testing)
    table["term"] = table["term"].map(
        lambda t: t if t == INTERCEPT else display_name(*t.rpartition("-")[::2])
    )
    return table


def adjust_stars(table: pd.DataFrame, method: str) -> pd.DataFrame:
    """``p_adjusted`` over all the table's tests, and the stars from it."""
    from care.evaluate import multiplicity

    adjusted = multiplicity.adjust(table["p"].to_numpy(dtype=float), method)
    return table.assign(p_adjusted=adjusted, stars=[stars(p) for p in adjusted])


def display_table(table: pd.DataFrame, instrument: Instrument, language: str = "en",
                  digits: int = 2) -> pd.DataFrame:
    """Wide, paper-style: rows = patterns, columns = dimensions, ``coef*** (se)`` cells,
    every number with ``digits`` decimals and a true minus sign (no .05 beside .047)."""
    from care.tableformat import number

    terms = [t for t in table["term"].drop_duplicates() if t != INTERCEPT] + [INTERCEPT]
    out = {"Pattern": [*terms, "N sessions", "N clusters", "R²"]}
    for dim in instrument.dimension_ids:
        sub = table[table["dimension"] == dim].set_index("term")
        cells = []
        for term in terms:
            r = sub.loc[term]
            cells.append(r["note"] if pd.isna(r["coef"]) else
                         f"{number(r['coef'], digits)}{r['stars']} ({number(r['se'], digits)})")
        r2 = sub["r2"].dropna()
        groups = sub["n_clusters"].iloc[0]
        cells += [str(int(sub["n_sessions"].iloc[0])), "" if pd.isna(groups) else str(int(groups)),
                  number(r2.iloc[0], digits) if len(r2) else ""]
        out[instrument.dimension(dim).label(language)] = cells
    return pd.DataFrame(out)


CAPTION = ("Table 8: OLS coefficients (standard errors) of counselor-client interaction "
           "pattern rates predicting the session-level prediction of {construct}")
NOTES = (
    "*** p < .001, ** p < .01, * p < .05 (p Holm-adjusted over the table's tests).",
    "A pattern is a counselor turn (strategy category) answered directly by the client "
    "(reaction polarity); its rate is its share of the session's labeled exchanges.",
    "The outcome is the model's predicted dimension score, not a client rating.",
)


def table_notes(
    taxonomy: Taxonomy,
    regression: Regression,
    model: str | None = None,
    scoring: str | None = None,
    table: pd.DataFrame | None = None,
    multiple_testing: str = "holm",
) -> list[str]:
    """The notes under Table 8: significance (the correction over ``table``'s tests), the
    outcome, the reference category, the standard errors."""
    from care.evaluate import multiplicity

    n_tests = int(table["p"].notna().sum()) if table is not None else 0
    significance = (
        f"*** p < .001, ** p < .01, * p < .05, p {multiplicity.describe(multiple_testing, n_tests)}"
        " (CSV: p uncorrected, p_adjusted)." if table is not None else NOTES[0]
    )
    entered = set(taxonomy.predictors)
    reference = [display_name(*p) for p in taxonomy.patterns if p not in entered]
    source = ", ".join(
        x for x in (model and f"model {model}", scoring and f"{scoring} scoring") if x
    )
    return [
        significance,
        *NOTES[1:-1],
        NOTES[-1][:-1] + (f" ({source})." if source else "."),
        *outcome_note(table),
        "Reference category (rates left out; a session's rates sum to 1): "
        + (", ".join(reference) or "none") + ".",
        f"Standard errors: {regression.describe()}.",
    ]


def outcome_note(table: pd.DataFrame | None) -> list[str]:
    """The spread of the predicted outcome per dimension: a regression on a model output that
    hardly varies can show stars and a high R² that say nothing about alliance."""
    if table is None or "outcome_sd" not in table or table["outcome_sd"].isna().all():
        return []
    spread = table.dropna(subset=["outcome_sd"]).groupby("dimension", sort=False)["outcome_sd"]
    parts = ", ".join(f"{dim} {sd:.2f}" for dim, sd in spread.first().items())
    return [f"Spread of the outcome (sd of the predicted dimension score over sessions): "
            f"{parts}. Coefficients are in scale points of that outcome; where its sd is a "
            "few hundredths, they describe the model's small variations, not the alliance."]


def write_table8(table: pd.DataFrame, instrument: Instrument, csv: str | Path,
                 language: str = "en", notes: list[str] | tuple[str, ...] = NOTES) -> None:
    """``table8.csv`` (long, one column per statistic) and .md, .tex, .html (paper layout),
    with the writer of every results table (:func:`care.tableformat.write_outputs`)."""
    from care.tableformat import latex_display, write_outputs

    pretty = display_table(table, instrument, language)
    caption = CAPTION.format(construct=instrument.construct_text(language))
    write_outputs(csv, table.round(6), pretty, latex_display(pretty), caption, list(notes))
