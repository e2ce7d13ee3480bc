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
