# Evaluation (the paper's sections 5.1 and 6): per-run metrics, Tables 2-5, the human sheet.
#
# The runs come from the config: fine-tuned backbones x variants, zero-shot baselines and the
# human counselor. Adding a backbone or a variant adds its jobs; the tables rebuild.

from care.runs import evaluation_runs

EVAL = config["evaluation"]
EVAL_SEED = EVAL["seed"]
MULTIPLE_TESTING = EVAL["multiple_testing"]
RUNS = evaluation_runs(config)
HUMAN_SHEETS = list(EVAL["human_eval"]["sheets"])
LOG_ODDS_SOURCE = EVAL["log_odds"]["source"]
PREDICTIONS = "results/predictions/{model}/{variant}/fold{k}.parquet"
SCORES = "results/evaluation/{model}/{variant}/scores.parquet"
TEXT_METRICS = "results/evaluation/{model}/{variant}/text_metrics.csv"
# The headline rows of Tables 2 and 4 use the inference stage's scoring (both are shown).
HEADLINE_SCORING = config["inference"]["scoring"]
# The scoring checkpoint selection maximised (the notes say if it is not the headline's).
SELECTION_SCORING = config["training"]["validation"]["scoring"]
# A table's score files: each run's, a fine-tuned run's seed replicates in order.
table_scores = lambda runs: [
    SCORES.format(model=r["model"], variant=v)
    for r in runs
    for v in r.get("replicates", [r["variant"]])
]


wildcard_constraints:
    model=r"[^/]+",
    variant=r"[^/]+",


rule evaluation_metrics:
    input:
        predictions=lambda wc: expand(PREDICTIONS, model=wc.model, variant=wc.variant, k=FOLDS),
        instrument=INSTRUMENT,
        folds="results/folds.tsv",
    output:
        scores="results/evaluation/{model}/{variant}/scores.parquet",
        folds="results/evaluation/{model}/{variant}/fold_metrics.csv",
    log:
        "logs/evaluation/{model}/{variant}/metrics.log",
    conda:
        CARE_ENV
    shell:
        "care evaluate metrics --predictions {input.predictions} "
        "--instrument {input.instrument} --folds {input.folds} --scores {output.scores} "
        "--fold-metrics {output.folds} 2> {log}"


rule text_metrics:
    input:
        predictions=lambda wc: expand(PREDICTIONS, model=wc.model, variant=wc.variant, k=FOLDS),
        expert="results/rationales.parquet",
        sessions="results/data/sessions.tsv",
        instrument=INSTRUMENT,
    output:
        "results/evaluation/{model}/{variant}/text_metrics.csv",
    log:
        "logs/evaluation/{model}/{variant}/text_metrics.log",
    benchmark:
        "benchmarks/evaluation/{model}/{variant}/text_metrics.tsv"
    conda:
        CARE_ENV
    threads: 1
    resources:
        mem_mb=3000,
    params:
        spec=as_json(EVAL["text_metrics"]),
    shell:
        "HF_HUB_OFFLINE=1 care evaluate text-metrics --predictions {input.predictions} "
        "--expert {input.expert} --sessions-table {input.sessions} "
        "--instrument {input.instrument} --spec {params.spec} --threads {threads} "
        "--out {output} 2> {log}"


rule table2:
    input:
        scores=table_scores(RUNS.table2),
        folds="results/folds.tsv",
        sessions="results/data/sessions.tsv",
        instrument=INSTRUMENT,
    output:
        **table_files(2),
    log:
        "logs/evaluation/table2.log",
    benchmark:
        "benchmarks/evaluation/table2.tsv"
    conda:
        CARE_ENV
    params:
        runs=as_json(RUNS.table2),
        bootstrap=as_json(EVAL["bootstrap"]),
        seed=EVAL_SEED,
        multiple_testing=MULTIPLE_TESTING,
        selection=shlex.quote(RUNS.selection),
        scoring=HEADLINE_SCORING,
        selection_scoring=SELECTION_SCORING,
    shell:
        "care evaluate table2 --runs {params.runs} --scores {input.scores} "
        "--folds {input.folds} --sessions-table {input.sessions} "
        "--instrument {input.instrument} "
        "--bootstrap {params.bootstrap} --seed {params.seed} "
        "--multiple-testing {params.multiple_testing} "
        "--selection {params.selection} --headline-scoring {params.scoring} "
        "--selection-scoring {params.selection_scoring} "
        "--out {output.csv} 2> {log}"


