"""The application stage: corpus scoring, Figure 2, Table 8, digests and session reports.

Most tests run on *synthetic predictions* (the demo generator's client ratings as scores and
its reference rationales as the model's), so every number is known; one test scores a few
sessions with a real (tiny, random) HF causal LM through the inference engine.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from care.apply import digest, patterns, predict, profiles, session_report
from care.corpus import CorpusSpec, generate
from care.errors import CareInputError
from care.io import write_jsonl
from care.names import file_stem
from scipy import stats

from .conftest import REPO
from .latex import ENGINE, assert_compiles

INSTRUMENT = REPO / "workflow" / "instruments" / "wai_sr.yaml"

TAXONOMY = {
    "strategies": {"reflection": "Supporting", "affirmation": "Supporting",
                   "restatement": "Supporting", "self_disclosure": "Supporting",
                   "inquiry": "Exploring", "suggestion": "Guiding", "information": "Guiding",
                   "challenge": "Challenging"},
    "reactions": {"positive": "Positive", "neutral": "Neutral", "negative": "Negative"},
    "predictors": ["Supporting-Positive", "Challenging-Positive", "Supporting-Negative",
                   "Challenging-Negative", "Guiding-Negative"],
}


def fake_rows(records, refs, instrument, unparsed=()):
    """Prediction rows: client rating as score, a peaked distribution, reference rationale."""
    ref = {(r["session_id"], r["item_id"]): r["rationale"] for r in refs}
    points = np.array(instrument.scale_points, dtype=float)
    for rec in records:
        for item in instrument.item_ids:
            score = float(rec["client_ratings"][item])
            weights = np.exp(-((points - score) ** 2))
            probs = (weights / weights.sum()).tolist()
            ok = (rec["session_id"], item) not in unparsed
            yield {
                "session_id": rec["session_id"], "item_id": item,
                "score": score if ok else math.nan, "score_generated": score if ok else math.nan,
                "score_expected": float(np.dot(probs, points)), "score_argmax": score,
                "probs": probs, "rationale": ref[(rec["session_id"], item)],
                "raw_text": "...", "parsed": ok, "parse_error": None if ok else "no score found",
                "prompt_tokens": 321, "truncated": False,
            }


class FakeScorer:
    def __init__(self, rows):
        self.rows = list(rows)

    def score(self, sessions):
        wanted = {s.session_id for s in sessions}
        return [r for r in self.rows if r["session_id"] in wanted]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, instrument):
    """An 'unlabeled' corpus (ratings kept to fake predictions), its file and predictions."""
    spec = CorpusSpec(n_clients=14, sessions_per_client=(3, 6), n_counselors=3,
                      turns_per_session=(10, 14), seed=5)
    records, refs = generate(spec, instrument, labeled=True, prefix="u")
    tmp = tmp_path_factory.mktemp("apply")
    path = tmp / "unlabeled.jsonl"
    write_jsonl(path, [{k: v for k, v in r.items() if not k.endswith("_ratings")}
                       for r in records])
    sessions = predict.load_corpus(path, instrument)
    unparsed = {(records[0]["session_id"], "4")}
    frame = predict.prediction_frame(fake_rows(records, refs, instrument, unparsed), sessions,
                                     instrument, model="llama", variant="rationale", fold=1)
    return {"records": records, "refs": refs, "path": path, "sessions": sessions,
            "predictions": frame, "scores": predict.session_scores(frame, instrument),
            "tmp": tmp}


# --------------------------------------------------------------------------- predict


def test_rated_corpus_is_accepted_and_ratings_ignored(tmp_path, instrument, corpus, caplog):
    rated = tmp_path / "rated.jsonl"
    write_jsonl(rated, corpus["records"])
    with caplog.at_level("WARNING"):
        sessions = predict.load_corpus(rated, instrument)
    assert len(sessions) == len(corpus["records"])
    assert all(s.client_ratings is None and s.counselor_ratings is None for s in sessions)
    assert f"{len(sessions)} of {len(sessions)} sessions carry client ratings" in caplog.text
    assert "ignored" in caplog.text


def test_session_without_counselor_turns_is_an_error(tmp_path, instrument, corpus):
    records = [dict(r) for r in corpus["records"][:3]]
    records[1]["turns"] = [t for t in records[1]["turns"] if t["speaker"] == "client"]
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, records)
    with pytest.raises(CareInputError) as err:
        predict.load_corpus(path, instrument)
    assert err.value.line == 2 and err.value.field == "turns"
    assert "no counselor turns" in str(err.value) and str(path) in str(err.value)


def care(*args):
    """Run the ``care`` CLI in this process (no interpreter start-up); exit code and stderr."""
    from care.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stderr=err.getvalue())


@pytest.mark.parametrize("config", [
    None,                                                         # no config.json
    {"model_type": "vit", "architectures": ["ViTModel"]},         # not a language model
    {"model_type": "llama", "architectures": ["LlamaForSequenceClassification"]},
])
def test_predict_rejects_a_model_dir_that_is_not_a_causal_lm(tmp_path, corpus, config):
    model = tmp_path / "model"
    model.mkdir()
    if config is not None:
        (model / "config.json").write_text(json.dumps(config))
    out = tmp_path / "pred.parquet"
    done = care("apply", "predict", "--corpus", corpus["path"], "--instrument", INSTRUMENT,
                "--model-path", model, "--name", "llama", "--variant", "rationale",
                "--fold", 1, "--max-length", 512, "--out", out)
    assert done.returncode == 2, done.stderr
    assert f"{model}/config.json" in done.stderr
    assert ("config.json is missing" if config is None else "not a causal language model") \
        in done.stderr
    assert not out.exists()


def test_predictions_follow_the_contract(tmp_path, instrument, corpus):
    rows = list(fake_rows(corpus["records"], corpus["refs"], instrument))
    out1, out2 = tmp_path / "a.parquet", tmp_path / "b.parquet"
    for out in (out1, out2):
        frame = predict.predict_corpus(
            corpus["path"], instrument, out, model="llama", variant="rationale", fold=2,
            make_scorer=lambda: FakeScorer(reversed(rows)))
    assert out1.read_bytes() == out2.read_bytes()
    assert list(frame.columns) == predict.COLUMNS
    assert len(frame) == len(corpus["records"]) * len(instrument.item_ids)
    assert frame["session_id"].is_monotonic_increasing
    first = frame[frame["session_id"] == frame["session_id"].iloc[0]]
    assert first["item_id"].tolist() == instrument.item_ids
    assert (frame["fold"] == 2).all() and frame["client_score"].isna().all()
    assert frame["counselor_id"].str.startswith("ut").all()


def test_session_scores_are_item_means_and_never_imputed(instrument, corpus):
    scores = corpus["scores"].set_index("session_id")
    rec = corpus["records"][0]
    assert math.isnan(scores.loc[rec["session_id"], "goal"])  # item 4 unparsed
    ratings = rec["client_ratings"]
    assert scores.loc[rec["session_id"], "bond"] == pytest.approx(
        np.mean([ratings[i] for i in ("3", "5", "7", "9")]))


def test_predict_with_a_real_tiny_model(tmp_path, instrument, corpus):
    """The real path: ``care apply predict`` on a saved (random) tiny Llama, two sessions."""
    from care.model.backbone import random_backbone

    texts = [t["text"] for r in corpus["records"] for t in r["turns"]]
    model, tokenizer = random_backbone(
        "tiny", texts + ["Score: 1 2 3 4 5 Rationale:"], arch="llama", vocab_size=600, seed=3
    )
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    small = tmp_path / "two.jsonl"
    write_jsonl(small, corpus["records"][:2])
    out = tmp_path / "pred.parquet"
    settings = {"max_new_tokens": 8, "batch_size": 12, "device": "cpu"}
    done = care("apply", "predict", "--corpus", small, "--instrument", INSTRUMENT, "--model-path",
                model_dir, "--name", "llama", "--variant", "rationale", "--fold", 3,
                "--max-length", 1024, "--settings", json.dumps(settings), "--cache",
                tmp_path / "cache.sqlite", "--out", out)
    assert done.returncode == 0, done.stderr
    frame = pd.read_parquet(out)
    assert len(frame) == 2 * len(instrument.item_ids)
    assert list(frame.columns) == predict.COLUMNS
    assert (frame["fold"] == 3).all() and (frame["model"] == "llama").all()
    assert frame["raw_text"].notna().all() and (frame["prompt_tokens"] > 0).all()
    assert (tmp_path / "cache.sqlite").exists()


# --------------------------------------------------------------------------- Figure 2


def test_profiles_match_direct_t_intervals(instrument, corpus):
    scores = corpus["scores"]
    counts = scores.groupby("counselor_id").size()
    min_sessions = int(counts.sort_values().iloc[-2])  # keeps the two busiest counselors
    table = profiles.counselor_profiles(scores, instrument, min_sessions=min_sessions)
    kept = set(table["counselor_id"]) - {profiles.CORPUS}
    assert kept == set(counts[counts >= min_sessions].index)
    counselor = sorted(kept)[0]
    row = table[(table["counselor_id"] == counselor) & (table["dimension"] == "task")].iloc[0]
    values = scores.loc[scores["counselor_id"] == counselor, "task"].dropna()
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(),
                                 scale=stats.sem(values))
    assert row["mean"] == pytest.approx(values.mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    corpus_row = table[(table["counselor_id"] == profiles.CORPUS)
                       & (table["dimension"] == "goal")].iloc[0]
    assert corpus_row["mean"] == pytest.approx(scores["goal"].mean())
    assert corpus_row["n_scored"] == scores["goal"].notna().sum()


def test_profiles_anonymize_by_volume(instrument, corpus):
    table = profiles.counselor_profiles(corpus["scores"], instrument, min_sessions=1,
                                        anonymize=True)
    counts = corpus["scores"].groupby("counselor_id").size()
    busiest = counts.idxmax()
    assert table.loc[table["counselor_id"] == busiest, "label"].iloc[0] == "Counselor A"


def test_no_counselor_with_enough_sessions_is_an_error(instrument, corpus):
    with pytest.raises(CareInputError, match="min_sessions"):
        profiles.counselor_profiles(corpus["scores"], instrument, min_sessions=10_000)


def test_figure2_files(tmp_path, instrument, corpus):
    png, pdf, csv = tmp_path / "f.png", tmp_path / "f.pdf", tmp_path / "p.csv"
    profiles.figure2(corpus["scores"], instrument, stem=tmp_path / "f", table=csv, min_sessions=3)
    first = pdf.read_bytes()
    profiles.figure2(corpus["scores"], instrument, stem=tmp_path / "f", table=csv, min_sessions=3)
    assert pdf.read_bytes() == first  # no time stamps
    assert_not_blank(png)
    assert pd.read_csv(csv)["dimension"].nunique() == 3


def assert_not_blank(png, min_colors: int = 8, min_ink: float = 0.02):
    import matplotlib.image as mpimg

    image = mpimg.imread(png)[..., :3]
    colors = np.unique((image.reshape(-1, 3) * 255).round().astype(int), axis=0)
    ink = (image.mean(axis=-1) < 0.95).mean()
    assert len(colors) >= min_colors, f"{len(colors)} colors"
    assert ink >= min_ink, f"non-white share {ink:.3f}"


# --------------------------------------------------------------------------- Table 8


def session_of(turns, line=7):
    from care.sessions import Session, Turn

    return Session("s1", "c1", "t1", "en", tuple(Turn(*t) for t in turns), line=line)


def test_exchanges_pair_each_counselor_turn_with_the_direct_reply():
    tax = patterns.Taxonomy.from_config(TAXONOMY)
    s = session_of([
        ("counselor", "a", "reflection", None), ("client", "b", None, "negative"),
        ("counselor", "c", "challenge", None), ("counselor", "d", "inquiry", None),
        ("client", "e", None, "positive"), ("client", "f", None, "positive"),
        ("counselor", "g", None, None), ("client", "h", None, "neutral"),
    ])
    assert patterns.exchanges(s, tax) == [("Supporting", "Negative"), ("Exploring", "Positive"),
                                          None]
    rates = patterns.pattern_rates([s], tax).iloc[0]
    assert rates["n_exchanges"] == 2
    assert rates["Supporting-Negative"] == 0.5 and rates["Exploring-Positive"] == 0.5
    assert rates["Challenging-Positive"] == 0


def test_unknown_pattern_label_names_file_line_and_field():
    tax = patterns.Taxonomy.from_config(TAXONOMY)
    s = session_of([("counselor", "a", "reflection", None), ("client", "b", None, "angry")],
                   line=12)
    with pytest.raises(CareInputError) as err:
        patterns.pattern_rates([s], tax, "corpus.jsonl")
    assert (err.value.path, err.value.line, err.value.field) == ("corpus.jsonl", 12,
                                                                 "turns.1.reaction")
    assert "'angry'" in str(err.value)
    s = session_of([("counselor", "a", "hypnosis", None)], line=3)
    with pytest.raises(CareInputError, match="strategies") as err:
        patterns.pattern_rates([s], tax, "corpus.jsonl")
    assert err.value.field == "turns.0.strategy"


def test_bad_predictor_in_config_is_an_error():
    bad = dict(TAXONOMY, predictors=["Supporting-Angry"])
    with pytest.raises(CareInputError) as err:
        patterns.Taxonomy.from_config(bad)
    assert err.value.field == "application.patterns.predictors.0"


def test_ols_matches_least_squares_and_flags_unobserved(instrument, corpus):
    tax = patterns.Taxonomy.from_config(TAXONOMY)
    rates = patterns.pattern_rates(corpus["sessions"], tax)
    # a pattern no session shows is flagged, not fitted
    rates["Supporting-Negative"] = 0.0
    table = patterns.regress(rates, corpus["scores"], instrument, tax)
    data = rates.merge(corpus["scores"], on="session_id").dropna(subset=["bond"])
    names = [p for p in ("Supporting-Positive", "Challenging-Positive", "Challenging-Negative",
                         "Guiding-Negative") if data[p].nunique() > 1]
    x = np.column_stack([np.ones(len(data)), data[names].to_numpy()])
    beta, *_ = np.linalg.lstsq(x, data["bond"].to_numpy(), rcond=None)
    bond = table[table["dimension"] == "bond"].set_index("term")
    assert bond.loc["(Intercept)", "coef"] == pytest.approx(beta[0])
    for name, b in zip(names, beta[1:], strict=True):
        assert bond.loc[name.replace("-", " - "), "coef"] == pytest.approx(b)
    assert bond.loc["Supporting - Negative", "note"] == "never observed"
    assert math.isnan(bond.loc["Supporting - Negative", "coef"])
    assert (bond["n_sessions"] == len(data)).all()
    assert patterns.stars(0.0009) == "***" and patterns.stars(0.009) == "**"
    assert patterns.stars(0.04) == "*" and patterns.stars(0.2) == ""
    from care.tableformat import number

    # fixed decimals and a true minus sign, in a row as in a table (no .05 beside .047)
    assert number(-5.712) == "−5.71" and number(0.0472) == "0.05" and number(-0.001) == "0.00"
    assert number(-5.712, latex=True) == "$-$5.71"


def test_table8_errors_are_clustered_by_client(instrument, corpus):
    """Default: CR1 cluster-robust errors by client, equal to statsmodels' clustered covariance
    and to the sandwich formula; counselor clusters and HC3 on request."""
    import statsmodels.api as sm

    tax = patterns.Taxonomy.from_config(TAXONOMY)
    rates = patterns.pattern_rates(corpus["sessions"], tax)
    table = patterns.regress(rates, corpus["scores"], instrument, tax)
    data = rates[rates["n_exchanges"] > 0].merge(corpus["scores"].drop(columns="counselor_id"),
                                                 on="session_id").dropna(subset=["goal"])
    names = [p for p in ("-".join(q) for q in tax.predictors) if data[p].nunique() > 1]
    x = sm.add_constant(data[names].astype(float))
    y = data["goal"].to_numpy(float)
    groups = pd.factorize(data["client_id"])[0]
    ref = sm.OLS(y, x).fit(cov_type="cluster", cov_kwds={"groups": groups}, use_t=True)
    # the sandwich by hand: (X'X)^-1 sum_g X_g'u_g u_g'X_g (X'X)^-1, CR1 small-sample factor
    xm, u = x.to_numpy(), ref.resid
    bread = np.linalg.inv(xm.T @ xm)
    meat = sum(np.outer(xm[groups == g].T @ u[groups == g], xm[groups == g].T @ u[groups == g])
               for g in np.unique(groups))
    n, k, g = len(y), xm.shape[1], len(np.unique(groups))
    se = np.sqrt(np.diag(bread @ meat @ bread) * g / (g - 1) * (n - 1) / (n - k))
    goal = table[table["dimension"] == "goal"].set_index("term")
    assert goal.loc["(Intercept)", "se"] == pytest.approx(se[0])
    for j, name in enumerate(names, start=1):
        row = goal.loc[name.replace("-", " - ")]
        assert row["se"] == pytest.approx(ref.bse[name]) and row["se"] == pytest.approx(se[j])
        assert row["p"] == pytest.approx(ref.pvalues[name])
    assert (goal["n_clusters"] == data["client_id"].nunique()).all()
    classical = patterns.regress(rates, corpus["scores"], instrument, tax,
                                 patterns.Regression(cluster="none"))
    assert not np.allclose(classical["se"].dropna(), table["se"].dropna())
    assert classical["n_clusters"].isna().all()
    by_counselor = patterns.regress(rates, corpus["scores"], instrument, tax,
                                    patterns.Regression(cluster="counselor"))
    assert (by_counselor["n_clusters"] == data["counselor_id"].nunique()).all()
    hc3 = patterns.regress(rates, corpus["scores"], instrument, tax,
                           patterns.Regression(cluster="none", cov_type="HC3"))
    ref3 = sm.OLS(y, x).fit(cov_type="HC3")
    assert hc3[hc3["dimension"] == "goal"]["se"].iloc[0] == pytest.approx(ref3.bse["const"])
    notes = patterns.table_notes(tax, patterns.Regression())
    assert any("Reference category" in n and "Supporting - Negative" not in n for n in notes)
    assert any("cluster-robust by client" in n for n in notes)
    assert any("model's predicted" in n for n in notes)
    named = patterns.table_notes(tax, patterns.Regression(), "llama/rationale fold 1", "expected")
    assert any("(model llama/rationale fold 1, expected scoring)" in n for n in named)


def test_table8_files_parse_back(tmp_path, instrument, corpus):
    tax = patterns.Taxonomy.from_config(TAXONOMY)
    table = patterns.regress(patterns.pattern_rates(corpus["sessions"], tax), corpus["scores"],
                             instrument, tax)
    csv = tmp_path / "table8.csv"
    patterns.write_table8(table, instrument, csv)
    back = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    assert list(back.columns) == patterns.STAT_COLUMNS
    assert np.allclose(back["coef"].to_numpy(float), table["coef"].to_numpy(float),
                       equal_nan=True, atol=1e-6)
    md = (tmp_path / "table8.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Pattern"))
    assert [c.strip() for c in header.split("|")[1:-1]] == ["Pattern", "Goal", "Task", "Bond"]
    assert "Challenging - Negative" in md and "results/provenance.json" in md
    assert "\\toprule" in (tmp_path / "table8.tex").read_text()
    assert "predicting the session-level prediction of the working alliance" in md
    assert "Challenging - Negative" in (tmp_path / "table8.html").read_text()
    if ENGINE:
        assert_compiles(tmp_path / "table8.tex", tmp_path)


def test_cli_table8_unknown_label_writes_nothing(tmp_path, corpus):
    records = json.loads(json.dumps(corpus["records"][:4]))
    records[2]["turns"][0]["strategy"] = "telepathy"
    path = tmp_path / "u.jsonl"
    write_jsonl(path, records)
    pred = tmp_path / "p.parquet"
    corpus["predictions"].to_parquet(pred)
    out = tmp_path / "table8.csv"
    done = care("apply", "table8", "--predictions", pred, "--corpus", path,
                "--instrument", INSTRUMENT, "--patterns", json.dumps(TAXONOMY), "--out", out)
    assert done.returncode == 2
    assert f"{path}:3: field 'turns.0.strategy'" in done.stderr and "telepathy" in done.stderr
    assert not list(tmp_path.glob("table8*"))


# --------------------------------------------------------------------------- digest


def test_digest_finds_low_sessions_terms_and_examples(tmp_path, instrument, corpus):
    scores = corpus["scores"]
    counselor = scores.groupby("counselor_id").size().idxmax()
    digests = digest.write_digests(
        corpus["predictions"], scores, instrument, corpus["sessions"], tmp_path,
        counselors=[], min_sessions=1, threshold=3.0, top_k=5, n_examples=2)
    assert all(d.rule == "at most 3 on the 1–5 scale" for d in digests)
    assert {d.counselor_id for d in digests} == set(scores["counselor_id"])
    mine = next(d for d in digests if d.counselor_id == counselor)
    for dim in mine.dimensions:
        sub = scores[scores["counselor_id"] == counselor]
        assert dim.n_low == int((sub[dim.dimension] <= 3.0).sum())
    low_dim = max(mine.dimensions, key=lambda d: d.n_low)
    assert low_dim.n_low > 0 and low_dim.examples and low_dim.terms
    low_ids = set(scores[(scores["counselor_id"] == counselor)
                         & (scores[low_dim.dimension] <= 3.0)]["session_id"])
    assert {e["session_id"] for e in low_dim.examples} <= low_ids
    assert all(t["z"] > 0 for t in low_dim.terms)
    md = (tmp_path / f"{file_stem(counselor)}.md").read_text()
    html = (tmp_path / f"{file_stem(counselor)}.html").read_text()
    assert low_dim.terms[0]["term"] in md and low_dim.terms[0]["term"] in html
    assert "<script" not in html and "http" not in html
    assert (tmp_path / "index.md").exists()
    assert f"{file_stem(counselor)}.html" in (tmp_path / "index.html").read_text()


def test_digest_unknown_counselor_is_an_error(tmp_path, instrument, corpus):
    with pytest.raises(CareInputError, match="nobody"):
        digest.write_digests(corpus["predictions"], corpus["scores"], instrument,
                             corpus["sessions"], tmp_path, counselors=["nobody"],
                             min_sessions=1, threshold=2)


def test_low_alliance_is_a_point_of_the_scale_shown_in_the_distribution(tmp_path, instrument,
                                                                          corpus):
    for bad in (None, 0.5, 7):
        with pytest.raises(CareInputError, match="1-5 scale"):
            digest.low_thresholds(["goal"], instrument, bad)
    digests = digest.write_digests(
        corpus["predictions"], corpus["scores"], instrument, corpus["sessions"], tmp_path,
        counselors=[], min_sessions=1, threshold=2.5)
    dim = digests[0].dimensions[0]
    assert dim.threshold == 2.5
    bins = dim.histogram
    assert bins[0]["low"] == 1 and bins[-1]["high"] == 5  # the whole scale
    assert sum(b["counselor"] for b in bins) == pytest.approx(1.0)
    html = (tmp_path / f"{file_stem(str(digests[0].counselor_id))}.html").read_text()
    assert html.count("low-alliance region") == len(instrument.dimension_ids)
    assert 'class="low"' not in html  # no red for being under the corpus mean


def test_counselor_comparison_needs_an_interval_that_excludes_the_corpus_mean():
    x = digest.DimensionDigest("goal", "Goal", 2.0, 20, 0, 4.03, 4.10, "counselor",
                               ci=(3.90, 4.16))
    assert digest.compare(x) == "no clear difference"
    x.ci = (3.95, 4.08)
    assert digest.compare(x).startswith("lower")
    x.ci = (float("nan"), float("nan"))
    assert digest.compare(x).startswith("too few")


def test_every_page_states_model_validity_predictions_and_demo(tmp_path, instrument, corpus):
    """Digests (and their index), session pages and Figure 2 carry the notice."""
    from care.apply.notice import DEMO_NOTE, PREDICTIONS_NOTE, model_validity

    heldout = tmp_path / "fold1.parquet"
    noise = np.random.default_rng(0).normal(0, 0.8, len(corpus["predictions"]))
    labeled = corpus["predictions"].assign(
        client_score=(corpus["predictions"]["score"].fillna(3) + noise).clip(1, 5))
    labeled.to_parquet(heldout)
    notice = model_validity([heldout], instrument, model="llama · rationale · fold 1",
                            synthetic=True)
    assert all(10 < d["n"] <= len(corpus["sessions"]) for d in notice.dimensions)  # scored
    assert all(d["low"] <= d["r"] <= d["high"] for d in notice.dimensions)
    digest.write_digests(corpus["predictions"], corpus["scores"], instrument,
                         corpus["sessions"], tmp_path / "d", counselors=[], min_sessions=1,
                         threshold=2, notice=notice)
    page = session_report.write_session_report(corpus["sessions"][0], corpus["predictions"],
                                               instrument, tmp_path / "s.html", notice)
    pages = [*(tmp_path / "d").glob("*.html"), *(tmp_path / "d").glob("*.md"), page]
    for path in pages:
        text = path.read_text(encoding="utf-8").replace("&#39;", "'")
        assert "llama · rationale · fold 1" in text, path
        assert "Pearson r pooled over the held-out folds" in text, path
        note = PREDICTIONS_NOTE.format(construct="the working alliance")
        assert note in text and DEMO_NOTE in text, path
    real = model_validity([heldout], instrument, model="m", synthetic=False)
    assert DEMO_NOTE not in real.html()


def test_titles_and_notices_name_what_the_instrument_measures(tmp_path, instrument):
    """Titles and notices say what the instrument measures (its `construct`): the working
    alliance for WAI-SR, never "alliance" for a corpus rated on another instrument."""
    import yaml
    from care.apply.notice import model_validity
    from care.instrument import DEFAULT, load_instrument

    raw = yaml.safe_load(DEFAULT.read_text(encoding="utf-8"))
    raw |= {"name": "SRS-7", "title": {"en": "Session Rating Scale"},
            "construct": {"en": "the session's fit"}}
    (tmp_path / "srs.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    other = load_instrument(tmp_path / "srs.yaml")
    notice = model_validity(None, other, model="m", synthetic=False)
    assert "how the client would rate the session's fit," in notice.markdown()
    assert "alliance" not in notice.markdown() + str(notice.html())


def test_pages_say_when_the_model_has_not_shown_it_can_rank(tmp_path, instrument, corpus):
    """Validity is pooled over every held-out fold; where its interval includes 0 the notice
    says the model has not shown it can rank sessions or counselors."""
    from care.apply.notice import model_validity

    rng = np.random.default_rng(1)
    files = []
    for k, signal in enumerate((1.0, 0.0)):  # fold 1 tracks the client, fold 2 is noise
        pred = corpus["predictions"].assign(fold=k + 1)
        client = pred["score"].fillna(3) * signal + rng.normal(0, 0.8, len(pred))
        files.append(tmp_path / f"fold{k + 1}.parquet")
        pred.assign(client_score=client.clip(1, 5)).to_parquet(files[-1])
    one = model_validity(files[:1], instrument, model="m", synthetic=False)
    assert not one.unshown and "has not shown" not in one.html()
    noise = model_validity(files[1:], instrument, model="m", synthetic=False)
    assert noise.unshown and "has not shown that it can rank" in " ".join(noise.lines())
    pooled = model_validity(files, instrument, model="m", synthetic=False)
    assert all(d["n"] == 2 * o["n"] for d, o in zip(pooled.dimensions, one.dimensions,
                                                       strict=True))


# --------------------------------------------------------------------------- session report


def test_session_report_is_self_contained_and_links_cited_turns(tmp_path, instrument, corpus):
    session = corpus["sessions"][1]
    out = session_report.write_session_report(session, corpus["predictions"], instrument,
                                              tmp_path / "r.html")
    html = out.read_text()
    for external in ("http://", "https://", "<script", "<link", "url(", "@import", "src="):
        assert external not in html
    rows = corpus["predictions"][corpus["predictions"]["session_id"] == session.session_id]
    from care.prompts import cited_turns

    cited = sorted({n for r in rows["rationale"] for n in cited_turns(r)})
    assert cited
    for n in cited:
        assert f'href="#turn-{n}"' in html
        assert f'id="turn-{n}" class="turn {session.turns[n - 1].speaker} cited"' in html
    uncited = next(n for n in range(1, len(session.turns) + 1) if n not in cited)
    assert f'id="turn-{uncited}" class="turn {session.turns[uncited - 1].speaker}"' in html
    assert html.count("<svg") == 3 + len(instrument.item_ids)  # dimensions + items
    assert session.turns[0].text.split()[0] in html


def test_select_sessions(corpus):
    scores = corpus["scores"]
    overall = scores.set_index("session_id")[["goal", "task", "bond"]].mean(axis=1).dropna()
    chosen = session_report.select_sessions(scores, lowest=2, highest=1,
                                            ids=[scores["session_id"].iloc[3]])
    assert chosen[0] == scores["session_id"].iloc[3]
    assert chosen[-1] == overall.sort_values().index[-1]
    assert overall[chosen[1]] == overall.min()
    with pytest.raises(CareInputError):
        session_report.select_sessions(scores, ids=["nope"])


@pytest.mark.skipif(session_report.find_browser() is None,
                    reason="Chromium is not installed (apt-get install chromium); CI has it")
def test_session_report_renders_in_headless_chromium(tmp_path, corpus):
    pred = tmp_path / "p.parquet"
    corpus["predictions"].to_parquet(pred)
    out_dir, png = tmp_path / "sessions", tmp_path / "shot.png"
    done = care("apply", "report-session", "--predictions", pred, "--corpus", corpus["path"],
                "--instrument", INSTRUMENT, "--select", json.dumps({"lowest": 1, "highest": 1}),
                "--out-dir", out_dir, "--screenshot", png)
    assert done.returncode == 0, done.stderr
    assert len(list(out_dir.glob("*.html"))) == 3  # two sessions and the index
    assert_not_blank(png, min_colors=50, min_ink=0.1)


def test_cli_report_one_session(tmp_path, corpus):
    pred = tmp_path / "p.parquet"
    corpus["predictions"].to_parquet(pred)
    sid = corpus["sessions"][2].session_id
    out = tmp_path / f"{sid}.html"
    args = ["apply", "report-session", "--predictions", pred, "--corpus", corpus["path"],
            "--instrument", INSTRUMENT]
    done = care(*args, "--session-id", sid, "--out", out)
    assert done.returncode == 0, done.stderr
    assert f"Alliance report: session {sid}" in out.read_text()
    missing = care(*args, "--session-id", "u-nope", "--out", tmp_path / "x.html")
    assert missing.returncode == 2 and "u-nope" in missing.stderr
    assert not (tmp_path / "x.html").exists()


def test_constant_predictions_give_no_regression(instrument, corpus):
    tax = patterns.Taxonomy.from_config(TAXONOMY)
    flat = corpus["scores"].assign(goal=4.0, task=4.0, bond=4.0)
    table = patterns.regress(patterns.pattern_rates(corpus["sessions"], tax), flat, instrument,
                             tax)
    assert table["coef"].isna().all()
    assert (table["note"] == "predicted scores do not vary").all()


def test_table8_stars_are_holm_adjusted_over_the_table(instrument, corpus):
    """Every coefficient of every dimension is one family: the stars follow the Holm-adjusted
    p, the CSV keeps the uncorrected p beside it, the note names the correction."""
    from statsmodels.stats.multitest import multipletests

    tax = patterns.Taxonomy.from_config(TAXONOMY)
    rates = patterns.pattern_rates(corpus["sessions"], tax)
    table = patterns.regress(rates, corpus["scores"], instrument, tax)
    tested = table["p"].notna()
    assert tested.sum() >= 6
    holm = multipletests(table.loc[tested, "p"], method="holm")[1]
    assert table.loc[tested, "p_adjusted"].to_numpy() == pytest.approx(holm)
    assert (table["p_adjusted"] >= table["p"]).where(tested, True).all()
    assert list(table["stars"]) == [patterns.stars(p) for p in table["p_adjusted"]]
    raw = patterns.regress(rates, corpus["scores"], instrument, tax, multiple_testing="none")
    assert raw["p_adjusted"].to_numpy() == pytest.approx(raw["p"].to_numpy(), nan_ok=True)
    notes = patterns.table_notes(tax, patterns.Regression(), table=table)
    assert any(f"Holm-adjusted over the table's {int(tested.sum())} tests" in n for n in notes)
