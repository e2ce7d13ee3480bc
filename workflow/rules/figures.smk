# Figures: Figure 3, predicted-vs-client scatter per fine-tuned run, the ablation bars.
# Each figure is written as PNG (shown in the HTML report) and PDF (for papers). Tables are
# written by evaluate.smk; `snakemake --report results/report.html` bundles everything.

import os

# Every fine-tune of the config (backbones x variants x folds), for the training curves.
FINETUNED_MODELS = [
    model_dir(b, v, k) for b in TRAIN_BACKBONES for v in config["variants"] for k in FOLDS
]


rule figure3:
    input:
        sessions="results/data/sessions.tsv",
        instrument=INSTRUMENT,
    output:
        png=report(
            "results/figures/figure3.png",
            caption="../report/figure3.rst",
            category="Figures",
            subcategory="Data",
            labels={"figure": "Figure 3: client scores"},
        ),
        pdf="results/figures/figure3.pdf",
    log:
        "logs/figures/figure3.log",
    conda:
        CARE_ENV
    params:
        stem=lambda wc, output: os.path.splitext(output.png)[0],
    shell:
        "care evaluate figures distribution --input {input.sessions} "
        "--instrument {input.instrument} --out {params.stem} 2> {log}"


rule scatter_figure:
    input:
        scores="results/evaluation/{model}/{variant}/scores.parquet",
        instrument=INSTRUMENT,
    output:
        png=report(
            "results/figures/scatter/{model}/{variant}.png",
            caption="../report/scatter.rst",
            category="Figures",
            subcategory="Predicted vs client",
            labels={"backbone": "{model}", "variant": "{variant}"},
        ),
        pdf="results/figures/scatter/{model}/{variant}.pdf",
    log:
        "logs/figures/scatter/{model}/{variant}.log",
    conda:
        CARE_ENV
    params:
        stem=lambda wc, output: os.path.splitext(output.png)[0],
        title=lambda wc: shlex.quote(f"{wc.model} ({wc.variant}): held-out folds"),
        scoring=HEADLINE_SCORING,
    shell:
        "care evaluate figures scatter --input {input.scores} "
        "--instrument {input.instrument} --title {params.title} "
        "--scoring {params.scoring} --out {params.stem} 2> {log}"


rule ablation_figure:
    input:
        table="results/table4.csv",
        instrument=INSTRUMENT,
    output:
        png=report(
            "results/figures/ablation.png",
            caption="../report/ablation.rst",
            category="Figures",
            subcategory="Ablation",
            labels={"figure": "Table 4 as bars"},
        ),
        pdf="results/figures/ablation.pdf",
    log:
        "logs/figures/ablation.log",
    conda:
        CARE_ENV
    params:
        stem=lambda wc, output: os.path.splitext(output.png)[0],
    shell:
        "care evaluate figures ablation --input {input.table} "
        "--instrument {input.instrument} --out {params.stem} 2> {log}"


rule training_curves:
    input:
        models=FINETUNED_MODELS,
    output:
        png=report(
            "results/figures/training_curves.png",
            caption="../report/training_curves.rst",
            category="Figures",
            subcategory="Fine-tuning",
            labels={"figure": "Training and validation curves"},
        ),
        pdf="results/figures/training_curves.pdf",
    log:
        "logs/figures/training_curves.log",
    conda:
        CARE_ENV
    params:
        stem=lambda wc, output: os.path.splitext(output.png)[0],
    shell:
        "care evaluate training-curves --models {input.models} --out {params.stem} 2> {log}"


ALL_TARGETS.append("results/figures/figure3.png")
if FINETUNED_MODELS:
    ALL_TARGETS.append("results/figures/training_curves.png")
ALL_TARGETS.extend(
    "results/figures/scatter/{model}/{variant}.png".format(**r) for r in RUNS.ablation
)
if RUNS.ablation:
    ALL_TARGETS.append("results/figures/ablation.png")
