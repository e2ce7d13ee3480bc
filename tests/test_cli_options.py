"""Config sections as typed options (care.cli_options): overrides, errors, help, and the rules'
arguments passing through unchanged."""

from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml
from care.cli import build_parser, parse_args
from care.config import JOB_KEYS, check_config, schema

from .conftest import REPO, copy_workflow, run_snakemake

TRAIN = ["train", "run", "--backbone", "b", "--sessions", "s.jsonl", "--folds", "f.tsv",
         "--fold", "1", "--variant", "rationale", "--max-length", "512",
         "--checkpoints", "c", "--out", "o"]
INFER = ["infer", "model", "--name", "m", "--variant", "zero_shot", "--max-length", "512",
         "--sessions", "s.jsonl", "--out", "p.parquet"]


@pytest.fixture(scope="module")
def demo_config() -> dict:
    """config.yaml with the schema's defaults filled in, as the Snakefile resolves it."""
    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    return check_config(config, ["config.yaml"])


def rule_hp(config: dict) -> dict:
    """What rule train passes as --hp for the first seed (workflow/rules/train.smk)."""
    keep = {k: v for k, v in config["training"].items()
            if k not in ("threads", "mem_mb", "runtime", "seeds")}
    return {**keep, "seed": config["training"]["seed"]}


