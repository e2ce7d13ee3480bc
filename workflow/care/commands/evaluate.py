"""``care evaluate ...``: metrics, Tables 2-5, figures and the human-evaluation sheets.

Actions (one per rule of workflow/rules/evaluate.smk and figures.smk):

- ``metrics``: one run's predictions -> per-session dimension scores and per-fold metrics.
- ``text-metrics``: one run's generated vs expert rationales -> BLEU/ROUGE/BERTScore per fold.
- ``table2``, ``table3``, ``table4``, ``table5``: the tables (CSV, Markdown, LaTeX).
- ``figures``: ``distribution`` (Figure 3), ``scatter`` (one run), ``ablation`` (Table 4).
- ``human-eval-export``, ``human-eval-import``: the rating sheet and the raters' summary.
"""

from __future__ import annotations

import logging
from pathlib import Path

from care.cli_options import Section
from care.commands import json_arg
from care.evaluate.multiplicity import METHODS as MULTIPLE_TESTING

log = logging.getLogger("care.evaluate")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate metrics", help="dimension scores and per-fold metrics of one run"
    )
    p.add_argument("--predictions", nargs="+", required=True, help="the run's fold files")
    p.add_argument("--instrument", required=True)
    p.add_argument("--scores", required=True, help="output: per-session dimension scores")
    p.add_argument("--fold-metrics", required=True, help="output: per-fold metrics CSV")
    p.add_argument("--folds", help="folds.tsv: coverage over the folds' sessions")
    p.set_defaults(func=_metrics)

    p = subparsers.add_parser("evaluate text-metrics", help="rationale quality of one run per fold")
    p.add_argument("--predictions", nargs="+", required=True)
    p.add_argument("--expert", required=True, help="rationales.parquet (column 'final')")
    p.add_argument("--sessions-table", required=True, help="sessions.tsv (for languages)")
    p.add_argument("--instrument", required=True)
    Section("evaluation.text_metrics", "--spec").add_to(p)
    p.add_argument("--threads", type=int, default=1, help="torch threads for BERTScore")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_text_metrics)

    for name, helptext in [("table2", "main results vs baselines"), ("table4", "the ablation")]:
        p = subparsers.add_parser(f"evaluate {name}", help=helptext)
        p.add_argument(
            "--runs",
            type=json_arg,
            required=True,
            help="JSON list of {model, variant, label, kind}, in --scores order",
        )
        p.add_argument("--scores", nargs="+", required=True)
        p.add_argument("--folds", required=True, help="folds.tsv (session_id, client_id, fold)")
        p.add_argument(
            "--sessions-table",
            help="sessions.tsv: each session's counselor (bootstrap unit counselor)",
        )
        p.add_argument("--instrument", required=True)
        Section("evaluation.bootstrap", "--bootstrap").add_to(p)
        p.add_argument("--seed", type=int, default=123)
        p.add_argument(
            "--multiple-testing",
            default="holm",
            choices=list(MULTIPLE_TESTING),  # care.evaluate.multiplicity.METHODS
            help="correction of the table's p-values for its stars (evaluation.multiple_testing)",
        )
        p.add_argument(
            "--headline-scoring",
            default="generated",
            choices=["generated", "expected"],
            help="the scoring of the headline rows (inference.scoring); others are shown too",
        )
        p.add_argument("--out", required=True, help="table CSV; .md and .tex beside it")
        p.add_argument(
            "--selection",
            default="unknown",
            help="checkpoint selection mode of the fine-tuned runs (a run's own wins)",
        )
        p.add_argument(
            "--selection-scoring",
            default="generated",
            help="the scoring checkpoint selection maximised r of (training.validation)",
        )
        if name == "table2":
            p.set_defaults(func=_table2)
        else:
            p.add_argument("--reference-variant", default="score_only")
            p.set_defaults(func=_table4)

    p = subparsers.add_parser("evaluate table3", help="rationale quality (+ human evaluation)")
    p.add_argument("--runs", type=json_arg, required=True, help="JSON list, in --quality order")
    p.add_argument("--quality", nargs="+", required=True)
    p.add_argument(
        "--references", required=True, help="rationales.parquet: the reference rationales"
    )
    p.add_argument("--instrument", required=True)
    p.add_argument("--human-summary", help="human-evaluation summary CSV")
    p.add_argument("--human-model", help="MODEL/VARIANT the human sheet rated")
    Section("evaluation.text_metrics", "--spec").add_to(p)
    p.add_argument("--selection", default="unknown", help="checkpoint selection of the runs")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_table3)

    p = subparsers.add_parser("evaluate table5", help="distinctive terms per dimension (log-odds)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--expert", help="rationales.parquet: the expert-edited rationales")
    source.add_argument("--predictions", nargs="+", help="generated rationales instead")
    p.add_argument("--sessions-table", required=True, help="sessions.tsv (for the language)")
    p.add_argument("--instrument", required=True)
    Section("evaluation.log_odds", "--spec").add_to(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_table5)

    p = subparsers.add_parser(
        "evaluate figures", help="Figure 3, prediction scatter, ablation bars"
    )
    p.add_argument("kind", choices=["distribution", "scatter", "ablation"])
    p.add_argument(
        "--input", required=True, help="sessions.tsv | a run's scores.parquet | table4.csv"
    )
    p.add_argument("--instrument", required=True)
    p.add_argument("--title", default="")
    p.add_argument(
        "--scoring",
        default="generated",
        help="scatter: the scoring to plot (a run without it: its first one)",
    )
    p.add_argument("--formats", nargs="+", default=["png", "pdf"])
    p.add_argument("--out", required=True, help="output stem (no suffix)")
    p.set_defaults(func=_figures)

    p = subparsers.add_parser(
        "evaluate human-eval-export", help="a rating sheet of sampled rationales"
    )
    p.add_argument("--predictions", nargs="+", required=True)
    p.add_argument("--sessions", required=True, help="sessions.jsonl (the dialogues)")
    p.add_argument("--instrument", required=True)
    Section("evaluation.human_eval", "--spec", exclude=("sheets",)).add_to(p)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--out", required=True, help=".xlsx")
    p.set_defaults(func=_human_export)

    p = subparsers.add_parser("evaluate human-eval-import", help="summarize filled rating sheets")
    p.add_argument("--sheets", nargs="+", required=True, help="filled copies (.xlsx or .csv)")
    p.add_argument("--key", required=True, help="the exported sheet (checks row ids)")
    p.add_argument("--instrument", required=True)
    Section("evaluation.human_eval", "--spec", exclude=("sheets",)).add_to(p)
    p.add_argument("--ratings", help="output: all ratings, long CSV")
    p.add_argument("--out", required=True, help="summary CSV")
    p.set_defaults(func=_human_import)


    p = subparsers.add_parser(
        "evaluate training-curves",
        help="training loss and validation Pearson by epoch of fine-tuned models (a figure)",
    )
    p.add_argument("--models", nargs="+", required=True,
                   help="fine-tuned model dirs .../{backbone}/{variant}/fold{k} "
                   "(train_log.csv, selection.json)")
    p.add_argument("--formats", nargs="+", default=["png", "pdf"])
    p.add_argument("--out", required=True, help="output stem (no suffix)")
    p.set_defaults(func=training_curves)

