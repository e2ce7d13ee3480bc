"""``care demo-corpus``, ``care validate``, ``care folds``: the data stage."""

from __future__ import annotations

import logging

from care.commands import json_arg

log = logging.getLogger("care.data")


def register(subparsers) -> None:
    p = subparsers.add_parser("demo-corpus", help="write the seeded synthetic demo corpus")
    p.add_argument("--spec", type=json_arg, required=True, help="the config's demo_corpus")
    p.add_argument("--instrument", required=True)
    p.add_argument("--sessions", required=True, help="labeled corpus (jsonl) to write")
    p.add_argument("--references", required=True, help="reference rationales (jsonl)")
    p.add_argument("--unlabeled", help="unlabeled corpus (jsonl) to write")
    p.add_argument(
        "--unlabeled-references", help="rationales of the unlabeled corpus (jsonl) to write"
    )
    p.set_defaults(func=demo_corpus)

    p = subparsers.add_parser("validate", help="check a corpus against the data contract")
    p.add_argument("--sessions", required=True)
    p.add_argument("--instrument", required=True)
    p.add_argument("--unlabeled", action="store_true", help="ratings not required (ignored)")
    p.add_argument("--min-clients", type=int, default=1, help="e.g. the number of folds")
    p.add_argument("--out", help="session table (tsv) to write when the corpus is valid")
    p.set_defaults(func=validate)

    p = subparsers.add_parser("folds", help="client-grouped stratified folds and Table 1")
    p.add_argument("--sessions-table", required=True, help="the validated session table")
    p.add_argument("--instrument", required=True)
    p.add_argument("--spec", type=json_arg, required=True, help="the config's folds section")
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
    from care.instrument import load_instrument
    from care.io import write_table
    from care.sessions import check_min_clients, count_rated, load_sessions, session_table

    instrument = load_instrument(args.instrument)
    sessions = load_sessions(args.sessions, instrument, labeled=not args.unlabeled)
    if args.unlabeled:
        rated = count_rated(args.sessions, instrument)
        if rated:
            log.warning("%s: %d sessions carry ratings; they are ignored", args.sessions, rated)
    check_min_clients(args.sessions, sessions, args.min_clients)
    log.info(
        "%s: %d sessions, %d clients, %d counselors: valid", args.sessions, len(sessions),
        len({s.client_id for s in sessions}), len({s.counselor_id for s in sessions}),
    )
    if args.out:
        write_table(args.out, session_table(sessions, instrument), float_format="%.6g")
    return 0


def folds(args) -> int:
    import pandas as pd

    from care.folds import make_folds, table1
    from care.instrument import load_instrument
    from care.io import write_table
    from care.tables import write_table_formats

    dims = load_instrument(args.instrument).dimension_ids
    table = pd.read_csv(args.sessions_table, sep="\t", dtype={"session_id": str, "client_id": str})
    spec = args.spec
    folds = make_folds(table, dims, spec["n_folds"], spec.get("n_strata", 3), spec.get("seed", 0))
    summary = table1(table, folds, dims)
    write_table_formats(
        summary, args.table1,
        caption="Table 1: client-grouped folds (sessions, clients, client-rated alliance)",
    )
    write_table(args.folds, folds)
    log.info("folds:\n%s", summary.round(2).to_string(index=False))
    return 0
