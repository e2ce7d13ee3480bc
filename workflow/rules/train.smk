# Fine-tuning (the paper's sections 5.1-5.3, Table 7): tiny demo backbones, then one
# DeepSpeed ZeRO full-parameter SFT run per (backbone, variant, fold) with the best epoch
# chosen by validation Pearson: results/models/{backbone}/{variant}/fold{k}/.
# Trainer checkpoints live in results/checkpoints/ (outside the declared outputs), so a
# retried or preempted job resumes from its last epoch.

import re

TRAIN_BACKBONES = config.get("backbones", {})
TRAINING = config.get("training", {})
# A `path` wins over `tiny` (configs/paper.yaml is merged over the demo config.yaml).
TRAIN_TINY = [
    name for name, spec in TRAIN_BACKBONES.items() if "tiny" in spec and "path" not in spec
]
TRAIN_TINY_PATTERN = "|".join(map(re.escape, TRAIN_TINY)) or "(?!)"
TRAIN_BACKBONE_PATTERN = "|".join(map(re.escape, TRAIN_BACKBONES)) or "(?!)"
# Job settings (they shape the job, not the model), kept out of the hyperparameters.
TRAIN_JOB_KEYS = ("threads", "mem_mb", "runtime")
TRAIN_HP = {k: v for k, v in TRAINING.items() if k not in TRAIN_JOB_KEYS}


# Helpers other rule files may call (lambdas: `snakemake --lint` wants no defs beside rules).
# backbone_dir(name): a backbone's HF directory: its `path`, or the tiny one built below.
backbone_dir = lambda name: TRAIN_BACKBONES[name].get("path", f"results/backbones/{name}")
# model_dir(backbone, variant, fold): the selected fine-tuned model of a run.
model_dir = lambda backbone, variant, fold: f"results/models/{backbone}/{variant}/fold{fold}"
# The training job's inputs; rationales only for the rationale variant.
train_inputs = lambda wc: {
    "backbone": model_input(backbone_dir(wc.backbone)),  # cacheable (common.smk)
    "sessions": SESSIONS,
    "folds": "results/folds.tsv",
    "instrument": INSTRUMENT,
    "prompts": expand("workflow/prompts/{name}.{lang}.txt", name=["system", "score"],
                      lang=["en", "zh"]),
    **({"deepspeed": TRAINING["deepspeed"]} if TRAINING.get("deepspeed") else {}),
    **({"rationales": "results/rationales.parquet"} if wc.variant == "rationale" else {}),
}


rule build_backbone:
    input:
        sessions=SESSIONS,
        instrument=INSTRUMENT,
        texts=lambda wc: TRAIN_BACKBONES[wc.backbone]["tiny"].get("tokenizer_texts", []),
    output:
        directory("results/backbones/{backbone}"),
    wildcard_constraints:
        backbone=TRAIN_TINY_PATTERN,
    params:
        spec=lambda wc: as_json(TRAIN_BACKBONES[wc.backbone]["tiny"]),
    cache: "omit-software"
    log:
        "logs/backbones/{backbone}.log",
    conda:
        CARE_ENV
    shell:
        "care backbone tiny --spec {params.spec} --sessions {input.sessions} "
        "--instrument {input.instrument} --out {output} > {log} 2>&1"


rule train:
    input:
        unpack(train_inputs),
    output:
        directory("results/models/{backbone}/{variant}/fold{fold}"),
    wildcard_constraints:
        backbone=TRAIN_BACKBONE_PATTERN,
        variant="rationale|score_only",
        fold=r"\d+",
    params:
        backbone=lambda wc: backbone_dir(wc.backbone),
        fold=lambda wc: wc.fold,
        variant=lambda wc: wc.variant,
        hp=as_json(TRAIN_HP),
        granularity=config["granularity"],
        max_length=config["max_length"],
        gpus=TRAINING.get("gpus", 0),
        rationales=lambda wc, input: (
            f"--rationales {input.rationales}" if wc.variant == "rationale" else ""
        ),
        checkpoints=lambda wc: f"results/checkpoints/{wc.backbone}/{wc.variant}/fold{wc.fold}",
    threads: TRAINING.get("threads", 1)
    resources:
        gpu=TRAINING.get("gpus", 0),
        nodes=1,  # all of a job's GPUs on one node (one launch)
        cpus_per_task=TRAINING.get("threads", 1),
        mem_mb=TRAINING.get("mem_mb", 8000),
        runtime=TRAINING.get("runtime", 60),
    cache: "omit-software"
    log:
        "logs/train/{backbone}/{variant}/fold{fold}.log",
    conda:
        CARE_ENV
    shell:
        "care train --backbone {params.backbone} --sessions {input.sessions} "
        "--folds {input.folds} --instrument {input.instrument} {params.rationales} "
        "--fold {params.fold} --variant {params.variant} --granularity {params.granularity} "
        "--max-length {params.max_length} --hp {params.hp} --checkpoints {params.checkpoints} "
        "--out {output} --gpus {params.gpus} --threads {threads} > {log} 2>&1"


ALL_TARGETS.extend(
    model_dir(b, v, k) for b in TRAIN_BACKBONES for v in config["variants"] for k in FOLDS
)
