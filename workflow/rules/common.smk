# Shared helpers for the stage files (names and paths derived from the config).

import json
import re
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
UNLABELED = config["data"]["unlabeled"]
# Prompt templates (config `prompts`): inputs of the jobs that render them, so an edited
# template reruns exactly those; `care --prompts DIR` makes a command read them there.
PROMPTS = workflow_path(config["prompts"])
PROMPT_FILES = sorted(str(p) for p in Path(PROMPTS).glob("*.txt"))
# prompt_files(name, ...): the templates of those names, in every language there is
prompt_files = lambda *names: [f for f in PROMPT_FILES if Path(f).name.split(".")[0] in names]
N_FOLDS = config["folds"]["n_folds"]
FOLDS = list(range(1, N_FOLDS + 1))


# ---- model sources (docs/fine-tuning.md: backbones) --------------------------------------
# A backbone's or zero-shot model's `path` is a Hugging Face directory, used as it is, or a
# GGUF file / `package:<module>` shipping one, which rule import_backbone turns into the
# directory results/backbones/<name>/ (care.model.sources).
from care.model.sources import is_gguf_source, resolve_gguf

_MODEL_ENTRIES = [
    *((name, spec) for name, spec in config["backbones"].items() if "path" in spec),
    *((b["name"], b) for b in config["baselines"]["zero_shot"] if "path" in b),
]
# name -> what to import; a name given two different GGUF sources is refused below
IMPORTED = {
    name: {"source": spec["path"], "dtype": spec["import_dtype"]}
    for name, spec in _MODEL_ENTRIES
    if is_gguf_source(spec["path"])
}
_IMPORT_CLASHES = sorted(
    name
    for name, spec in _MODEL_ENTRIES
    if is_gguf_source(spec["path"])
    and IMPORTED[name] != {"source": spec["path"], "dtype": spec["import_dtype"]}
)
if _IMPORT_CLASHES:
    raise ValueError(f"models {_IMPORT_CLASHES} name different GGUF sources: rename one")
IMPORT_PATTERN = "|".join(map(re.escape, IMPORTED)) or "(?!)"
# model_path(name, path): the HF directory training and inference read for a config `path`
model_path = lambda name, path: f"results/backbones/{name}" if is_gguf_source(path) else path


def as_json(value):
    """A config section as one shell-quoted JSON argument for a `care` subcommand."""
    return shlex.quote(json.dumps(value, sort_keys=True))


def table_files(n):
    """Table n's files: the CSV and HTML shown in the report (caption report/table<n>.rst),
    and the Markdown and LaTeX copies (care.tableformat.write_outputs writes all four)."""
    stem, caption = f"results/table{n}", f"../report/table{n}.rst"
    shown = lambda fmt: report(
        f"{stem}.{fmt.lower()}",
        caption=caption,
        category="Tables",
        labels={"table": f"Table {n}", "format": fmt},
    )
    return {"csv": shown("CSV"), "md": f"{stem}.md", "tex": f"{stem}.tex", "html": shown("HTML")}


# ---- outputs are not for other users (care.io.restrict_umask; config output_umask) ----------
# Snakemake creates output directories and logs itself; `care` commands apply $CARE_UMASK.
import os as _os

from care.io import UMASK_ENVVAR, restrict_existing, restrict_umask

_os.environ[UMASK_ENVVAR] = config["output_umask"]
restrict_umask(config["output_umask"])
# Snakemake opened its log (job commands, failed jobs' logs) before this ran: apply it there,
# to every log in the directory, and to the directory and .snakemake above it.
for _log in workflow.logger_manager.get_logfile():
    _logdir = _os.path.dirname(_log)
    restrict_existing(
        [_os.path.dirname(_logdir), _logdir]
        + [_os.path.join(_logdir, _f) for _f in _os.listdir(_logdir)]
    )


# ---- between-workflow output cache guard (docs/scale.md) ---------------------------------
# `snakemake --cache` moves outputs of `cache:` rules (models, predictions: derived from
# transcripts) into $SNAKEMAKE_OUTPUT_CACHE, world-readable. Before anything is cached, make
# sure that directory exists and grants nothing to "other" users; refuse to run otherwise.
# The hooks into Snakemake internals this needs live in care/smk_hooks.py (checked there).
if workflow.enable_cache:
    from care.smk_hooks import install_cache_hooks

    OUTPUT_CACHE = install_cache_hooks(workflow)


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
