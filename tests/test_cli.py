"""The command line for people: plain-text help, stages named as the rules, defaults, score."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest
from care.cli import build_parser

from .conftest import REPO


def care(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "care.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_help_lists_the_commands_people_type_first_and_the_rules_steps_apart():
    text = build_parser().format_help()
    assert "``" not in text and ":func:" not in text
    commands, steps = text.split("workflow steps", 1)
    assert commands.index("care score") < commands.index("care data import ACTION")
    for name in ("care status", "care data validate", "care bench ACTION"):
        assert name in commands
    for stage in ("data", "rationales", "train", "infer", "evaluate", "apply"):
        assert re.search(rf"^  {stage} +\S", steps, re.M)
    assert "training-curves" in steps and "metrics" not in commands
    assert "positional arguments" not in text  # no second list of the same commands


def test_commands_register_by_full_name_only():
    """One registration style: no command module makes a group of its own."""
    modules = (REPO / "workflow/care/commands").glob("*.py")
    assert not [p.name for p in modules if "add_subparsers" in p.read_text(encoding="utf-8")]
    run = build_parser().parse_args(["evaluate", "training-curves", "--models", "m/fold1",
                                     "--out", "curves"])
    assert run.func.__module__ == "care.commands.evaluate"
    assert run.command_name == "care evaluate training-curves"  # what its errors start with
    table4 = build_parser().parse_args(["evaluate", "table4", "--runs", "[]", "--scores", "s",
                                        "--folds", "f", "--out", "o"])
    assert table4.evaluate_action == "table4"  # the handler it shares with table2 reads it


def test_stage_commands_parse_and_earlier_names_are_refused(capsys):
    parser = build_parser()
    new = parser.parse_args(["data", "validate", "--sessions", "s.jsonl"])
    assert new.func.__name__ == "validate"
    assert new.instrument.endswith("wai_sr.yaml")  # the packaged default
    with pytest.raises(SystemExit):
        parser.parse_args(["validate", "--sessions", "s.jsonl"])
    assert "unknown command 'validate'; did you mean `care data validate`?" in (
        capsys.readouterr().err)
    assert "validate" not in _subparsers(parser).choices  # not even hidden
    run = parser.parse_args(["apply", "figure2", "--predictions", "p.parquet", "--out", "f.png"])
    assert run.func.__name__ == "run_figure2"


def _subparsers(parser):
    found = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return found[0] if found else None


def test_every_rule_calls_a_current_command_name():
    """Every rule calls `care <stage> <action>` (or a top-level command) that exists."""
    top = _subparsers(build_parser())
    calls = []
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        text = re.sub(r'"\s*\n\s*f?"', "", path.read_text(encoding="utf-8"))  # join literals
        text = re.sub(r"care --prompts \S+ (--answer-order \S+ )?", "care ", text)
        calls += re.findall(r'"care (?:--benchmark \S+ )?([a-z0-9-]+)(?: ([a-z0-9-]+))?', text)
    assert len(calls) > 20
    # the CI scripts call the CLI too (the wheel check ran a removed name once)
    command = re.compile(r"bin/care\"? ([a-z][a-z0-9-]*)(?: ([a-z][a-z0-9-]*))?")
    ci = [m for path in (REPO / ".ci").iterdir() for m in command.findall(path.read_text())]
    assert ci
    for first, second in calls + ci:
        assert first in top.choices, first
        group = _subparsers(top.choices[first])
        if group is not None:
            assert second in group.choices, f"care {first} {second}"


@pytest.mark.slow
def test_score_prints_a_table_and_writes_predictions(tmp_path, small_corpus):
    from care.model.backbone import random_backbone

    path, records, refs = small_corpus
    texts = [t["text"] for r in records for t in r["turns"]] + [x["rationale"] for x in refs]
    model, tok = random_backbone("tiny", texts, arch="llama", vocab_size=600, seed=5)
    model_dir = tmp_path / "models" / "llama" / "score_only" / "fold1"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    done = care("score", "--model", model_dir, "--sessions", path, "--scoring", "expected",
                "--max-new-tokens", "4", "--out", tmp_path / "p.csv", "--threads", "1",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    header = done.stdout.splitlines()[0].split()
    assert header == ["session", "counselor", "Goal", "Task", "Bond"]
    assert f"{len(records)} sessions" in done.stdout and "not the client's ratings" in done.stdout
    frame = pd.read_csv(tmp_path / "p.csv")
    assert len(frame) == 12 * len(records) and set(frame["variant"]) == {"score_only"}
    assert f"scoring {len(records)} sessions with {model_dir} (score_only answers)" in done.stderr
    assert " fold 0" not in done.stderr and set(frame["model"]) == {str(model_dir)}


@pytest.mark.parametrize("missing", ["--model", "--sessions"])
def test_score_names_what_is_missing(missing, tmp_path):
    args = {"--model": tmp_path / "nowhere", "--sessions": tmp_path / "none.jsonl"}
    done = care("score", *[x for k, v in args.items() if k != missing for x in (k, v)])
    assert done.returncode == 2 and missing in done.stderr


def test_config_sections_come_as_json_or_as_a_yaml_file(tmp_path):
    from care.commands import json_arg

    (tmp_path / "hp.yaml").write_text("learning_rate: 5.0e-3\nnum_train_epochs: 2\n")
    assert json_arg(str(tmp_path / "hp.yaml")) == {"learning_rate": 0.005, "num_train_epochs": 2}
    assert json_arg('{"a": 1}') == {"a": 1}
    with pytest.raises(Exception, match="neither valid JSON"):
        json_arg("learning_rate=1")
