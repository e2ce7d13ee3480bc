"""``care train backbone tiny|import|check``: build a tiny demo backbone, import a GGUF checkpoint
into a Hugging Face directory, or inspect a model directory; ``care train pretrain``: pretrain
a tiny backbone on unlabeled text."""

from __future__ import annotations

import json
import logging

from care.cli_options import Section

log = logging.getLogger("care.model.backbone")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train backbone tiny", help="a tiny random-init Llama/Qwen2 with a corpus tokenizer"
    )
    p.add_argument("--sessions", required=True, help="corpus (jsonl) to train the tokenizer on")
    p.add_argument("--instrument", required=True)
    p.add_argument(
        "--extra-text",
        nargs="*",
        default=[],
        help="more tokenizer training text: jsonl (every string field) or text",
    )
    p.add_argument("--out", required=True, help="model directory to write")
    # the tokenizer's corpus is --sessions (the rule passes tokenizer_sessions there)
    Section("backbones.*.tiny", "--spec", exclude=("tokenizer_sessions",)).add_to(p)
    p.set_defaults(func=tiny)

    p = subparsers.add_parser(
        "train pretrain", help="pretrain a tiny backbone as a language model on unlabeled text"
    )
    p.add_argument("--backbone", required=True, help="the random-init model directory")
    p.add_argument("--instrument", required=True, help="instrument of the prompts rendered")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    Section("backbones.*.pretrain", "--spec").add_to(p)
    p.set_defaults(func=pretrain)

    p = subparsers.add_parser(
        "train backbone import",
        help="import a GGUF file (or a package shipping one) as a Hugging Face dir"
    )
    p.add_argument(
        "--source", required=True, help="a .gguf file, or package:<module>[/<file>.gguf]"
    )
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
        help="dtype of the saved weights",
    )
    p.add_argument("--out", required=True, help="model directory to write")
    p.set_defaults(func=import_checkpoint)

    p = subparsers.add_parser(
        "train backbone check", typed=True, help="check that a directory holds a local causal LM"
    )
    p.add_argument("path")
    p.set_defaults(func=check)


def tiny(args) -> int:
    from care.instrument import load_instrument
    from care.model.backbone import TinySpec, build_tiny, corpus_texts

    spec = TinySpec.from_config(args.spec)
    instrument = load_instrument(args.instrument)
    texts = list(corpus_texts(args.sessions, instrument, [*spec.tokenizer_texts, *args.extra_text]))
    info = build_tiny(spec, texts, args.out)
    log.info("tiny backbone %s: %s", args.out, info)
    return 0


def pretrain(args) -> int:
    from care.instrument import load_instrument
    from care.train.pretrain import PretrainSpec, pretrain

    spec = PretrainSpec.from_config(args.spec)
    info = pretrain(args.backbone, spec, load_instrument(args.instrument), args.out, args.threads)
    log.info("pretrained backbone %s: %s", args.out, info)
    return 0


def import_checkpoint(args) -> int:
    from care.model.sources import import_gguf

    record = import_gguf(args.source, args.out, dtype=args.dtype)
    print(json.dumps(record, indent=2))
    return 0


def check(args) -> int:
    from care.model.backbone import check_causal_lm_dir, load_tokenizer

    config = check_causal_lm_dir(args.path)
    tokenizer = load_tokenizer(args.path)
    print(
        json.dumps(
            {
                "path": args.path,
                "model_type": config.model_type,
                "architectures": config.architectures,
                "vocab_size": len(tokenizer),
                "eos_token": tokenizer.eos_token,
            },
            indent=2,
        )
    )
    return 0
