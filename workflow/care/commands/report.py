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
        "status", help="one line per running job: its progress bar, rate and ETA (from logs/)"
    )
    p.add_argument("--logs", default="logs", help="the workflow's log directory")
    p.add_argument("--within", type=float, default=600, help="logs written in these seconds")
    p.set_defaults(func=status)

    p = subparsers.add_parser(
        "training-curves",
        help="training loss and validation Pearson by epoch of fine-tuned models (a figure)",
    )
    p.add_argument("--models", nargs="+", required=True,
                   help="fine-tuned model dirs .../{backbone}/{variant}/fold{k} "
                   "(train_log.csv, selection.json)")
    p.add_argument("--formats", nargs="+", default=["png", "pdf"])
    p.add_argument("--out", required=True, help="output stem (no suffix)")
    p.set_defaults(func=training_curves)


def provenance(args) -> int:
    from care.provenance import write

    record = write(args.config, args.inputs, args.outputs, args.out, args.rst)
    log.info("provenance: commit %s%s, %d inputs checksummed -> %s",
             record["git"].get("commit"), " (dirty)" if record["git"].get("dirty") else "",
             len(record["inputs"]), args.out)
    return 0


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


def status(args) -> int:
    from care.summary import status_lines

    lines = status_lines(args.logs, args.within)
    print("\n".join(lines) if lines else f"no job wrote progress to {args.logs}/ in the last "
          f"{args.within:g} s")
    return 0
