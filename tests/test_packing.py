"""Shared-prefix packing: packed rows give the unpacked examples' loss and gradients."""

from __future__ import annotations

import pytest
from care.model.attention import SPLIT, attention_inputs, register
from care.model.backbone import load_end_of_turn_ids, load_tokenizer
from care.sessions import load_sessions
from care.sft import IGNORE, ExampleBuilder, SFTStats, build_examples, training_rows
from care.train.packing import PackedCollator
from care.train.trainer import Collator

# float64 models; transformers' loss upcasts logits to float32, which bounds the agreement
RTOL = 1e-5


@pytest.fixture(scope="module")
def sessions(train_corpus, instrument):
    return load_sessions(train_corpus["sessions"], instrument)


def make_examples(tokenizer, eot, instrument, sessions, rationales, granularity="item", **kw):
    builder = ExampleBuilder(
        tokenizer,
        instrument,
        variant="rationale",
        granularity=granularity,
        max_length=kw.get("max_length", 1024),
        end_of_turn=eot,
    )
    return build_examples(builder, sessions, rationales)


def rationales_of(train_corpus):
    from care.sft import load_rationales

    return load_rationales(train_corpus["rationales"])


def two_sessions(path, instrument, sessions, train_corpus, **kw):
    """The rationale examples of the first two sessions with the backbone at ``path``."""
    tok = load_tokenizer(path)
    eot = load_end_of_turn_ids(path, tok)
    return make_examples(tok, eot, instrument, sessions[:2], rationales_of(train_corpus), **kw)


def loss_and_grads(model, batch, num_items=None):
    model.zero_grad()
    kwargs = {"num_items_in_batch": num_items} if num_items is not None else {}
    loss = model(**batch, **kwargs).loss
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def assert_same(model, examples, rows, implementation, logits_only, rtol):
    import torch

    # (eager attention turns the left-padded rows' fully masked pad queries into NaN
    # gradients, a property of the unpacked path: compare it right-padded there)
    left = logits_only and implementation != "eager"
    unpacked = Collator(0, answer_logits_only=left)([e.to_record() for e in examples])
    packed = PackedCollator(0, answer_logits_only=logits_only)([r.to_record() for r in rows])
    # the Trainer's normalisation: answer tokens counted as it counts them
    n_unpacked = unpacked["labels"][..., 1:].ne(IGNORE).sum()
    n_packed = packed["shift_labels"].ne(IGNORE).sum()
    assert int(n_unpacked) == int(n_packed) > 0
    assert packed["input_ids"].numel() <= unpacked["input_ids"].numel()
    register()
    model.set_attn_implementation(implementation)
    inputs = attention_inputs(packed, implementation, model.dtype)
    for num_items in (None, n_unpacked):
        loss_u, grads_u = loss_and_grads(model, unpacked, num_items)
        loss_p, grads_p = loss_and_grads(model, inputs, num_items)
        assert torch.allclose(loss_u, loss_p, rtol=rtol, atol=0), (loss_u, loss_p)
        assert grads_u.keys() == grads_p.keys()
        for name in grads_u:
            scale = grads_u[name].abs().max()
            diff = (grads_u[name] - grads_p[name]).abs().max()
            assert diff <= rtol * scale, (name, float(diff), float(scale))


def test_a_packed_row_holds_the_prefix_once(tiny_backbones, instrument, sessions, train_corpus):
    path = tiny_backbones["llama"]
    examples, stats = two_sessions(path, instrument, sessions, train_corpus)
    rows = training_rows(examples, stats, "shared_prefix")
    assert [r.session_id for r in rows] == [sessions[0].session_id, sessions[1].session_id]
    for row in rows:
        mine = [e for e in examples if e.session_id == row.session_id]
        assert row.items == tuple(instrument.item_ids)
        # the prefix is the system message and dialogue: most of each example
        assert row.prefix_len > 0.5 * len(mine[0].input_ids)
        assert row.prefix_len + sum(row.branches) == len(row.input_ids)
        start = row.prefix_len
        for e, size in zip(mine, row.branches, strict=True):
            # prefix + branch is the unpacked example, token for token, label for label
            assert row.input_ids[: row.prefix_len] + row.input_ids[start : start + size] == (
                e.input_ids
            )
            assert row.labels[start : start + size] == e.labels[row.prefix_len :]
            assert row.labels[start] == IGNORE  # every branch opens with a prompt token
            start += size
    assert stats.as_dict()["rows"] == 2
    assert stats.as_dict()["row_tokens"] < stats.tokens / 2