def error_of(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_without_options_the_rule_argument_is_unchanged(demo_config):
    hp = rule_hp(demo_config)
    args = parse_args([*TRAIN, "--hp", json.dumps(hp, sort_keys=True)])
    assert args.hp == hp and json.dumps(args.hp, sort_keys=True) == json.dumps(hp, sort_keys=True)
    settings = {k: v for k, v in demo_config["inference"].items()
                if k not in ("threads", "gpus", "mem_mb", "runtime")}
    assert parse_args([*INFER, "--settings", json.dumps(settings)]).settings == settings


def test_an_option_overrides_the_files_key(tmp_path, demo_config):
    (tmp_path / "training.yaml").write_text(yaml.safe_dump(rule_hp(demo_config)))
    args = parse_args([*TRAIN, "--hp", str(tmp_path / "training.yaml"), "--learning-rate",
                       "1e-5", "--num-train-epochs", "3", "--packing", "shared_prefix",
                       "--validation.max-new-tokens", "64", "--gradient-checkpointing"])
    expected = {**rule_hp(demo_config), "learning_rate": 1e-5, "num_train_epochs": 3,
                "packing": "shared_prefix", "gradient_checkpointing": True}
    expected["validation"] = {**expected["validation"], "max_new_tokens": 64}
    assert args.hp == expected
    assert not [k for k in vars(args) if k.startswith("hp:")]  # the options are merged away


def inference_defaults() -> dict:
    """The inference section's defaults a command fills (the job keys are its own)."""
    keys = schema()["properties"]["inference"]["properties"]
    return {k: v["default"] for k, v in keys.items()
            if "default" in v and k not in (*JOB_KEYS, "backend")}


def test_options_alone_make_the_section_with_the_schemas_defaults():
    hp = parse_args([*TRAIN, "--learning-rate", "1e-5", "--num-train-epochs", "3",
                     "--per-device-train-batch-size", "4"]).hp
    given = {"learning_rate": 1e-5, "num_train_epochs": 3, "per_device_train_batch_size": 4}
    keys = schema()["properties"]["training"]["properties"]
    defaults = {k: v["default"] for k, v in keys.items()
                if "default" in v and k not in (*JOB_KEYS, "seeds")}  # the job's: not filled
    validation = keys["validation"]["properties"]
    defaults["validation"] = {k: v["default"] for k, v in validation.items() if "default" in v}
    assert hp == {**given, **defaults}
    assert hp["packing"] == "none" and hp["attn_implementation"] == "shared_prefix_sdpa"
    settings = parse_args([*INFER, "--batch-size", "8", "--dtype", "bfloat16", "--mode",
                           "label_probs", "--max-new-tokens", "auto"]).settings
    assert settings == {**inference_defaults(), "batch_size": 8, "dtype": "bfloat16",
                        "mode": "label_probs", "max_new_tokens": "auto"}
    assert parse_args([*INFER, "--language", "null"]).settings["language"] is None
    folds = parse_args(["data", "folds", "--sessions-table", "s.tsv", "--folds", "f.tsv",
                        "--table1", "t.csv", "--n-folds", "3"]).spec
    assert folds == {"n_folds": 3, "n_strata": 3, "seed": 123}
    corpus = parse_args(["data", "demo-corpus", "--sessions", "s", "--references", "r",
                         "--sessions-per-client", "2", "3"]).spec
    assert corpus == {"sessions_per_client": [2, 3]}
    table5 = ["evaluate", "table5", "--expert", "r.parquet", "--sessions-table", "s.tsv",
              "--out", "t5.csv"]
    assert parse_args([*table5, "--stopwords", "english"]).spec["stopwords"] == "english"
    assert parse_args([*table5, "--stopwords", "um", "uh"]).spec["stopwords"] == ["um", "uh"]


@pytest.mark.parametrize("argv, message", [
    ([*TRAIN, "--learning-rate", "fast"],
     "argument --learning-rate: invalid value 'fast': expected a number"),
    ([*TRAIN, "--packing", "dense"],
     "argument --packing: invalid value 'dense': expected one of none, shared_prefix"),
    ([*TRAIN, "--hp", '{"learning_rate": 1, "per_device_train_batch_size": 1}',
      "--num-train-epochs", "0"], "argument --num-train-epochs: 0 is less than the minimum of 1"),
    ([*TRAIN, "--hp", '{"learning_rate": -1, "per_device_train_batch_size": 1, '
      '"num_train_epochs": 1}'], "argument --hp (key learning_rate): -1 is less than or equal"),
    ([*TRAIN, "--learning-rate", "1e-5", "--per-device-train-batch-size", "2"],
     "training.num_train_epochs is required: give --num-train-epochs or num_train_epochs in --hp"),
    ([*INFER, "--mode", "sample"], "argument --mode: invalid value 'sample'"),
    ([*INFER, "--max-new-tokens", "0"], "argument --max-new-tokens: 0 is"),
    ([*INFER, "--settings", '{"batch_size": 8, "temperature": 1}'],
     "argument --settings: Additional properties are not allowed ('temperature' was"),
])
def test_a_wrong_value_names_the_option(argv, message, capsys):
    assert message in error_of(argv, capsys)


def test_help_lists_the_generated_options_under_the_section():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    text = train._subparsers._group_actions[0].choices["run"].format_help()
    heading = text.index("training options:")
    for line in ("--learning-rate NUM   peak learning rate", "--packing {none,shared_prefix}",
                 "--validation.max-new-tokens INT|auto", "--gradient-checkpointing, "
                 "--no-gradient-checkpointing", "(default: shared_prefix_sdpa)"):
        assert text.index(line) > heading, line
    usage = text[:text.index("options:")]
    assert "--hp FILE|JSON" in usage and "--learning-rate" not in usage  # usage stays short
    assert "--threads" in text and "--seeds" not in text  # job keys: the command's own


@pytest.mark.parametrize("old, new", [("validate", "care data validate"),
                                      ("predict", "care apply predict"),
                                      ("backbone", "care train backbone"),
                                      ("training-curves", "care evaluate training-curves"),
                                      ("evalute", "care evaluate")])
def test_an_old_command_name_says_what_it_is_now(old, new, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([old, "--help"])
    assert f"unknown command '{old}'; did you mean `{new}`?" in capsys.readouterr().err


def _care_calls(dry_run: str) -> list[list[str]]:
    """The `care` command lines a dry run prints, without their log redirections."""
    calls = []
    for line in re.findall(r"^(?:Shell command: )?(care .*)$", dry_run, flags=re.M):
        words = shlex.split(line)
        calls.append(words[1:next((i for i, w in enumerate(words) if w in (">", "2>")),
                                  len(words))])
    return calls


@pytest.mark.slow
def test_every_rules_section_argument_passes_through_unchanged(tmp_path):
    """The pipeline is byte-identical: each config section a rule passes, parsed by the
    command, is the dict the rule wrote (the schema's defaults are already in it)."""
    work = copy_workflow(tmp_path)
    done = run_snakemake(work, "-n", "-p")
    assert done.returncode == 0, done.stderr[-3000:]
    calls = _care_calls(done.stdout + done.stderr)
    checked = set()
    for argv in calls:
        args = parse_args(argv)
        for section in getattr(args, "_config_sections", []):
            passed = json.loads(argv[argv.index(section.arg) + 1])
            assert getattr(args, section.dest) == passed, (argv[:3], section.path)
            checked.add(section.path)
    assert checked == {"training", "inference", "demo_corpus", "folds", "evaluation.bootstrap",
                       "backbones.*.tiny", "backbones.*.pretrain",
                       "evaluation.text_metrics", "evaluation.log_odds", "evaluation.human_eval",
                       "application", "application.digest", "application.patterns",
                       "application.report_sessions"}


def test_care_score_starts_from_the_config_files_inference_section(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("inference: {batch_size: 4, scoring: generated, threads: 2}\n")
    args = parse_args(["score", "--model", "m", "--sessions", "s.jsonl", "--config", str(config),
                       "--scoring", "expected"])
    # the job key (threads) is the command's own
    assert args.settings == {**inference_defaults(), "batch_size": 4, "scoring": "expected"}
