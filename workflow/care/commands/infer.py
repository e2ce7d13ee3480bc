"""``care infer``: score a fold with a model (fine-tuned or zero-shot) or the counselors.

    care infer model --backend hf --model-path results/models/llama/rationale/fold1 \\
        --name llama --variant rationale --fold 1 --settings inference.yaml --batch-size 8 \\
        --dtype bfloat16 --mode label_probs ...
    care infer counselor --fold 1 --out results/predictions/counselor/human/fold1.parquet ...
    care infer lexical --model lexical --fold 1 \\
        --out results/predictions/lexical/tfidf_ridge/fold1.parquet ...
"""

from __future__ import annotations

import argparse
import logging

from care.cli_options import Section
from care.commands import json_arg
from care.config import default

log = logging.getLogger("care.infer")


def register(subparsers) -> None:
    model = subparsers.add_parser("infer model", help="score a fold's sessions with a model")
    _common(model)
    model.add_argument("--backend", choices=["hf", "vllm", "openai"], default="hf")
    model.add_argument("--model-path", help="local model directory (hf, vllm backends)")
    model.add_argument(
        "--api",
        type=json_arg,
        default={},
        help="JSON: model, base_url, api_key_env, allow_remote_transcripts, concurrency, ...",
    )
    model.add_argument("--name", required=True, help="model name in the predictions")
    model.add_argument(
        "--variant",
        required=True,
        help="variant in the predictions (rationale, score_only, zero_shot)",
    )
    model.add_argument(
        "--prompt-variant",
        choices=["rationale", "score_only"],
        help="answer format asked for (default: --variant)",
    )
    model.add_argument("--granularity", choices=["item", "dimension", "session"], default="item")
    model.add_argument("--max-length", type=int, required=True)
    model.add_argument("--gpus", type=int, default=0, help="GPUs (vLLM tensor parallel size)")
    model.add_argument("--threads", type=int, default=0, help="CPU threads for torch")
    model.add_argument("--cache", help="answer cache (SQLite) so an interrupted run resumes")
    model.add_argument(
        "--rationales",
        help="training rationales: max_new_tokens auto for a model not fine-tuned here",
    )
    inference_section(model)
    model.set_defaults(func=run_model)

    counselor = subparsers.add_parser(
        "infer counselor", help="the human counselor baseline for a fold"
    )
    _common(counselor)
    counselor.set_defaults(func=run_counselor)

    lexical = subparsers.add_parser(
        "infer lexical", help="a text baseline for a fold: TF-IDF + ridge, or dialogue length"
    )
    _common(lexical)
    lexical.add_argument("--model", choices=["lexical", "length"], default="lexical")
    lexical.add_argument(
        "--selection",
        choices=["inner_split", "heldout_fold"],
        default=default("training.selection"),
        help="validation split of the ridge penalty (training.selection)",
    )
    lexical.add_argument(
        "--inner-val-fraction", type=float, default=default("training.inner_val_fraction")
    )
    lexical.add_argument(
        "--seed",
        type=int,
        default=default("training.seed"),
        help="inner split seed (training.seed)",
    )
    lexical.set_defaults(func=run_lexical)


