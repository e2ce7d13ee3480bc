"""``care provenance``: the run's provenance record (results/provenance.json + its summary)."""

from __future__ import annotations

import logging

from care.commands import json_arg

log = logging.getLogger("care.report")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "provenance",
        help="write results/provenance.json: config, git commit, packages, input checksums",
    )
    p.add_argument("--config", type=json_arg, required=True, help="the resolved config (JSON)")
    p.add_argument("--inputs", nargs="*", default=[], help="input files to checksum")
    p.add_argument("--outputs", nargs="*", default=[], help="outputs of the run (listed)")
    p.add_argument("--out", required=True, help="provenance.json to write")
    p.add_argument("--rst", help="reStructuredText summary to write (the report's first page)")
    p.set_defaults(func=provenance)

    p = subparsers.add_parser(
        "readme",
        typed=True,
        help="write or check the README's generated demo-results block",
    )
    p.add_argument("--table2", required=True, help="a run's results/table2.csv")
    p.add_argument("--instrument", required=True)
    p.add_argument("--readme", default="README.md")
    p.add_argument("--provenance", help="the run's provenance.json (commit, time)")
    p.add_argument("--page", help="a session page to screenshot (results/application/...html)")
    p.add_argument("--image", help="where the screenshot goes (e.g. docs/img/session_report.png)")
    p.add_argument("--digest-page", help="the counselor digests page to screenshot")
    p.add_argument("--digest-image", help="where that screenshot goes (docs/img/digest.png)")
    p.add_argument("--out", help="also write the block here")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the block in the README")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 when the README's block differs from the run's Table 2")
    p.set_defaults(func=readme)

    p = subparsers.add_parser(
        "status", typed=True,
        help="each running job's progress, rate and ETA (from logs/)"
    )
    p.add_argument("--logs", default="logs", help="the workflow's log directory")
    p.add_argument("--within", type=float, default=600, help="logs written in these seconds")
    p.add_argument("--finished", action="store_true", help="also bars that reached 100%%")
    p.set_defaults(func=status)


def provenance(args) -> int:
    from care.provenance import write

    record = write(args.config, args.inputs, args.outputs, args.out, args.rst)
    log.info("provenance: commit %s%s, %d inputs checksummed -> %s",
             record["git"].get("commit"), " (dirty)" if record["git"].get("dirty") else "",
             len(record["inputs"]), args.out)
    return 0


def status(args) -> int:
    from care.summary import status_lines

    lines = status_lines(args.logs, args.within, finished=args.finished)
    print("\n".join(lines) if lines else f"no job wrote progress to {args.logs}/ in the last "
          f"{args.within:g} s")
    return 0


def readme(args) -> int:
    from pathlib import Path

    from care.instrument import load_instrument
    from care.io import atomic_open
    from care.readme import check, read_provenance, relative_image, render_block, splice
    from care.tableformat import read_table

    instrument = load_instrument(args.instrument)
    dims = instrument.dimension_ids
    table2 = read_table(args.table2)
    text = Path(args.readme).read_text(encoding="utf-8")
    if args.check:
        problems = check(text, table2, dims, args.readme)
        for line in problems:
            print(line)
        if not problems:
            print(f"{args.readme}: the demo results agree with {args.table2}")
        return 1 if problems else 0
    image = None
    if args.page and args.image:
        from care.apply.session_report import screenshot

        screenshot(args.page, args.image)
        image = relative_image(args.image, args.readme)
    digest_image = None
    if args.digest_page and args.digest_image:
        from care.apply.session_report import screenshot

        screenshot(args.digest_page, args.digest_image, height=1600)
        digest_image = relative_image(args.digest_image, args.readme)
    labels = {d.id: d.label("en") for d in instrument.dimensions}
    block = render_block(table2, dims, labels, read_provenance(args.provenance), image,
                         digest_image)
    with atomic_open(args.readme) as f:
        f.write(splice(text, block, args.readme))
    if args.out:
        with atomic_open(args.out) as f:
            f.write(block)
    log.info("%s: demo results block rewritten from %s", args.readme, args.table2)
    return 0
