"""One home for defaults: the schema. The config is filled once (:func:`care.config.check_config`)
and read with ``config["x"]`` after; a rule file that falls back to its own default for a
schema key would disagree with the schema the day one of them changes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from care.config import check_config, schema

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = sorted(
    [
        ROOT / "Snakefile",
        *(ROOT / "workflow" / "rules").glob("*.smk"),
        *(ROOT / "workflow" / "report").glob("*.rst"),  # the report's captions read the config
    ]
)
# .get("key", default) or .get("key"): a lookup that tolerates a missing key
GET = re.compile(r"\.get\(\s*\"(\w+)\"\s*(,)?")


def schema_keys() -> dict[str, bool]:
    """Every property name of the schema -> whether some section gives it a default."""
    found: dict[str, bool] = {}

    def walk(node) -> None:
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                found[name] = found.get(name, False) or (isinstance(sub, dict) and "default" in sub)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema())
    return found


def fallbacks(path: Path, root: Path = ROOT) -> list[str]:
    """The lookups of ``path`` that carry a default for a schema key: ``.get("k", default)``
    of any schema key, and ``.get("k")`` of a key the schema fills."""
    keys = schema_keys()
    found = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        for match in GET.finditer(line):
            key, default = match.group(1), match.group(2)
            if key in keys and (default or keys[key]):
                found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    return found


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_rule_files_carry_no_default_of_their_own(path):
    assert fallbacks(path) == []


def test_the_check_finds_a_fallback(tmp_path):
    rule = tmp_path / "x.smk"
    rule.write_text(
        'T = config["training"]\n'
        'N = T.get("threads", 1)\n'  # a default of its own
        'S = T.get("seed")\n'  # None where the schema fills 123
        'E = R.get("edited_sheet")\n'  # no default anywhere: a real absence
    )
    assert [f.split(": ", 1)[0] for f in fallbacks(rule, tmp_path)] == ["x.smk:2", "x.smk:3"]


def test_training_selection_defaults_to_the_inner_split():
    recipe = {"learning_rate": 1e-5, "per_device_train_batch_size": 1, "num_train_epochs": 1}
    config = check_config(
        {"data": {"sessions": "s.jsonl"}, "variants": ["score_only"], "training": recipe}
    )
    assert config["training"]["selection"] == "inner_split"
    assert config["training"]["inner_val_fraction"] == 0.15


def test_rationales_are_needed_only_by_the_rationale_variant():
    check_config({"data": {"sessions": "s.jsonl"}, "variants": ["score_only"]})
    with pytest.raises(Exception, match="edited_sheet"):
        check_config({"data": {"sessions": "s.jsonl"}, "variants": ["rationale"]})


# the typed settings objects: a field of a schema key takes the schema's default
SETTINGS = [
    ("care.infer.settings", "InferenceSettings", "inference"),
    ("care.model.backbone", "TinySpec", "backbones.*.tiny"),
    ("care.train.pretrain", "PretrainSpec", "backbones.*.pretrain"),
    ("care.train.settings", "TrainingSettings", "training"),
    ("care.train.settings", "ValidationSettings", "training.validation"),
    ("care.evaluate.bootstrap", "BootstrapSpec", "evaluation.bootstrap"),
    ("care.evaluate.textmetrics", "TextMetricSpec", "evaluation.text_metrics"),
]


def own_defaults(module: str, name: str, section: str) -> list[str]:
    """Fields of the dataclass ``name`` that are keys of ``section`` with a default that is
    not the schema's (:func:`care.config.default`)."""
    import ast
    import importlib

    from care.config import schema_node

    keys = schema_node(section)["properties"]
    tree = ast.parse(Path(importlib.import_module(module).__file__).read_text(encoding="utf-8"))
    body = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name).body
    found = []
    for field in body:
        if not isinstance(field, ast.AnnAssign) or field.value is None:
            continue
        key = field.target.id
        calls = [n.func.id for n in ast.walk(field.value) if isinstance(n, ast.Call)]
        from_schema = any(c.endswith("default") for c in calls)
        section_default = isinstance(keys.get(key, {}).get("default"), dict)  # its own object
        if key in keys and "default" in keys[key] and not (from_schema or section_default):
            found.append(f"{name}.{key} = {ast.unparse(field.value)}")
    return found


@pytest.mark.parametrize("module, name, section", SETTINGS, ids=[s[1] for s in SETTINGS])
def test_settings_objects_take_the_schemas_defaults(module, name, section):
    assert own_defaults(module, name, section) == []


@pytest.mark.slow
def test_a_score_only_config_builds_without_an_expert_sheet(tmp_path):
    """The tiny config, score-only and without rationales.edited_sheet: a DAG without the
    rationale stage (no drafts, no sheet import, no Tables 3 and 5)."""
    import yaml

    from .conftest import copy_workflow, run_snakemake

    work = copy_workflow(tmp_path)
    config = yaml.safe_load((work / ".test" / "config.yaml").read_text(encoding="utf-8"))
    config["variants"] = ["score_only"]
    del config["rationales"]["edited_sheet"]
    config["rationales"]["simulate_experts_from"] = None
    config["application"]["model"]["variant"] = "score_only"
    (work / "score_only.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    done = run_snakemake(work, "-n", "--forceall", "--configfile", "score_only.yaml")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "results/models/llama/score_only/fold1" in done.stdout
    for absent in ("rationales.parquet", "table3.csv", "table5.csv", "draft_rationales"):
        assert absent not in done.stdout + done.stderr, absent
