# Inference and baselines (the paper's sections 5.3-5.4): every fine-tuned model scores its
# held-out fold; zero-shot models and the human counselors are scored on the same folds.
# Predictions: results/predictions/{model}/{variant}/fold{k}.parquet (+ .coverage.json).
# Per-unit answers are cached under results/cache/predictions/ (outside the declared
# outputs), so an interrupted or failed job resumes where it stopped.

import re

from care.runs import TEXT_BASELINES, evaluation_runs, run_seeds
from care.infer.settings import answer_budget

INFER = config["inference"]
BASELINES = config["baselines"]
ZERO_SHOT = {b["name"]: b for b in BASELINES["zero_shot"]}
BACKBONE_NAMES = list(config["backbones"])
INFER_SETTINGS = without_job_keys(INFER)
ZERO_SHOT_SCORER_KEYS = ("max_new_tokens", "batch_size", "dtype", "mode", "scoring")
ZERO_SHOT_API_KEYS = (
    "model",
    "base_url",
    "api_key_env",
    "allow_remote_transcripts",
    "concurrency",
    "max_retries",
    "timeout_s",
)
PREDICTION_EXTS = {"parquet": ".parquet", "coverage": ".coverage.json"}
INFER_INPUTS = {"sessions": SESSIONS, "folds": "results/folds.tsv", "instrument": INSTRUMENT}
# Wildcard constraints that match exactly the configured names ("(?!)": nothing).
BACKBONE_PATTERN = "|".join(map(re.escape, BACKBONE_NAMES)) or "(?!)"
ZERO_SHOT_PATTERN = "|".join(map(re.escape, ZERO_SHOT)) or "(?!)"
# Per zero-shot model: its inputs (a local model directory, none for an API), scorer
# settings (the inference section with its overrides) and how the model is named.
# The answer format each zero-shot model is asked for (its own `prompt_variant`, else the
# baselines section's: the config fills it).
ZERO_SHOT_PROMPT = {name: b["prompt_variant"] for name, b in ZERO_SHOT.items()}
# max_new_tokens `auto` for a zero-shot model: its tokenizer measures the training answers,
# which for the rationale format needs the rationales.
ZERO_SHOT_MEASURES = {
    name: ZERO_SHOT_PROMPT[name] == "rationale"
    and answer_budget({**INFER, **b}, ZERO_SHOT_PROMPT[name]) == "auto"
    for name, b in ZERO_SHOT.items()
}
_UNMEASURED = [name for name, measures in ZERO_SHOT_MEASURES.items() if measures]
if _UNMEASURED and not EXPERT_RATIONALES:
    raise ValueError(
        f"zero-shot models {_UNMEASURED} measure their answer budget (max_new_tokens: auto) "
        "on the expert rationales: set rationales.edited_sheet, or give them max_new_tokens"
    )
ZERO_SHOT_INPUTS = {
    name: {
        **INFER_INPUTS,
        **({"model": model_input(model_path(name, b["path"]))} if b["backend"] != "openai" else {}),
        **({"rationales": "results/rationales.parquet"} if ZERO_SHOT_MEASURES[name] else {}),
    }
    for name, b in ZERO_SHOT.items()
}
ZERO_SHOT_SETTINGS = {
    name: as_json({**INFER_SETTINGS, **{k: b[k] for k in ZERO_SHOT_SCORER_KEYS if k in b}})
    for name, b in ZERO_SHOT.items()
}
ZERO_SHOT_MODEL_ARG = {
    name: (
        f"--api {as_json({k: b[k] for k in ZERO_SHOT_API_KEYS if k in b})}"
        if b["backend"] == "openai"
        else f"--model-path {model_path(name, b['path'])}"
    )
    for name, b in ZERO_SHOT.items()
}


