"""Evaluation metrics: dimension scores, per-fold metrics, the client bootstrap, log-odds."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from care.corpus import CorpusSpec, generate
from care.errors import CareInputError
from care.evaluate import bootstrap as bs
from care.evaluate import logodds, metrics, synthetic
from scipy import stats


@pytest.fixture(scope="module")
def corpus(instrument):
    sessions, refs = generate(
        CorpusSpec(n_clients=12, sessions_per_client=(3, 5), seed=5), instrument
    )
    return sessions, refs, synthetic.simple_folds(sessions, 3)


@pytest.fixture(scope="module")
def predictions(corpus, instrument):
    sessions, refs, folds = corpus
    per_fold = synthetic.predictions(
        sessions, refs, folds, instrument, "llama", "rationale", noise=0.8, fail_rate=0.05, seed=1
    )
    return pd.concat(per_fold.values(), ignore_index=True)


def test_dimension_score_is_the_mean_of_items_and_unparsed_items_void_it(predictions, instrument):
    scores = metrics.dimension_scores(predictions, instrument)
    assert len(scores) == predictions["session_id"].nunique() * 3
    for rec in scores.sample(20, random_state=0).to_dict("records"):
        items = predictions[
            (predictions["session_id"] == rec["session_id"])
            & (predictions["dimension"] == rec["dimension"])
        ]
        assert rec["client"] == pytest.approx(items["client_score"].mean())
        if items["parsed"].all():
            assert rec["predicted"] == pytest.approx(items["score"].mean())
        else:
            assert math.isnan(rec["predicted"])


def test_fold_metrics_equal_direct_scipy_and_sklearn(predictions, instrument):
    scores = metrics.dimension_scores(predictions, instrument)
    per_fold = metrics.fold_metrics(scores)
    assert len(per_fold) == 3 * 3
    for rec in per_fold.to_dict("records"):
        part = scores[(scores["fold"] == rec["fold"]) & (scores["dimension"] == rec["dimension"])]
        ok = part.dropna(subset=["predicted"])
        x, y = ok["predicted"].to_numpy(), ok["client"].to_numpy()
        assert rec["pearson"] == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
        assert rec["spearman"] == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
        assert rec["mse"] == pytest.approx(np.mean((x - y) ** 2), abs=1e-12)
        assert rec["coverage"] == pytest.approx(len(ok) / len(part))
    summary = metrics.summarize_folds(per_fold)
    goal = per_fold[per_fold["dimension"] == "goal"]["pearson"]
    row = summary[summary["dimension"] == "goal"].iloc[0]
    assert row["pearson_mean"] == pytest.approx(goal.mean())
    assert row["pearson_sd"] == pytest.approx(goal.std(ddof=1))


def test_an_unparsed_item_removes_only_its_dimension(predictions, instrument):
    pred = predictions.copy()
    pred["parsed"] = True
    pred["score"] = pred["score"].fillna(3.0)
    first = pred["session_id"].iloc[0]
    goal_item = instrument.dimension("goal").items[0]
    hit = (pred["session_id"] == first) & (pred["item_id"] == goal_item)
    pred.loc[hit, ["parsed", "score"]] = [False, np.nan]
    scores = metrics.dimension_scores(pred, instrument).set_index(["session_id", "dimension"])
    assert math.isnan(scores.loc[(first, "goal"), "predicted"])
    assert not math.isnan(scores.loc[(first, "task"), "predicted"])
    cov = metrics.fold_metrics(scores.reset_index())
    assert (
        cov.loc[cov["dimension"] == "goal", "n_scored"].sum()
        == cov.loc[cov["dimension"] == "task", "n_scored"].sum() - 1
    )


def test_evaluated_columns_are_contract_columns():
    from care.infer import PREDICTION_COLUMNS

    assert set(metrics.EVALUATED_COLUMNS) < set(PREDICTION_COLUMNS)


def test_missing_contract_column_names_file_and_field(tmp_path, predictions):
    from care.errors import CareInputError
    from care.infer.run import read_predictions

    path = tmp_path / "fold1.parquet"
    predictions.drop(columns=["client_score"]).to_parquet(path)
    with pytest.raises(CareInputError, match="client_score") as err:
        read_predictions([path], metrics.EVALUATED_COLUMNS)
    assert str(path) in str(err.value)


# ----------------------------------------------------------------------------- bootstrap


def test_weighted_statistics_equal_scipy_on_repeated_sessions():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 6, 30).astype(float)  # ties, as dimension scores have
    y = x + rng.normal(0, 1, 30)
    w = rng.integers(0, 4, size=(5, 30))
    for b in range(5):
        xr, yr = np.repeat(x, w[b]), np.repeat(y, w[b])
        assert bs.weighted_pearson(x, y, w)[b] == pytest.approx(stats.pearsonr(xr, yr)[0])
        assert bs.weighted_spearman(x, y, w)[b] == pytest.approx(stats.spearmanr(xr, yr)[0])
        assert bs.weighted_mse(x, y, w)[b] == pytest.approx(np.mean((xr - yr) ** 2))


def _clustered(n_clients=20, per_client=6, seed=0):
    """Sessions whose client effect dominates: clients, not sessions, are the sample."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_clients):
        effect = rng.normal(0, 1)
        for s in range(per_client):
            rows.append(
                {
                    "session_id": f"c{c}s{s}",
                    "client_id": f"c{c}",
                    "fold": 1,
                    "predicted": effect + rng.normal(0, 0.1),
                    "client": effect * 0.3 + rng.normal(0, 0.1),
                }
            )
    return pd.DataFrame(rows)


