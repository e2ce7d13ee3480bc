"""Typed command-line options for a config section, derived from the config schema.

A command that reads a config section takes it whole (``--hp``, ``--settings``, ``--spec``:
a YAML/JSON file, or the JSON string the Snakemake rules pass) and also as one option per
key of the section in ``workflow/schemas/config.schema.yaml``: ``--learning-rate 1e-5``,
``--packing shared_prefix``, ``--gradient-checkpointing`` / ``--no-gradient-checkpointing``,
a list as several values (``--sessions-per-client 4 10``). A nested object's keys are dotted
options (``--validation.max-new-tokens 64``). Keys that are maps of names (Table 8's
``strategies``) or alternatives of an object (``max_new_tokens: {rationale: .., score_only:
..}``) have no option: they are set in the file, whose other keys the options override.

The schema gives each option its help (``description``), its type, choices and default.
After parsing, :func:`resolve_sections` merges the options over the whole-section argument,
fills the schema's defaults of the keys still unset (what the pipeline's config validation
fills, so a rule's argument comes out unchanged), and validates the result: an error names
the option (or the key of the file) and exits with status 2, before any work.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from care.commands import json_arg
from care.config import deref, schema, schema_node

SECTIONS = "_config_sections"  # the Namespace attribute listing a command's sections
SCALARS = ("null", "boolean", "integer", "number", "string")
METAVARS = {"integer": "INT", "number": "NUM", "string": "TEXT", "null": "null",
            "boolean": "true|false"}


def _alternatives(node: dict) -> list[dict]:
    """The value shapes a node allows: one dict per type, enum or const."""
    node = deref(node)
    for branch in ("oneOf", "anyOf"):
        if branch in node:
            return [alt for sub in node[branch] for alt in _alternatives(sub)]
    if "enum" in node or "const" in node:
        return [node]
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else types
    return [{**node, "type": t} for t in types]


def _show(value) -> str:
    """A value as it is typed: null, true, false, 5."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _constants(alts: list[dict]) -> list:
    return [v for a in alts for v in (a.get("enum") or ([a["const"]] if "const" in a else []))]


def parse_value(text: str, alts: list[dict]):
    """``text`` as the first shape of ``alts`` it fits: a constant, null, bool, int, number,
    text; else an error naming what was expected."""
    for value in _constants(alts):
        if text == _show(value):
            return value
    types = {a.get("type") for a in alts}
    if "null" in types and text.lower() in ("null", "none"):
        return None
    if "boolean" in types and text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind, convert in (("integer", int), ("number", _number)):
        if kind in types:
            try:
                return convert(text)
            except ValueError:
                pass
    if "string" in types:
        return text
    raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {_expected(alts)}")


def _number(text: str) -> int | float:
    try:
        return int(text)  # as JSON writes a whole number
    except ValueError:
        return float(text)


def _expected(alts: list[dict]) -> str:
    kinds = [{"integer": "an integer", "number": "a number", "string": "a text",
              "null": "null", "boolean": "true or false"}[a["type"]] for a in alts if "type" in a]
    consts = [_show(v) for v in _constants(alts)]
    return " or ".join(kinds + ([f"one of {', '.join(consts)}"] if consts else []))


@dataclass
class Option:
    """One key of a section offered as an option."""

    key: tuple[str, ...]  # path in the section: ("validation", "max_new_tokens")
    node: dict  # its schema
    flag: str = ""
    dest: str = ""

    def add_to(self, group, section_dest: str) -> None:
        self.flag = "--" + ".".join(k.replace("_", "-") for k in self.key)
        self.dest = f"{section_dest}:{'.'.join(self.key)}"
        alts = _typed(self.node)
        kwargs = dict(dest=self.dest, default=argparse.SUPPRESS, help=self._help())
        scalars = [a for a in alts if a.get("type") != "array"]
        arrays = [a for a in alts if a.get("type") == "array"]
        if [a.get("type") for a in alts] == ["boolean"]:
            group.add_argument(self.flag, action=argparse.BooleanOptionalAction, **kwargs)
            return
        if arrays:
            items = _alternatives(arrays[0].get("items", {})) + scalars
            size = arrays[0].get("minItems")
            exact = size is not None and size == arrays[0].get("maxItems")
            group.add_argument(self.flag, nargs=size if exact else "*", metavar=_metavar(items),
                               type=lambda t, alts=items: parse_value(t, alts), **kwargs)
            return
        group.add_argument(self.flag, metavar=_metavar(alts),
                           type=lambda t: parse_value(t, alts), **kwargs)

    def _help(self) -> str:
        text = self.node.get("description", "").strip().rstrip(".")
        if "default" in self.node:
            default = self.node["default"]
            shown = " ".join(map(_show, default)) if isinstance(default, list) else _show(default)
            text += f" (default: {shown or '[]'})"
        return text.replace("%", "%%") or None

    def value(self, given):
        """A list option with one value that is a constant of the key (``--stopwords english``)."""
        if isinstance(given, list) and len(given) == 1:
            scalars = [a for a in _typed(self.node) if a.get("type") != "array"]
            if given[0] in _constants(scalars):
                return given[0]
        return given


def _metavar(alts: list[dict]) -> str:
    consts = [_show(v) for v in _constants(alts)]
    kinds = [METAVARS[a["type"]] for a in alts if "type" in a and a["type"] in METAVARS]
    if consts and not kinds:
        return "{" + ",".join(consts) + "}"
    return "|".join(dict.fromkeys(kinds + consts))


