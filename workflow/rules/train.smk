# Fine-tuning (the paper's sections 5.1-5.3, Table 7): tiny demo backbones, then one
# DeepSpeed ZeRO full-parameter SFT run per (backbone, variant, fold) with the best epoch
# chosen by validation Pearson: results/models/{backbone}/{variant}/fold{k}/.
# Trainer checkpoints live in results/checkpoints/ (outside the declared outputs), so a
# retried or preempted job resumes from its last checkpoint (care/train/checkpoints.py).

import re

from care.infer.settings import answer_budget
from care.runs import VARIANT_PATTERN, evaluation_runs, split_variant, training_overrides

TRAIN_BACKBONES = config["backbones"]
TRAINING = config["training"]
# A `path` wins over `tiny` (a config may give both).
TRAIN_TINY = [
    name for name, spec in TRAIN_BACKBONES.items() if "tiny" in spec and "path" not in spec
]
# Tiny backbones with a `pretrain` section: build_backbone writes the random-init model to
# results/backbones/<name>-init and rule pretrain_backbone turns it into results/backbones/<name>.
PRETRAINED = [name for name in TRAIN_TINY if "pretrain" in TRAIN_BACKBONES[name]]
INIT_SUFFIX = "-init"
_BUILT = [f"{n}{INIT_SUFFIX}" if n in PRETRAINED else n for n in TRAIN_TINY]
if set(_BUILT) & (set(TRAIN_BACKBONES) - set(TRAIN_TINY)) or len(set(_BUILT)) < len(_BUILT):
    raise ValueError(f"backbone names {sorted(TRAIN_BACKBONES)} clash with {_BUILT}")
TRAIN_TINY_PATTERN = "|".join(map(re.escape, _BUILT)) or "(?!)"
PRETRAINED_PATTERN = "|".join(map(re.escape, PRETRAINED)) or "(?!)"
# the backbone name of a built directory (llama-init -> llama)
tiny_name = lambda built: built.removesuffix(INIT_SUFFIX) if built not in TRAIN_TINY else built
if set(TRAIN_TINY) & set(IMPORTED):
    raise ValueError(
        f"{sorted(set(TRAIN_TINY) & set(IMPORTED))}: a tiny backbone and an "
        "imported model share a name (both would be results/backbones/<name>)"
    )
TRAIN_BACKBONE_PATTERN = "|".join(map(re.escape, TRAIN_BACKBONES)) or "(?!)"
# `seeds` names replicate runs (care.runs); each run gets its own `seed`.
TRAIN_HP = without_job_keys(TRAINING, "seeds")
# A variant directory: rationale | score_only, optionally tagged -seed<N> | -testsel.
train_hp = lambda variant: as_json({**TRAIN_HP, **training_overrides(variant, TRAINING)})
base_variant = lambda variant: split_variant(variant)[0]
# The inference answer budget of a variant: training cuts dialogues to leave room for it.
answer_tokens = lambda variant: answer_budget(config["inference"], base_variant(variant))


# Helpers other rule files may call (lambdas: `snakemake --lint` wants no defs beside rules).
# backbone_dir(name): a backbone's HF directory: its `path` (imported there when it names a
# GGUF file or package), or the tiny one built below.
backbone_dir = lambda name: (
    model_path(name, TRAIN_BACKBONES[name]["path"])
    if "path" in TRAIN_BACKBONES[name]
    else f"results/backbones/{name}"
)
# model_dir(backbone, variant, fold): the selected fine-tuned model of a run.
model_dir = lambda backbone, variant, fold: f"results/models/{backbone}/{variant}/fold{fold}"
# The training job's inputs; rationales only for the rationale variant.
train_inputs = lambda wc: {
    "backbone": model_input(backbone_dir(wc.backbone)),  # cacheable (common.smk)
    "sessions": SESSIONS,
    "folds": "results/folds.tsv",
    "instrument": INSTRUMENT,
    "prompts": prompt_files("system", "score"),
    **({"deepspeed": TRAINING["deepspeed"]} if TRAINING["deepspeed"] else {}),
    **(
        {"rationales": "results/rationales.parquet"}
        if base_variant(wc.variant) == "rationale"
        else {}
    ),
}


rule build_backbone:
    input:
        # tokenizer text outside the labeled corpus (one tokenizer serves every test fold)
        sessions=lambda wc: TRAIN_BACKBONES[tiny_name(wc.backbone)]["tiny"]["tokenizer_sessions"],
        instrument=INSTRUMENT,
        texts=lambda wc: TRAIN_BACKBONES[tiny_name(wc.backbone)]["tiny"]["tokenizer_texts"],
    output:
        directory("results/backbones/{backbone}"),
    log:
        "logs/backbones/{backbone}.log",
    wildcard_constraints:
        backbone=TRAIN_TINY_PATTERN,
    cache: "omit-software"
    conda:
        CARE_ENV
    params:
        prompts=PROMPTS,
        answer_order=config["answer_order"],
        spec=lambda wc: as_json(TRAIN_BACKBONES[tiny_name(wc.backbone)]["tiny"]),
    shell:
        "care --prompts {params.prompts} --answer-order {params.answer_order} --benchmark benchmarks/backbones/{wildcards.backbone}.tsv "
        "train backbone tiny --spec {params.spec} --sessions {input.sessions} "
        "--instrument {input.instrument} --out {output} > {log} 2>&1"