# ------------------------------------------------------------------------------ helpers


def _read_tsv(path: str, columns: list[str]):
    import pandas as pd

    from care.errors import CareInputError

    try:
        frame = pd.read_csv(path, sep="\t", dtype={"session_id": str, "client_id": str})
    except (OSError, ValueError) as exc:
        raise CareInputError(path, f"cannot read table: {exc}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CareInputError(path, "missing column", field=missing[0])
    return frame


def _read_scores(paths: list[str], runs: list[dict]):
    """Score files in --runs order: one per run, or one per seed replicate (``replicates``)."""
    import pandas as pd

    from care.errors import CareInputError

    keys = [(r["model"], v) for r in runs for v in r.get("replicates", [r["variant"]])]
    if len(paths) != len(keys):
        raise CareInputError("--runs", f"{len(keys)} runs and replicates but {len(paths)} files")
    scores = {}
    for path, key in zip(paths, keys, strict=True):
        frame = pd.read_parquet(path)
        frame["session_id"] = frame["session_id"].astype(str)
        if "scoring" not in frame:
            raise CareInputError(path, "no scoring column (rerun care evaluate metrics)",
                                 field="scoring")
        scores[key] = frame
    return scores


def _resampler(args):
    from care.evaluate import bootstrap as bs

    folds = _read_tsv(args.folds, ["session_id", "client_id", "fold"])
    if args.sessions_table:  # counselors: the top level of the two-stage bootstrap
        sessions = _read_tsv(args.sessions_table, ["session_id", "counselor_id"])
        folds = folds.merge(sessions[["session_id", "counselor_id"]], on="session_id", how="left")
    return bs.Resampler(folds, bs.BootstrapSpec.from_config(args.bootstrap, args.seed))


# ------------------------------------------------------------------------------ handlers


def _metrics(args) -> None:
    from care.evaluate import metrics
    from care.infer.run import read_predictions
    from care.instrument import load_instrument
    from care.io import write_table

    instrument = load_instrument(args.instrument)
    pred = read_predictions(args.predictions, (*metrics.EVALUATED_COLUMNS, "score_generated"))
    scores = metrics.run_scores(pred, instrument)
    sizes = None
    if args.folds:
        folds = _read_tsv(args.folds, ["session_id", "fold"])
        sizes = {int(k): int(n) for k, n in folds.groupby("fold").size().items()}
    per_fold = metrics.fold_metrics(scores, sizes)
    write_table(args.scores, scores)
    write_table(args.fold_metrics, per_fold.round(6))
    log.info("%d session-dimension scores, %d fold metrics", len(scores), len(per_fold))


def _text_metrics(args) -> None:
    import pandas as pd
    import torch

    from care.errors import CareInputError
    from care.evaluate import metrics, textmetrics
    from care.infer.run import read_predictions

    torch.set_num_threads(max(args.threads, 1))  # small encoders: threads beyond 1 add little
    from care.instrument import load_instrument
    from care.io import write_table

    instrument = load_instrument(args.instrument)
    pred = read_predictions(args.predictions, metrics.EVALUATED_COLUMNS)
    pred = pred.assign(dimension=pred["item_id"].map(instrument.dimension_of))
    expert = pd.read_parquet(args.expert)
    for column in ("session_id", "item_id", "final"):
        if column not in expert.columns:
            raise CareInputError(args.expert, "missing column", field=column)
    sessions = _read_tsv(args.sessions_table, ["session_id", "language"])
    languages = sessions.set_index("session_id")["language"]
    spec = textmetrics.TextMetricSpec.from_config(args.spec)
    pairs = textmetrics.pair_rationales(pred, expert, languages)
    quality = textmetrics.rationale_quality(
        pairs, textmetrics.BertScore(spec), spec.zh_tokens, spec.recipe
    )
    if spec.verdict_phrases:
        verdicts = textmetrics.verdict_agreement(
            pairs, spec.verdict_phrases, (instrument.scale_min, instrument.scale_max)
        )
        quality = quality.merge(verdicts, on=["model", "variant", "fold", "dimension"], how="left")
    write_table(args.out, quality.round(6))
    log.info("%d generated/expert pairs scored", int(quality["n_pairs"].sum()))


def _table2(args) -> None:
    """Tables 2 and 4 (``args.evaluate_action``): parse, then the stage module writes."""
    from care.evaluate import tables
    from care.instrument import load_instrument

    protocol = tables.Protocol(args.selection, args.selection_scoring, args.headline_scoring)
    inputs = (
        args.out,
        args.runs,
        _read_scores(args.scores, args.runs),
        load_instrument(args.instrument),
        _resampler(args),
        protocol,
    )
    if args.evaluate_action == "table4":
        tables.write_table4(*inputs, args.reference_variant, args.multiple_testing)
    else:
        tables.write_table2(*inputs, args.multiple_testing)


_table4 = _table2


def _table3(args) -> None:
    import pandas as pd

    from care import tableformat
    from care.errors import CareInputError
    from care.evaluate import tables
    from care.evaluate.textmetrics import TextMetricSpec
    from care.instrument import load_instrument
    from care.rationales.stats import reference_label

    instrument = load_instrument(args.instrument)
    dims = instrument.dimension_ids
    if len(args.quality) != len(args.runs):
        raise CareInputError("--runs", f"{len(args.runs)} runs but {len(args.quality)} files")
    quality = pd.concat([pd.read_csv(p) for p in args.quality], ignore_index=True)
    labels = {(r["model"], r["variant"]): r["label"] for r in args.runs}
    human, human_model = None, None
    if args.human_summary:
        human = pd.read_csv(args.human_summary)
        human_model = tuple(args.human_model.split("/", 1)) if args.human_model else None
    frame = tables.table3(quality, dims, labels, human, human_model)
    reference = reference_label(pd.read_parquet(args.references))
    notes = [
        f"Generated rationales of the held-out folds vs the {reference}; mean ± sd over folds; "
        "0-1. "
        f"Fine-tuned checkpoints selected on: {args.selection}.",
        *TextMetricSpec.from_config(args.spec).describe(),
    ]
    if human is not None:
        notes.append(
            "Human: 1-5 ratings, mean ± sd over rated rationales; Krippendorff's "
            "alpha in the CSV and the human-evaluation summary."
        )
    kwargs = dict(dims=dims, dim_labels=tables.dimension_labels(instrument))
    tableformat.write_outputs(
        args.out,
        frame,
        tables.text_display(frame, latex=False, **kwargs),
        tables.text_display(frame, latex=True, **kwargs),
        "Table 3: rationale quality",
        notes,
    )


def _table5(args) -> None:
    from care import tableformat
    from care.evaluate import logodds, tables
    from care.instrument import load_instrument

    instrument = load_instrument(args.instrument)
    texts, source = logodds.rationale_texts(
        instrument, expert=args.expert, predictions=args.predictions
    )
    sessions = _read_tsv(args.sessions_table, ["language"])
    language = str(sessions["language"].mode().iloc[0]) if len(sessions) else "en"
    frame, notes = logodds.table5(texts, source, instrument, language, args.spec)
    labels = tables.dimension_labels(instrument)
    tableformat.write_outputs(
        args.out,
        frame,
        tables.terms_display(frame, labels, latex=False),
        tables.terms_display(frame, labels, latex=True),
        "Table 5: distinctive terms of each dimension's rationales",
        notes,
    )


def _figures(args) -> None:
    import pandas as pd

    from care import tableformat
    from care.evaluate import figures, tables
    from care.instrument import load_instrument

    instrument = load_instrument(args.instrument)
    dims, labels = instrument.dimension_ids, tables.dimension_labels(instrument)
    scale = (instrument.scale_min, instrument.scale_max)
    if args.kind == "distribution":
        sessions = _read_tsv(args.input, dims)
        figures.score_distributions(sessions, dims, labels, scale, args.out, args.formats)
    elif args.kind == "scatter":
        title = args.title
        scores = pd.read_parquet(args.input)
        if "scoring" in scores:
            available = list(dict.fromkeys(scores["scoring"]))
            scoring = args.scoring if args.scoring in available else available[0]
            scores = scores[scores["scoring"] == scoring]
            title = f"{args.title} ({scoring} score)"
        figures.prediction_scatter(scores, dims, labels, scale, title, args.out, args.formats)
    else:
        table = tableformat.read_table(args.input)
        if "headline" in table:
            table = table[table["headline"].astype(bool)]
        figures.ablation_bars(table, dims, labels, args.out, args.formats)


def _human_export(args) -> None:
    from care.evaluate import human_eval, metrics
    from care.infer.run import read_predictions
    from care.instrument import load_instrument
    from care.sessions import load_sessions

    instrument = load_instrument(args.instrument)
    pred = read_predictions(args.predictions, metrics.EVALUATED_COLUMNS)
    spec = args.spec
    language = spec["language"]
    sheet = human_eval.sample_rows(
        pred,
        instrument,
        int(spec["n_sessions"]),
        int(spec.get("seed", args.seed)),
        language,
    )
    sessions = load_sessions(args.sessions, instrument)
    dialogues = human_eval.dialogue_rows(sessions, set(sheet["session_id"]))
    human_eval.export_sheet(args.out, sheet, dialogues, tuple(spec["scale"]))
    log.info(
        "rating sheet: %d rationales of %d sessions", len(sheet), sheet["session_id"].nunique()
    )


def _human_import(args) -> None:
    import pandas as pd

    from care.evaluate import human_eval
    from care.instrument import load_instrument
    from care.io import write_table

    instrument = load_instrument(args.instrument)
    key = pd.read_excel(args.key, sheet_name=human_eval.SHEET, dtype={"row_id": str})
    scale = tuple(args.spec["scale"])
    ratings = human_eval.import_sheets([Path(p) for p in args.sheets], key, scale)
    summary = human_eval.summarize(
        ratings, instrument.dimension_ids, args.spec["level"]
    )
    if args.ratings:
        write_table(args.ratings, ratings)
    write_table(args.out, summary.round(6))
    log.info(
        "%d ratings from %d raters",
        int(ratings["rating"].notna().sum()),
        ratings["rater"].nunique(),
    )


def training_curves(args) -> int:
    import json
    import re
    from pathlib import Path

    import pandas as pd

    from care.errors import CareInputError
    from care.evaluate.figures import training_curves as plot

    runs = []
    for model in args.models:
        path = Path(model)
        match = re.fullmatch(r"fold(\d+)", path.name)
        if not match:
            raise CareInputError(model, "expected a directory named fold<k> "
                                 "(results/models/{backbone}/{variant}/fold<k>)")
        for name in ("train_log.csv", "selection.json"):
            if not (path / name).is_file():
                raise CareInputError(str(path / name), "missing: not a finished fine-tune")
        label = f"{path.parent.parent.name} · {path.parent.name}"
        selection = json.loads((path / "selection.json").read_text(encoding="utf-8"))
        runs.append((label, int(match[1]), pd.read_csv(path / "train_log.csv"), selection))
    plot(runs, args.out, args.formats)
    log.info("training curves of %d runs -> %s", len(runs), args.out)
    return 0
