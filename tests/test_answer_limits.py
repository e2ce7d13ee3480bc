"""Answer budgets come from the training answers, and cut answers or dialogues are reported.

``max_new_tokens: auto`` (the default) is the longest training answer in the model's tokens
with a margin (:func:`care.sft.answer_token_limit`): for validation from the run's own SFT
examples, for a fine-tuned model from its ``selection.json``, for another model from the
training folds' answers measured with its tokenizer.
"""

from __future__ import annotations

import json
import logging
from argparse import Namespace

import pytest
from care.commands.infer import build_scorer
from care.infer.run import predict_fold
from care.sft import IGNORE, answer_token_limit
from care.train.run import prepare, validation_settings
from care.train.settings import ValidationSettings

from tests.test_train import make_run


def test_auto_validation_budget_fits_every_training_answer(
    tmp_path, tiny_backbones, train_corpus, instrument
):
    run = make_run(tmp_path, train_corpus, tiny_backbones["llama"], instrument, "rationale",
                   validation={"batch_size": 8})
    *_, examples, stats = prepare(run)
    answers = [sum(1 for v in e.labels if v != IGNORE) for e in examples]
    assert stats.max_answer_tokens == max(answers) > 20  # rationales: long answers
    budget = validation_settings(run.settings, stats)["max_new_tokens"]
    assert budget == answer_token_limit(answers) >= max(answers)
    assert stats.as_dict()["answer_token_limit"] == budget
    # an explicit number stays what it is
    explicit = run.settings.replace(validation=ValidationSettings(max_new_tokens=7))
    assert validation_settings(explicit, stats)["max_new_tokens"] == 7


def infer_args(model, corpus, **kw) -> Namespace:
    base = dict(
        backend="hf", model_path=str(model), variant="rationale", prompt_variant=None,
        granularity="item", max_length=1024, settings={"max_new_tokens": "auto", "device": "cpu",
        "batch_size": 16}, gpus=0, cache=None, rationales=str(corpus["rationales"]),
        sessions=str(corpus["sessions"]), folds=str(corpus["folds"]), fold=1,
    )
    return Namespace(**{**base, **kw})


def test_auto_inference_budget(tmp_path, tiny_backbones, train_corpus, instrument):
    model = tiny_backbones["llama"]
    measured = build_scorer(infer_args(model, train_corpus), instrument)
    assert measured.max_new_tokens > 20  # the rationale answers, measured with the tokenizer
    assert measured.generation_config.max_new_tokens == measured.max_new_tokens
    # a model fine-tuned here: the number its training measured
    finetuned = tmp_path / "model"
    finetuned.mkdir()
    for f in model.iterdir():
        (finetuned / f.name).symlink_to(f)
    (finetuned / "selection.json").write_text(json.dumps({"sft": {"answer_token_limit": 77}}))
    assert build_scorer(infer_args(finetuned, train_corpus), instrument).max_new_tokens == 77


def test_a_fine_tune_is_asked_for_the_answer_order_it_learned(
    tmp_path, tiny_backbones, train_corpus, instrument
):
    from care import prompts
    from care.errors import CareInputError

    finetuned = tmp_path / "model"
    finetuned.mkdir()
    for f in tiny_backbones["llama"].iterdir():
        (finetuned / f.name).symlink_to(f)
    record = {"sft": {"answer_token_limit": 77}, "answer_order": "score_first"}
    (finetuned / "selection.json").write_text(json.dumps(record))
    with pytest.raises(CareInputError, match="trained to answer score_first") as err:
        build_scorer(infer_args(finetuned, train_corpus), instrument)
    assert err.value.field == "answer_order"
    # the score-only format has one line: no order to disagree on
    build_scorer(infer_args(finetuned, train_corpus, variant="score_only"), instrument)
    prompts.set_answer_order("score_first")
    try:
        assert build_scorer(infer_args(finetuned, train_corpus), instrument).max_new_tokens == 77
    finally:
        prompts.set_answer_order("rationale_first")


def test_cut_answers_warn_and_are_counted(tmp_path, tiny_backbones, train_corpus, instrument,
                                          caplog):
    args = infer_args(tiny_backbones["llama"], train_corpus,
                      settings={"max_new_tokens": 2, "device": "cpu", "batch_size": 16})
    scorer = build_scorer(args, instrument)
    out = tmp_path / "fold1.parquet"
    with caplog.at_level(logging.WARNING):
        predict_fold(scorer, sessions_path=args.sessions, instrument=instrument,
                     folds_path=args.folds, fold=1, model="m", variant="rationale", out=out)
    coverage = json.loads(out.with_name("fold1.coverage.json").read_text())
    assert coverage["answers_cut"] == coverage["rows"]  # an untrained model never stops in 2
    assert coverage["decoding"]["max_new_tokens"] == 2
    assert "stopped at max_new_tokens 2" in caplog.text


def test_cut_dialogues_warn_in_training(tmp_path, tiny_backbones, train_corpus, instrument,
                                        caplog):
    import dataclasses

    run = make_run(tmp_path, train_corpus, tiny_backbones["llama"], instrument)
    *_, stats = prepare(dataclasses.replace(run, max_length=160))
    assert stats.truncated_sessions > 0 and stats.as_dict()["truncated_sessions"] > 0
    with caplog.at_level(logging.WARNING):
        stats.warn_truncation(logging.getLogger("care.train"), "fold 1")
    assert "lost" in caplog.text and "dialogue turns to max_length" in caplog.text