rule table4:
    input:
        scores=table_scores(RUNS.table4),
        folds="results/folds.tsv",
        sessions="results/data/sessions.tsv",
        instrument=INSTRUMENT,
    output:
        **table_files(4),
    log:
        "logs/evaluation/table4.log",
    benchmark:
        "benchmarks/evaluation/table4.tsv"
    conda:
        CARE_ENV
    params:
        runs=as_json(RUNS.table4),
        bootstrap=as_json(EVAL["bootstrap"]),
        seed=EVAL_SEED,
        multiple_testing=MULTIPLE_TESTING,
        selection=shlex.quote(RUNS.selection),
        scoring=HEADLINE_SCORING,
        selection_scoring=SELECTION_SCORING,
    shell:
        "care evaluate table4 --runs {params.runs} --scores {input.scores} "
        "--folds {input.folds} --sessions-table {input.sessions} "
        "--instrument {input.instrument} "
        "--bootstrap {params.bootstrap} --seed {params.seed} "
        "--multiple-testing {params.multiple_testing} "
        "--selection {params.selection} --headline-scoring {params.scoring} "
        "--selection-scoring {params.selection_scoring} "
        "--out {output.csv} 2> {log}"


rule table3:
    input:
        quality=[TEXT_METRICS.format(**r) for r in RUNS.rationale],
        human=["results/human_eval/summary.csv"] if HUMAN_SHEETS else [],
        references="results/rationales.parquet",
        instrument=INSTRUMENT,
    output:
        **table_files(3),
    log:
        "logs/evaluation/table3.log",
    conda:
        CARE_ENV
    params:
        runs=as_json(RUNS.rationale),
        human=(
            f"--human-summary results/human_eval/summary.csv "
            f"--human-model {shlex.quote(str(RUNS.human_model))}/rationale"
            if HUMAN_SHEETS
            else ""
        ),
        spec=as_json(EVAL["text_metrics"]),
        selection=shlex.quote(RUNS.selection),
    shell:
        "care evaluate table3 --runs {params.runs} --quality {input.quality} "
        "--references {input.references} "
        "--instrument {input.instrument} {params.human} --spec {params.spec} "
        "--selection {params.selection} --out {output.csv} 2> {log}"


rule table5:
    input:
        texts=(
            "results/rationales.parquet"
            if LOG_ODDS_SOURCE == "expert"
            else expand(PREDICTIONS, model=LOG_ODDS_SOURCE, variant="rationale", k=FOLDS)
        ),
        sessions="results/data/sessions.tsv",
        instrument=INSTRUMENT,
    output:
        **table_files(5),
    log:
        "logs/evaluation/table5.log",
    conda:
        CARE_ENV
    params:
        source="--expert" if LOG_ODDS_SOURCE == "expert" else "--predictions",
        spec=as_json(EVAL["log_odds"]),
    shell:
        "care evaluate table5 {params.source} {input.texts} "
        "--sessions-table {input.sessions} --instrument {input.instrument} "
        "--spec {params.spec} --out {output.csv} 2> {log}"


rule human_eval_export:
    input:
        predictions=(
            expand(PREDICTIONS, model=RUNS.human_model, variant="rationale", k=FOLDS)
            if RUNS.human_model
            else []
        ),
        sessions=SESSIONS,
        instrument=INSTRUMENT,
    output:
        "results/human_eval/rating_sheet.xlsx",
    log:
        "logs/evaluation/human_eval_export.log",
    conda:
        CARE_ENV
    params:
        spec=as_json(EVAL["human_eval"]),
        seed=EVAL_SEED,
    shell:
        "care evaluate human-eval-export --predictions {input.predictions} "
        "--sessions {input.sessions} --instrument {input.instrument} "
        "--spec {params.spec} --seed {params.seed} --out {output} 2> {log}"


rule human_eval_import:
    input:
        sheets=HUMAN_SHEETS,
        key="results/human_eval/rating_sheet.xlsx",
        instrument=INSTRUMENT,
    output:
        summary=report(
            "results/human_eval/summary.csv",
            caption="../report/human_eval.rst",
            category="Human evaluation",
        ),
        ratings="results/human_eval/ratings.csv",
    log:
        "logs/evaluation/human_eval_import.log",
    conda:
        CARE_ENV
    params:
        spec=as_json(EVAL["human_eval"]),
    shell:
        "care evaluate human-eval-import --sheets {input.sheets} --key {input.key} "
        "--instrument {input.instrument} --spec {params.spec} "
        "--ratings {output.ratings} --out {output.summary} 2> {log}"


if RUNS.table2:
    ALL_TARGETS.append("results/table2.csv")
if RUNS.ablation:
    ALL_TARGETS.append("results/table4.csv")
if RUNS.rationale:
    ALL_TARGETS.extend(["results/table3.csv", "results/human_eval/rating_sheet.xlsx"])
if LOG_ODDS_SOURCE != "expert" or EXPERT_RATIONALES:
    ALL_TARGETS.append("results/table5.csv")
if HUMAN_SHEETS and RUNS.rationale:
    ALL_TARGETS.append("results/human_eval/summary.csv")
