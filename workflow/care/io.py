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
import itertools
import json
import math
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree
from xml.parsers.expat import ExpatError

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


def restrict_existing(paths: Iterator[str | os.PathLike] | list) -> None:
    """Take from files and directories made before the umask was restricted what it now
    denies (Snakemake opens its own log before the workflow's code runs)."""
    mask = _umask()
    for path in paths:
        mode = os.stat(path).st_mode & 0o7777
        if mode & mask:
            os.chmod(path, mode & ~mask)


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


#: A UTF-16 surrogate on its own (JSON's ``"\ud800"``): not a character, and no UTF-8 file,
#: workbook or cache can store it.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")

#: The longest line a JSON-lines reader takes (bytes, newline included): a session with
#: hundreds of long turns is a few MB; a file without newlines (``/dev/zero``, a binary
#: file named by mistake) must not be read into memory whole.
MAX_LINE_BYTES = 64 * 2**20


class DuplicateKeyError(ValueError):
    """A JSON object names a key twice: JSON parsers would silently keep the last value."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKeyError(key)
        obj[key] = value
    return obj


def loads_strict(text: str) -> Any:
    """``json.loads`` that refuses duplicate keys (:class:`DuplicateKeyError`)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def json_lines(
    path: str | os.PathLike, max_bytes: int | None = None
) -> Iterator[tuple[int, Any]]:
    """(line, record) per non-blank line of a JSON-lines file, or (line, CareInputError) where
    a line is not valid UTF-8 or not JSON (the caller decides whether to go on). A line longer
    than ``max_bytes`` (:data:`MAX_LINE_BYTES`) ends the file: what follows cannot be found
    without reading it all."""
    from care.errors import CareInputError

    max_bytes = max_bytes or MAX_LINE_BYTES

    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise CareInputError(path, f"cannot open: {exc.strerror}") from None
    with handle:
        for line_no in itertools.count(1):
            raw = handle.readline(max_bytes + 1)
            if not raw:
                return
            if len(raw) > max_bytes:
                yield line_no, CareInputError(
                    path, f"the line is longer than {max_bytes:,} bytes: not JSON lines "
                    "(one record a line)? stopped reading", line=line_no,
                )
                return
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a byte-order mark, as spreadsheet exports write it
            yield line_no, _json_line(path, line_no, raw)


def _json_line(path: str | os.PathLike, line_no: int, raw: bytes) -> Any:
    from care.errors import CareInputError

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return CareInputError(
            path, f"not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})",
            line=line_no,
        )
    if not text.strip():
        return None
    try:
        return loads_strict(text)
    except json.JSONDecodeError as exc:
        return CareInputError(path, f"malformed JSON: {exc.msg} (column {exc.colno})", line=line_no)
    except DuplicateKeyError as exc:
        return CareInputError(path, f"{exc}: which one is meant?", line=line_no, field=exc.key)
    except RecursionError:
        return CareInputError(path, "malformed JSON: nested too deeply", line=line_no)
    except ValueError as exc:  # an integer of more digits than Python converts
        return CareInputError(path, f"malformed JSON: {exc}", line=line_no)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """One JSON record a line (:func:`json_lines`); the first bad line is a CareInputError
    naming the file and line."""
    from care.errors import CareInputError

    records = []
    for _, record in json_lines(path):
        if isinstance(record, CareInputError):
            raise record
        if record is not None:
            records.append(record)
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


#: Leading characters that make a spreadsheet (or a CSV export of it) read a cell as a
#: formula (OWASP, CSV injection), and the quote put before them (and before a leading quote,
#: so that :func:`from_cell` undoes it exactly).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CELL_QUOTE = "'"


def to_cell(text: str) -> str:
    """Text as a cell stores it: never a formula (openpyxl writes a leading ``=`` as one)."""
    return CELL_QUOTE + text if text.startswith((*FORMULA_START, CELL_QUOTE)) else text


