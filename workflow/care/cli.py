"""The ``care`` command line: one subcommand per stage, each a thin wrapper over a module.

Subcommands are registered by the modules of :mod:`care.commands` (each defines
``register(subparsers)``); they import their heavy dependencies (torch, transformers) only
when run, so ``care --help`` and light stages start fast. Input errors print one line naming
file, record and field, and exit with status 2. Every command runs under the restricted
umask of :func:`care.io.restrict_umask`, so what it writes is not readable by other users.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from care import __version__, commands
from care.errors import CareInputError
from care.io import UMASK_ENVVAR, restrict_umask
from care.versions import VersionError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="care", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"care {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--prompts", metavar="DIR",
                        help="prompt template directory (the config's `prompts`)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{mod.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    try:
        if args.prompts:
            from care.prompts import set_prompt_dir

            set_prompt_dir(args.prompts)
        return int(args.func(args) or 0)
    except CareInputError as exc:
        for line in str(exc).splitlines():
            print(f"care {args.command}: error: {line}", file=sys.stderr)
        return 2
    except VersionError as exc:
        print(f"care {args.command}: error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
