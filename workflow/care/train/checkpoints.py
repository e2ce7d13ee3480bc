"""The checkpoint directory of one fine-tune: its layout, exclusive lock and retention.

Layout (``results/checkpoints/{backbone}/{variant}/fold{k}/``, outside the rule's outputs, so
a retried job finds it)::

    .lock                 held (flock) by the ``care train run`` working here; names PID, host
    job.json              the training job; its fingerprint keys everything below
    train.jsonl           the SFT examples
    checkpoint-{step}/    a Trainer checkpoint: HF weights + optimizer, scheduler, RNG state
    epoch-{e}/            one epoch's weights only (hard links to its checkpoint's model files)
    scores.jsonl          one validation record per (validation settings, epoch), as scored
    validation/           per-rank answers of an epoch being scored (gone once it is recorded)
    train_log.csv

Retention keeps what resuming and selection need, nothing more:

- one complete ``checkpoint-*`` (the latest full state): a new save completes before the
  older one is deleted, so two exist only while a save is being written;
- ``epoch-{e}`` of the best epoch scored so far (of every epoch with
  ``training.keep_epoch_weights``); epochs are scored as soon as they are saved;
- once training ends, no ``checkpoint-*`` (optimizer state dropped); the chosen epoch's
  ``epoch-{e}`` stays, hard-linked with the exported model (no extra space on one filesystem).

Peak per fine-tune: two full states plus one set of weights; between saves one full state
plus one set of weights; after the run one set of weights, shared with the exported model.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from care.errors import CareInputError

LOCK = ".lock"
PREFIX = "checkpoint-"
EPOCH_PREFIX = "epoch-"
#: Files of a Trainer checkpoint that are training state, not part of the HF model dir.
TRAINING_STATE = {
    "trainer_state.json",
    "training_args.bin",
    "optimizer.pt",
    "scheduler.pt",
    "scaler.pt",
    "latest",
}


@dataclass(frozen=True)
class FullState:
    """A complete Trainer checkpoint: resumable from, and an epoch's weights at an epoch end."""

    path: Path
    step: int
    epoch: float

    @property
    def epoch_end(self) -> int | None:
        """The epoch this checkpoint ends, or None for a mid-epoch checkpoint."""
        return round(self.epoch) if is_epoch_end(self.epoch) else None


def is_epoch_end(epoch: float | None) -> bool:
    return epoch is not None and epoch > 0 and abs(epoch - round(epoch)) < 1e-6


# --------------------------------------------------------------------------- lock


@contextlib.contextmanager
def exclusive(directory: str | Path) -> Iterator[int]:
    """Hold an exclusive lock on a checkpoint directory, or refuse naming the holder.

    ``flock`` on ``DIR/.lock`` (released by the kernel when the holder dies, however it dies);
    the file records the holder's PID and host for the refusal message. Yields the lock's
    file descriptor: processes that inherit it (the training ranks) keep the lock held.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CareInputError(root, busy_message(_read_holder(fd))) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield fd
    finally:
        os.close(fd)


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def busy_message(holder: dict) -> str:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    return (
        f"in use by another care train run (PID {pid} on host {host}, since "
        f"{holder.get('since', '?')}): two trainers on one checkpoint directory would delete "
        f"each other's checkpoints. Wait for it to finish, or stop it (kill {pid} on {host}) "
        "and run again."
    )


# --------------------------------------------------------------------------- inventory


def full_states(directory: str | Path) -> list[FullState]:
    """Complete ``checkpoint-N`` dirs (their trainer state was written last), by step."""
    out = []
    for path in Path(directory).glob(f"{PREFIX}*"):
        state_file = path / "trainer_state.json"
        if not (path.name.removeprefix(PREFIX).isdigit() and state_file.is_file()):
            continue
        state = json.loads(state_file.read_text(encoding="utf-8"))
        out.append(FullState(path, int(state["global_step"]), float(state["epoch"] or 0.0)))
    return sorted(out, key=lambda c: c.step)


def latest_full_state(directory: str | Path) -> FullState | None:
    done = full_states(directory)
    return done[-1] if done else None


def epoch_weights(directory: str | Path) -> dict[int, Path]:
    """``{epoch: dir}`` of the kept weights-only epoch directories."""
    out = {}
    for path in Path(directory).glob(f"{EPOCH_PREFIX}*"):
        if path.name.removeprefix(EPOCH_PREFIX).isdigit() and (path / "epoch.json").is_file():
            out[int(path.name.removeprefix(EPOCH_PREFIX))] = path
    return dict(sorted(out.items()))


def weights_of(directory: str | Path, epoch: int) -> Path | None:
    """Where epoch ``epoch``'s weights still are: its epoch dir or its full checkpoint."""
    kept = epoch_weights(directory).get(epoch)
    if kept:
        return kept
    for state in full_states(directory):
        if state.epoch_end == epoch:
            return state.path
    return None


def model_files(checkpoint: Path) -> list[Path]:
    """The files of a checkpoint that make an HF model dir (weights, config, tokenizer)."""
    return [
        f
        for f in sorted(checkpoint.iterdir())
        if f.is_file()
        and f.name not in TRAINING_STATE
        and f.name != "epoch.json"
        and not f.name.startswith("rng_state")
        and f.suffix != ".py"
    ]


# --------------------------------------------------------------------------- retention


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (no extra space); a copy where the filesystem refuses links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def keep_epoch(directory: str | Path, state: FullState) -> Path:
    """``epoch-{e}/``: an epoch-end checkpoint's model files, hard-linked (whole or absent)."""
    root = Path(directory)
    dest = root / f"{EPOCH_PREFIX}{state.epoch_end}"
    if (dest / "epoch.json").is_file():
        return dest
    tmp = root / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in model_files(state.path):
        link_or_copy(f, tmp / f.name)
    (tmp / "epoch.json").write_text(
        json.dumps({"epoch": state.epoch_end, "step": state.step}) + "\n", encoding="utf-8"
    )
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def drop_epochs(directory: str | Path, keep: set[int]) -> None:
    """Delete the weights-only epoch dirs not in ``keep``."""
    for epoch, path in epoch_weights(directory).items():
        if epoch not in keep:
            shutil.rmtree(path, ignore_errors=True)


def rotate(directory: str | Path, keep: str | None) -> None:
    """Delete every ``checkpoint-*`` but ``keep`` (a name), complete or not; None: all."""
    for path in Path(directory).glob(f"{PREFIX}*"):
        if path.name != keep and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def drop_incomplete(directory: str | Path) -> None:
    """Delete checkpoints a killed save left half-written, and stale temporary dirs."""
    root = Path(directory)
    complete = {c.path.name for c in full_states(root)}
    for path in root.glob(f"{PREFIX}*"):
        if path.is_dir() and path.name not in complete:
            shutil.rmtree(path, ignore_errors=True)
    for path in root.glob(f".{EPOCH_PREFIX}*.tmp"):
        shutil.rmtree(path, ignore_errors=True)


def clear(directory: str | Path) -> None:
    """Empty a checkpoint directory (a fresh start), keeping the held lock file."""
    for path in Path(directory).iterdir():
        if path.name == LOCK:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def disk_usage(directory: str | Path) -> int:
    """Bytes under ``directory``, each hard-linked file counted once."""
    seen, total = set(), 0
    for path in Path(directory).rglob("*"):
        if path.is_file() and not path.is_symlink():
            st = path.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
