"""TrainingSettings: the training section of one fine-tune, typed; job.json's hp form."""

from __future__ import annotations

from pathlib import Path

import pytest
from care.config import default
from care.train.run import FineTune, fingerprint, same_run_before_defaults
from care.train.settings import TrainingSettings, ValidationSettings

RECIPE = {"learning_rate": 1e-5, "per_device_train_batch_size": 2, "num_train_epochs": 3}


def test_a_section_resolves_for_its_variant_with_the_schemas_defaults():
    section = {
        **RECIPE,
        "packing": {"score_only": "shared_prefix"},
        "units_per_row": {"score_only": 4},
        "validation": {"batch_size": 8},
        "threads": 4,  # the job's, not the fine-tune's
        "seeds": [1, 2],
    }
    score_only = TrainingSettings.from_config(section, "score_only")
    rationale = TrainingSettings.from_config(section, "rationale")
    assert (score_only.packing, score_only.units_per_row) == ("shared_prefix", 4)
    assert (rationale.packing, rationale.units_per_row) == ("none", None)
    assert score_only.selection == "inner_split" == default("training.selection")
    assert score_only.validation == ValidationSettings(batch_size=8)
    assert "threads" not in score_only.as_json() and "seeds" not in score_only.as_json()
    with pytest.raises(ValueError, match="per variant"):
        TrainingSettings.from_config(section)  # a resolved hp (job.json) only


def test_job_json_round_trips():
    settings = TrainingSettings.from_config({**RECIPE, "sampling": "group_by_length"}, "rationale")
    assert TrainingSettings.from_config(settings.as_json()) == settings


def test_validation_auto_is_what_the_answers_need():
    assert ValidationSettings().resolved(40).max_new_tokens == 40
    assert ValidationSettings(max_new_tokens=7).resolved(40).max_new_tokens == 7


def _run(settings: TrainingSettings) -> FineTune:
    paths = {k: Path(k) for k in ("backbone", "sessions", "folds", "instrument")}
    return FineTune(
        **paths,
        fold=1,
        variant="rationale",
        granularity="item",
        max_length=512,
        settings=settings,
        checkpoint_dir=Path("ckpt"),
        out=Path("out"),
    )


def test_a_job_json_from_before_the_defaults_resumes_and_a_changed_key_restarts():
    """A job.json written before the schema held every default lacks the keys its config
    left out (here sampling): the same run while those keys are at their defaults."""
    now = _run(TrainingSettings.from_config(RECIPE, "rationale"))
    old_hp = {k: v for k, v in now.settings.as_json().items() if k != "sampling"}
    old = {"hp": old_hp, "fingerprint": fingerprint(now, b"x", 1, "b", keys=set(old_hp))}
    assert fingerprint(now, b"x", 1, "b") != old["fingerprint"]  # the full key differs
    assert same_run_before_defaults(old, now, b"x", 1, "b")
    changed = _run(now.settings.replace(sampling="group_by_length"))
    assert not same_run_before_defaults(old, changed, b"x", 1, "b")
    other_data = same_run_before_defaults(old, now, b"y", 1, "b")
    assert not other_data
