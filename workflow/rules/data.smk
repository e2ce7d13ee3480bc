# Data: the demo corpus, validation against the contract, client-grouped folds, Table 1.


if config["demo_corpus"]["enabled"]:

    rule demo_corpus:
        input:
            instrument=INSTRUMENT,
        output:
            sessions=SESSIONS,
            references="results/demo/reference_rationales.jsonl",
            unlabeled=UNLABELED or "results/demo/unlabeled.jsonl",
            # text outside the labeled corpus, for the tiny backbones' tokenizer
            unlabeled_references="results/demo/unlabeled_rationales.jsonl",
        log:
            "logs/demo_corpus.log",
        conda:
            CARE_ENV
        params:
            spec=as_json(config["demo_corpus"]),
        shell:
            "care data demo-corpus --spec {params.spec} --instrument {input.instrument} "
            "--sessions {output.sessions} --references {output.references} "
            "--unlabeled {output.unlabeled} "
            "--unlabeled-references {output.unlabeled_references} 2> {log}"


rule validate_sessions:
    input:
        sessions=SESSIONS,
        instrument=INSTRUMENT,
    output:
        "results/data/sessions.tsv",
    log:
        "logs/validate_sessions.log",
    conda:
        CARE_ENV
    params:
        prompts=PROMPTS,
        answer_order=config["answer_order"],
        n_folds=N_FOLDS,
    shell:
        "care --prompts {params.prompts} --answer-order {params.answer_order} data validate "
        "--sessions {input.sessions} --instrument {input.instrument} "
        "--min-clients {params.n_folds} --out {output} 2> {log}"


rule folds:
    input:
        sessions="results/data/sessions.tsv",
        instrument=INSTRUMENT,
    output:
        folds="results/folds.tsv",
        table1="results/table1.csv",
        table1_md="results/table1.md",
        table1_tex="results/table1.tex",
        table1_html=report(
            "results/table1.html",
            caption="../report/table1.rst",
            category="Data",
            labels={"table": "Table 1"},
        ),
    log:
        "logs/folds.log",
    benchmark:
        "benchmarks/folds.tsv"
    conda:
        CARE_ENV
    params:
        spec=as_json(config["folds"]),
    shell:
        "care data folds --sessions-table {input.sessions} --instrument {input.instrument} "
        "--spec {params.spec} --folds {output.folds} --table1 {output.table1} 2> {log}"


ALL_TARGETS.extend(["results/table1.csv"])
