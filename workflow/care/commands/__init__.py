"""CLI subcommands, one module per stage; each defines ``register(subparsers)``.

Keep these modules light: import torch/transformers inside the handler, not at module level.
Rules pass config values as arguments (often a JSON string of a config section), so a config
edit is a params change Snakemake sees, and the between-workflow cache hashes it.
"""

import argparse
import json


def json_arg(text: str) -> object:
    """argparse ``type=`` for a JSON value passed on the command line (``params`` from rules)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
