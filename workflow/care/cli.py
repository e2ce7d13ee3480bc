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
import time

from care import __version__, commands
from care.errors import CareInputError
from care.io import UMASK_ENVVAR, restrict_umask


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="care", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"care {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--benchmark", metavar="TSV", dest="timing_file",
                        help="write the command's wall time, CPU time and peak memory here "
                        "(Snakemake's benchmark format; for rules that cannot have benchmark:)")
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
    started = time.perf_counter()
    try:
        return int(args.func(args) or 0)
    except CareInputError as exc:
        print(f"care {args.command}: error: {exc}", file=sys.stderr)
        return 2
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
