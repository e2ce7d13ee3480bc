"""Between-workflow caching: a second working directory with the same inputs, params and code
takes the fine-tuned model from the cache instead of training it again.

Both working directories are copies of the shared tiny run (conftest.tiny_finished): data,
rationales and backbones done, this fine-tune not. The cache key is the job's provenance
(its code, params and the upstream jobs' keys), the same whether the upstream ran here or was
copied."""

from __future__ import annotations

import os
import re
import stat

import pytest

from .cluster_helpers import snakemake
from .conftest import clone_workdir

MODEL = "results/models/llama/rationale/fold1"
CHECKPOINTS = "results/checkpoints/llama/rationale/fold1"  # the trainer's, outside the cache


def _ran(log: str, rule: str) -> bool:
    """Whether the run log shows a job of ``rule`` (local or cluster)."""
    return re.search(rf"^(local)?rule {rule}:", log, re.M) is not None


@pytest.mark.slow
def test_second_workdir_reuses_cached_fine_tune(tiny_finished, tmp_path):
    cache = tmp_path / "cache"
    env = {"SNAKEMAKE_OUTPUT_CACHE": str(cache)}
    args = (MODEL, "--configfile", ".test/config.yaml", "--cache")

    first = clone_workdir(tiny_finished, tmp_path / "alice")
    assert not (first / MODEL).exists()
    run1 = snakemake(first, *args, env=env, timeout=1800)
    log1 = run1.stdout + run1.stderr
    assert run1.returncode == 0, log1[-6000:]
    assert _ran(log1, "train")
    assert f"Moving output file {MODEL} to cache" in log1
    assert stat.S_IMODE(cache.stat().st_mode) & stat.S_IRWXO == 0
    assert (first / MODEL).is_symlink()  # the output now lives in the cache
    assert any((first / CHECKPOINTS).rglob("*"))  # the trainer ran here

    second = clone_workdir(tiny_finished, tmp_path / "bob")
    run2 = snakemake(second, *args, env=env, timeout=1800)
    log2 = run2.stdout + run2.stderr
    assert run2.returncode == 0, log2[-6000:]
    # The train job is scheduled but its command never runs: the model comes from the cache.
    assert re.search(rf"Symlinking output file {MODEL}/\S+ from cache", log2)
    assert f"Moving output file {MODEL} to cache" not in log2
    model2 = second / MODEL
    entries = sorted(p.name for p in model2.iterdir() if p.name != ".snakemake_timestamp")
    assert entries, "the cached model directory is empty"
    for name in entries:
        target = os.path.realpath(model2 / name)
        assert target.startswith(str(cache.resolve())), f"{name} not taken from the cache"
    # the same files as the model trained in the first directory
    assert entries == sorted(p.name for p in (first / MODEL).iterdir())
    # and no training step ran there: no trainer checkpoints of this fine-tune
    checkpoints = second / CHECKPOINTS
    assert not checkpoints.exists() or not any(checkpoints.rglob("*"))