def inference_section(parser: argparse.ArgumentParser, base=None) -> None:
    """``--settings`` (the inference section) and its options (``--batch-size 8``, ...);
    ``base``: the section when --settings is not given (:class:`care.cli_options.Section`)."""
    from care.infer.settings import NOT_SETTINGS

    Section("inference", "--settings", exclude=NOT_SETTINGS, base=base).add_to(
        parser,
        "max_new_tokens per answer format ({rationale: N, score_only: M}) goes in the file form.",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", required=True, help="sessions.jsonl")
    parser.add_argument("--instrument", required=True, help="instrument YAML")
    parser.add_argument("--folds", help="folds.tsv (omit to score every session)")
    parser.add_argument("--fold", type=int, help="the held-out fold to score")
    parser.add_argument("--out", required=True, help="predictions .parquet")


def build_scorer(args, instrument):
    """The scorer the arguments ask for (also used by ``care apply predict``, ``care score``)."""
    from care.infer.settings import InferenceSettings

    prompt_variant = getattr(args, "prompt_variant", None) or args.variant
    settings = InferenceSettings.from_config(
        args.settings,
        source="--settings",
        variant=prompt_variant,
        granularity=args.granularity,
        max_length=args.max_length,
        tensor_parallel_size=max(1, getattr(args, "gpus", 0) or 0),
    )
    from care.infer.budget import check_answer_order

    check_answer_order(args.model_path, prompt_variant)
    auto = settings.max_new_tokens == "auto"
    scorer = _scorer(args, instrument, settings.replace(max_new_tokens=1) if auto else settings)
    if auto:
        from care.infer.budget import auto_budget

        limit = auto_budget(
            scorer.count_tokens,
            instrument,
            prompt_variant=prompt_variant,
            granularity=args.granularity,
            model_path=args.model_path,
            sessions=getattr(args, "sessions", None),
            folds=getattr(args, "folds", None),
            fold=getattr(args, "fold", None),
            rationales=getattr(args, "rationales", None),
        )
        scorer.set_max_new_tokens(limit)
        log.info("max_new_tokens auto: %d (the training answers need, with a margin)", limit)
    return scorer


def _scorer(args, instrument, settings):
    from care.versions import require

    if args.backend in ("hf", "vllm"):
        require(args.backend)  # before the model loads
    common = dict(instrument=instrument, cache=args.cache)
    if args.backend == "hf":
        from care.infer.hf import HFScorer

        return HFScorer.from_pretrained(_need(args.model_path, "--model-path"), settings, **common)
    if args.backend == "vllm":
        from care.infer.vllm_backend import VLLMScorer

        return VLLMScorer(_need(args.model_path, "--model-path"), settings, **common)
    from care.infer.api import APIScorer
    from care.llm.openai_chat import OpenAIChat

    api = dict(getattr(args, "api", None) or {})
    _need(api.get("model"), "--api model")
    entry = f"baselines.zero_shot (name: {getattr(args, 'name', None) or api.get('model')})"
    # the engine's answer cache keeps the answers: no second cache in the client
    client = OpenAIChat.from_config(api, section=entry, cache_dir=None)
    return APIScorer(client, settings, **common)


def _need(value, name: str):
    if not value:
        raise SystemExit(f"care infer: {name} is required for this backend")
    return value


def run_model(args) -> int:
    from care.infer.run import predict_fold
    from care.instrument import load_instrument

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    instrument = load_instrument(args.instrument)
    scorer = build_scorer(args, instrument)
    predict_fold(
        scorer,
        sessions_path=args.sessions,
        instrument=instrument,
        folds_path=args.folds,
        fold=args.fold,
        model=args.name,
        variant=args.variant,
        out=args.out,
    )
    return 0


def run_counselor(args) -> int:
    from care.infer.counselor import counselor_rows
    from care.infer.run import (
        coverage,
        coverage_path,
        fold_sessions,
        read_folds,
        sort_rows,
        write_predictions,
    )
    from care.instrument import load_instrument
    from care.io import write_json

    instrument = load_instrument(args.instrument)
    folds = read_folds(args.folds) if args.folds else None
    rows = sort_rows(
        counselor_rows(
            fold_sessions(args.sessions, instrument, folds, args.fold), instrument, args.fold
        ),
        instrument,
    )
    write_predictions(args.out, rows)
    write_json(
        coverage_path(args.out),
        {"model": "counselor", "variant": "human", "fold": args.fold, **coverage(rows)},
    )
    rated = [r for r in rows if r["parsed"]]
    log.info(
        "counselor baseline, fold %s: %d rated items on %d sessions",
        args.fold,
        len(rated),
        len({r["session_id"] for r in rated}),
    )
    for d in instrument.dimensions:
        complete = _sessions_rating_all(rows, d.items)
        if not complete:
            log.warning("counselor baseline, fold %s: no session has counselor ratings on "
                        "every item of %s: that dimension cannot be scored", args.fold, d.id)
    return 0


def _sessions_rating_all(rows: list[dict], items) -> set[str]:
    """Sessions whose counselor rated every one of ``items``."""
    by_session: dict[str, set[str]] = {}
    for r in rows:
        if r["parsed"]:
            by_session.setdefault(r["session_id"], set()).add(r["item_id"])
    return {s for s, got in by_session.items() if set(items) <= got}


def run_lexical(args) -> int:
    from care.infer import lexical
    from care.infer.run import coverage, coverage_path, read_folds, sort_rows, write_predictions
    from care.instrument import load_instrument
    from care.io import write_json
    from care.sessions import load_sessions
    from care.sft import split_sessions

    instrument = load_instrument(args.instrument)
    sessions = load_sessions(args.sessions, instrument)
    folds = read_folds(args.folds)
    test = [s for s in sessions if folds.get(s.session_id) == args.fold]
    split = dict(inner_val_fraction=args.inner_val_fraction, seed=args.seed, folds_path=args.folds)
    train, _ = split_sessions(sessions, folds, args.fold, selection="heldout_fold", **split)
    if args.model == "lexical":
        fit, val = split_sessions(sessions, folds, args.fold, selection=args.selection, **split)
        result = lexical.fit_lexical(fit, val, train, test, instrument)
    else:
        result = lexical.fit_length(train, test, instrument)
    rows = sort_rows(lexical.prediction_rows(test, result, instrument, args.model, args.fold),
                     instrument)
    write_predictions(args.out, rows)
    variant = lexical.BASELINES[args.model]
    write_json(
        coverage_path(args.out),
        {"model": args.model, "variant": variant, "fold": args.fold, "fit": result.chosen,
         **coverage(rows)},
    )
    log.info("%s baseline, fold %s: %d test sessions; %s", args.model, args.fold, len(test),
             result.chosen)
    return 0
