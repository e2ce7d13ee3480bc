"""``care data demo-corpus | import | validate | folds``: the data stage."""

from __future__ import annotations

import logging

from care.cli_options import Section
from care.importer import ID_MAKERS

log = logging.getLogger("care.data")


def register(subparsers) -> None:
    p = subparsers.add_parser("data demo-corpus", help="write the seeded synthetic demo corpus")
    Section("demo_corpus", "--spec", exclude=("enabled",)).add_to(
        p, "Keys left unset take the corpus generator's own values.")
    p.add_argument("--instrument", required=True)
    p.add_argument("--sessions", required=True, help="labeled corpus (jsonl) to write")
    p.add_argument("--references", required=True, help="reference rationales (jsonl)")
    p.add_argument("--unlabeled", help="unlabeled corpus (jsonl) to write")
    p.add_argument(
        "--unlabeled-references", help="rationales of the unlabeled corpus (jsonl) to write"
    )
    p.set_defaults(func=demo_corpus)

    p = subparsers.add_parser(
        "data validate", typed=True, help="check a corpus against the data contract"
    )
    p.add_argument("--sessions", required=True)
    p.add_argument("--instrument", required=True)
    p.add_argument("--unlabeled", action="store_true", help="ratings not required (ignored)")
    p.add_argument("--min-clients", type=int, default=1, help="e.g. the number of folds")
    p.add_argument("--out", help="session table (tsv) to write when the corpus is valid")
    p.add_argument("--max-errors", type=int, default=20,
                   help="report up to this many errors before stopping (default 20)")
    p.add_argument("--summary", action="store_true",
                   help="print counts: sessions, ratings per item, labels, dialogue lengths")
    p.add_argument("--tokenizer", help="--summary: dialogue length in this tokenizer's tokens")
    p.set_defaults(func=validate)

    conv = subparsers.add_parser("data import conversations", typed=True,
                                 help="a JSON array or JSON-lines of conversations")
    conv.add_argument("--input", required=True, help=".json (array) or .jsonl")
    conv.add_argument("--make-ids", choices=ID_MAKERS,
                      help="a corpus without session ids: row (the record's number in the "
                      "file) or hash (of its content); the mapping then names no session_id")
    conv.set_defaults(func=import_corpus, import_format="conversations")
    table = subparsers.add_parser("data import turns", typed=True,
                                  help="a CSV/TSV/Parquet table of turns + a ratings table")
    table.add_argument("--turns", required=True, help="one row per turn (.csv, .tsv, .parquet)")
    table.add_argument("--ratings", help="one row per session with its ratings")
    table.set_defaults(func=import_corpus, import_format="turns")
    for q in (conv, table):
        q.add_argument("--mapping", required=True, help="YAML mapping (see care.importer)")
        q.add_argument("--out", required=True, help="sessions.jsonl to write (labeled)")
        q.add_argument("--unlabeled-out",
                       help="write sessions without complete client ratings here")
        q.add_argument("--instrument-out", help="write an instrument skeleton for the ratings")
        q.add_argument("--report", help="write the counts of mapped and dropped records (json)")

    p = subparsers.add_parser("data folds", help="client-grouped stratified folds and Table 1")
    p.add_argument("--sessions-table", required=True, help="the validated session table")
    p.add_argument("--instrument", required=True)
    Section("folds", "--spec").add_to(p)
    p.add_argument("--folds", required=True, help="folds.tsv to write")
    p.add_argument("--table1", required=True, help="table1.csv to write (+ .md, .tex)")
    p.set_defaults(func=folds)


def demo_corpus(args) -> int:
    from care.corpus import CorpusSpec, write_corpus
    from care.instrument import load_instrument

    spec = args.spec
    corpus = CorpusSpec(
        n_clients=spec.get("n_clients", 40),
        sessions_per_client=tuple(spec.get("sessions_per_client", (4, 10))),
        n_counselors=spec.get("n_counselors", 8),
        turns_per_session=tuple(spec.get("turns_per_session", (14, 22))),
        language=spec.get("language", "en"),
        seed=spec.get("seed", 0),
    )
    stats = write_corpus(
        corpus, load_instrument(args.instrument), args.sessions, args.references,
        args.unlabeled, spec.get("unlabeled_clients", 0), args.unlabeled_references,
    )
    log.info("demo corpus: %s", stats)
    return 0


