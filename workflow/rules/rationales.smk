# Rationale augmentation (the paper's section 4.2): drafts from the configured backend, the
# expert sheet, the edited sheet's import into results/rationales.parquet, and statistics.
# Model answers are cached under rationales.cache_dir, outside every declared output, so a
# failed or interrupted drafting job resumes without repeating a request.

RAT = config["rationales"]
# The experts' edited sheet: the rationale variant needs it (the schema then requires it);
# a config without one builds no rationales and no table of them.
EXPERT_RATIONALES = "edited_sheet" in RAT
RAT_BACKEND = RAT["backend"]
RAT_DRAFTS = "results/rationales/drafts.jsonl"
RAT_SHEET = "results/rationales/expert_sheet.xlsx"


rule draft_rationales:
    input:
        sessions=SESSIONS,
        instrument=INSTRUMENT,
        prompts=prompt_files("draft", "draft_system"),
    output:
        RAT_DRAFTS,
    log:
        "logs/rationales/draft.log",
    benchmark:
        "benchmarks/rationales/draft.tsv"
    conda:
        CARE_ENV
    threads: 1
    params:
        prompts=lambda wc, input: PROMPTS,  # the inputs' directory
        backend=RAT_BACKEND,
        spec=as_json(RAT[RAT_BACKEND]),
        max_new_tokens=RAT["max_new_tokens"],
        temperature=RAT["temperature"],
        budget=as_json(RAT["dialogue_budget"]),
        cache=RAT["cache_dir"],
    shell:
        "care --prompts {params.prompts} rationales draft "
        "--sessions {input.sessions} --instrument {input.instrument} "
        "--backend {params.backend} --spec {params.spec} "
        "--max-new-tokens {params.max_new_tokens} --temperature {params.temperature} "
        "--dialogue-budget {params.budget} --cache-dir {params.cache} --out {output} 2> {log}"


rule export_expert_sheet:
    input:
        drafts=RAT_DRAFTS,
        sessions=SESSIONS,
        instrument=INSTRUMENT,
    output:
        RAT_SHEET,
    log:
        "logs/rationales/export.log",
    conda:
        CARE_ENV
    params:
        editors=as_json(RAT["editors"]),
    shell:
        "care rationales export --drafts {input.drafts} --sessions {input.sessions} "
        "--instrument {input.instrument} --editors {params.editors} --out {output} 2> {log}"


# Demo only: reference rationales play the expert, written into a real filled-in sheet.
if EXPERT_RATIONALES and RAT["simulate_experts_from"]:

    rule simulate_expert_edits:
        input:
            sheet=RAT_SHEET,
            references=RAT["simulate_experts_from"],
        output:
            RAT["edited_sheet"],
        log:
            "logs/rationales/simulate_edits.log",
        conda:
            CARE_ENV
        params:
            editor=RAT["simulated_editor"],
        shell:
            "care rationales simulate-edits --sheet {input.sheet} "
            "--references {input.references} --editor {params.editor} --out {output} 2> {log}"


if EXPERT_RATIONALES:

    rule import_expert_edits:
        input:
            sheet=RAT["edited_sheet"],
            drafts=RAT_DRAFTS,
            sessions=SESSIONS,
            instrument=INSTRUMENT,
        output:
            "results/rationales.parquet",
        log:
            "logs/rationales/import.log",
        conda:
            CARE_ENV
        params:
            editors=as_json(RAT["editors"]),
            allow_unedited=as_json(RAT["allow_unedited"]),
        shell:
            "care rationales import --sheet {input.sheet} --drafts {input.drafts} "
            "--sessions {input.sessions} --instrument {input.instrument} --editors {params.editors} "
            "--allow-unedited {params.allow_unedited} --out {output} 2> {log}"


rule rationale_stats:
    input:
        rationales="results/rationales.parquet",
        instrument=INSTRUMENT,
    output:
        report(
            "results/rationale_stats.csv",
            caption="../report/rationale_stats.rst",
            category="Data",
            labels={"table": "Rationale statistics"},
        ),
    log:
        "logs/rationales/stats.log",
    conda:
        CARE_ENV
    shell:
        "care rationales stats --rationales {input.rationales} "
        "--instrument {input.instrument} --out {output} 2> {log}"


if EXPERT_RATIONALES:
    ALL_TARGETS.extend(["results/rationales.parquet", "results/rationale_stats.csv"])
