# Shared helpers for the stage files (names and paths derived from the config).

import json
import shlex
from pathlib import Path

CARE_ENV = "../../envs/care.yaml"
# vLLM pins its own torch and transformers: its jobs get their own environment.
VLLM_ENV = "../../envs/vllm.yaml"
# The conda environment of an inference job with this backend.
infer_env = lambda backend: VLLM_ENV if backend == "vllm" else CARE_ENV


def workflow_path(path):
    """A config path to a file the workflow ships (instrument, prompts), as the rules see it.

    Relative to the working directory when it is there (a relocatable workdir keeps relative
    paths); else relative to the workflow's checkout, for a run with `-d elsewhere` that
    names the shipped `workflow/...` files.
    """
    if Path(path).is_absolute() or Path(path).exists():
        return path
    shipped = Path(workflow.main_snakefile).parent / path
    return str(shipped) if shipped.exists() else path


INSTRUMENT = workflow_path(config["instrument"])
SESSIONS = config["data"]["sessions"]
UNLABELED = config["data"].get("unlabeled")
# Prompt templates (config `prompts`): inputs of the jobs that render them, so an edited
# template reruns exactly those; `care --prompts DIR` makes a command read them there.
PROMPTS = workflow_path(config["prompts"])
PROMPT_FILES = sorted(str(p) for p in Path(PROMPTS).glob("*.txt"))
# prompt_files(name, ...): the templates of those names, in every language there is
prompt_files = lambda *names: [f for f in PROMPT_FILES if Path(f).name.split(".")[0] in names]
N_FOLDS = config["folds"]["n_folds"]
FOLDS = list(range(1, N_FOLDS + 1))


def as_json(value):
    """A config section as one shell-quoted JSON argument for a `care` subcommand."""
    return shlex.quote(json.dumps(value, sort_keys=True))


# ---- outputs are not for other users (care.io.restrict_umask; config output_umask) ----------
# Snakemake creates output directories and logs itself; `care` commands apply $CARE_UMASK.
import os as _os

from care.io import UMASK_ENVVAR, restrict_umask

_os.environ[UMASK_ENVVAR] = config["output_umask"]
restrict_umask(config["output_umask"])


# ---- between-workflow output cache guard (issue 7; README "Running at scale") --------------
# `snakemake --cache` moves outputs of `cache:` rules (models, predictions: derived from
# transcripts) into $SNAKEMAKE_OUTPUT_CACHE, world-readable. Before anything is cached, make
# sure that directory exists and grants nothing to "other" users; refuse to run otherwise.
import os as _os


class _CacheableRules(list):
    """A bare `--cache` (all rules that have a `cache` directive), resolved when read.

    Snakemake 9 drops an empty `--cache` from the command line of cluster jobs, which then
    cache nothing; naming the rules (read after all rule files are parsed) passes it on.
    """

    def __init__(self, wf):
        super().__init__()
        self._workflow = wf

    def _names(self):
        return [r.name for r in self._workflow.rules if r.cache and r.cache.output]

    def __iter__(self):
        return iter(self._names())

    def __len__(self):
        return len(self._names())

    def __bool__(self):
        return True


if workflow.enable_cache:
    from snakemake.exceptions import WorkflowError
    from snakemake.logging import logger

    from care.cachedir import CACHE_ENVVAR, ensure_private_cache
    from care.errors import CareInputError

    if not _os.environ.get(CACHE_ENVVAR):
        # Snakemake would warn and then fail every cached job ("Cache backend unavailable").
        raise WorkflowError(
            f"--cache needs {CACHE_ENVVAR}: export {CACHE_ENVVAR}=/a/private/shared/dir "
            "(README: Running at scale)"
        )
    try:
        OUTPUT_CACHE = ensure_private_cache(_os.environ[CACHE_ENVVAR])
    except CareInputError as exc:
        raise WorkflowError(f"refusing to use the output cache: {exc}") from None
    logger.info(OUTPUT_CACHE.describe())
    if not list(workflow.workflow_settings.cache):
        workflow.workflow_settings.cache = _CacheableRules(workflow)

    # Under a cluster executor each job's own Snakemake computes the cache key with only
    # that job in its DAG, so an upstream model directory is hashed as a plain input, and
    # Snakemake cannot checksum a directory (IsADirectoryError). Hash directories by content.
    import snakemake.io as _smk_io

    from care.cachedir import directory_digest

    if not getattr(_smk_io._IOFile.checksum, "care_directories", False):
        _file_checksum = _smk_io._IOFile.checksum

        async def _checksum_with_directories(self, threshold=None, force=False, algorithm=None):
            if force and _os.path.isdir(self.file):
                return f"sha256:{directory_digest(self.file)}"
            return await _file_checksum(self, threshold, force=force, algorithm=algorithm)

        _checksum_with_directories.care_directories = True
        _smk_io._IOFile.checksum = _checksum_with_directories


def model_input(path):
    """A model directory as an input of a cached rule (train, infer_*).

    The cache key hashes the content of every input no rule makes, and Snakemake cannot hash
    a directory (IsADirectoryError under --cache). A checkpoint this workflow builds
    (results/...) is keyed through the job that builds it; an external checkpoint directory
    is represented by its config.json, and the rule passes the directory itself in params.
    """
    path = str(path)
    if path.startswith("results/"):
        return path
    return _os.path.join(path, "config.json")


# ---- end of the output cache guard --------------------------------------------------------
