"""The ``care`` command line: commands grouped by stage, named as the workflow's rules.

Subcommands are registered by the modules of :mod:`care.commands` (each defines
``register(subparsers)``, given a :class:`Stages`) by their full name
(``subparsers.add_parser("data folds")`` is ``care data folds``); :class:`Stages` creates the
groups, and ``care --help`` lists the commands people type apart from the workflow's steps.
Every ``--instrument`` defaults to the packaged WAI-SR. An unknown command (``care
validate``) is answered with the command meant (``did you mean `care data validate`?``). A config
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
import textwrap
import time

from care import __version__, commands
from care.errors import CareInputError
from care.io import UMASK_ENVVAR, restrict_umask
from care.versions import VersionError

HELP = """\
care: predict and explain the client-perceived therapeutic alliance from counseling
transcripts (the CARE workflow).
"""
FOOTER = """\
`care COMMAND --help` describes each. --instrument defaults to the packaged WAI-SR.
A config section comes whole (--hp training.yaml) and/or key by key (--learning-rate 1e-5).
"""
#: The commands a newcomer types first, listed first by ``care --help``.
FIRST = ("score", "status", "data import ACTION", "data validate")
#: Every command group's help (a group is created by the first command filed under it).
GROUPS = {
    "data": "the corpus: demo corpus, import, validation, folds and Table 1",
    "data import": "convert a corpus into the data contract",
    "rationales": "draft rationales, the expert sheet and its import",
    "train": "tiny backbones, SFT examples, fine-tuning",
    "train backbone": "build a tiny backbone, import a GGUF checkpoint or check a model dir",
    "infer": "predict scores and rationales for a fold",
    "evaluate": "metrics, tables, figures, human evaluation",
    "apply": "score an unlabeled corpus: Figure 2, Table 8, digests, session pages",
    "bench": "run a benchmark and print its figures",
}


class Stages:
    """What command modules register into. A name of several words files its last word under
    the group the others name (``"data folds"``, ``"train backbone tiny"``; each group is
    created on first use), one word is a top-level command. ``typed=True`` marks a command
    people type; the others are the workflow's steps, which the rules call, and ``care --help``
    lists them apart."""

    def __init__(self, top) -> None:
        self.top = top
        self.groups: dict[str, argparse._SubParsersAction] = {}
        self.commands: dict[str, tuple[str, bool]] = {}  # full name -> (help, typed)

    def _group(self, path: str):
        if path not in self.groups:
            parent, _, name = path.rpartition(" ")
            parser = (self._group(parent) if parent else self.top).add_parser(
                name, help=GROUPS[path], description=GROUPS[path])
            self.groups[path] = parser.add_subparsers(
                dest=f"{path.replace(' ', '_')}_action", required=True, metavar="ACTION")
        return self.groups[path]

    def add_parser(self, name: str, *, typed: bool = False, **kwargs):
        kwargs.setdefault("description", kwargs.get("help"))
        self.commands[name] = (kwargs.get("help") or "", typed)
        group, _, action = name.rpartition(" ")
        return (self._group(group) if group else self.top).add_parser(action, **kwargs)

    def _listed(self) -> tuple[dict[str, str], dict[str, list[str]]]:
        """The commands people type (name -> help; a group whose commands all are: one entry
        for the group) and the workflow's steps by stage."""
        typed: dict[str, str] = {}
        steps: dict[str, list[str]] = {}
        for name, (text, is_typed) in self.commands.items():
            group = name.rpartition(" ")[0]
            siblings = [n for n in self.commands if n.rpartition(" ")[0] == group]
            if not is_typed:
                stage, _, action = name.partition(" ")
                steps.setdefault(stage, []).extend([action] if action else [])
            elif group and len(siblings) > 1 and all(self.commands[n][1] for n in siblings):
                actions = ", ".join(n.rpartition(" ")[2] for n in siblings)
                typed[f"{group} ACTION"] = f"{GROUPS[group]}: {actions}"
            else:
                typed[name] = text
        return typed, steps

    def overview(self) -> str:
        """``care --help``'s list: the commands people type, those in :data:`FIRST` first,
        then the workflow's steps by stage, in the pipeline's order."""
        typed, steps = self._listed()
        width = max(map(len, typed))
        lines = ["commands:"]
        for name in sorted(typed, key=lambda n: (FIRST.index(n) if n in FIRST else len(FIRST), n)):
            lines += _wrap(typed[name], f"  care {name:<{width}}  ")
        lines += ["", "workflow steps (what the Snakemake rules call; `care STAGE --help`):"]
        stages = list(GROUPS)
        for stage in sorted(steps, key=lambda s: stages.index(s) if s in stages else len(stages)):
            lines += _wrap(", ".join(steps[stage]), f"  {stage:<11} ")
        return "\n".join(line.rstrip() for line in lines)


def _wrap(text: str, lead: str, width: int = 96) -> list[str]:
    return textwrap.wrap(text, width, initial_indent=lead, subsequent_indent=" " * len(lead),
                         break_on_hyphens=False) or [lead]


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
    parser = CareParser(prog="care", usage="%(prog)s [options] COMMAND ...",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"care {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--benchmark", metavar="TSV", dest="timing_file",
                        help="write the command's wall time, CPU time and peak memory here "
                        "(Snakemake's benchmark format; for rules that cannot have benchmark:)")
    parser.add_argument("--prompts", metavar="DIR",
                        help="prompt template directory (the config's `prompts`)")
    parser.add_argument("--answer-order", metavar="ORDER", type=_answer_order,
                        help="score_first | rationale_first: the lines of a rationale answer "
                        "(the config's `answer_order`; default rationale_first)")
    # the commands are listed by Stages.overview, not by argparse
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", prog="care",
                                parser_class=CareParser, help=argparse.SUPPRESS)
    stages = Stages(sub)
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{mod.name}").register(stages)
    parser.description = f"{HELP}\n{stages.overview()}\n\n{FOOTER}"
    _name_commands(parser)
    return parser


def _answer_order(value: str) -> str:
    from care.prompts import ANSWER_ORDERS  # pandas comes with it: only when the option is given

    if value not in ANSWER_ORDERS:
        raise argparse.ArgumentTypeError(f"{value!r}: expected one of {', '.join(ANSWER_ORDERS)}")
    return value


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
        if args.answer_order:
            from care.prompts import set_answer_order

            set_answer_order(args.answer_order)
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