def _typed(node: dict) -> list[dict]:
    """The shapes of a key an option can give: scalars and lists of scalars (an object
    alternative, ``max_new_tokens: {rationale: .., score_only: ..}``, is left to the file)."""
    def scalar(alt: dict) -> bool:
        return alt.get("type") in (None, *SCALARS)

    return [a for a in _alternatives(node) if scalar(a) or (
        a.get("type") == "array" and all(map(scalar, _alternatives(a.get("items", {})))))]


@dataclass
class Section:
    """A config section (a dotted schema path) as one argument plus an option per key.

    ``exclude``: keys the command does not take as options (job settings such as ``threads``,
    or keys another option of the command sets); they are not required and get no default,
    but a whole-section argument may still carry them. ``include``: only these keys.
    ``extra``: keys the command's section adds from elsewhere in the config, by schema path
    (``{"threshold": "application.low_alliance_threshold"}``). ``required``: keys the
    command needs beyond those the section's schema requires (a fine-tune's recipe).
    ``base``: where the section comes from when the whole-section argument is not given
    (``care score``: the section of a config file), as a function of the parsed arguments.
    """

    path: str
    arg: str
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    base: Callable[[argparse.Namespace], dict] | None = None
    options: list[Option] = field(default_factory=list)
    parser: argparse.ArgumentParser | None = None

    @property
    def dest(self) -> str:
        return self.arg.lstrip("-").replace("-", "_")

    def schema(self) -> dict:
        """The section's schema as this command takes it (excluded keys without defaults)."""
        node = schema_node(self.path)
        keys = [k for k in node.get("properties", {}) if self.include is None or k in self.include]
        props = {k: deref(node["properties"][k]) for k in keys}
        props.update({k: schema_node(p) for k, p in self.extra.items()})
        for k in self.exclude:
            props[k] = {n: v for n, v in props[k].items() if n != "default"}
        rest = {k: v for k, v in node.items() if k not in ("properties", "required", "default")}
        return {
            **rest,
            "$defs": schema()["$defs"],
            "properties": props,
            "required": [
                k
                for k in (*node.get("required", []), *self.required)
                if k in props and k not in self.exclude
            ],
        }

    def add_to(self, parser: argparse.ArgumentParser, help: str = "") -> Section:
        self.parser = parser
        parser.formatter_class = ShortUsage
        name = self.path.replace("*", "<name>")
        group = parser.add_argument_group(
            f"{name} options",
            f"The config's `{name}` section: give it whole with {self.arg} (a YAML/JSON "
            "file, or a JSON string), or key by key with the options below, which override "
            f"its keys.{' ' + help if help else ''}")
        group.add_argument(self.arg, type=json_arg, default=None, metavar="FILE|JSON",
                           help=f"the `{name}` section as a whole")
        props = self.schema()["properties"]
        for key, node in props.items():
            if key not in self.exclude:
                self._add(group, (key,), node)
        parser.set_defaults(**{SECTIONS: [*(parser.get_default(SECTIONS) or []), self]})
        return self

    def _add(self, group, key: tuple[str, ...], node: dict) -> None:
        node = deref(node)
        if node.get("type") == "object" and node.get("properties"):
            for sub, child in node["properties"].items():
                self._add(group, (*key, sub), child)
        elif _typed(node):
            option = Option(key, node)
            option.add_to(group, self.dest)
            group._group_actions[-1].section_key = True  # listed under its heading only
            self.options.append(option)

    def resolve(self, args: argparse.Namespace) -> dict:
        """Merge the options over the whole section, fill defaults, validate; set ``args``."""
        base = getattr(args, self.dest)
        if base is None:
            base = self.base(args) if self.base else {}
        if not isinstance(base, dict):
            self._fail(f"argument {self.arg}: expected the `{self.path}` section (a mapping), "
                       f"got {type(base).__name__}")
        merged, given = copy.deepcopy(base), {}
        for option in self.options:
            if hasattr(args, option.dest):
                value = option.value(getattr(args, option.dest))
                delattr(args, option.dest)
                node = merged
                for k in option.key[:-1]:
                    node = node.setdefault(k, {})
                    if not isinstance(node, dict):
                        self._fail(f"argument {option.flag}: {self.arg} sets {k} to a "
                                   "non-mapping")
                node[option.key[-1]] = value
                given[option.key] = option.flag
        self._check(merged, given)
        setattr(args, self.dest, merged)
        return merged

    def _check(self, merged: dict, given: dict) -> None:
        import jsonschema
        from jsonschema.exceptions import best_match

        from care.config import with_defaults

        validator = with_defaults(jsonschema.Draft202012Validator)(self.schema())
        error = best_match(validator.iter_errors(merged))
        if error is None:
            return
        key = tuple(str(p) for p in error.absolute_path)
        if error.validator == "required":
            missing = next(r for r in error.validator_value if r not in error.instance)
            key = (*key, missing)
            option = next((o.flag for o in self.options if o.key == key), None)
            where = f"{option} or " if option else ""
            name = f"{self.path.replace('*', '<name>')}.{'.'.join(key)}"
            self._fail(f"{name} is required: give {where}{'.'.join(key)} in {self.arg}")
        where = given.get(key) or self.arg + (f" (key {'.'.join(key)})" if key else "")
        self._fail(f"argument {where}: {error.message}")

    def _fail(self, message: str):
        self.parser.error(message)


class ShortUsage(argparse.HelpFormatter):
    """Usage without the per-key options (the section's heading lists them)."""

    def add_usage(self, usage, actions, groups, prefix=None):
        kept = [a for a in actions if not getattr(a, "section_key", False)]
        super().add_usage(usage, kept, groups, prefix)


def resolve_sections(args: argparse.Namespace) -> argparse.Namespace:
    """Resolve every config section the parsed command takes (see :class:`Section`)."""
    for section in getattr(args, SECTIONS, None) or []:
        section.resolve(args)
    return args
