"""The ``care`` command line: commands grouped by stage, named as the workflow's rules.

Subcommands are registered by the modules of :mod:`care.commands` (each defines
``register(subparsers)``), under their stage (``add_parser("data folds")`` is ``care data
folds``); :class:`Stages` creates each stage's group, and every ``--instrument`` defaults to
the packaged WAI-SR. An unknown command is refused with the closest one (``care validate``:
``did you mean `care data validate`?``). A config
section a command reads comes whole or as typed options (:mod:`care.cli_options`). Commands
import their heavy dependencies (torch, transformers) only when run, so ``care --help`` and
light stages start fast. Input errors print one line naming
file, record and field, and exit with status 2; a write that fails (a full disk, a file-size
limit) prints one line and exits with status 1. Every command runs under the restricted
umask of :func:`care.io.restrict_umask`, so what it writes is not readable by other users.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import pkgutil
import re
import sys
import time

from care import __version__, commands
from care.errors import CareInputError
from care.io import UMASK_ENVVAR, restrict_umask
from care.versions import VersionError

HELP = """\
care: predict and explain the client-perceived therapeutic alliance from counseling
transcripts (the CARE workflow). The Snakemake rules call these commands; people mostly use
`care score` and `care status`.

commands, by stage (rule names in brackets):
  care data        demo-corpus [demo_corpus], import (your data into the contract),
                   validate [validate_sessions], folds [folds]
  care rationales  draft, export, simulate-edits, import, stats [*_rationales, rationale_stats]
  care train       backbone tiny|check [build_backbone], pretrain [pretrain_backbone],
                   run [train], sft-data
  care infer       model [infer_finetuned, infer_zero_shot], counselor [counselor_baseline],
                   lexical [lexical_baseline]
  care evaluate    metrics, text-metrics, table2..table5, figures, training-curves,
                   human-eval-export, human-eval-import
  care apply       predict [predict_corpus], figure2, table8, digest [counselor_digests],
                   report-session [session_reports]
  care score       score a transcript file with a model directory and print the result
  care status      one line per running job: progress, rate, ETA
  care provenance, care readme, care bench, care cache-check

`care <command> --help` describes each. --instrument defaults to the packaged WAI-SR.
A config section comes whole (--hp training.yaml) and/or key by key (--learning-rate 1e-5).
"""
# Stage groups that no module creates.
GROUPS = {
    "data": "the corpus: demo corpus, import, validation, folds and Table 1",
    "train": "tiny backbones, SFT examples, fine-tuning",
    "apply": "score an unlabeled corpus: Figure 2, Table 8, digests, session pages",
}


class Stages:
    """What command modules register into: ``"stage action"`` files the action under its
    stage (created on first use), a single name is a top-level command."""

    def __init__(self, top) -> None:
        self.top = top
        self.groups: dict[str, argparse._SubParsersAction] = {}

    def _group(self, stage: str):
        if stage not in self.groups:
            parser = self.top.choices.get(stage) or self.top.add_parser(
                stage, help=GROUPS[stage], description=GROUPS[stage])
            found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            self.groups[stage] = found[0] if found else parser.add_subparsers(
                dest=f"{stage}_action", required=True, metavar="ACTION")
        return self.groups[stage]

    def add_parser(self, name: str, **kwargs):
        kwargs.setdefault("description", kwargs.get("help"))
        stage, _, action = name.rpartition(" ")
        return (self._group(stage) if stage else self.top).add_parser(action, **kwargs)


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return found[0].choices if found else {}


class CareParser(argparse.ArgumentParser):
    """Every ``--instrument`` defaults to the packaged WAI-SR; an unknown command is answered
    with the command meant (an action of a stage, or a close spelling)."""

    def add_argument(self, *args, **kwargs):
        if "--instrument" in args and "default" not in kwargs:
            from care.instrument import DEFAULT

            kwargs.pop("required", None)
            kwargs["default"] = str(DEFAULT)
            kwargs["help"] = (kwargs.get("help") or "instrument file") + (
                " (default: the packaged WAI-SR)")
        return super().add_argument(*args, **kwargs)

    def error(self, message: str):
        found = re.search(r"invalid choice: '([^']*)'", message)
        meant = self.suggest(found.group(1)) if found else None
        if meant:
            message = f"unknown command '{found.group(1)}'; did you mean `{meant}`?"
        super().error(message)

    def suggest(self, name: str) -> str | None:
        """``care data validate`` for ``validate`` (a stage's action), else a close name."""
        choices = _subcommands(self)
        for stage, parser in choices.items():
            if name in _subcommands(parser):
                return f"{self.prog} {stage} {name}"
        close = difflib.get_close_matches(name, list(choices), n=1)
        return f"{self.prog} {close[0]}" if close else None


def build_parser() -> argparse.ArgumentParser:
    parser = CareParser(prog="care", description=HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"care {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--benchmark", metavar="TSV", dest="timing_file",
                        help="write the command's wall time, CPU time and peak memory here "
                        "(Snakemake's benchmark format; for rules that cannot have benchmark:)")
    parser.add_argument("--prompts", metavar="DIR",
                        help="prompt template directory (the config's `prompts`)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=CareParser)
    stages = Stages(sub)
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{mod.name}").register(stages)
    _name_commands(parser)
    return parser


def _name_commands(parser: argparse.ArgumentParser) -> None:
    """Each command knows its full name (``care data validate``) for its error lines."""
    for sub in _subcommands(parser).values():
        sub.set_defaults(command_name=sub.prog)
        _name_commands(sub)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a command line; its config sections come merged, defaulted and validated."""
    from care.cli_options import resolve_sections

    return resolve_sections(build_parser().parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # outputs are derived from transcripts: not for other users (care.io)
        restrict_umask()
    except ValueError as exc:
        print(f"care: error: ${UMASK_ENVVAR}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    started = time.perf_counter()
    try:
        if args.prompts:
            from care.prompts import set_prompt_dir

            set_prompt_dir(args.prompts)
        return int(args.func(args) or 0)
    except CareInputError as exc:
        for line in str(exc).splitlines():
            print(f"{args.command_name}: error: {line}", file=sys.stderr)
        return 2
    except VersionError as exc:
        print(f"{args.command_name}: error: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:  # a full disk, a file-size limit: atomic writes left nothing behind
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{args.command_name}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        if args.timing_file:
            write_benchmark(args.timing_file, time.perf_counter() - started)


def write_benchmark(path: str, seconds: float) -> None:
    """One row as Snakemake's ``benchmark:`` writes it (s, h:m:s, max_rss MB, cpu_time s);
    the cached rules cannot have ``benchmark:`` (Snakemake refuses it with ``cache:``)."""
    import datetime
    import resource

    from care.io import atomic_open

    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    rss_mb = max(u.ru_maxrss for u in usage) / 1024  # Linux: KiB
    cpu = sum(u.ru_utime + u.ru_stime for u in usage)
    with atomic_open(path) as f:
        f.write("s\th:m:s\tmax_rss\tcpu_time\n")
        f.write(f"{seconds:.4f}\t{datetime.timedelta(seconds=round(seconds))}\t"
                f"{rss_mb:.2f}\t{cpu:.2f}\n")


if __name__ == "__main__":
    sys.exit(main())
