"""The workflow config: validation against the schema (``resources/schemas/config.schema.yaml``).

A config stands alone over the schema's defaults (the Snakefile reads the demo's
``config.yaml`` only when no config is given), so the defaults filled in here are the only
values a user's config does not set: the schema is their one home, and everything after
:func:`check_config` reads ``config["x"]``. An error names the config file(s) and the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import validators

from care.errors import CareInputError, schema_message, shallowest
from care.io import check_expansion
from care.resources import resource_path

SCHEMA = resource_path("schemas", "config.schema.yaml")
#: Keys of a stage's section that shape its job, not its outputs: the cluster request and the
#: command's own options (``--threads``, ``--gpus``). Rules pass a section without them;
#: commands take no option for them; fingerprints leave them out.
JOB_KEYS = ("threads", "gpus", "mem_mb", "runtime")


def without_job_keys(section: Mapping, *more: str) -> dict:
    """``section`` less its :data:`JOB_KEYS` (and ``more``): the settings a command takes."""
    return {k: v for k, v in section.items() if k not in (*JOB_KEYS, *more)}


def with_defaults(validator_class):
    """A validator that fills each ``default`` of the schema into the instance it checks."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub:
                    instance.setdefault(name, _copy(sub["default"]))
        yield from check_properties(validator, props, instance, schema)

    return validators.extend(validator_class, {"properties": properties})


def _copy(value):
    return yaml.safe_load(yaml.safe_dump(value)) if isinstance(value, (dict, list)) else value


@lru_cache(maxsize=4)
def _schema(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def schema() -> dict:
    """The packaged config schema (read once); :mod:`care.cli_options` derives options from it."""
    return _schema(str(SCHEMA))


def deref(node: dict) -> dict:
    """A schema node with its ``$ref`` (to ``#/$defs/...``) followed, its own keys kept."""
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        node = {**schema()["$defs"][name], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def schema_node(path: str) -> dict:
    """The schema node of a dotted config path (``evaluation.text_metrics``; ``*``: any name,
    ``backbones.*.tiny``)."""
    node = schema()
    for key in path.split("."):
        node = deref(node["additionalProperties"] if key == "*" else node["properties"][key])
    return node


def default(path: str) -> Any:
    """The schema's default of a dotted config key: what a typed settings object falls back
    to when built without the config (a test, a benchmark)."""
    return _copy(schema_node(path)["default"])


def training_recipe() -> tuple[str, ...]:
    """The ``training`` keys a fine-tune needs that have no default."""
    return tuple(schema()["$defs"]["training_recipe"]["required"])


def check_config(
    config: dict, sources: Sequence[str | Path] = (), schema: str | Path = SCHEMA
) -> dict:
    """Fill the schema's defaults into ``config`` (in place) and check it.

    Raises a :class:`CareInputError` naming ``sources`` (the config files) and the key of
    the first problem (the shallowest, so a missing section is named before its keys).
    """
    where = ", ".join(map(str, sources)) or "config"
    check_expansion(config, where)  # before anything walks it: an alias bomb would not end
    errors = fill_defaults(config, schema)
    if errors:
        err = shallowest(errors)
        key = ".".join(str(p) for p in err.absolute_path) or None
        raise CareInputError(where, f"invalid config: {schema_message(err)}", field=key)
    return config


def fill_defaults(config: dict, schema: str | Path = SCHEMA) -> list:
    """Fill the schema's defaults into ``config`` (in place); the schema's complaints."""
    cls = with_defaults(jsonschema.Draft202012Validator)
    errors = list(cls(_schema(str(schema))).iter_errors(config))
    if not errors:  # an invalid config may lack the keys others inherit from
        _inherit(_schema(str(schema)), config, config)
    return errors


def _inherit(node: dict, instance, root: dict) -> None:
    """Fill each key whose schema says ``x-default-from: <dotted key>`` from that key (an
    override's default is the value it overrides: a zero-shot model's ``mem_mb`` is the
    inference section's unless it sets its own); ``.key`` names a key beside it."""
    if isinstance(instance, list):
        for item in instance:
            _inherit(node.get("items", {}), item, root)
        return
    if not isinstance(instance, dict):
        return
    for name, sub in node.get("properties", {}).items():
        if name not in instance and "x-default-from" in sub:
            source = sub["x-default-from"]  # ".key": a key beside it
            scope = instance if source.startswith(".") else root
            instance[name] = _copy(_lookup(scope, source.lstrip(".")))
        if name in instance:
            _inherit(sub, instance[name], root)


def _lookup(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


def validate_config(config: dict, workflow, schema: str | Path = SCHEMA) -> dict:
    """:func:`check_config` from the Snakefile: the error is a one-line WorkflowError."""
    from snakemake.exceptions import WorkflowError

    if workflow.modifier.skip_validation:  # unchecked, but the rules read a filled config
        fill_defaults(config, Path(workflow.basedir) / schema)
        return config
    sources = [str(p) for p in workflow.configfiles] or ["config (--config)"]
    try:
        return check_config(config, sources, Path(workflow.basedir) / schema)
    except CareInputError as exc:
        raise WorkflowError(str(exc)) from None
