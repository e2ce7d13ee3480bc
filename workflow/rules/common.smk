# Shared helpers for the stage files (names and paths derived from the config).

import json
import shlex

CARE_ENV = "../../envs/care.yaml"
INSTRUMENT = config["instrument"]
SESSIONS = config["data"]["sessions"]
UNLABELED = config["data"].get("unlabeled")
N_FOLDS = config["folds"]["n_folds"]
FOLDS = list(range(1, N_FOLDS + 1))


def as_json(value):
    """A config section as one shell-quoted JSON argument for a `care` subcommand."""
    return shlex.quote(json.dumps(value, sort_keys=True))


# ---- between-workflow output cache guard (issue 7; README "Running at scale") --------------
# `snakemake --cache` moves outputs of `cache:` rules (models, predictions: derived from
# transcripts) into $SNAKEMAKE_OUTPUT_CACHE, world-readable. Before anything is cached, make
# sure that directory exists and grants nothing to "other" users; refuse to run otherwise.
import os as _os

if workflow.enable_cache and _os.environ.get("SNAKEMAKE_OUTPUT_CACHE"):
    from snakemake.exceptions import WorkflowError
    from snakemake.logging import logger

    from care.cachedir import ensure_private_cache
    from care.errors import CareInputError

    try:
        OUTPUT_CACHE = ensure_private_cache(_os.environ["SNAKEMAKE_OUTPUT_CACHE"])
    except CareInputError as exc:
        raise WorkflowError(f"refusing to use the output cache: {exc}") from None
    logger.info(OUTPUT_CACHE.describe())
# ---- end of the output cache guard --------------------------------------------------------