def validate(args) -> int:
    from care.errors import CareInputErrors
    from care.instrument import load_instrument
    from care.io import write_table
    from care.sessions import check_corpus, check_min_clients, count_rated, session_table

    instrument = load_instrument(args.instrument)
    check = check_corpus(
        args.sessions, instrument, labeled=not args.unlabeled, max_errors=args.max_errors,
        languages=_prompt_languages(),
    )
    for warning in check.warnings:
        log.warning("%s: %s", args.sessions, warning)
    if check.errors:
        raise CareInputErrors(check.errors, check.more_errors)
    sessions = check.sessions
    if args.unlabeled:
        rated = count_rated(args.sessions, instrument)
        if rated:
            log.warning("%s: %d sessions carry ratings; they are ignored", args.sessions, rated)
    check_min_clients(args.sessions, sessions, args.min_clients)
    log.info(
        "%s: %d sessions, %d clients, %d counselors: valid", args.sessions, len(sessions),
        len({s.client_id for s in sessions}), len({s.counselor_id for s in sessions}),
    )
    if args.summary:
        print(_summary(sessions, instrument, args.tokenizer))
    if args.out:
        write_table(args.out, session_table(sessions, instrument), float_format="%.6g")
    return 0


def _prompt_languages() -> set[str]:
    """Languages the scoring prompts exist in (`care --prompts DIR`, else the shipped ones)."""
    from care.prompts import prompt_dir

    return {p.suffixes[0][1:] for p in prompt_dir().glob("score.*.txt")}


def _summary(sessions, instrument, tokenizer: str | None) -> str:
    from care.corpus_summary import summarize, tokenizer_counter

    if tokenizer:
        count = tokenizer_counter(tokenizer)
        return summarize(sessions, instrument, count, f"tokens of {tokenizer}")
    return summarize(sessions, instrument, lambda text: len(text.split()), "whitespace words")


def import_corpus(args) -> int:
    from care import importer
    from care.io import write_json

    make_ids = getattr(args, "make_ids", None)
    mapping = importer.load_mapping(args.mapping, make_ids)
    if args.import_format == "conversations":
        records, report = importer.import_conversations(args.input, mapping, make_ids)
    else:
        records, report = importer.import_turn_table(args.turns, args.ratings, mapping)
    importer.write_import(records, mapping, report, args.out, args.unlabeled_out)
    for line in report.lines():
        log.info("import: %s", line)
    if args.instrument_out:
        importer.instrument_skeleton(report, args.instrument_out)
        log.info("import: instrument skeleton for %d rating fields: %s (edit it before use)",
                 len(report.rating_values), args.instrument_out)
    if args.report:
        write_json(args.report, report.as_dict())
    return 0


def folds(args) -> int:
    import pandas as pd

    from care.folds import make_folds, table1, table1_display
    from care.instrument import load_instrument
    from care.io import write_table
    from care.tableformat import latex_display, write_outputs

    instrument = load_instrument(args.instrument)
    dims = instrument.dimension_ids
    table = pd.read_csv(args.sessions_table, sep="\t", dtype={"session_id": str, "client_id": str})
    spec = args.spec
    # the schema fills unset keys (care.cli_options): one set of defaults
    folds = make_folds(table, dims, spec["n_folds"], spec["n_strata"], spec["seed"])
    summary = table1(table, folds, dims)
    labels = {d: instrument.dimension(d).label("en") for d in dims}
    display = table1_display(summary, labels)
    write_outputs(
        args.table1, summary, display, latex_display(display),
        "Table 1: client-grouped folds (clients, sessions, client-rated alliance)",
        [f"{', '.join(labels.values())}: the client's dimension score (mean of its items on the "
         f"{instrument.scale_min}–{instrument.scale_max} scale), mean ± sd over the row's "
         "sessions. No client is in two folds."],
    )
    write_table(args.folds, folds)
    log.info("folds:\n%s", summary.round(2).to_string(index=False))
    return 0
