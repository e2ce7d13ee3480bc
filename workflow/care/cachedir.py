"""A private directory for Snakemake's between-workflow output cache.

``snakemake --cache`` with ``SNAKEMAKE_OUTPUT_CACHE=DIR`` moves the outputs of rules marked
``cache:`` (fine-tuned models, predictions: all derived from counseling transcripts) into
DIR and makes every entry readable and writable by everybody (mode 0o666/0o777). The only
protection left is DIR itself: if "other" users cannot enter it, they cannot reach the
entries. So before anything is cached the workflow calls :func:`ensure_private_cache`,
which creates DIR with mode 0o2770 (owner and group; setgid so entries keep DIR's group)
or checks that an existing DIR grants nothing to "other", and refuses otherwise.

:func:`directory_digest` hashes a directory's files by content. Snakemake's cache key
(``snakemake/caching/hash.py``) checksums every input that no job of the current DAG makes,
and cannot checksum a directory (``IsADirectoryError``). Under a cluster executor each job's
own Snakemake process computes the key with only that job in its DAG, so a model directory
made upstream (a backbone, a fine-tuned model) is such an input there; the workflow lets
the cache hash it with this function (``workflow/rules/common.smk``).

:func:`code_fingerprint` hashes source files, for rules that want code changes of the
``care`` package to change their cache key (Snakemake hashes a rule's shell command, its
params and its input files, not the code the command runs).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from care.errors import CareInputError

CACHE_ENVVAR = "SNAKEMAKE_OUTPUT_CACHE"
# rwx for owner and group, setgid: files created inside keep the directory's group.
PRIVATE_MODE = 0o2770
OTHER_BITS = stat.S_IRWXO


@dataclass(frozen=True)
class CacheDir:
    """The checked cache directory."""

    path: Path
    mode: int  # permission bits (stat.S_IMODE)
    group: str
    created: bool

    def describe(self) -> str:
        action = "created" if self.created else "checked"
        return (
            f"output cache {self.path}: {action}, mode {self.mode:04o}, group {self.group}, "
            "not readable by other users"
        )


def _group_name(gid: int) -> str:
    try:
        import grp

        return grp.getgrgid(gid).gr_name
    except (KeyError, ImportError):
        return str(gid)


def _fail(path: object, message: str) -> CareInputError:
    return CareInputError(path, message, field=CACHE_ENVVAR)


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:  # created concurrently by another job: check it as it is
        return
    os.chmod(path, PRIVATE_MODE)  # mkdir's mode is filtered by the umask; chmod is not


def ensure_private_cache(location: str | os.PathLike[str]) -> CacheDir:
    """Create the cache directory (mode 0o2770) or check that "other" has no access to it.

    Raises :class:`CareInputError` when the location is a storage URI (its permissions
    cannot be checked here), not a directory, readable/enterable by "other", or not writable.
    An existing directory is never loosened or tightened: the message says what to run.
    """
    text = os.fspath(location).strip()
    if not text:
        raise _fail("<unset>", f"{CACHE_ENVVAR} is empty; set it to a private directory")
    if "://" in text:
        raise _fail(
            text,
            "remote storage cannot be checked for who may read it; cached outputs are "
            "derived from counseling transcripts, so use a directory on a shared filesystem",
        )
    path = Path(text).expanduser().resolve()
    created = not path.exists()
    if created:
        try:
            _create(path)
        except OSError as exc:
            raise _fail(path, f"cannot create the cache directory: {exc.strerror}") from None
    if not path.is_dir():
        raise _fail(path, "exists but is not a directory")
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if mode & OTHER_BITS:
        raise _fail(
            path,
            f"mode {mode:04o} lets every user of this machine read cached models and "
            "predictions (derived from transcripts); restrict it first: "
            f"chmod o-rwx {path}  (share with collaborators through its group: "
            f"chgrp <group> {path} && chmod 2770 {path})",
        )
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise _fail(path, "the cache directory is not readable and writable by this user")
    return CacheDir(path=path, mode=mode, group=_group_name(info.st_gid), created=created)


# Snakemake's own marker in directory outputs; its presence differs between copies.
IGNORED_NAMES = frozenset({".snakemake_timestamp"})


def directory_digest(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 over a directory's files: relative names and contents, in sorted order.

    Symlinks are followed (a directory fetched from the cache is a directory of symlinks),
    so a copy, a cached copy and the original give the same digest.
    """
    root = Path(path)
    digest = hashlib.sha256()
    files = sorted(
        Path(folder, name)
        for folder, dirs, names in os.walk(root, followlinks=True)
        for name in names
        if name not in IGNORED_NAMES and "__pycache__" not in Path(folder).parts
    )
    for f in files:
        digest.update(f.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        with open(f, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def code_fingerprint(
    paths: list[str | os.PathLike[str]], root: str | os.PathLike[str] = "."
) -> str:
    """SHA-256 over the given files (directories: their files, recursively, sorted).

    Names are taken relative to ``root`` so that two clones of the repository agree;
    ``__pycache__`` and other non-source files are skipped. Missing paths raise.
    """
    root_path = Path(root).resolve()
    files: list[Path] = []
    for entry in paths:
        p = Path(entry)
        if not p.is_absolute():
            p = root_path / p
        if p.is_dir():
            files.extend(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"code_fingerprint: {p} does not exist")
    digest = hashlib.sha256()
    for f in sorted({f.resolve() for f in files}):
        name = f.relative_to(root_path) if f.is_relative_to(root_path) else f
        digest.update(str(name).encode())
        digest.update(b"\0")
        digest.update(f.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()
