"""``care rationales draft|export|simulate-edits|import|stats``: the rationale stage.

draft           one draft rationale per (session, item), from the configured backend
export          the expert sheet (.xlsx) of the drafts, with the transcripts
simulate-edits  fill the sheet's editable columns from reference rationales (the demo's expert)
import          validate the edited sheet (.xlsx or .csv) and write rationales.parquet
stats           length and edit statistics per dimension (rationale_stats.csv)
"""

from __future__ import annotations

import logging

from care.commands import json_arg
from care.io import read_jsonl

log = logging.getLogger("care.rationales")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rationales draft", help="draft a rationale for every (session, item)"
    )
    p.add_argument("--sessions", required=True, help="labeled corpus (jsonl)")
    p.add_argument("--instrument", required=True)
    p.add_argument("--backend", required=True, choices=["extractive", "openai", "hf"])
    p.add_argument(
        "--spec",
        type=json_arg,
        default={},
        help="the backend's config section (JSON), e.g. rationales.openai",
    )
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument(
        "--dialogue-budget",
        type=json_arg,
        default=None,
        help="JSON int or null: cut middle turns to this many tokens",
    )
    p.add_argument("--cache-dir", required=True, help="response cache (kept across runs)")
    p.add_argument("--out", required=True, help="drafts (jsonl) to write")
    p.set_defaults(func=draft)

    p = subparsers.add_parser("rationales export", help="write the expert sheet (.xlsx)")
    p.add_argument("--drafts", required=True)
    p.add_argument("--sessions", required=True)
    p.add_argument("--instrument", required=True)
    p.add_argument("--editors", type=json_arg, default=[], help="JSON list of known editor ids")
    p.add_argument("--out", required=True, help="the .xlsx to write")
    p.set_defaults(func=export)

    p = subparsers.add_parser(
        "rationales simulate-edits", help="fill a sheet from reference rationales (demo)"
    )
    p.add_argument("--sheet", required=True, help="the exported .xlsx")
    p.add_argument("--references", required=True, help="jsonl {session_id, item_id, rationale}")
    p.add_argument("--editor", required=True, help="editor id written on every row")
    p.add_argument("--out", required=True, help="the filled .xlsx to write")
    p.set_defaults(func=simulate_edits)

    p = subparsers.add_parser(
        "rationales import", help="validate the edited sheet and write rationales.parquet"
    )
    p.add_argument("--sheet", required=True, help="the edited .xlsx, or a CSV export of it")
    p.add_argument("--drafts", required=True)
    p.add_argument("--instrument", required=True)
    p.add_argument(
        "--editors",
        type=json_arg,
        default=[],
        help="JSON list of known editor ids; [] accepts any non-empty id",
    )
    p.add_argument(
        "--allow-unedited",
        type=json_arg,
        default=True,
        help="JSON true/false: may a row keep the draft by leaving the cell empty",
    )
    p.add_argument(
        "--sessions", help="the sessions the sheet was exported from: an edit to any locked "
        "column is then reported (without it, edits to the draft column only)",
    )
    p.add_argument("--out", required=True, help="rationales.parquet to write")
    p.set_defaults(func=import_)

    p = subparsers.add_parser(
        "rationales stats", help="rationale length and edit statistics per dimension"
    )
    p.add_argument("--rationales", required=True, help="rationales.parquet")
    p.add_argument("--instrument", required=True)
    p.add_argument("--out", required=True, help="rationale_stats.csv to write")
    p.set_defaults(func=stats)


def draft(args) -> int:
    from care.instrument import load_instrument
    from care.io import write_jsonl
    from care.rationales.draft import draft_rationales
    from care.sessions import load_sessions

    instrument = load_instrument(args.instrument)
    sessions = load_sessions(args.sessions, instrument)
    records = draft_rationales(
        sessions,
        instrument,
        args.backend,
        args.spec or {},
        cache_dir=args.cache_dir,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        dialogue_budget=args.dialogue_budget,
    )
    write_jsonl(args.out, records)
    log.info("wrote %d drafts to %s", len(records), args.out)
    return 0


def export(args) -> int:
    from care.instrument import load_instrument
    from care.rationales.sheet import export_sheet
    from care.sessions import load_sessions

    instrument = load_instrument(args.instrument)
    sessions = load_sessions(args.sessions, instrument)
    n = export_sheet(
        read_jsonl(args.drafts), sessions, instrument, args.out, editors=args.editors or [],
        source=args.sessions,
    )
    log.info("expert sheet: %d rows for %d sessions -> %s", n, len(sessions), args.out)
    return 0


def simulate_edits(args) -> int:
    from care.errors import CareInputError
    from care.rationales.sheet import fill_sheet

    finals = {}
    for n, rec in enumerate(read_jsonl(args.references), start=1):
        try:
            finals[(str(rec["session_id"]), str(rec["item_id"]))] = rec["rationale"]
        except KeyError as exc:
            raise CareInputError(
                args.references, "required field is missing", line=n, field=exc.args[0]
            ) from None
    filled = fill_sheet(args.sheet, finals, args.editor, args.out)
    log.info("simulated expert %r: filled %d rows from %s", args.editor, filled, args.references)
    return 0


def import_(args) -> int:
    from care.instrument import load_instrument
    from care.io import write_table
    from care.rationales.sheet import import_edits, read_sheet
    from care.sessions import load_sessions

    instrument = load_instrument(args.instrument)
    # the exported sessions: an edit to any locked column is then reported
    sessions = load_sessions(args.sessions, instrument) if args.sessions else ()
    frame = import_edits(
        read_sheet(args.sheet),
        read_jsonl(args.drafts),
        instrument,
        editors=args.editors or [],
        allow_unedited=bool(args.allow_unedited),
        sessions=sessions,
    )
    write_table(args.out, frame)
    log.info(
        "imported %d rationales: %d edited (%.1f%%), %d left unchanged, %d accepted "
        "as drafted (empty cell), mean normalized edit distance %.3f -> %s",
        len(frame),
        frame["edited"].sum(),
        100 * frame["edited"].mean(),
        (~frame["edited"]).sum(),
        frame["unedited"].sum(),
        frame["edit_distance"].mean(),
        args.out,
    )
    return 0


def stats(args) -> int:
    import pandas as pd

    from care.instrument import load_instrument
    from care.io import write_table
    from care.rationales.stats import rationale_stats

    table = rationale_stats(pd.read_parquet(args.rationales), load_instrument(args.instrument))
    write_table(args.out, table)
    log.info("rationale statistics:\n%s", table.to_string(index=False))
    return 0
