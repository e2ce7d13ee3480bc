"""``care apply predict | figure2 | table8 | digest | report-session``: the application stage.

Score an unlabeled corpus with a fine-tuned model, then read the predictions as counselor
profiles (Figure 2), an interaction-pattern regression (Table 8), per-counselor digests and
per-session HTML reports. Config sections arrive whole from the rules (JSON) or as options
(:mod:`care.cli_options`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from care.cli_options import Section
from care.commands.infer import inference_section
from care.config import default
from care.evaluate.multiplicity import METHODS as MULTIPLE_TESTING

log = logging.getLogger("care.apply")


def _common(parser: argparse.ArgumentParser, corpus: bool = True) -> None:
    parser.add_argument("--predictions", required=True, help="application predictions.parquet")
    parser.add_argument("--instrument", required=True)
    if corpus:
        parser.add_argument("--corpus", required=True, help="the unlabeled sessions.jsonl")
    # what every page says about itself (care.apply.notice)
    parser.add_argument("--heldout", nargs="+", help="the predictions of the model's recipe on "
                        "every held-out fold (pooled): "
                        "the validity (Pearson r, 95%% CI) every page states")
    parser.add_argument("--synthetic", action="store_true",
                        help="the corpus is synthetic: pages say they are a demonstration")


def register(subparsers) -> None:
    p = subparsers.add_parser("apply predict", help="score every session of an unlabeled corpus")
    p.add_argument("--corpus", required=True, help="sessions.jsonl (ratings, if any, ignored)")
    p.add_argument("--instrument", required=True)
    p.add_argument("--model-path", required=True, help="fine-tuned HF causal-LM directory")
    p.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    p.add_argument("--name", required=True, help="model name in the predictions (backbone)")
    p.add_argument("--variant", required=True, choices=["rationale", "score_only"])
    p.add_argument("--fold", type=int, required=True, help="the fold the model was trained for")
    p.add_argument("--granularity", choices=["item", "dimension", "session"], default="item")
    p.add_argument("--max-length", type=int, required=True)
    p.add_argument("--gpus", type=int, default=0, help="GPUs (vLLM tensor parallel size)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch")
    p.add_argument("--cache", help="answer cache (SQLite) so an interrupted run resumes")
    p.add_argument("--out", required=True, help="predictions.parquet")
    inference_section(p)
    p.set_defaults(func=run_predict)

    p = subparsers.add_parser("apply figure2", help="counselor alliance profiles (Figure 2)")
    _common(p, corpus=False)
    Section("application", "--spec",
            include=("min_sessions", "confidence", "anonymize_counselors")).add_to(p)
    p.add_argument("--out", required=True, help="figure2.png (a .pdf is written beside it)")
    p.add_argument("--table", help="CSV of the plotted means and intervals")
    p.set_defaults(func=run_figure2)

    p = subparsers.add_parser("apply table8", help="interaction patterns vs alliance (Table 8)")
    _common(p)
    Section("application.patterns", "--patterns").add_to(
        p, "The label maps (strategies, reactions) are given in the file.")
    p.add_argument("--cluster", default=default("application.regression.cluster"),
                   choices=["client", "counselor", "none"],
                   help="cluster-robust standard errors by this grouping (none: --cov-type)")
    p.add_argument("--cov-type", default=default("application.regression.cov_type"),
                   help="statsmodels covariance without clustering (nonrobust, HC3, ...)")
    p.add_argument("--multiple-testing", default=default("evaluation.multiple_testing"),
                   choices=list(MULTIPLE_TESTING),
                   help="correction of the table's p-values for its stars "
                   "(evaluation.multiple_testing)")
    p.add_argument("--outcome-scoring", help="the predictions' scoring (for the table note)")
    p.add_argument("--outcome-model", help="the model that made the predictions (note)")
    p.add_argument("--rates", help="also write the per-session pattern rates (CSV)")
    p.add_argument("--out", required=True, help="table8.csv (.md and .tex beside it)")
    p.set_defaults(func=run_table8)

    p = subparsers.add_parser("apply digest", help="per-counselor digests of low-alliance sessions")
    _common(p)
    Section("application.digest", "--spec", extra={
        "threshold": "application.low_alliance_threshold",
        "min_sessions": "application.min_sessions"}).add_to(p)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--combined", help="also write every digest on this one HTML page")
    p.set_defaults(func=run_digest)

    p = subparsers.add_parser("apply report-session", typed=True,
                              help="one session as a self-contained HTML page")
    _common(p)
    p.add_argument("--session-id", help="the session to report (with --out)")
    p.add_argument("--out", help="HTML file for --session-id")
    Section("application.report_sessions", "--select").add_to(
        p, "The sessions given a page with --out-dir.")
    p.add_argument("--out-dir", help="directory for the selected sessions' pages")
    p.add_argument("--screenshot", help="also render the (first) page to this PNG (Chromium)")
    p.add_argument("--example", help="also copy the first page here (for the HTML report)")
    p.set_defaults(func=run_report_session)


# --------------------------------------------------------------------------- handlers


def _load(args, corpus: bool = True):
    from care.apply.predict import APPLIED_COLUMNS, load_corpus, session_scores
    from care.infer.run import read_predictions
    from care.instrument import load_instrument

    instrument = load_instrument(args.instrument)
    predictions = read_predictions(args.predictions, APPLIED_COLUMNS)
    scores = session_scores(predictions, instrument)
    sessions = load_corpus(args.corpus, instrument) if corpus else None
    return instrument, predictions, scores, sessions


def _language(sessions) -> str:
    return sessions[0].language if sessions else "en"


def _notice(args, predictions, instrument, language: str = "en"):
    """Model, held-out validity and the nature of the scores, for every page."""
    from care.apply.notice import model_validity

    first = predictions.iloc[0]
    model = f"{first['model']} · {first['variant']} · fold {first['fold']}"
    return model_validity(args.heldout, instrument, model=model, synthetic=args.synthetic,
                          language=language)


def run_predict(args) -> int:
    from care.apply.predict import predict_corpus
    from care.commands.infer import build_scorer
    from care.instrument import load_instrument
    from care.model.backbone import check_causal_lm_dir

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    instrument = load_instrument(args.instrument)
    check_causal_lm_dir(args.model_path)
    # the inference stage's scorer, so prompts, decoding and the answer cache are the same
    scorer_args = argparse.Namespace(
        backend=args.backend, model_path=args.model_path, api={}, variant=args.variant,
        prompt_variant=args.variant, granularity=args.granularity, max_length=args.max_length,
        settings=args.settings, gpus=args.gpus, cache=args.cache,
    )
    predict_corpus(
        args.corpus, instrument, args.out, model=args.name, variant=args.variant,
        fold=args.fold, make_scorer=lambda: build_scorer(scorer_args, instrument),
    )
    return 0


def run_figure2(args) -> int:
    from care.apply.profiles import figure2

    instrument, predictions, scores, _ = _load(args, corpus=False)
    spec = args.spec
    profiles = figure2(
        scores, instrument, stem=Path(args.out).with_suffix(""), table=args.table,
        notice=_notice(args, predictions, instrument),
        min_sessions=int(spec["min_sessions"]),
        confidence=float(spec["confidence"]),
        anonymize=bool(spec["anonymize_counselors"]), source=args.predictions,
    )
    n = profiles["counselor_id"].nunique() - 1
    log.info("Figure 2: %d counselors with >= %s sessions", n, spec["min_sessions"])
    return 0


def run_table8(args) -> int:
    from care.apply.patterns import (
        Regression,
        Taxonomy,
        pattern_rates,
        regress,
        table_notes,
        write_table8,
    )
    from care.io import write_table

    instrument, _, scores, sessions = _load(args)
    taxonomy = Taxonomy.from_config(args.patterns)
    regression = Regression(cluster=args.cluster, cov_type=args.cov_type)
    rates = pattern_rates(sessions, taxonomy, args.corpus)
    table = regress(rates, scores, instrument, taxonomy, regression, args.multiple_testing)
    if args.rates:
        write_table(args.rates, rates, float_format="%.6f")
    notes = table_notes(taxonomy, regression, args.outcome_model, args.outcome_scoring, table,
                        args.multiple_testing)
    write_table8(table, instrument, args.out, _language(sessions), notes)
    log.info("Table 8 written: %s", Path(args.out).with_suffix(".md"))
    return 0


def run_digest(args) -> int:
    from care.apply.digest import write_combined, write_digests

    instrument, predictions, scores, sessions = _load(args)
    spec = args.spec
    digests = write_digests(
        predictions, scores, instrument, sessions, args.out_dir,
        counselors=list(spec["counselors"]),
        min_sessions=int(spec.get("min_sessions", 1)), threshold=spec["threshold"],
        contrast=spec["contrast"], top_k=int(spec["top_terms"]),
        n_examples=int(spec["examples"]), language=_language(sessions),
        notice=_notice(args, predictions, instrument, _language(sessions)),
    )
    if args.combined:
        write_combined(digests, args.combined)
    log.info("%d counselor digests in %s", len(digests), args.out_dir)
    return 0


def _no_pages(notice) -> str:
    """The report's example page when no session has a complete predicted score."""
    log.warning("no session has a complete predicted score: no session page to show")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Session '
            f"reports</title></head>\n<body><h1>Session reports</h1>\n{notice.html()}\n"
            "<p>No session of the corpus has a complete predicted score (every item of a "
            "dimension parsed), so there is no session page to show. The predictions' parse "
            "coverage is in the log of predict_corpus.</p>\n</body></html>\n")


