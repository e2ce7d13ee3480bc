"""The rating instrument: items, the dimensions they form, the scale and its labels.

WAI-SR is the default (``workflow/instruments/wai_sr.yaml``); any other instrument in the same
format loads the same way. A dimension's score is the mean of its items (CARE paper, section 3).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

from care.errors import CareInputError, brief, schema_message, shallowest
from care.io import load_yaml
from care.resources import resource_path

SCHEMA = resource_path("schemas", "instrument.schema.yaml")
DEFAULT = resource_path("instruments", "wai_sr.yaml")


@dataclass(frozen=True)
class Item:
    id: str
    dimension: str
    text: Mapping[str, str]

    def wording(self, language: str) -> str:
        return _pick(self.text, language)


@dataclass(frozen=True)
class Dimension:
    id: str
    items: tuple[str, ...]
    name: Mapping[str, str]
    description: Mapping[str, str]

    def label(self, language: str) -> str:
        return _pick(self.name, language) if self.name else self.id.capitalize()


@dataclass(frozen=True)
class Instrument:
    name: str
    scale_min: int
    scale_max: int
    scale_labels: Mapping[int, Mapping[str, str]]
    dimensions: tuple[Dimension, ...]
    items: Mapping[str, Item]
    path: str
    integer: bool = True  # ratings are whole scale points (scale.integer)
    # Texts the prompts, captions and tables use, per language (defaults: neutral wording).
    title: Mapping[str, str] = field(default_factory=dict)
    construct: Mapping[str, str] = field(default_factory=dict)
    rating_meaning: Mapping[str, str] = field(default_factory=dict)

    def display_title(self, language: str) -> str:
        """The instrument's full name (``title``), else its short ``name``."""
        return _pick(self.title, language) if self.title else self.name

    def construct_text(self, language: str) -> str:
        """What the instrument measures, as a noun phrase (``construct``)."""
        if self.construct:
            return _pick(self.construct, language)
        return "所测的体验" if language.startswith("zh") else "the client's experience"

    def rating_text(self, language: str) -> str:
        """What a rating means (``rating``): shown with the scale."""
        return _pick(self.rating_meaning, language) if self.rating_meaning else ""

    @property
    def languages(self) -> set[str]:
        """Languages every item is worded in."""
        langs = [set(i.text) for i in self.items.values()]
        return set.intersection(*langs) if langs else set()

    @property
    def scale_points(self) -> list[int]:
        return list(range(self.scale_min, self.scale_max + 1))

    @property
    def dimension_ids(self) -> list[str]:
        return [d.id for d in self.dimensions]

    @property
    def item_ids(self) -> list[str]:
        """Items in dimension order, then by their order within the dimension."""
        return [i for d in self.dimensions for i in d.items]

    def dimension(self, dim_id: str) -> Dimension:
        for d in self.dimensions:
            if d.id == dim_id:
                return d
        raise KeyError(dim_id)

    def dimension_of(self, item_id: str) -> str:
        return self.items[item_id].dimension

    def scale_label(self, point: int, language: str) -> str:
        return _pick(self.scale_labels[point], language)

    def in_scale(self, value: float) -> bool:
        return self.scale_min <= value <= self.scale_max

    def dimension_scores(self, ratings: Mapping[str, float | None]) -> dict[str, float]:
        """Each dimension's score (:func:`dimension_mean`) from a mapping item -> rating."""
        return {
            d.id: dimension_mean([ratings.get(i) for i in d.items], len(d.items))
            for d in self.dimensions
        }


def dimension_mean(ratings: Iterable[float | None], n_items: int) -> float:
    """THE dimension score (paper §3): the mean of its items' ratings, NaN unless every one of
    its ``n_items`` items is rated. Client ratings, counselor ratings, checkpoint selection and
    every table use this one rule, so selection optimises exactly what the tables report."""
    ok = [float(v) for v in ratings if v is not None and not _isnan(v)]
    return sum(ok) / len(ok) if n_items and len(ok) == n_items else math.nan


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _pick(texts: Mapping[str, str], language: str) -> str:
    """The text in ``language``, else English, else the first one given."""
    if language in texts:
        return texts[language]
    base = language.split("-")[0]
    if base in texts:
        return texts[base]
    return texts.get("en", next(iter(texts.values())))


@lru_cache(maxsize=8)
def _schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))


def load_instrument(path: str | Path = DEFAULT) -> Instrument:
    """Read and check an instrument file; errors name the file and the offending field."""
    path = Path(path)
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"), path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CareInputError(path, f"cannot read instrument: {brief(exc)}") from None
    errors = list(jsonschema.Draft202012Validator(_schema()).iter_errors(raw))
    if errors:
        err = shallowest(errors)
        field = "/".join(str(p) for p in err.absolute_path) or None
        raise CareInputError(path, schema_message(err), field=field)

    smin, smax = raw["scale"]["min"], raw["scale"]["max"]
    if smin >= smax:
        raise CareInputError(path, f"scale min {smin} must be below max {smax}", field="scale")
    try:
        labels = {int(k): v for k, v in raw["scale"]["labels"].items()}
    except ValueError:
        raise CareInputError(
            path, "label keys must be the scale's points (whole numbers)", field="scale/labels"
        ) from None
    # the count first: a scale of 10^9 points must not be listed to find it lacks labels
    if len(labels) != smax - smin + 1 or sorted(labels) != list(range(smin, smax + 1)):
        raise CareInputError(
            path, f"labels must cover every point {smin}..{smax}", field="scale/labels"
        )

    item_text = {}
    for n, it in enumerate(raw["items"]):
        if it["id"] in item_text:
            raise CareInputError(path, f"duplicate item id {it['id']!r}", field=f"items/{n}/id")
        item_text[it["id"]] = it["text"]

    dims, owner = [], {}
    for n, d in enumerate(raw["dimensions"]):
        for item_id in d["items"]:
            if item_id not in item_text:
                raise CareInputError(
                    path, f"dimension {d['id']!r} names unknown item {item_id!r}",
                    field=f"dimensions/{n}/items",
                )
            if item_id in owner:
                raise CareInputError(
                    path, f"item {item_id!r} is in both {owner[item_id]!r} and {d['id']!r}",
                    field=f"dimensions/{n}/items",
                )
            owner[item_id] = d["id"]
        dims.append(
            Dimension(d["id"], tuple(d["items"]), d.get("name", {}), d.get("description", {}))
        )
    orphans = sorted(set(item_text) - set(owner))
    if orphans:
        raise CareInputError(path, f"items in no dimension: {orphans}", field="items")

    items = {i: Item(i, owner[i], item_text[i]) for i in item_text}
    return Instrument(
        raw["name"], smin, smax, labels, tuple(dims), items, str(path),
        integer=raw["scale"].get("integer", True), title=raw.get("title", {}),
        construct=raw.get("construct", {}), rating_meaning=raw.get("rating", {}),
    )