def test_resampler_is_seeded_and_moves_a_clients_sessions_together():
    data = _clustered()
    folds = data[["session_id", "client_id", "fold"]]
    a = bs.Resampler(folds, bs.BootstrapSpec(unit="client", n_resamples=50, seed=7))
    b = bs.Resampler(folds, bs.BootstrapSpec(unit="client", n_resamples=50, seed=7))
    c = bs.Resampler(folds, bs.BootstrapSpec(unit="client", n_resamples=50, seed=8))
    ids = data["session_id"].to_numpy()
    wa = a.weights(1, ids)
    assert np.array_equal(wa, b.weights(1, ids))
    assert not np.array_equal(wa, c.weights(1, ids))
    assert (wa.sum(axis=1) == len(data)).all()  # 20 clients x 6 sessions drawn each time
    for _, group in data.groupby("client_id"):
        cols = wa[:, group.index.to_numpy()]
        assert (cols == cols[:, :1]).all()  # every session of a client shares its weight
    by_session = bs.Resampler(folds, bs.BootstrapSpec(n_resamples=50, seed=7, unit="session"))
    ws = by_session.weights(1, ids)
    first = data.index[data["client_id"] == "c0"].to_numpy()
    assert not (ws[:, first] == ws[:, first[:1]]).all()


def test_client_bootstrap_is_wider_than_session_bootstrap_on_clustered_data():
    data = _clustered()
    folds = data[["session_id", "client_id", "fold"]]
    widths = {}
    for unit in ("client", "session"):
        res = bs.Resampler(folds, bs.BootstrapSpec(n_resamples=400, seed=3, unit=unit))
        low, high = bs.interval(bs.fold_mean_resamples(data, res, "pearson"), 0.95)
        widths[unit] = high - low
    # 20 independent clients, not 120 independent sessions: the honest interval is wider
    assert widths["client"] > 1.5 * widths["session"]