def from_cell(text: str) -> str:
    """The text :func:`to_cell` was given: its quote removed, nothing else."""
    if text.startswith(CELL_QUOTE) and text[1:].startswith((*FORMULA_START, CELL_QUOTE)):
        return text[1:]
    return text


def xlsx_value(value: Any) -> Any:
    """A value as a workbook cell takes it: NaN/None empty, numpy scalars as Python ones,
    text never a formula (:func:`to_cell`), and characters XML forbids (model output can hold
    them) dropped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if type(value).__module__ == "numpy":  # a numpy scalar
        return xlsx_value(value.item())
    if isinstance(value, str):
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

        return to_cell(ILLEGAL_CHARACTERS_RE.sub("", value))
    return value


#: What reading a workbook someone returned can raise: not a zip, a part missing, XML that
#: is not well-formed (an entity, a truncated file), a value openpyxl refuses.
XLSX_READ_ERRORS = (OSError, zipfile.BadZipFile, KeyError, ValueError, ElementTree.ParseError,
                    ExpatError)


@contextlib.contextmanager
def workbook_writes(book: Any, path: str | os.PathLike) -> Iterator[None]:
    """Write a streamed (write-only) workbook: a failed write (lxml raises its own error for
    a full disk or a file-size limit) becomes an OSError, and on any failure the sheets'
    writers are closed and their temporary files removed, so nothing fails again later."""
    from lxml import etree

    try:
        yield
    except etree.SerialisationError as exc:
        _abandon(book)
        raise OSError(f"cannot write {path}: {exc} (disk full or a file-size limit?)") from None
    except BaseException:
        _abandon(book)
        raise


def _abandon(book: Any) -> None:
    """Close a write-only workbook's sheet writers (openpyxl has no public way to give one
    up: left to the garbage collector, each raises its write error again, with a traceback)."""
    for ws in book.worksheets:
        writer = getattr(ws, "_writer", None)
        if writer is None:
            continue
        with contextlib.suppress(Exception):
            writer.close()
        with contextlib.suppress(Exception):
            writer.cleanup()


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


#: The most values a YAML document may hold once its aliases are expanded: a config or an
#: instrument has a few hundred; a "billion laughs" alias bomb of 1 KB has 10^9.
MAX_YAML_VALUES = 100_000


def expanded_size(obj: Any, limit: int = MAX_YAML_VALUES) -> int:
    """How many values ``obj`` holds with shared (aliased) parts counted each time they
    appear, up to just over ``limit``; a container that holds itself counts as over it."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(o: Any) -> int:
        if not isinstance(o, dict | list):
            return 1
        if id(o) in memo:
            return memo[id(o)]
        if id(o) in active:  # a recursive alias (&a [*a]): endless once expanded
            return limit + 1
        active.add(id(o))
        total = 1
        for child in (*o.keys(), *o.values()) if isinstance(o, dict) else o:
            total += size(child)
            if total > limit:
                break
        active.discard(id(o))
        memo[id(o)] = total
        return total

    try:
        return size(obj)
    except RecursionError:
        return limit + 1


def check_expansion(obj: Any, path: str | os.PathLike, limit: int = MAX_YAML_VALUES) -> Any:
    """``obj`` itself, or a CareInputError when its aliases expand past ``limit`` values."""
    from care.errors import CareInputError

    if expanded_size(obj, limit) > limit:
        raise CareInputError(
            path, f"holds more than {limit:,} values once its YAML aliases are expanded (or an "
            "alias that contains itself): refused"
        )
    return obj


def load_yaml(text: str, path: str | os.PathLike) -> Any:
    """YAML text, safely loaded, with alias expansion bounded (:func:`check_expansion`);
    a nesting too deep to parse is a ``yaml.YAMLError`` like any other syntax error."""
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    return check_expansion(data, path)


def read_yaml(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return load_yaml(f.read(), path)


def read_config(path: str | os.PathLike) -> dict:
    """Read the workflow config (YAML); rules pass ``--config`` paths to subcommands."""
    return read_yaml(path) or {}
