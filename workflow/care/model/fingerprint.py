"""What "the same model" means for every cache of model answers and training runs.

A model directory is the same model when its files have the same relative names and the
same bytes (:func:`care.cachedir.directory_digest`, the digest Snakemake's output cache
already uses for model directories): a copy, a moved directory or a cache's symlinked copy
is the same model; a model retrained in place is not. A loaded model without a directory is
identified by its config and parameter values; a name that is not a local directory (a hub
id, an API model) stands for itself.

Used by the answer caches of inference (:mod:`care.infer.hf`, :mod:`care.infer.vllm_backend`),
drafting (:mod:`care.llm.hf_chat`) and by training's run identity (:mod:`care.train.run`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from care.cachedir import IGNORED_NAMES, directory_digest


def model_fingerprint(model: str | os.PathLike | object) -> str:
    """The fingerprint of a model directory, a model name, or a loaded model."""
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        return directory_digest(path) if path.is_dir() else str(model)
    return _parameters_digest(model)


def directory_signature(path: str | os.PathLike) -> str:
    """The names, sizes and modification times of a directory's files (links followed):
    read in milliseconds where :func:`model_fingerprint` reads every byte (16 GB for an 8B
    model), and changed by any file written in place. A stored fingerprint may be reused
    while the signature stays the same."""
    root = Path(path)
    digest = hashlib.sha256()
    for folder, _, names in sorted(os.walk(root, followlinks=True)):
        for name in sorted(names):
            if name in IGNORED_NAMES:
                continue
            f = Path(folder, name)
            st = f.stat()
            digest.update(f"{f.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def _parameters_digest(model) -> str:
    import torch

    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
