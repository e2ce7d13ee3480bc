# Evaluation (the paper's sections 5.1 and 6): per-run metrics, Tables 2-5, the human sheet.
#
# The runs come from the config: fine-tuned backbones x variants, zero-shot baselines and the
# human counselor. Adding a backbone or a variant adds its jobs; the tables rebuild.

EVAL = config.get("evaluation", {})
EVAL_SEED = EVAL.get("seed", config["seed"])
_BASELINES = config.get("baselines", {}) or {}


def _entries(section):
    """(name, label) of a config section given as a mapping or a list of {name, label}."""
    if isinstance(section, dict):
        return [(name, (spec or {}).get("label", name)) for name, spec in section.items()]
    out = []
    for entry in section or []:
        if isinstance(entry, dict):
            out.append((entry["name"], entry.get("label", entry["name"])))
        else:
            out.append((str(entry), str(entry)))
    return out


def _run(model, variant, label, kind):
    return {"model": model, "variant": variant, "label": label, "kind": kind}


BACKBONES = [name for name, _ in _entries(config.get("backbones", {}))]
CARE_VARIANT = "rationale" if "rationale" in config["variants"] else config["variants"][0]
BASELINE_RUNS = (
    [_run("counselor", "human", "Human counselor", "counselor")]
    if _BASELINES.get("counselor", False)
    else []
) + [
    _run(name, "zero_shot", label, "zero_shot")
    for name, label in _entries(_BASELINES.get("zero_shot", []))
]
CARE_RUNS = [
    _run(b, CARE_VARIANT, f"CARE ({b})" if CARE_VARIANT == "rationale" else
         f"CARE ({b}, {CARE_VARIANT})", "fine_tuned")
    for b in BACKBONES
]
TABLE2_RUNS = BASELINE_RUNS + CARE_RUNS
TABLE4_RUNS = [
    _run(b, v, f"{b} · {v}", "fine_tuned") for b in BACKBONES for v in config["variants"]
]
RATIONALE_RUNS = [r for r in CARE_RUNS if r["variant"] == "rationale"]
SELECTION = str(config.get("training", {}).get("selection", "unspecified"))

_HUMAN = EVAL.get("human_eval", {})
HUMAN_MODEL = _HUMAN.get("model") or (BACKBONES[0] if BACKBONES else None)
HUMAN_SHEETS = list(_HUMAN.get("sheets", []))
_LOG_ODDS = EVAL.get("log_odds", {})
LOG_ODDS_SOURCE = _LOG_ODDS.get("source", "expert")


def predictions_of(model, variant):
    return expand(
        "results/predictions/{model}/{variant}/fold{k}.parquet",
        model=model,
        variant=variant,
        k=FOLDS,
    )


def scores_of(runs):
    return [f"results/evaluation/{r['model']}/{r['variant']}/scores.parquet" for r in runs]


wildcard_constraints:
    model=r"[^/]+",
    variant=r"[^/]+",


localrules:
    table2,
    table3,
    table4,
    table5,
    human_eval_export,
    human_eval_import,


rule evaluation_metrics:
    input:
        predictions=lambda wc: predictions_of(wc.model, wc.variant),
        instrument=INSTRUMENT,
    output:
        scores="results/evaluation/{model}/{variant}/scores.parquet",
        folds="results/evaluation/{model}/{variant}/fold_metrics.csv",
    log:
        "logs/evaluation/{model}/{variant}/metrics.log",
    conda:
        CARE_ENV
    shell:
        "care evaluate metrics --predictions {input.predictions} "
        "--instrument {input.instrument} --scores {output.scores} "
        "--fold-metrics {output.folds} 2> {log}"


rule rationale_quality:
    input:
        predictions=lambda wc: predictions_of(wc.model, wc.variant),
        expert="results/rationales.parquet",
        sessions="results/data/sessions.tsv",
        instrument=INSTRUMENT,
    output:
        "results/evaluation/{model}/{variant}/text_metrics.csv",
    params:
        spec=as_json(EVAL.get("text_metrics", {})),
    log:
        "logs/evaluation/{model}/{variant}/text_metrics.log",
    benchmark:
        "benchmarks/evaluation/{model}/{variant}/text_metrics.tsv"
    threads: 1
    resources:
        mem_mb=3000,
    conda:
        CARE_ENV
    shell:
        "HF_HUB_OFFLINE=1 care evaluate text-metrics --predictions {input.predictions} "
        "--expert {input.expert} --sessions-table {input.sessions} "
        "--instrument {input.instrument} --spec {params.spec} --threads {threads} "
        "--out {output} 2> {log}"


rule table2:
    input:
        scores=scores_of(TABLE2_RUNS),
        folds="results/folds.tsv",
        instrument=INSTRUMENT,
    output:
        csv=report(
            "results/table2.csv",
            caption="../report/table2.rst",
            category="Tables",
            labels={"table": "Table 2", "format": "CSV"},
        ),
        md="results/table2.md",
        tex="results/table2.tex",
        html=report(
            "results/table2.html",
            caption="../report/table2.rst",
            category="Tables",
            labels={"table": "Table 2", "format": "HTML"},
        ),
    params:
        runs=as_json(TABLE2_RUNS),
        bootstrap=as_json(EVAL.get("bootstrap", {})),
        seed=EVAL_SEED,
        selection=shlex.quote(SELECTION),
    log:
        "logs/evaluation/table2.log",
    benchmark:
        "benchmarks/evaluation/table2.tsv"
    conda:
        CARE_ENV
    shell:
        "care evaluate table2 --runs {params.runs} --scores {input.scores} "
        "--folds {input.folds} --instrument {input.instrument} "
        "--bootstrap {params.bootstrap} --seed {params.seed} "
        "--selection {params.selection} --out {output.csv} 2> {log}"


