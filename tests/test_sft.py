"""SFT examples: label masking, granularities, the truncation policy, fold splits."""

from __future__ import annotations

import pytest
from care.errors import CareInputError
from care.model.backbone import load_end_of_turn_ids, load_tokenizer
from care.prompts import build_messages, parse_output
from care.sessions import load_sessions
from care.sft import (
    IGNORE,
    ExampleBuilder,
    build_examples,
    load_folds,
    load_rationales,
    split_sessions,
)


@pytest.fixture(scope="module")
def sessions(train_corpus, instrument):
    return load_sessions(train_corpus["sessions"], instrument)


def builder(path, instrument, variant="rationale", granularity="item", max_length=1024):
    tok = load_tokenizer(path)
    return ExampleBuilder(
        tok,
        instrument,
        variant=variant,
        granularity=granularity,
        max_length=max_length,
        end_of_turn=load_end_of_turn_ids(path, tok),
    )


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_only_assistant_tokens_carry_labels(
    tiny_backbones, instrument, sessions, train_corpus, arch
):
    b = builder(tiny_backbones[arch], instrument)
    tok = b.tokenizer
    rationales = load_rationales(train_corpus["rationales"])
    session = sessions[0]
    examples, _ = build_examples(b, [session], rationales)
    eot = {"llama": "<|eot_id|>", "qwen2": "<|im_end|>"}[arch]
    for ex in examples:
        labelled = [k for k, v in enumerate(ex.labels) if v != IGNORE]
        # one contiguous span right after the prompt, ending at the end-of-turn token
        assert labelled == list(range(ex.prompt_tokens, labelled[-1] + 1))
        assert [ex.input_ids[k] for k in labelled] == [ex.labels[k] for k in labelled]
        target = tok.decode([ex.labels[k] for k in labelled])
        item = ex.items[0]
        rating = int(session.client_ratings[item])
        assert target == (
            f"Rationale: {rationales[(session.session_id, item)]}\nScore: {rating}{eot}"
        )
        # the prompt is exactly what inference renders (chat template + generation prompt)
        prompt = tok.apply_chat_template(
            build_messages(
                instrument,
                ex.items,
                "rationale",
                "en",
                _dialogue(tok, ex.input_ids[: ex.prompt_tokens]),
            ),
            tokenize=False,
            add_generation_prompt=True,
        )
        assert tok.decode(ex.input_ids[: ex.prompt_tokens]) == prompt
        if arch == "qwen2":  # the newline after <|im_end|> is in the ids but carries no label
            assert ex.labels[-1] == IGNORE and tok.decode(ex.input_ids[-1:]) == "\n"


def _dialogue(tok, prompt_ids):
    text = tok.decode(prompt_ids)
    start = text.index("[1] ")
    end = text.index("\n\nRate the session")
    return text[start:end]


@pytest.mark.parametrize(
    "granularity,per_session", [("item", 12), ("dimension", 3), ("session", 1)]
)
@pytest.mark.parametrize("variant", ["rationale", "score_only"])
def test_granularities_build_parseable_examples(
    tiny_backbones, instrument, sessions, train_corpus, granularity, per_session, variant
):
    b = builder(tiny_backbones["llama"], instrument, variant, granularity, max_length=4096)
    rationales = load_rationales(train_corpus["rationales"]) if variant == "rationale" else None
    examples, stats = build_examples(b, sessions[:3], rationales)
    assert stats.examples == len(examples) == 3 * per_session
    by_id = {s.session_id: s for s in sessions}
    covered = {}
    for ex in examples:
        answer = b.tokenizer.decode([t for t in ex.labels if t != IGNORE], skip_special_tokens=True)
        parsed = parse_output(answer, ex.items, instrument)
        for item in ex.items:
            assert parsed[item].ok
            assert parsed[item].score == by_id[ex.session_id].client_ratings[item]
            assert (parsed[item].rationale is not None) == (variant == "rationale")
            covered[(ex.session_id, item)] = True
    assert len(covered) == 3 * len(instrument.item_ids)


def test_long_dialogues_lose_middle_turns_and_are_counted(tiny_backbones, instrument, sessions):
    full = builder(tiny_backbones["llama"], instrument, "score_only")
    _, free = build_examples(full, sessions[:4], None)
    assert free.truncated_sessions == 0
    limit = free.max_tokens - 30
    cut = builder(tiny_backbones["llama"], instrument, "score_only", max_length=limit)
    examples, stats = build_examples(cut, sessions[:4], None)
    assert stats.truncated_sessions > 0 and stats.dropped_turns > 0
    assert all(len(e.input_ids) <= limit for e in examples)
    text = cut.tokenizer.decode(examples[0].input_ids)
    first, last = sessions[0].turns[0].text, sessions[0].turns[-1].text
    if stats.dropped_examples == 0:
        assert first in text and last in text  # opening and closing kept
    assert any("turns omitted" in cut.tokenizer.decode(e.input_ids) for e in examples)