def test_paired_test_detects_a_better_model_and_not_an_equal_one(corpus, instrument):
    sessions, refs, folds = corpus
    res = bs.Resampler(folds, bs.BootstrapSpec(unit="client", n_resamples=300, seed=1))

    def scores(noise, seed):
        per = synthetic.predictions(
            sessions,
            refs,
            folds,
            instrument,
            f"m{noise}",
            "rationale",
            noise=noise,
            fail_rate=0.0,
            seed=seed,
        )
        return metrics.dimension_scores(pd.concat(per.values()), instrument)

    good, bad = scores(0.3, 1), scores(2.5, 2)
    better = bs.paired_test(bs.scored(good, "goal"), bs.scored(bad, "goal"), res)
    assert better["difference"] > 0.2 and better["p_value"] < 0.05
    same = bs.paired_test(bs.scored(good, "goal"), bs.scored(good, "goal"), res)
    assert same["difference"] == 0 and same["p_value"] == 1.0


def test_paired_test_compares_only_folds_where_both_are_defined():
    data = _clustered(n_clients=12, per_client=3)
    data["fold"] = np.where(data["client_id"].str[1:].astype(int) < 6, 1, 2)
    folds = data[["session_id", "client_id", "fold"]]
    res = bs.Resampler(folds, bs.BootstrapSpec(unit="client", n_resamples=100, seed=2))
    a = data.copy()
    b = data.assign(predicted=data["predicted"] * 0.5 + np.arange(len(data)) % 2)
    b.loc[b["fold"] == 2, "predicted"] = 4.0  # constant: r undefined in fold 2
    result = bs.paired_test(a, b, res)
    one_a, one_b = a[a["fold"] == 1], b[b["fold"] == 1]
    expected = (
        stats.pearsonr(one_a["predicted"], one_a["client"])[0]
        - stats.pearsonr(one_b["predicted"], one_b["client"])[0]
    )
    assert result["difference"] == pytest.approx(expected)


def test_paired_p_value_never_zero():
    assert bs.paired_p_value(np.full(99, 0.5)) == pytest.approx(2 / 100)
    assert math.isnan(bs.paired_p_value(np.array([np.nan])))


# ----------------------------------------------------------------------------- log-odds


def test_log_odds_matches_a_hand_computed_example():
    # group A: a a b (n=3), group B: b c (n=2); prior = pooled counts a=2 b=2 c=1 (a0=5)
    counts = {"A": Counter({"a": 2, "b": 1}), "B": Counter({"b": 1, "c": 1})}
    table = logodds.log_odds(counts).set_index(["group", "term"])
    # A vs rest for "a": log((2+2)/(3+5-2-2)) - log((0+2)/(2+5-0-2)) = log(1) - log(0.4)
    delta = math.log(4 / 4) - math.log(2 / 5)
    assert table.loc[("A", "a"), "log_odds"] == pytest.approx(delta)
    assert table.loc[("A", "a"), "z"] == pytest.approx(delta / math.sqrt(1 / 4 + 1 / 2))
    # B vs rest for "b": log((1+2)/(2+5-1-2)) - log((1+2)/(3+5-1-2))
    delta_b = math.log(3 / 4) - math.log(3 / 5)
    assert table.loc[("B", "b"), "log_odds"] == pytest.approx(delta_b)
    assert table.loc[("B", "b"), "count"] == 1


def test_top_terms_contract_and_order():
    texts = {
        "goal": ["we agreed on a shared goal", "the goal was clear and agreed"],
        "task": ["a concrete step and a method", "the method had a step"],
        "bond": ["the client felt supported", "support and warmth were felt"],
    }
    top = logodds.top_terms(texts, "en", 2)
    assert list(top.columns) == ["group", "term", "log_odds", "z", "count"]
    assert list(top["group"]) == ["goal", "goal", "task", "task", "bond", "bond"]
    assert set(top[top["group"] == "goal"]["term"]) == {"goal", "agreed"}
    assert (top.groupby("group", sort=False)["z"].apply(lambda z: z.is_monotonic_decreasing)).all()
    zh = logodds.top_terms({"a": ["咨询师支持来访者"], "b": ["我们制定了方法"]}, "zh", 3)
    assert zh["term"].str.len().min() >= 1 and not zh["term"].str.contains(r"\s").any()


