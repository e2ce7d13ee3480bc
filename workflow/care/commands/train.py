"""``care train run`` (one fine-tune with checkpoint selection) and ``care train sft-data``.

    care train run --backbone results/backbones/llama --variant rationale --fold 1 \\
        --sessions S.jsonl --folds results/folds.tsv --rationales results/rationales.parquet \\
        --instrument I.yaml --granularity item --max-length 1024 --hp training.yaml \\
        --learning-rate 1e-5 --num-train-epochs 3 --packing shared_prefix \\
        --checkpoints results/checkpoints/llama/rationale/fold1 \\
        --out results/models/llama/rationale/fold1 --gpus 0 --threads 1
"""

from __future__ import annotations

import json
import logging

from care.cli_options import Section
from care.config import JOB_KEYS, training_recipe

log = logging.getLogger("care.train")


def _data_args(p) -> None:
    p.add_argument("--backbone", required=True, help="local HF causal-LM directory")
    p.add_argument("--sessions", required=True, help="labeled corpus (jsonl)")
    p.add_argument("--folds", required=True, help="folds.tsv")
    p.add_argument("--instrument", required=True)
    p.add_argument(
        "--rationales",
        help="rationales.parquet (column final) or jsonl "
        "(rationale); needed by the rationale variant",
    )
    p.add_argument("--fold", type=int, required=True, help="the held-out (test) fold")
    p.add_argument("--variant", choices=["rationale", "score_only"], required=True)
    p.add_argument("--granularity", choices=["item", "dimension", "session"], default="item")
    p.add_argument("--max-length", type=int, required=True)
    p.add_argument(
        "--answer-tokens",
        type=lambda v: v if v == "auto" else int(v),
        help="the inference answer budget (max_new_tokens of the variant, or auto): dialogues "
        "are cut to leave room for it, as at inference",
    )
    # the rule keeps the job keys and the replicate seeds out of --hp
    Section("training", "--hp", exclude=(*JOB_KEYS, "seeds"), required=training_recipe()).add_to(
        p, "Replicate seeds (seeds) are separate runs: give one --seed."
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train run", help="fine-tune a backbone on a fold and select the best epoch"
    )
    _data_args(p)
    p.add_argument(
        "--checkpoints",
        required=True,
        help="Trainer checkpoint dir (kept outside the outputs: resumable)",
    )
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--gpus", type=int, default=0, help="GPUs = ranks; 0: CPU ranks")
    p.add_argument("--threads", type=int, default=1, help="CPU threads shared by the ranks")
    p.set_defaults(func=train)

    p = subparsers.add_parser(
        "train sft-data", typed=True, help="write a fold's rendered SFT examples (jsonl)"
    )
    _data_args(p)
    p.add_argument("--out", required=True, help="jsonl: text, labelled text, ids, labels")
    p.set_defaults(func=sft_data)


def _finetune(args, **extra):
    from pathlib import Path

    from care.train.run import FineTune
    from care.train.settings import TrainingSettings

    return FineTune(
        backbone=Path(args.backbone),
        sessions=Path(args.sessions),
        folds=Path(args.folds),
        instrument=Path(args.instrument),
        fold=args.fold,
        variant=args.variant,
        granularity=args.granularity,
        max_length=args.max_length,
        settings=TrainingSettings.from_config(args.hp, args.variant),
        rationales=Path(args.rationales) if args.rationales else None,
        answer_tokens=args.answer_tokens,
        **extra,
    )


def train(args) -> int:
    from pathlib import Path

    from care.versions import require

    require("train")  # before any work: an untested library fails hours later otherwise
    from care.train.run import finetune

    record = finetune(
        _finetune(
            args,
            checkpoint_dir=Path(args.checkpoints),
            out=Path(args.out),
            gpus=args.gpus,
            threads=args.threads,
        )
    )
    log.info(
        "chosen epoch %s (validation mean r %s); timing %s",
        record["chosen"]["epoch"],
        record["chosen"]["mean_pearson"],
        record["timing_s"],
    )
    return 0


def sft_data(args) -> int:
    from pathlib import Path

    from care.io import write_jsonl
    from care.model.backbone import load_tokenizer
    from care.train.run import prepare

    run = _finetune(args, checkpoint_dir=Path("."), out=Path(args.out))
    _, train_sessions, val, examples, stats = prepare(run)
    tokenizer = load_tokenizer(args.backbone)
    write_jsonl(args.out, (sft_record(e, tokenizer) for e in examples))
    print(
        json.dumps(
            {
                "training_sessions": len(train_sessions),
                "validation_sessions": len(val),
                **stats.as_dict(),
            },
            indent=2,
        )
    )
    return 0


def sft_record(example, tokenizer) -> dict:
    """One example for reading: rendered text and target first, then ids and labels."""
    return {
        "session_id": example.session_id,
        "items": list(example.items),
        "text": tokenizer.decode(example.input_ids),
        "target": tokenizer.decode([t for t in example.labels if t != -100]),
        "input_ids": example.input_ids,
        "labels": example.labels,
    }