rule infer_finetuned:
    input:
        model="results/models/{backbone}/{variant}/fold{fold}",
        sessions=SESSIONS,
        folds="results/folds.tsv",
        instrument=INSTRUMENT,
    output:
        multiext("results/predictions/{backbone}/{variant}/fold{fold}", **PREDICTION_EXTS),
    log:
        "logs/infer/{backbone}/{variant}/fold{fold}.log",
    wildcard_constraints:
        backbone=BACKBONE_PATTERN,
        variant=VARIANT_PATTERN,
        fold=r"\d+",
    cache: "omit-software"
    conda:
        infer_env(INFER["backend"])
    threads: INFER["threads"]
    resources:
        gpu=INFER["gpus"],
        nodes=1,  # all of a job's GPUs on one node (one launch)
        cpus_per_task=INFER["threads"],
        mem_mb=INFER["mem_mb"],
        runtime=INFER["runtime"],
    params:
        prompts=PROMPTS,
        answer_order=config["answer_order"],
        name=lambda wc: wc.backbone,
        variant=lambda wc: wc.variant,
        prompt_variant=lambda wc: base_variant(wc.variant),
        fold=lambda wc: wc.fold,
        backend=INFER["backend"],
        settings=as_json(INFER_SETTINGS),
        granularity=config["granularity"],
        max_length=config["max_length"],
        gpus=INFER["gpus"],
        answers=lambda wc: f"results/cache/predictions/{wc.backbone}/{wc.variant}/fold{wc.fold}.sqlite",
    shell:
        "care --prompts {params.prompts} --answer-order {params.answer_order} --benchmark benchmarks/infer/{wildcards.backbone}/"
        "{wildcards.variant}/fold{wildcards.fold}.tsv infer model "
        "--backend {params.backend} --model-path {input.model} "
        "--name {params.name} --variant {params.variant} "
        "--prompt-variant {params.prompt_variant} --fold {params.fold} "
        "--granularity {params.granularity} --max-length {params.max_length} "
        "--settings {params.settings} --gpus {params.gpus} --threads {threads} "
        "--sessions {input.sessions} --instrument {input.instrument} --folds {input.folds} "
        "--cache {params.answers} --out {output.parquet} 2> {log}"


rule infer_zero_shot:
    input:
        unpack(lambda wc: ZERO_SHOT_INPUTS[wc.baseline]),
    output:
        multiext("results/predictions/{baseline}/zero_shot/fold{fold}", **PREDICTION_EXTS),
    log:
        "logs/infer/{baseline}/zero_shot/fold{fold}.log",
    wildcard_constraints:
        baseline=ZERO_SHOT_PATTERN,
        fold=r"\d+",
    cache: "omit-software"
    conda:
        lambda wc: infer_env(ZERO_SHOT[wc.baseline]["backend"])
    threads: INFER["threads"]
    resources:
        gpu=lambda wc: ZERO_SHOT[wc.baseline]["gpus"],
        nodes=1,  # all of a job's GPUs on one node (one launch)
        cpus_per_task=INFER["threads"],
        mem_mb=lambda wc: ZERO_SHOT[wc.baseline]["mem_mb"],
        runtime=lambda wc: ZERO_SHOT[wc.baseline]["runtime"],
    params:
        prompts=PROMPTS,
        answer_order=config["answer_order"],
        name=lambda wc: wc.baseline,
        fold=lambda wc: wc.fold,
        backend=lambda wc: ZERO_SHOT[wc.baseline]["backend"],
        model=lambda wc: ZERO_SHOT_MODEL_ARG[wc.baseline],
        prompt_variant=lambda wc: ZERO_SHOT_PROMPT[wc.baseline],
        rationales=lambda wc, input: (
            f"--rationales {input.rationales}" if ZERO_SHOT_MEASURES[wc.baseline] else ""
        ),
        settings=lambda wc: ZERO_SHOT_SETTINGS[wc.baseline],
        granularity=config["granularity"],
        max_length=config["max_length"],
        gpus=lambda wc: ZERO_SHOT[wc.baseline]["gpus"],
        answers=lambda wc: f"results/cache/predictions/{wc.baseline}/zero_shot/fold{wc.fold}.sqlite",
    shell:
        "care --prompts {params.prompts} --answer-order {params.answer_order} --benchmark "
        "benchmarks/infer/{wildcards.baseline}/zero_shot/fold{wildcards.fold}.tsv infer model "
        "--backend {params.backend} {params.model} "
        "--name {params.name} --variant zero_shot --prompt-variant {params.prompt_variant} "
        "--fold {params.fold} --granularity {params.granularity} "
        "--max-length {params.max_length} --settings {params.settings} --gpus {params.gpus} "
        "--threads {threads} --sessions {input.sessions} --instrument {input.instrument} "
        "--folds {input.folds} {params.rationales} --cache {params.answers} "
        "--out {output.parquet} 2> {log}"


