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

from care.cachedir import directory_digest


def model_fingerprint(model: str | os.PathLike | object) -> str:
    """The fingerprint of a model directory, a model name, or a loaded model."""
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        return directory_digest(path) if path.is_dir() else str(model)
    return _parameters_digest(model)


def _parameters_digest(model) -> str:
    import torch

    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