def test_units_per_row_deals_a_session_into_rows(
    tiny_backbones, instrument, sessions, train_corpus
):
    """Each session's items are dealt over rows of at most N; every example in exactly one."""
    import torch
    from care.model.backbone import load_causal_lm

    path = tiny_backbones["llama"]
    examples, stats = two_sessions(path, instrument, sessions, train_corpus)
    rows = training_rows(examples, stats, "shared_prefix", units_per_row=5, seed=7)
    n_items = len(instrument.item_ids)
    per_session = -(-n_items // 5)
    assert len(rows) == 2 * per_session and stats.as_dict()["rows"] == len(rows)
    for sid in (sessions[0].session_id, sessions[1].session_id):
        mine = [r for r in rows if r.session_id == sid]
        dealt = sorted(i for r in mine for i in r.items)
        assert dealt == sorted(instrument.item_ids)  # each item once
        assert max(len(r.items) for r in mine) - min(len(r.items) for r in mine) <= 1
    # seeded: the same seed deals the same rows, another seed (almost surely) others
    again = training_rows(examples, SFTStats(), "shared_prefix", units_per_row=5, seed=7)
    other = training_rows(examples, SFTStats(), "shared_prefix", units_per_row=5, seed=8)
    assert [r.items for r in again] == [r.items for r in rows]
    assert [r.items for r in other] != [r.items for r in rows]
    # the prefix is paid once per row: more tokens than one row per session, fewer than none
    whole = training_rows(examples, SFTStats(), "shared_prefix")
    assert sum(len(r.input_ids) for r in whole) < stats.as_dict()["row_tokens"] < stats.tokens
    # and the dealt rows still give the unpacked examples' loss and gradients
    model = load_causal_lm(path, dtype=torch.float64)
    assert_same(model, examples, rows, SPLIT, True, rtol=RTOL)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("implementation", [SPLIT, "sdpa", "eager"])
@pytest.mark.parametrize("logits_only", [True, False])
def test_packed_loss_and_gradients_equal_unpacked(
    tiny_backbones, instrument, sessions, train_corpus, arch, implementation, logits_only
):
    import torch
    from care.model.backbone import load_causal_lm

    path = tiny_backbones[arch]
    # two sessions of different lengths: the packed batch pads one of them
    examples, stats = two_sessions(path, instrument, sessions, train_corpus)
    rows = training_rows(examples, stats, "shared_prefix")
    assert len({len(r.input_ids) for r in rows}) == 2
    model = load_causal_lm(path, dtype=torch.float64)
    assert_same(model, examples, rows, implementation, logits_only, rtol=RTOL)


@pytest.mark.parametrize("granularity", ["dimension", "session"])
def test_other_granularities_pack(tiny_backbones, instrument, sessions, train_corpus, granularity):
    import torch
    from care.model.backbone import load_causal_lm

    path = tiny_backbones["qwen2"]
    tok = load_tokenizer(path)
    examples, stats = make_examples(
        tok,
        load_end_of_turn_ids(path, tok),
        instrument,
        sessions[:1],
        rationales_of(train_corpus),
        granularity,
        max_length=4096,  # a whole session's answer: twelve rationales
    )
    rows = training_rows(examples, stats, "shared_prefix")
    assert len(rows) == 1 and len(rows[0].branches) == len(examples)
    if granularity == "session":  # one unit: the packed row is the example itself
        assert rows[0].input_ids == examples[0].input_ids
    model = load_causal_lm(path, dtype=torch.float64)
    assert_same(model, examples, rows, SPLIT, True, rtol=RTOL)


def test_packing_in_bf16(tiny_backbones, instrument, sessions, train_corpus):
    """bf16 weights (the GPU setting): the same loss to bf16 precision, finite gradients."""
    import torch
    from care.model.backbone import load_causal_lm

    path = tiny_backbones["llama"]
    examples, stats = two_sessions(path, instrument, sessions, train_corpus)
    rows = training_rows(examples, stats, "shared_prefix")
    model = load_causal_lm(path, dtype=torch.bfloat16)
    register()
    model.set_attn_implementation(SPLIT)
    unpacked = Collator(0)([e.to_record() for e in examples])
    packed = attention_inputs(PackedCollator(0)([r.to_record() for r in rows]), SPLIT, model.dtype)
    loss_u, _ = loss_and_grads(model, unpacked)
    loss_p, grads = loss_and_grads(model, packed)
    assert float(loss_p) == pytest.approx(float(loss_u), rel=2e-2)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_flash_attention_is_refused():
    import torch

    batch = PackedCollator(0)(
        [{"input_ids": [1, 2, 3], "labels": [IGNORE, IGNORE, 3], "prefix_len": 1, "branches": [2]}]
    )
    with pytest.raises(ValueError, match="attn_implementation"):
        attention_inputs(batch, "flash_attention_2", torch.float32)


def test_unknown_packing_is_refused():
    with pytest.raises(ValueError, match="training.packing"):
        training_rows([], SFTStats(), "sideways")


def test_packing_on_the_real_smollm2_checkpoint(
    smollm2_shallow, instrument, sessions, train_corpus
):
    """Packed loss and gradients equal the unpacked ones on the real SmolLM2 checkpoint, cut
    in depth (``smollm2_shallow``, tests/conftest.py): its tokenizer and chat template (a
    long shared prefix), its width and grouped-query attention, its first layers' weights.
    Packing changes the attention mask and positions every layer sees alike, so two real
    layers test it as thirty would, at a fifteenth of the decoder stack's cost."""
    import dataclasses

    import torch
    from care.model.backbone import load_causal_lm

    model = load_causal_lm(smollm2_shallow, dtype=torch.float32)
    tok = load_tokenizer(smollm2_shallow)
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA
    session = sessions[0]
    # a short dialogue and two items keep a 135M-parameter backward pass quick on a CPU
    session = dataclasses.replace(session, turns=session.turns[:2])
    examples, stats = make_examples(
        tok,
        [tok.convert_tokens_to_ids("<|im_end|>")],
        instrument,
        [session],
        rationales_of(train_corpus),
    )
    examples = examples[:2]
    rows = training_rows(examples, stats, "shared_prefix")
    assert rows[0].prefix_len > 50
    assert_same(model, examples, rows, SPLIT, True, rtol=1e-4)


def test_packed_training_follows_the_unpacked_run(
    tmp_path, tiny_backbones, train_corpus, instrument
):
    """Trainer + ZeRO-3 + gradient checkpointing: one packed session per step takes the
    steps of its 12 unpacked examples per step (same data order, same losses and weights)."""
    import csv

    import torch
    from care.train.run import prepare

    from tests.test_train import make_run, train_only, weights

    common = {
        "sampling": "sequential",
        "logging_steps": 1,
        "num_train_epochs": 1,
        "deepspeed": "workflow/deepspeed/zero3.json",
        "gradient_checkpointing": True,
        "per_device_train_batch_size": 12,  # examples, packed or not: one packed row per step
    }
    runs = {"none": {"packing": "none"}, "shared_prefix": {"packing": "shared_prefix"}}
    losses, final = {}, {}
    for mode, hp in runs.items():
        run = make_run(
            tmp_path / mode, train_corpus, tiny_backbones["llama"], instrument, **common, **hp
        )
        *_, rows, stats = prepare(run)
        assert stats.examples == 12 * stats.sessions  # a step of 12 examples is one session
        train_only(run)
        with open(run.checkpoint_dir / "train_log.csv") as handle:
            losses[mode] = [float(r["loss"]) for r in csv.DictReader(handle)]
        last = max(run.checkpoint_dir.glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
        final[mode] = weights(last)
    assert len(losses["none"]) == len(losses["shared_prefix"]) > 3
    assert losses["shared_prefix"] == pytest.approx(losses["none"], rel=1e-4)
    for name, tensor in final["none"].items():
        assert torch.allclose(final["shared_prefix"][name], tensor, atol=1e-5), name


def test_batch_counts_examples_and_packing_may_differ_per_variant(
    tmp_path, train_corpus, instrument
):
    """per_device_train_batch_size means examples whatever the packing (Table 7's meaning);
    ``packing: {rationale: ..., score_only: ...}`` resolves per run."""
    from care.sft import Example, PackedSession, rows_per_step
    from care.train.settings import TrainingSettings

    from tests.test_train import make_run

    unpacked = [Example("s", ("1",), [1, 2], [IGNORE, 2], 1)] * 24
    packed = [PackedSession("s", ("1",) * 12, [1] * 30, [IGNORE] * 30, 6, (2,) * 12)] * 2
    dealt = [PackedSession("s", ("1",) * 4, [1] * 14, [IGNORE] * 14, 6, (2,) * 4)] * 6
    assert rows_per_step(32, unpacked) == 32
    assert rows_per_step(32, packed) == 3  # 32 examples ~ 3 sessions of 12 items
    assert rows_per_step(32, dealt) == 8
    assert rows_per_step(4, packed) == 1  # at least one row
    by_variant = {
        "packing": {"rationale": "none", "score_only": "shared_prefix"},
        "units_per_row": {"score_only": 4},
    }
    recipe = {"learning_rate": 1e-5, "per_device_train_batch_size": 1, "num_train_epochs": 1}

    def resolved(section, variant):
        settings = TrainingSettings.from_config({**recipe, **section}, variant)
        return {"packing": settings.packing, "units_per_row": settings.units_per_row}

    assert resolved(by_variant, "score_only") == {"packing": "shared_prefix", "units_per_row": 4}
    assert resolved(by_variant, "rationale") == {"packing": "none", "units_per_row": None}
    assert resolved({"packing": "shared_prefix", "units_per_row": 6}, "rationale") == {
        "packing": "shared_prefix",
        "units_per_row": 6,
    }
    with pytest.raises(ValueError, match="training.packing"):
        resolved({"packing": {"rationale": "zip"}}, "rationale")
    for variant in ("rationale", "score_only"):
        run = make_run(tmp_path, train_corpus, tmp_path, instrument, variant, **by_variant)
        assert run.settings.packing == by_variant["packing"][variant]
        assert run.settings.units_per_row == by_variant["units_per_row"].get(variant)