# ----------------------------------------------------------------------------- runs


def _filled(**sections) -> dict:
    """A config as the rule files read it: the schema's defaults filled."""
    from care.config import check_config

    recipe = {"learning_rate": 1e-5, "per_device_train_batch_size": 1, "num_train_epochs": 1}
    training = {**recipe, **sections.pop("training", {})}
    config = {"data": {"sessions": "s.jsonl"}, "variants": ["score_only"], "training": training}
    return check_config({**config, **sections})


def test_runs_follow_the_config():
    from care.runs import evaluation_runs

    config = {
        "variants": ["rationale", "score_only"],
        "rationales": {"edited_sheet": "e.xlsx"},
        "backbones": {"llama": {"path": "/m"}, "qwen": {"path": "/m"}},
        "baselines": {
            "counselor": True,
            "lexical": False,
            "length": False,
            "zero_shot": [{"name": "gpt-4o", "label": "GPT-4o", "backend": "openai", "model": "m"}],
        },
        "training": {"selection": "heldout_fold"},
    }
    runs = evaluation_runs(_filled(**config))
    assert [r["label"] for r in runs.table2] == [
        "Human counselor",
        "GPT-4o",
        "CARE (llama)",
        "CARE (qwen)",
    ]
    assert [(r["model"], r["variant"]) for r in runs.ablation] == [
        ("llama", "rationale"),
        ("llama", "score_only"),
        ("qwen", "rationale"),
        ("qwen", "score_only"),
    ]
    assert runs.selection == "heldout_fold" and runs.human_model == "llama"
    # an ablation edit: one backbone, score-only; no baselines but the (default) text ones
    edited = evaluation_runs(_filled(variants=["score_only"], backbones={"qwen": {"path": "/m"}}))
    assert [(r["model"], r["variant"]) for r in edited.table2] == [
        ("lexical", "tfidf_ridge"),
        ("length", "word_count"),
        ("qwen", "score_only"),
    ]
    # the selection the tables state is the one training uses: the schema's default
    assert edited.rationale == [] and edited.selection == "inner_split"
    assert runs.fine_tuned_variants == [
        ("llama", "rationale"), ("qwen", "rationale"), ("llama", "score_only"),
        ("qwen", "score_only"),
    ]
    # seeds make replicates; the sensitivity analysis adds test-fold-selection rows
    more = evaluation_runs(
        _filled(
            **{
                **config,
                "training": {"selection": "inner_split", "seed": 1, "seeds": [1, 5]},
                "evaluation": {"sensitivity": {"test_fold_selection": True}},
            }
        )
    )
    assert more.care[0]["replicates"] == ["rationale", "rationale-seed5"]
    assert more.care[0]["selection"] == "inner_split"
    assert [r["label"] for r in more.table2[-2:]] == [
        "CARE (llama), test-fold selection (optimistic)",
        "CARE (qwen), test-fold selection (optimistic)",
    ]
    assert more.table2[-1]["selection"] == "heldout_fold"
    assert ("qwen", "rationale-testsel") in more.fine_tuned_variants
    assert ("llama", "score_only-seed5") in more.fine_tuned_variants
    with pytest.raises(ValueError, match="human_eval.model"):
        evaluation_runs(_filled(**config, evaluation={"human_eval": {"model": "mistral"}}))
    with pytest.raises(ValueError, match="log_odds.source"):
        evaluation_runs(_filled(**config, evaluation={"log_odds": {"source": "gemma"}}))