rule table4:
    input:
        scores=scores_of(TABLE4_RUNS),
        folds="results/folds.tsv",
        instrument=INSTRUMENT,
    output:
        csv=report(
            "results/table4.csv",
            caption="../report/table4.rst",
            category="Tables",
            labels={"table": "Table 4", "format": "CSV"},
        ),
        md="results/table4.md",
        tex="results/table4.tex",
        html=report(
            "results/table4.html",
            caption="../report/table4.rst",
            category="Tables",
            labels={"table": "Table 4", "format": "HTML"},
        ),
    params:
        runs=as_json(TABLE4_RUNS),
        bootstrap=as_json(EVAL.get("bootstrap", {})),
        seed=EVAL_SEED,
    log:
        "logs/evaluation/table4.log",
    benchmark:
        "benchmarks/evaluation/table4.tsv"
    conda:
        CARE_ENV
    shell:
        "care evaluate table4 --runs {params.runs} --scores {input.scores} "
        "--folds {input.folds} --instrument {input.instrument} "
        "--bootstrap {params.bootstrap} --seed {params.seed} --out {output.csv} 2> {log}"


rule table3:
    input:
        quality=[
            f"results/evaluation/{r['model']}/{r['variant']}/text_metrics.csv"
            for r in RATIONALE_RUNS
        ],
        human=["results/human_eval/summary.csv"] if HUMAN_SHEETS else [],
        instrument=INSTRUMENT,
    output:
        csv=report(
            "results/table3.csv",
            caption="../report/table3.rst",
            category="Tables",
            labels={"table": "Table 3", "format": "CSV"},
        ),
        md="results/table3.md",
        tex="results/table3.tex",
        html=report(
            "results/table3.html",
            caption="../report/table3.rst",
            category="Tables",
            labels={"table": "Table 3", "format": "HTML"},
        ),
    params:
        runs=as_json(RATIONALE_RUNS),
        human=(
            f"--human-summary results/human_eval/summary.csv "
            f"--human-model {shlex.quote(str(HUMAN_MODEL))}/rationale"
            if HUMAN_SHEETS
            else ""
        ),
    log:
        "logs/evaluation/table3.log",
    conda:
        CARE_ENV
    shell:
        "care evaluate table3 --runs {params.runs} --quality {input.quality} "
        "--instrument {input.instrument} {params.human} --out {output.csv} 2> {log}"


rule table5:
    input:
        texts=(
            "results/rationales.parquet"
            if LOG_ODDS_SOURCE == "expert"
            else predictions_of(LOG_ODDS_SOURCE, "rationale")
        ),
        sessions="results/data/sessions.tsv",
        instrument=INSTRUMENT,
    output:
        csv=report(
            "results/table5.csv",
            caption="../report/table5.rst",
            category="Tables",
            labels={"table": "Table 5", "format": "CSV"},
        ),
        md="results/table5.md",
        tex="results/table5.tex",
        html=report(
            "results/table5.html",
            caption="../report/table5.rst",
            category="Tables",
            labels={"table": "Table 5", "format": "HTML"},
        ),
    params:
        source="--expert" if LOG_ODDS_SOURCE == "expert" else "--predictions",
        spec=as_json(_LOG_ODDS),
    log:
        "logs/evaluation/table5.log",
    conda:
        CARE_ENV
    shell:
        "care evaluate table5 {params.source} {input.texts} "
        "--sessions-table {input.sessions} --instrument {input.instrument} "
        "--spec {params.spec} --out {output.csv} 2> {log}"


rule human_eval_export:
    input:
        predictions=predictions_of(HUMAN_MODEL, "rationale") if HUMAN_MODEL else [],
        sessions=SESSIONS,
        instrument=INSTRUMENT,
    output:
        "results/human_eval/rating_sheet.xlsx",
    params:
        spec=as_json(_HUMAN),
        seed=EVAL_SEED,
    log:
        "logs/evaluation/human_eval_export.log",
    conda:
        CARE_ENV
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
    params:
        spec=as_json(_HUMAN),
    log:
        "logs/evaluation/human_eval_import.log",
    conda:
        CARE_ENV
    shell:
        "care evaluate human-eval-import --sheets {input.sheets} --key {input.key} "
        "--instrument {input.instrument} --spec {params.spec} "
        "--ratings {output.ratings} --out {output.summary} 2> {log}"


if TABLE2_RUNS:
    ALL_TARGETS.append("results/table2.csv")
if TABLE4_RUNS:
    ALL_TARGETS.append("results/table4.csv")
if RATIONALE_RUNS:
    ALL_TARGETS.extend(["results/table3.csv", "results/human_eval/rating_sheet.xlsx"])
ALL_TARGETS.append("results/table5.csv")
if HUMAN_SHEETS and RATIONALE_RUNS:
    ALL_TARGETS.append("results/human_eval/summary.csv")
