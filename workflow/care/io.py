"""Atomic file output, who may read it, and small readers shared by every stage.

Every output goes to a temporary file beside its destination and is renamed into place
only when complete, so a failed or interrupted job never leaves a partial file behind.

Every output is derived from counseling transcripts, so it is not for other users of the
machine: :func:`restrict_umask` adds the configured umask (``output_umask``, default
``0027``: files 0640, directories 0750) to the process's own. The ``care`` command applies
it before any stage runs (``$CARE_UMASK``, which the workflow sets from its config), and
the workflow applies it to Snakemake itself, so the files and directories that anything
creates under ``results/`` (atomic writes, model saves, caches, figures, logs) follow it.
It only takes permissions away: a stricter umask of the user's stays.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

UMASK_ENVVAR = "CARE_UMASK"
DEFAULT_UMASK = "0027"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def parse_umask(value: str | int) -> int:
    """An octal umask given as text ("0027", "027") or as the number itself."""
    if isinstance(value, int) and not isinstance(value, bool):
        mask = value
    else:
        text = str(value).strip()
        if not text or not set(text) <= set("01234567") or len(text) > 4:
            raise ValueError(f"not an octal umask: {value!r} (e.g. 0027)")
        mask = int(text, 8)
    if not 0 <= mask <= 0o777:
        raise ValueError(f"not an octal umask: {value!r} (e.g. 0027)")
    return mask


def restrict_umask(extra: str | int | None = None) -> int:
    """Add ``extra`` (default: ``$CARE_UMASK``, else 0027) to the umask; return the new umask."""
    if extra is None:
        extra = os.environ.get(UMASK_ENVVAR) or DEFAULT_UMASK
    mask = _umask() | parse_umask(extra)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` on success, remove it on error."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the result the permissions a plain open() would
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """Open a temporary file for writing; it replaces ``path`` only if the block succeeds."""
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("newline", "\n")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=2, sort_keys=True)
        f.write("\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """One JSON record a line (blank lines skipped, a BOM tolerated); a malformed line is a
    CareInputError naming the file and line."""
    from care.errors import CareInputError

    records = []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise CareInputError(path, f"malformed JSON: {exc.msg}", line=n) from None
    return records


def write_jsonl(path: str | os.PathLike, records: Any) -> None:
    with atomic_open(path) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, sort_keys=False) + "\n")


def write_table(path: str | os.PathLike, frame: Any, **kwargs: Any) -> None:
    """Write a pandas frame as CSV/TSV/Parquet by suffix, atomically and deterministically."""
    dest = Path(path)
    with atomic_path(dest) as tmp:
        if dest.suffix == ".parquet":
            frame.to_parquet(tmp, index=False, **kwargs)
        elif dest.suffix == ".tsv":
            frame.to_csv(tmp, sep="\t", index=False, lineterminator="\n", **kwargs)
        else:
            frame.to_csv(tmp, index=False, lineterminator="\n", **kwargs)


#: Zip entry time of every workbook written here: zip's earliest date, as reproducible
#: builds use; the document's own created/modified dates are fixed to XLSX_DATE.
XLSX_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
XLSX_DATE = b"2000-01-01T00:00:00Z"
_XLSX_STAMP = re.compile(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)")


def xlsx_value(value: Any) -> Any:
    """A value as a workbook cell takes it: NaN/None empty, numpy scalars as Python ones,
    and characters XML forbids (model output can hold them) dropped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if type(value).__module__ == "numpy":  # a numpy scalar
        return xlsx_value(value.item())
    if isinstance(value, str):
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

        return ILLEGAL_CHARACTERS_RE.sub("", value)
    return value


def save_workbook(book: Any, path: str | os.PathLike) -> None:
    """Save an openpyxl workbook atomically with fixed timestamps: the same content gives
    the same bytes."""
    buffer = io.BytesIO()
    book.save(buffer)
    buffer.seek(0)
    copy_workbook(buffer, path)


def copy_workbook(source: Any, path: str | os.PathLike, rewrite: dict | None = None) -> None:
    """Copy a workbook's zip parts with fixed timestamps, atomically.

    ``rewrite`` maps a part's name to ``function(source_stream, output_stream)`` that writes
    the part anew (an edit streamed without loading the workbook).
    """
    rewrite = rewrite or {}
    with (
        atomic_path(path) as tmp,
        zipfile.ZipFile(source) as src,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=XLSX_ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            if info.filename in rewrite:
                with src.open(info) as part_in, dst.open(entry, "w") as part_out:
                    rewrite[info.filename](part_in, part_out)
                continue
            data = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = _XLSX_STAMP.sub(rb"\g<1>" + XLSX_DATE + rb"\g<2>", data)
            dst.writestr(entry, data)


def read_yaml(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def read_config(path: str | os.PathLike) -> dict:
    """Read the workflow config (YAML); rules pass ``--config`` paths to subcommands."""
    return read_yaml(path) or {}
