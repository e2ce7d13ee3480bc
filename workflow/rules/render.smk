# Rendering: Figure 3, predicted-vs-client scatter per fine-tuned run, the ablation bars.
# Tables are written by evaluate.smk; `snakemake --report results/report.html` bundles all.

FIGURE_FORMATS = EVAL.get("figures", {}).get("formats", ["png", "pdf"])


def figure_outputs(stem, caption, subcategory, labels):
    """Every format of a figure; the first one goes into the HTML report."""
    first, *rest = FIGURE_FORMATS
    shown = report(
        f"{stem}.{first}",
        caption=caption,
        category="Figures",
        subcategory=subcategory,
        labels=labels,
    )
    return [shown, *[f"{stem}.{fmt}" for fmt in rest]]


localrules:
    figure3,
    scatter_figure,
    ablation_figure,


rule figure3:
    input:
        sessions="results/data/sessions.tsv",
        instrument=INSTRUMENT,
    output:
        figure_outputs(
            "results/figures/figure3",
            "../report/figure3.rst",
            "Data",
            {"figure": "Figure 3: client scores"},
        ),
    params:
        stem="results/figures/figure3",
        formats=" ".join(FIGURE_FORMATS),
    log:
        "logs/figures/figure3.log",
    conda:
        CARE_ENV
    shell:
        "care evaluate figures distribution --input {input.sessions} "
        "--instrument {input.instrument} --formats {params.formats} "
        "--out {params.stem} 2> {log}"


rule scatter_figure:
    input:
        scores="results/evaluation/{model}/{variant}/scores.parquet",
        instrument=INSTRUMENT,
    output:
        figure_outputs(
            "results/figures/scatter/{model}/{variant}",
            "../report/scatter.rst",
            "Predicted vs client",
            {"backbone": "{model}", "variant": "{variant}"},
        ),
    params:
        stem="results/figures/scatter/{model}/{variant}",
        formats=" ".join(FIGURE_FORMATS),
        title=lambda wc: shlex.quote(f"{wc.model} ({wc.variant}): held-out folds"),
    log:
        "logs/figures/scatter/{model}/{variant}.log",
    conda:
        CARE_ENV
    shell:
        "care evaluate figures scatter --input {input.scores} "
        "--instrument {input.instrument} --title {params.title} "
        "--formats {params.formats} --out {params.stem} 2> {log}"


rule ablation_figure:
    input:
        table="results/table4.csv",
        instrument=INSTRUMENT,
    output:
        figure_outputs(
            "results/figures/ablation",
            "../report/ablation.rst",
            "Ablation",
            {"figure": "Table 4 as bars"},
        ),
    params:
        stem="results/figures/ablation",
        formats=" ".join(FIGURE_FORMATS),
    log:
        "logs/figures/ablation.log",
    conda:
        CARE_ENV
    shell:
        "care evaluate figures ablation --input {input.table} "
        "--instrument {input.instrument} --formats {params.formats} "
        "--out {params.stem} 2> {log}"


ALL_TARGETS.append(f"results/figures/figure3.{FIGURE_FORMATS[0]}")
ALL_TARGETS.extend(
    f"results/figures/scatter/{r['model']}/{r['variant']}.{FIGURE_FORMATS[0]}"
    for r in TABLE4_RUNS
)
if TABLE4_RUNS:
    ALL_TARGETS.append(f"results/figures/ablation.{FIGURE_FORMATS[0]}")
