"""``care cache-check``: create or check the private between-workflow cache directory."""

import os


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cache-check",
        typed=True,
        help="create or check the private output cache ($SNAKEMAKE_OUTPUT_CACHE)",
    )
    parser.add_argument(
        "directory",
        nargs="?",
        help="the cache directory; default: the SNAKEMAKE_OUTPUT_CACHE environment variable",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from care.cachedir import CACHE_ENVVAR, ensure_private_cache
    from care.errors import CareInputError

    location = args.directory or os.environ.get(CACHE_ENVVAR)
    if not location:
        raise CareInputError("<unset>", f"give a directory or set {CACHE_ENVVAR}")
    print(ensure_private_cache(location).describe())
    return 0