rule counselor_baseline:
    input:
        sessions=SESSIONS,
        folds="results/folds.tsv",
        instrument=INSTRUMENT,
    output:
        multiext("results/predictions/counselor/human/fold{fold}", **PREDICTION_EXTS),
    log:
        "logs/infer/counselor/human/fold{fold}.log",
    wildcard_constraints:
        fold=r"\d+",
    cache: "omit-software"
    conda:
        CARE_ENV
    params:
        fold=lambda wc: wc.fold,
    shell:
        "care infer counselor --sessions {input.sessions} --instrument {input.instrument} "
        "--folds {input.folds} --fold {params.fold} --out {output.parquet} 2> {log}"


rule lexical_baseline:
    input:
        sessions=SESSIONS,
        folds="results/folds.tsv",
        instrument=INSTRUMENT,
    output:
        multiext("results/predictions/{model}/{variant}/fold{fold}", **PREDICTION_EXTS),
    log:
        "logs/infer/{model}/{variant}/fold{fold}.log",
    wildcard_constraints:
        model="|".join(TEXT_BASELINES),
        variant="|".join(TEXT_BASELINES.values()),
        fold=r"\d+",
    cache: "omit-software"
    conda:
        CARE_ENV
    params:
        # every wildcard goes through params: the output cache's key ignores wildcards
        model=lambda wc: wc.model,
        variant=lambda wc: wc.variant,
        fold=lambda wc: wc.fold,
        # the ridge penalty is chosen on the split the fine-tunes validate on
        selection=config["training"]["selection"],
        fraction=config["training"]["inner_val_fraction"],
        seed=lambda wc: run_seeds(config["training"])[0],
    shell:
        "care infer lexical --model {params.model} --sessions {input.sessions} "
        "--instrument {input.instrument} --folds {input.folds} --fold {params.fold} "
        "--selection {params.selection} --inner-val-fraction {params.fraction} "
        "--seed {params.seed} --out {output.parquet} 2> {log}"


TEXT_PREDICTIONS = [
    f"results/predictions/{r['model']}/{r['variant']}/fold{k}.parquet"
    for r in evaluation_runs(config).baselines
    if r["kind"] == "text"
    for k in FOLDS
]
FINETUNED_PREDICTIONS = [
    f"results/predictions/{b}/{v}/fold{k}.parquet"
    for b, v in evaluation_runs(config).fine_tuned_variants
    for k in FOLDS
]
ZERO_SHOT_PREDICTIONS = expand(
    "results/predictions/{baseline}/zero_shot/fold{fold}.parquet",
    baseline=list(ZERO_SHOT),
    fold=FOLDS,
)
COUNSELOR_PREDICTIONS = (
    expand("results/predictions/counselor/human/fold{fold}.parquet", fold=FOLDS)
    if BASELINES["counselor"]
    else []
)

ALL_TARGETS.extend(
    FINETUNED_PREDICTIONS + ZERO_SHOT_PREDICTIONS + COUNSELOR_PREDICTIONS + TEXT_PREDICTIONS
)
