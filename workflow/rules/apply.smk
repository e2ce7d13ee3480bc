# Application (the paper's section 7): score the unlabeled corpus with one fine-tuned model,
# then counselor profiles (Figure 2), the interaction-pattern regression (Table 8),
# per-counselor digests and per-session HTML reports.

# Defined only when there is an unlabeled corpus (data.unlabeled) to apply the model to.
if UNLABELED:

    APP = config["application"]
    APP_MODEL = APP["model"]
    APP_MODEL_DIR = "results/models/{backbone}/{variant}/fold{fold}".format(**APP_MODEL)
    # Decoding as in the inference section, with the application's overrides on top.
    APP_INFER = {**config["inference"], **APP["inference"]}
    APP_SETTINGS = without_job_keys(APP_INFER)
    # Every page states the agreement with clients of the model's recipe on every held-out
    # fold (pooled), and that a synthetic corpus is a demonstration.
    APP_HELDOUT = expand(
        "results/predictions/{backbone}/{variant}/fold{k}.parquet",
        backbone=APP_MODEL["backbone"],
        variant=APP_MODEL["variant"],
        k=FOLDS,
    )
    APP_NOTICE = "--heldout {input.heldout}" + (
        " --synthetic" if config["demo_corpus"]["enabled"] else ""
    )

    rule predict_corpus:
        input:
            corpus=UNLABELED,
            model=APP_MODEL_DIR,
            instrument=INSTRUMENT,
        output:
            "results/application/predictions.parquet",
        log:
            "logs/application/predict_corpus.log",
        benchmark:
            "benchmarks/application/predict_corpus.tsv"
        conda:
            infer_env(APP_INFER["backend"])
        threads: APP_INFER["threads"]
        resources:
            gpu=APP_INFER["gpus"],
            nodes=1,  # all of a job's GPUs on one node (one launch)
            cpus_per_task=APP_INFER["threads"],
            mem_mb=APP_INFER["mem_mb"],
            runtime=APP_INFER["runtime"],
        params:
            prompts=PROMPTS,
            answer_order=config["answer_order"],
            name=APP_MODEL["backbone"],
            variant=APP_MODEL["variant"],
            fold=APP_MODEL["fold"],
            granularity=config["granularity"],
            max_length=config["max_length"],
            backend=APP_INFER["backend"],
            settings=as_json(APP_SETTINGS),
            gpus=APP_INFER["gpus"],
            # per-unit answers, outside the declared outputs: a failed job resumes
            cache="results/cache/application/answers.sqlite",
        shell:
            "care --prompts {params.prompts} --answer-order {params.answer_order} apply predict "
            "--backend {params.backend} --corpus {input.corpus} "
            "--instrument {input.instrument} --model-path {input.model} "
            "--name {params.name} --variant {params.variant} --gpus {params.gpus} "
            "--fold {params.fold} --granularity {params.granularity} "
            "--max-length {params.max_length} --settings {params.settings} "
            "--threads {threads} --cache {params.cache} --out {output} 2> {log}"

    rule figure2:
        input:
            predictions="results/application/predictions.parquet",
            heldout=APP_HELDOUT,
            instrument=INSTRUMENT,
        output:
            png=report(
                "results/figure2.png",
                caption="../report/figure2.rst",
                category="Application",
                labels={"figure": "Figure 2"},
            ),
            pdf="results/figure2.pdf",
            table="results/application/profiles.csv",
        log:
            "logs/application/figure2.log",
        conda:
            CARE_ENV
        params:
            spec=as_json(
                {k: APP[k] for k in ("min_sessions", "confidence", "anonymize_counselors")}
            ),
        shell:
            "care apply figure2 --predictions {input.predictions} --instrument {input.instrument} "
            f"{APP_NOTICE} "
            "--spec {params.spec} --out {output.png} "
            "--table {output.table} 2> {log}"

    rule table8:
        input:
            predictions="results/application/predictions.parquet",
            corpus=UNLABELED,
            instrument=INSTRUMENT,
        output:
            csv="results/table8.csv",
            md="results/table8.md",
            tex="results/table8.tex",
            html=report(
                "results/table8.html",
                caption="../report/table8.rst",
                category="Application",
                labels={"table": "Table 8"},
            ),
            rates="results/application/pattern_rates.csv",
        log:
            "logs/application/table8.log",
        conda:
            CARE_ENV
        params:
            patterns=as_json(APP["patterns"]),
            cov_type=APP["regression"]["cov_type"],
            cluster=APP["regression"]["cluster"],
            multiple_testing=MULTIPLE_TESTING,
            scoring=APP_INFER["scoring"],
            model=shlex.quote("{backbone}/{variant} fold {fold}".format(**APP["model"])),
        shell:
            "care apply table8 --predictions {input.predictions} --corpus {input.corpus} "
            "--instrument {input.instrument} --patterns {params.patterns} "
            "--cluster {params.cluster} --cov-type {params.cov_type} "
            "--multiple-testing {params.multiple_testing} "
            "--outcome-scoring {params.scoring} --outcome-model {params.model} "
            "--rates {output.rates} --out {output.csv} 2> {log}"

    rule counselor_digests:
        input:
            predictions="results/application/predictions.parquet",
            heldout=APP_HELDOUT,
            corpus=UNLABELED,
            instrument=INSTRUMENT,
        output:
            pages=directory("results/application/digests"),
            # one page for the HTML report (it embeds single files, not directories)
            combined=report(
                "results/application/digests.html",
                caption="../report/digests.rst",
                category="Application",
                labels={"output": "Counselor digests"},
            ),
        log:
            "logs/application/digests.log",
        conda:
            CARE_ENV
        params:
            spec=as_json(
                {
                    **APP["digest"],
                    "threshold": APP["low_alliance_threshold"],
                    "min_sessions": APP["min_sessions"],
                }
            ),
        shell:
            "care apply digest --predictions {input.predictions} --corpus {input.corpus} "
            f"{APP_NOTICE} "
            "--instrument {input.instrument} --spec {params.spec} --out-dir {output.pages} "
            "--combined {output.combined} 2> {log}"

    rule session_reports:
        input:
            predictions="results/application/predictions.parquet",
            heldout=APP_HELDOUT,
            corpus=UNLABELED,
            instrument=INSTRUMENT,
        output:
            pages=directory("results/application/sessions"),
            # the first selected session's page, for the HTML report
            example=report(
                "results/application/session_report.html",
                caption="../report/session_reports.rst",
                category="Application",
                labels={"output": "Session report (example)"},
            ),
        log:
            "logs/application/session_reports.log",
        conda:
            CARE_ENV
        params:
            select=as_json(APP["report_sessions"]),
        shell:
            "care apply report-session --predictions {input.predictions} --corpus {input.corpus} "
            f"{APP_NOTICE} "
            "--instrument {input.instrument} --select {params.select} --out-dir {output.pages} "
            "--example {output.example} 2> {log}"

    ALL_TARGETS.extend(
        [
            "results/figure2.png",
            "results/table8.csv",
            "results/application/digests",
            "results/application/sessions",
        ]
    )