def _skewed(n_clients=25, seed=4):
    """One session per client (the unclustered case), a skewed relation: r's bootstrap
    distribution is asymmetric, so BCa and percentile intervals differ."""
    rng = np.random.default_rng(seed)
    x = rng.exponential(1.0, n_clients)
    y = x + rng.exponential(1.5, n_clients)
    ids = [f"c{c}" for c in range(n_clients)]
    return pd.DataFrame(
        {"session_id": ids, "client_id": ids, "fold": 1, "predicted": x, "client": y}
    )


@pytest.mark.parametrize("metric", ["pearson", "mse"])
def test_bca_interval_equals_scipy_bca_on_the_same_resamples(metric):
    """One session per client: our BCa (jackknife over clients) is scipy's BCa, given the
    same bootstrap distribution; and close to scipy drawing its own resamples."""
    data = _skewed()
    spec = bs.BootstrapSpec(unit="client", n_resamples=4000, seed=11, interval="bca")
    res = bs.Resampler(data, spec)
    ours = bs.estimate(data, res, metric)
    x, y = data["predicted"].to_numpy(), data["client"].to_numpy()

    def statistic(a, b, axis=-1):
        if metric == "mse":
            return np.mean((a - b) ** 2, axis=axis)
        return stats.pearsonr(a, b, axis=axis).statistic

    replicates = bs.fold_mean_resamples(data, res, metric)
    given = type("Given", (), {"bootstrap_distribution": replicates})()
    ref = stats.bootstrap(
        (x, y), statistic, paired=True, vectorized=True, n_resamples=0,
        bootstrap_result=given, method="BCa", confidence_level=0.95,
    ).confidence_interval
    assert ours["value"] == pytest.approx(statistic(x, y))
    assert (ours["ci_low"], ours["ci_high"]) == pytest.approx((ref.low, ref.high), abs=1e-12)
    fresh = stats.bootstrap(
        (x, y), statistic, paired=True, vectorized=True, n_resamples=4000,
        method="BCa", rng=np.random.default_rng(0),
    ).confidence_interval
    width = fresh.high - fresh.low
    assert abs(ours["ci_low"] - fresh.low) < 0.1 * width
    assert abs(ours["ci_high"] - fresh.high) < 0.1 * width
    percentile = bs.interval(replicates, 0.95)
    assert abs(percentile[0] - ours["ci_low"]) > 1e-3  # the correction does something


def test_pooled_r_is_over_all_folds_sessions_and_shows_fold_offsets():
    """Within each fold the predictions track the client; between folds the offsets run the
    other way: the fold mean is high, the pooled out-of-fold r is not."""
    rng = np.random.default_rng(0)
    rows = []
    for fold in (1, 2, 3):
        for c in range(10):
            truth = rng.normal(0, 1)
            rows.append({"session_id": f"f{fold}c{c}", "client_id": f"f{fold}c{c}",
                         "fold": fold, "client": truth + 2 * fold,
                         "predicted": truth + rng.normal(0, 0.3) - 4 * fold})
    data = pd.DataFrame(rows)
    res = bs.Resampler(data, bs.BootstrapSpec(unit="client", n_resamples=300, seed=1))
    fold_mean = bs.estimate(data, res, "pearson", "fold_mean")
    pooled = bs.estimate(data, res, "pearson", "pooled")
    assert pooled["value"] == pytest.approx(stats.pearsonr(data["predicted"], data["client"])[0])
    assert fold_mean["value"] > 0.8 and pooled["value"] < 0
    assert pooled["ci_low"] <= pooled["value"] <= pooled["ci_high"]


def test_replicate_variants_carry_their_training_overrides():
    from care.runs import VARIANT_PATTERN, split_variant, training_overrides

    training = {"seed": 123, "seeds": [123, 7], "selection": "inner_split"}
    assert training_overrides("rationale", training) == {"seed": 123}
    assert training_overrides("rationale-seed7", training) == {"seed": 7}
    assert training_overrides("rationale-testsel", training) == {
        "selection": "heldout_fold",
        "seed": 123,
    }
    assert split_variant("score_only-seed7") == ("score_only", "seed7")
    import re

    for ok in ("rationale", "score_only-seed7", "rationale-testsel"):
        assert re.fullmatch(VARIANT_PATTERN, ok)
    for bad in ("zero_shot", "rationale-foo", "rationale-seed"):
        assert not re.fullmatch(VARIANT_PATTERN, bad)


