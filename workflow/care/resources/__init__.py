"""The files the package ships: prompts, schemas, instruments, DeepSpeed configs.

They live in ``workflow/`` where the Snakemake rules read them; this package's
``prompts``, ``schemas``, ``instruments`` and ``deepspeed`` entries link to those
directories, and a wheel carries copies (package data). Code finds them here with
:mod:`importlib.resources`, so the workflow and an installed ``care`` read the same files.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

KINDS = ("prompts", "schemas", "instruments", "deepspeed")


def resource_path(kind: str, name: str = "") -> Path:
    """A shipped file (or, without ``name``, its directory) as a filesystem path."""
    if kind not in KINDS:
        raise ValueError(f"unknown resource kind {kind!r}; expected one of {KINDS}")
    found = files(__name__).joinpath(kind, name) if name else files(__name__).joinpath(kind)
    # installed from a wheel or the source tree: a real directory, so a real path
    return Path(str(found))