def run_report_session(args) -> int:
    from care.apply.session_report import screenshot, write_reports, write_session_report
    from care.errors import CareInputError

    instrument, predictions, scores, sessions = _load(args)
    notice = _notice(args, predictions, instrument, _language(sessions))
    if args.session_id:
        if not args.out:
            raise SystemExit("care apply report-session: --session-id needs --out")
        session = next((s for s in sessions if s.session_id == args.session_id), None)
        if session is None:
            raise CareInputError(args.corpus, f"no session {args.session_id!r}",
                                 field="session_id")
        pages = [write_session_report(session, predictions, instrument, args.out, notice)]
    elif args.select is not None and args.out_dir:
        pages = write_reports(sessions, predictions, instrument, scores, args.out_dir, notice,
                              lowest=int(args.select["lowest"]),
                              highest=int(args.select["highest"]),
                              ids=list(args.select["ids"]))
    else:
        raise SystemExit("care apply report-session: give --session-id/--out or --select/--out-dir")
    log.info("%d session reports written", len(pages))
    if args.example:
        from care.io import atomic_open

        with atomic_open(args.example) as f:
            f.write(Path(pages[0]).read_text(encoding="utf-8") if pages else _no_pages(notice))
    if args.screenshot and pages:
        log.info("screenshot: %s", screenshot(pages[0], args.screenshot))
    return 0