rule pretrain_backbone:
    input:
        backbone=f"results/backbones/{{backbone}}{INIT_SUFFIX}",
        sessions=lambda wc: TRAIN_BACKBONES[wc.backbone]["pretrain"]["sessions"],
        instrument=INSTRUMENT,
    output:
        directory("results/backbones/{backbone}"),
    log:
        "logs/backbones/{backbone}.pretrain.log",
    wildcard_constraints:
        backbone=PRETRAINED_PATTERN,
    cache: "omit-software"
    conda:
        CARE_ENV
    threads: TRAINING["threads"]
    resources:
        mem_mb=TRAINING["mem_mb"],
        runtime=TRAINING["runtime"],
    params:
        prompts=PROMPTS,
        answer_order=config["answer_order"],
        spec=lambda wc: as_json(TRAIN_BACKBONES[wc.backbone]["pretrain"]),
    shell:
        "care --prompts {params.prompts} --answer-order {params.answer_order} --benchmark benchmarks/backbones/{wildcards.backbone}"
        ".pretrain.tsv train pretrain --backbone {input.backbone} --spec {params.spec} "
        "--instrument {input.instrument} --out {output} --threads {threads} > {log} 2>&1"


rule import_backbone:
    input:
        lambda wc: str(resolve_gguf(IMPORTED[wc.backbone]["source"])),
    output:
        directory("results/backbones/{backbone}"),
    log:
        "logs/backbones/{backbone}.log",
    wildcard_constraints:
        backbone=IMPORT_PATTERN,
    cache: "omit-software"
    conda:
        CARE_ENV
    params:
        source=lambda wc: IMPORTED[wc.backbone]["source"],
        dtype=lambda wc: IMPORTED[wc.backbone]["dtype"],
    shell:
        "care train backbone import --source {params.source} --dtype {params.dtype} "
        "--out {output} > {log} 2>&1"


rule train:
    input:
        unpack(train_inputs),
    output:
        directory("results/models/{backbone}/{variant}/fold{fold}"),
    log:
        "logs/train/{backbone}/{variant}/fold{fold}.log",
    wildcard_constraints:
        backbone=TRAIN_BACKBONE_PATTERN,
        variant=VARIANT_PATTERN,
        fold=r"\d+",
    cache: "omit-software"
    conda:
        CARE_ENV
    threads: TRAINING["threads"]
    resources:
        gpu=TRAINING["gpus"],
        nodes=1,  # all of a job's GPUs on one node (one launch)
        cpus_per_task=TRAINING["threads"],
        mem_mb=TRAINING["mem_mb"],
        runtime=TRAINING["runtime"],
    params:
        prompts=PROMPTS,
        answer_order=config["answer_order"],
        backbone=lambda wc: backbone_dir(wc.backbone),
        fold=lambda wc: wc.fold,
        variant=lambda wc: base_variant(wc.variant),
        hp=lambda wc: train_hp(wc.variant),
        answer_tokens=lambda wc: answer_tokens(wc.variant),
        granularity=config["granularity"],
        max_length=config["max_length"],
        gpus=TRAINING["gpus"],
        rationales=lambda wc, input: (
            f"--rationales {input.rationales}" if base_variant(wc.variant) == "rationale" else ""
        ),
        checkpoints=lambda wc: f"results/checkpoints/{wc.backbone}/{wc.variant}/fold{wc.fold}",
    shell:
        "care --prompts {params.prompts} --answer-order {params.answer_order} --benchmark benchmarks/train/{wildcards.backbone}/"
        "{wildcards.variant}/fold{wildcards.fold}.tsv train run "
        "--backbone {params.backbone} --sessions {input.sessions} "
        "--folds {input.folds} --instrument {input.instrument} {params.rationales} "
        "--fold {params.fold} --variant {params.variant} --granularity {params.granularity} "
        "--max-length {params.max_length} --hp {params.hp} "
        "--answer-tokens {params.answer_tokens} --checkpoints {params.checkpoints} "
        "--out {output} --gpus {params.gpus} --threads {threads} > {log} 2>&1"


ALL_TARGETS.extend(
    model_dir(b, v, k)
    for b, v in evaluation_runs(config).fine_tuned_variants
    if b in TRAIN_BACKBONES
    for k in FOLDS
)