def test_missing_rationale_is_an_input_error(tiny_backbones, instrument, sessions):
    b = builder(tiny_backbones["llama"], instrument)
    with pytest.raises(CareInputError, match="no rationale"):
        build_examples(b, sessions[:1], {})


def test_rationales_from_parquet(tmp_path, train_corpus):
    import pandas as pd

    refs = train_corpus["refs"][:5]
    frame = pd.DataFrame(
        {
            "session_id": [r["session_id"] for r in refs],
            "item_id": [r["item_id"] for r in refs],
            "final": [r["rationale"] for r in refs],
        }
    )
    frame.to_parquet(tmp_path / "r.parquet")
    loaded = load_rationales(tmp_path / "r.parquet")
    assert loaded[(refs[0]["session_id"], refs[0]["item_id"])] == refs[0]["rationale"]
    frame.loc[2, "final"] = " "
    frame.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(CareInputError, match="empty rationale") as err:
        load_rationales(tmp_path / "bad.parquet")
    assert err.value.line == 3 and err.value.field == "final"


def test_inner_split_is_client_grouped_and_leaves_the_test_fold_out(sessions, train_corpus):
    folds = load_folds(train_corpus["folds"])
    fit, val = split_sessions(
        sessions, folds, 2, selection="inner_split", inner_val_fraction=0.2, seed=1
    )
    assert val and fit
    assert not {s.client_id for s in fit} & {s.client_id for s in val}
    assert all(folds[s.session_id] != 2 for s in fit + val)
    assert len(fit) + len(val) == sum(1 for s in sessions if folds[s.session_id] != 2)
    again = split_sessions(
        sessions, folds, 2, selection="inner_split", inner_val_fraction=0.2, seed=1
    )
    assert [s.session_id for s in again[1]] == [s.session_id for s in val]
    train, test = split_sessions(
        sessions, folds, 2, selection="heldout_fold", inner_val_fraction=0.2, seed=1
    )
    assert {folds[s.session_id] for s in test} == {2}
    assert len(train) == len(fit) + len(val)
    with pytest.raises(CareInputError, match="fold 7"):
        split_sessions(sessions, folds, 7, selection="heldout_fold", inner_val_fraction=0.2, seed=1)


def test_training_and_inference_cut_a_dialogue_alike(tiny_backbones, instrument, sessions):
    """With the inference answer budget reserved, a training example's prompt is exactly the
    prompt inference builds for the same session and item (the dialogue cut the same way)."""
    from care.infer.prompting import PromptBuilder
    from care.infer.settings import InferenceSettings

    full = builder(tiny_backbones["llama"], instrument, "score_only")
    _, free = build_examples(full, sessions[:4], None)
    limit, budget = free.max_tokens - 10, 40
    train = ExampleBuilder(
        full.tokenizer, instrument, variant="score_only", granularity="item", max_length=limit,
        end_of_turn=full.end_of_turn, answer_tokens=budget,
    )
    settings = InferenceSettings(
        variant="score_only", granularity="item", max_length=limit, max_new_tokens=budget
    )
    infer = PromptBuilder(
        instrument, settings, train.count_tokens, lambda messages: train.render(messages, "")[0]
    )
    examples, stats = build_examples(train, sessions[:4], None)
    assert stats.truncated_sessions > 0
    prompts = {(p.session_id, p.items): p for s in sessions[:4] for p in infer.prompts(s)}
    for ex in examples:
        prompt = prompts[(ex.session_id, tuple(ex.items))]
        assert ex.input_ids[: ex.prompt_tokens] == list(prompt.ids)
    # the older rule (reserve the session's longest target) cuts less than inference does
    legacy = builder(tiny_backbones["llama"], instrument, "score_only", max_length=limit)
    old, _ = build_examples(legacy, sessions[:4], None)
    assert any(
        o.input_ids[: o.prompt_tokens] != list(prompts[(o.session_id, tuple(o.items))].ids)
        for o in old
    )


def test_auto_answer_budget_is_the_limit_inference_reads(tiny_backbones, instrument, sessions):
    """answer_tokens="auto" reserves answer_token_limit of the training answers: the number
    selection.json records and inference's max_new_tokens: auto reads."""
    from care.sft import answer_token_limit

    full = builder(tiny_backbones["llama"], instrument, "score_only")
    auto = ExampleBuilder(
        full.tokenizer, instrument, variant="score_only", granularity="item", max_length=1024,
        end_of_turn=full.end_of_turn, answer_tokens="auto",
    )
    _, stats = build_examples(auto, sessions[:3], None)
    assert auto.answer_tokens == stats.as_dict()["answer_token_limit"]
    assert auto.answer_tokens == answer_token_limit([stats.max_answer_tokens])
