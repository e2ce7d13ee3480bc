"""``care score``: score a transcript file with a fine-tuned model and print the result.

For a person at a terminal, not for a rule: no fold, run or config section names needed.
Decoding follows the config's ``inference`` section (``config.yaml`` when present, or
``--settings``), with its options (``--scoring``, ``--batch-size``, ``--device``,
``--max-new-tokens``, ...) on top; the instrument is the config's, else the packaged WAI-SR.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from care.commands.infer import inference_section
from care.infer.settings import NOT_SETTINGS

log = logging.getLogger("care.score")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        typed=True,
        help="score a .jsonl of sessions with a model directory; print a table",
        description="Score every session of a transcript file with a fine-tuned model: print "
        "a per-session table of predicted dimension scores and write the item predictions.",
    )
    p.add_argument("--model", required=True, help="a fine-tuned model directory "
                   "(e.g. results/models/llama/rationale/fold1)")
    p.add_argument("--sessions", required=True,
                   help="sessions in the data contract (.jsonl); ratings, if any, are ignored")
    p.add_argument("--out", help="predictions (.parquet or .csv); default: "
                   "<sessions>.predictions.parquet beside the sessions file")
    p.add_argument("--config", default="config.yaml",
                   help="config whose inference section and instrument apply "
                   "(default: config.yaml, if present)")
    p.add_argument("--instrument", default=None,
                   help="instrument file (default: the config's, else the packaged WAI-SR)")
    p.add_argument("--variant", choices=["rationale", "score_only"],
                   help="answer format the model was trained on (default: from the model's "
                   "path .../<variant>/fold<k>, else rationale)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch")
    inference_section(
        p,
        base=lambda args: {
            k: v
            for k, v in _config(args.config).get("inference", {}).items()
            if k not in NOT_SETTINGS
        },
    )
    p.set_defaults(func=run)


def _config(path: str) -> dict:
    from care.io import read_config

    return read_config(path) if Path(path).is_file() else {}


def _variant(args) -> str:
    if args.variant:
        return args.variant
    parts = Path(args.model).resolve().parts
    if len(parts) >= 2 and re.fullmatch(r"fold\d+", parts[-1]) and parts[-2] in (
            "rationale", "score_only"):
        return parts[-2]
    return "rationale"


def run(args) -> int:
    import pandas as pd

    from care.apply.predict import predict_corpus, session_scores
    from care.commands.infer import build_scorer
    from care.instrument import DEFAULT, load_instrument
    from care.model.backbone import check_causal_lm_dir

    config = _config(args.config)
    instrument = load_instrument(args.instrument or config.get("instrument") or DEFAULT)
    check_causal_lm_dir(args.model)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    variant = _variant(args)
    scorer_args = argparse.Namespace(
        backend="hf", model_path=args.model, api={}, variant=variant, prompt_variant=variant,
        granularity=config.get("granularity", "item"),
        max_length=int(config.get("max_length", 8192)), settings=args.settings,
        gpus=0, cache=None,
    )
    sessions = Path(args.sessions)
    out = Path(args.out) if args.out else sessions.with_suffix(".predictions.parquet")
    # a model given by path belongs to no run: the frame's fold is 0 (none), and the log and
    # the model column name the path
    frame = predict_corpus(sessions, instrument, out, model=str(args.model), variant=variant,
                           fold=0, name=f"{args.model} ({variant} answers)",
                           make_scorer=lambda: build_scorer(scorer_args, instrument))
    table = session_scores(frame, instrument)
    labels = {d.id: d.label("en") for d in instrument.dimensions}
    shown = table.rename(columns={"session_id": "session", "counselor_id": "counselor",
                                  **labels})
    with pd.option_context("display.width", 120, "display.max_rows", 200):
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep="n/a"))
    parsed = frame["parsed"].mean()
    print(f"\n{len(table)} sessions, {len(frame)} item predictions ({100 * parsed:.0f}% parsed) "
          f"on the {instrument.scale_min}–{instrument.scale_max} scale -> {out}\n"
          "These are a model's predictions of the client's ratings, not the client's ratings.")
    return 0