def test_seed_replicates_average_and_pair_over_seeds_and_clients(corpus, instrument):
    """A run with two seeds: its r is the mean of the seeds' r; the paired test averages the
    per-seed differences and redraws seeds as well as clients."""
    from care.evaluate import tables

    sessions, refs, folds = corpus
    res = bs.Resampler(folds, bs.BootstrapSpec(unit="client", n_resamples=200, seed=1))

    def scores(model, noise, seed):
        per = synthetic.predictions(
            sessions, refs, folds, instrument, model, "rationale", noise=noise,
            fail_rate=0.0, seed=seed,
        )
        return metrics.run_scores(pd.concat(per.values()), instrument)

    seeds = [scores("a", 0.5, 1), scores("a", 0.5, 2)]
    single = [tables.run_metric_columns(s, ["goal"], res) for s in seeds]
    both = tables.run_metric_columns(seeds, ["goal"], res)
    assert both["n_seeds"] == 2
    assert both["goal_pearson_mean"] == pytest.approx(
        np.mean([r["goal_pearson_mean"] for r in single]), abs=1e-9
    )
    assert both["goal_pearson_seed_sd"] == pytest.approx(
        np.std([r["goal_pearson_mean"] for r in single], ddof=1), abs=1e-9
    )
    assert both["goal_pearson_ci_low"] < both["goal_pearson_mean"] < both["goal_pearson_ci_high"]
    worse = [scores("b", 2.0, 3), scores("b", 2.0, 4)]
    goal = [bs.scored(x, "goal") for x in seeds]
    other = [bs.scored(x, "goal") for x in worse]
    paired = bs.paired_test(goal, other, res)
    per_seed = [bs.paired_test(g, o, res)["difference"] for g, o in zip(goal, other, strict=True)]
    assert paired["n_seeds"] == 2
    assert paired["difference"] == pytest.approx(np.mean(per_seed))
    assert paired["p_value"] < 0.05


def test_fold_coverage_counts_the_folds_sessions_a_run_has_no_rows_for(predictions, instrument):
    scores = metrics.dimension_scores(predictions, instrument)
    fold1 = scores[scores["fold"] == 1]
    rated = fold1[~fold1["session_id"].isin(sorted(fold1["session_id"].unique())[:2])]
    n_fold = fold1["session_id"].nunique()
    own = metrics.fold_metrics(rated)
    over_folds = metrics.fold_metrics(rated, {1: n_fold})
    assert (own["n_sessions"] == n_fold - 2).all()
    assert (over_folds["n_sessions"] == n_fold).all()
    assert (over_folds["coverage"] <= (n_fold - 2) / n_fold + 1e-12).all()


# ------------------------------------------------------------------------ interval methods


