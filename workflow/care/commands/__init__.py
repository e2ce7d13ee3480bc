"""CLI subcommands, one module per stage; each defines ``register(subparsers)``.

Keep these modules light: import torch/transformers inside the handler, not at module level.
A module registers every command by its full name (``subparsers.add_parser("data folds")``,
``"train backbone tiny"``; see :class:`care.cli.Stages`), never a group of its own, and marks
the commands people type with ``typed=True`` (``care --help`` lists the rest, the rules'
steps, apart).
Rules pass config values as arguments (a config section as one JSON string), so a config edit
is a params change Snakemake sees, and the between-workflow cache hashes it; people give the
same section as a file and/or one option per key (:mod:`care.cli_options`).
"""

import argparse
import json


def json_arg(text: str) -> object:
    """argparse ``type=`` for a config section: JSON text (what the rules pass), or the path
    of a YAML or JSON file (what a person types: ``--hp training.yaml``)."""
    from pathlib import Path

    if text.lower().endswith((".yaml", ".yml", ".json")) and Path(text).is_file():
        import yaml

        from care.errors import CareInputError
        from care.io import read_yaml

        try:
            return read_yaml(text)  # alias expansion bounded
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise argparse.ArgumentTypeError(f"{text}: not valid YAML/JSON: {exc}") from None
        except CareInputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"neither valid JSON nor a .yaml/.json file: {exc}") from None