def _with_counselors(n_clients=24, n_counselors=4, n_folds=3, seed=0):
    """Clients nested in counselors, the counselors spread over the folds."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_clients):
        counselor, effect = c % n_counselors, rng.normal(0, 1)
        for s in range(3):
            truth = effect + rng.normal(0, 0.5)
            rows.append({"session_id": f"c{c:02d}s{s}", "client_id": f"c{c:02d}",
                         "counselor_id": f"t{counselor}", "fold": c % n_folds + 1,
                         "client": truth, "predicted": truth + rng.normal(0, 1)})
    return pd.DataFrame(rows)


def test_two_stage_bootstrap_draws_counselors_then_their_clients():
    data = _with_counselors()
    res = bs.Resampler(data, bs.BootstrapSpec(n_resamples=200, seed=3, unit="counselor"))
    count_of = {}  # client -> its count in every resample (its sessions share it)
    for k, g in data.groupby("fold"):
        weights = res.weights(k, g["session_id"].to_numpy())
        count_of.update(zip(g["client_id"], weights.T, strict=True))
    clients = data.drop_duplicates("client_id").set_index("client_id").sort_index()
    counts = np.vstack([count_of[c] for c in clients.index])  # (clients, resamples)
    copies = []
    for _, members in clients.groupby("counselor_id"):
        drawn = counts[clients.index.get_indexer(members.index)].sum(axis=0)
        assert (drawn % len(members) == 0).all()  # whole copies of the counselor's caseload
        copies.append(drawn // len(members))
    copies = np.vstack(copies)
    assert (copies.sum(axis=0) == 4).all()  # 4 counselors drawn with replacement
    assert (copies == 0).any()  # some counselor left out of some resample, across folds
    assert set(res.units(1, data.loc[data["fold"] == 1, "session_id"].to_numpy())) <= {
        "t0", "t1", "t2", "t3"}  # the jackknife leaves out a counselor
    no_counselors = data.drop(columns="counselor_id")
    with pytest.raises(CareInputError, match="counselor_id"):
        bs.Resampler(no_counselors, bs.BootstrapSpec(n_resamples=10, unit="counselor"))


def test_t_interval_over_folds_and_the_fold_centred_pooled_r():
    data = _with_counselors()
    data["predicted"] += 3 * data["fold"]  # fold offsets: pooled r suffers, centred r not
    res = bs.Resampler(data, bs.BootstrapSpec(unit="client", n_resamples=300, seed=1, interval="t"))
    per_fold = [stats.pearsonr(g["predicted"], g["client"])[0] for _, g in data.groupby("fold")]
    got = bs.estimate(data, res, "pearson", "fold_mean")
    ref = stats.t.interval(0.95, 2, loc=np.mean(per_fold), scale=stats.sem(per_fold))
    assert got["value"] == pytest.approx(np.mean(per_fold))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(ref)
    centred = data.groupby("fold")[["predicted", "client"]].transform(lambda c: c - c.mean())
    fold_free = stats.pearsonr(centred["predicted"], centred["client"])[0]
    estimate = bs.estimate(data, res, "pearson", "centred")  # t: BCa for pooled statistics
    assert estimate["value"] == pytest.approx(fold_free)
    assert estimate["ci_low"] < fold_free < estimate["ci_high"]
    assert bs.estimate(data, res, "pearson", "pooled")["value"] < fold_free - 0.1
    # a difference of two runs: its t interval is over the per-fold differences
    other = data.assign(predicted=data["client"] + np.random.default_rng(1).normal(0, 2, len(data)))
    diff = bs.estimate_difference(data, other, res)
    per_other = [stats.pearsonr(g["predicted"], g["client"])[0] for _, g in other.groupby("fold")]
    gaps = np.subtract(per_fold, per_other)
    assert diff["value"] == pytest.approx(gaps.mean())
    assert (diff["ci_low"], diff["ci_high"]) == pytest.approx(
        stats.t.interval(0.95, 2, loc=gaps.mean(), scale=stats.sem(gaps)))


@pytest.mark.parametrize("interval", ["bca", "percentile"])
def test_undefined_resamples_make_the_interval_undefined_not_narrower(interval):
    """In fold 1 only one client's predictions vary: a resample without that client leaves
    fold 1's r undefined, so the interval (and a paired p) is undefined, not a mean of the
    other folds."""
    data = _with_counselors(n_clients=12, n_counselors=2)
    one = (data["fold"] == 1) & (data["client_id"] != "c00")
    data.loc[one, "predicted"] = 2.0
    spec = bs.BootstrapSpec(unit="client", n_resamples=200, seed=1, interval=interval)
    res = bs.Resampler(data, spec)
    got = bs.estimate(data, res, "pearson", "fold_mean")
    assert np.isfinite(got["value"])
    assert np.isnan(got["ci_low"]) and np.isnan(got["ci_high"])
    draws = bs.fold_mean_resamples(data, res, "pearson")
    assert np.isnan(draws).any() and np.isfinite(draws).any()
    assert np.isnan(bs.paired_test(data, data.assign(predicted=data["client"]), res)["p_value"])
    assert np.isnan(bs.interval(np.array([0.1, np.nan, 0.3]), 0.95)[0])


def test_a_client_who_changed_counselors_is_drawn_with_the_main_one():
    data = _with_counselors(n_clients=6, n_counselors=2, n_folds=2)
    data.loc[data["session_id"] == "c00s2", "counselor_id"] = "t1"  # c00: t0 twice, t1 once
    assert bs.main_counselor(data).loc[data["client_id"] == "c00"].eq("t0").all()
    res = bs.Resampler(data, bs.BootstrapSpec(n_resamples=50, seed=1))  # the default: counselor
    ids = data.loc[data["fold"] == 1, "session_id"].to_numpy()
    assert set(res.units(1, ids[data.loc[data["fold"] == 1, "client_id"] == "c00"])) == {"t0"}
    w = res.weights(1, ids)
    c00 = (data.loc[data["fold"] == 1, "client_id"] == "c00").to_numpy()
    assert (w[:, c00] == w[:, c00][:, :1]).all()  # its sessions move together


# ------------------------------------------------------------------ verdicts, flat predictions


def test_verdict_agreement_against_own_score_reference_and_chance():
    from care.evaluate.textmetrics import score_level, stated_level, verdict_agreement

    phrases = (("high", ("supported",)), ("mid", ("was mixed",)), ("low", ("undermined",)))
    assert stated_level("(turn 2) ... was mixed. Overall it supported it", phrases) == "high"
    assert stated_level("no verdict", phrases) is None
    assert [score_level(v, 1, 5) for v in (4, 3, 2, float("nan"))] == ["high", "mid", "low", None]
    text = {"high": "Overall the session supported goals", "low": "the session undermined goals"}
    pairs = pd.DataFrame({
        "model": "m", "variant": "rationale", "fold": 1, "dimension": "goal",
        "hypothesis": [text["high"], text["high"], text["low"], text["low"]],
        "reference": [text["high"], text["low"], text["low"], text["low"]],
        "score_generated": [5.0, 5.0, 1.0, 5.0],
    })
    row = verdict_agreement(pairs, phrases, (1, 5)).iloc[0]
    assert row["verdict_score"] == pytest.approx(0.75)  # the last rationale says low, wrote 5
    assert row["verdict_reference"] == pytest.approx(0.75)
    # chance: the two marginals' product (rationales 1/2 high; references 1/4 high)
    assert row["verdict_reference_chance"] == pytest.approx(0.5 * 0.25 + 0.5 * 0.75)
    assert row["n_verdicts"] == 4


def test_rows_with_nearly_constant_predictions_are_flagged():
    from care.evaluate.tables import flat_note, spread_ratio

    rng = np.random.default_rng(0)
    client = rng.normal(4, 0.7, 40)
    frame = pd.DataFrame({"fold": np.repeat([1, 2], 20), "client": client})
    varied = frame.assign(predicted=client + rng.normal(0, 0.5, 40))
    flat = frame.assign(predicted=4 + 0.01 * rng.normal(size=40))
    assert spread_ratio([varied]) > 0.5 and spread_ratio([flat]) < 0.1
    table = pd.DataFrame([
        {"label": "A", "scoring": "expected", "goal_sd_ratio": spread_ratio([varied])},
        {"label": "B", "scoring": "expected", "goal_sd_ratio": spread_ratio([flat])},
    ])
    (note,) = flat_note(table, ["goal"])
    assert "B (expected)" in note and "A (expected)" not in note
