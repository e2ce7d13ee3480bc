"""Fine-tuning: loss on answers only, launch plans, resume, determinism, selection, ZeRO-3."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math

import pytest
from care.train.launch import Plan, launch
from care.train.run import FineTune, finetune, prepare, stage_checkpoint_dir
from care.train.settings import TrainingSettings

from .conftest import care_in_process

HP = {
    "learning_rate": 5e-3,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "num_train_epochs": 2,
    "optim": "adamw_torch",
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "seed": 123,
    "bf16": "auto",
    "gradient_checkpointing": False,
    "deepspeed": "workflow/deepspeed/zero2.json",
    "answer_logits_only": True,
    "sampling": "group_by_length",
    "logging_steps": 2,
    "selection": "inner_split",
    "inner_val_fraction": 0.3,
    # max_cut_rate 1: a tiny model trained for 2 epochs rarely ends its answer in 12 tokens
    "validation": {
        "max_new_tokens": 12,
        "batch_size": 48,
        "scoring": "expected",
        "max_cut_rate": 1,
    },
    "cpu_ranks": 1,
    "launcher": "torchrun",
}


def make_run(tmp_path, corpus, backbone, instrument, variant="score_only", **hp) -> FineTune:
    from care import WORKFLOW_DIR

    merged = {**HP, **hp}
    if merged.get("deepspeed"):
        merged["deepspeed"] = str(WORKFLOW_DIR / "deepspeed" / merged["deepspeed"].split("/")[-1])
    return FineTune(
        backbone=backbone,
        sessions=corpus["sessions"],
        folds=corpus["folds"],
        instrument=instrument.path,
        fold=1,
        variant=variant,
        granularity="item",
        max_length=512,
        settings=TrainingSettings.from_config(merged, variant),
        checkpoint_dir=tmp_path / "ckpt",
        out=tmp_path / "model",
        rationales=corpus["rationales"],
    )


def train_only(run: FineTune, **lifecycle) -> None:
    """Prepare and train all epochs in one go (no selection): every checkpoint stays."""
    *_, examples, _ = prepare(run)
    plan = Plan.make(0, run.settings.cpu_ranks, 1, run.settings.launcher)
    job = stage_checkpoint_dir(run, examples, plan)
    job.update({"pause_at_epoch_end": False, "rotate": False, **lifecycle})
    launch(plan, job, run.checkpoint_dir / "job.json")


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def same_weights(a, b) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- units


def test_answer_logits_only_gives_the_same_loss(tiny_backbones, train_corpus, instrument, tmp_path):
    import torch
    from care.model.backbone import load_causal_lm
    from care.train.trainer import Collator

    run = make_run(tmp_path, train_corpus, tiny_backbones["llama"], instrument, "rationale")
    *_, examples, _ = prepare(run)
    rows = [e.to_record() for e in examples[:6]]
    model = load_causal_lm(run.backbone, dtype="float32")
    tok_pad = 0
    full = Collator(tok_pad, answer_logits_only=False)(rows)
    trimmed = Collator(tok_pad, answer_logits_only=True)(rows)
    assert trimmed["logits_to_keep"] < full["input_ids"].shape[1]
    losses, grads = [], []
    for batch in (full, trimmed):
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.model.embed_tokens.weight.grad.clone())
    assert torch.allclose(losses[0], losses[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_launch_plans():
    cpu = Plan.make(gpus=0, cpu_ranks=2, threads=4, launcher="torchrun")
    assert (cpu.ranks, cpu.device, cpu.threads_per_rank) == (2, "cpu", 2)
    assert cpu.env()["DS_ACCELERATOR"] == "cpu" and cpu.env()["OMP_NUM_THREADS"] == "2"
    cmd = cpu.command("job.json")
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert cmd[cmd.index("--nproc_per_node") + 1] == "2"
    assert cmd[-4:] == ["-m", "care.train.trainer", "--job", "job.json"]
    gpu = Plan.make(gpus=8, cpu_ranks=2, threads=16, launcher="deepspeed")
    assert (gpu.ranks, gpu.device) == (8, "cuda")
    assert gpu.command("j")[1:3] == ["-m", "deepspeed.launcher.runner"]  # tests/test_launch.py
    assert "DS_ACCELERATOR" not in gpu.env() or gpu.env()["DS_ACCELERATOR"] != "cpu"
    with pytest.raises(ValueError, match="launcher"):
        Plan.make(0, 1, 1, "mpirun")


def test_selection_metric_and_choice(instrument):
    from care.train.select import choose, pearson_by_dimension
    from scipy.stats import pearsonr

    rows = []
    preds = {"goal": [1, 2, 3, 5], "task": [2, 2, 4, 4], "bond": [3, 3, 3, 3]}
    client = {"goal": [1, 2, 3, 4], "task": [4, 3, 2, 1], "bond": [2, 3, 2, 3]}
    for n in range(4):
        for dim in instrument.dimensions:
            for item in dim.items:
                rows.append(
                    {
                        "session_id": f"s{n}",
                        "item_id": item,
                        "parsed": True,
                        "score": float(preds[dim.id][n]),
                        "client_score": float(client[dim.id][n]),
                    }
                )
    r = pearson_by_dimension(rows, instrument)
    assert r["goal"] == pytest.approx(pearsonr(preds["goal"], client["goal"]).statistic)
    assert r["task"] == pytest.approx(pearsonr(preds["task"], client["task"]).statistic)
    assert math.isnan(r["bond"])  # constant predictions: undefined
    assert choose([{"mean_pearson": 0.2}, {"mean_pearson": math.nan}, {"mean_pearson": 0.2}]) == 0
    assert choose([{"mean_pearson": math.nan}, {"mean_pearson": math.nan}]) == 1
    # a high r on the few items that parsed does not win over a checkpoint that answers
    few = {"mean_pearson": 0.9, "parse_rate": 0.1}
    most = {"mean_pearson": 0.4, "parse_rate": 0.95}
    assert choose([few, most], min_parse_rate=0.5) == 1
    assert choose([few, most]) == 0
    assert choose([few, {"mean_pearson": 0.4, "parse_rate": 0.2}], min_parse_rate=0.5) == 1


def test_selection_optimises_what_the_tables_report(instrument):
    """A session with one unparsed item has no dimension score in the tables, so selection
    must drop it too (it used to average the items that parsed)."""
    import numpy as np
    import pandas as pd
    from care.evaluate import metrics
    from care.train.select import pearson_by_dimension

    rng = np.random.default_rng(0)
    rows = []
    for n in range(12):
        for item in instrument.item_ids:
            rows.append(
                {
                    "session_id": f"s{n}",
                    "client_id": f"c{n // 2}",
                    "item_id": item,
                    "parsed": True,
                    "score": float(rng.integers(1, 6)),
                    "client_score": float(rng.integers(1, 6)),
                }
            )
    goal_item = instrument.dimension("goal").items[0]
    for row in rows:  # one wildly wrong answer, unparsed: it must not count
        if row["session_id"] == "s0" and row["item_id"] == goal_item:
            row.update(parsed=False, score=99.0)
    frame = pd.DataFrame(rows).assign(model="m", variant="v", fold=1)
    table = metrics.fold_metrics(metrics.dimension_scores(frame, instrument))
    selected = pearson_by_dimension(rows, instrument)
    for dim, r in zip(table["dimension"], table["pearson"], strict=True):
        assert selected[dim] == pytest.approx(r, abs=1e-12)
    assert table.set_index("dimension").at["goal", "n_scored"] == 11


def test_a_changed_configuration_starts_afresh(tiny_backbones, train_corpus, instrument, tmp_path):
    run = make_run(tmp_path, train_corpus, tiny_backbones["llama"], instrument)
    *_, examples, _ = prepare(run)
    plan = Plan.make(0, 1, 1, "torchrun")
    stage_checkpoint_dir(run, examples, plan)
    marker = run.checkpoint_dir / "checkpoint-3"
    marker.mkdir()
    stage_checkpoint_dir(run, examples, plan)
    assert marker.exists()  # same run: checkpoints kept for resuming
    changed = make_run(
        tmp_path, train_corpus, tiny_backbones["llama"], instrument, learning_rate=1e-3
    )
    stage_checkpoint_dir(changed, examples, plan)
    assert not marker.exists()


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_backbones, train_corpus, instrument):
    root = tmp_path_factory.mktemp("uninterrupted")
    run = make_run(root, train_corpus, tiny_backbones["llama"], instrument)
    train_only(run)
    return run


def test_same_seed_same_weights(uninterrupted, tmp_path, tiny_backbones, train_corpus, instrument):
    again = make_run(tmp_path, train_corpus, tiny_backbones["llama"], instrument)
    train_only(again)
    names = sorted(p.name for p in uninterrupted.checkpoint_dir.glob("checkpoint-*"))
    assert len(names) == 2  # one per epoch
    for name in names:
        assert same_weights(
            weights(uninterrupted.checkpoint_dir / name), weights(again.checkpoint_dir / name)
        )


def test_killed_run_resumes_to_the_same_weights(
    uninterrupted, tmp_path, tiny_backbones, train_corpus, instrument, monkeypatch
):
    from care.train import trainer as trainer_module
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt("killed after the first checkpoint")

    make = trainer_module.make_trainer

    def crashing(*args, **kwargs):
        t = make(*args, **kwargs)
        t.add_callback(Crash())
        return t

    run = make_run(tmp_path, train_corpus, tiny_backbones["llama"], instrument)
    monkeypatch.setattr(trainer_module, "make_trainer", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_only(run)
    assert [p.name for p in run.checkpoint_dir.glob("checkpoint-*")] != []
    monkeypatch.setattr(trainer_module, "make_trainer", make)
    train_only(run)  # resumes from the epoch-1 checkpoint
    last = max(run.checkpoint_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert same_weights(weights(last), weights(uninterrupted.checkpoint_dir / last.name))
    with open(run.checkpoint_dir / "train_log.csv") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == sorted(set(steps)) and steps[-1] == int(last.name.split("-")[1])


def test_finetune_selects_exports_and_prunes(tmp_path, tiny_backbones, train_corpus, instrument):
    from care.model.backbone import check_causal_lm_dir, load_tokenizer

    run = make_run(tmp_path, train_corpus, tiny_backbones["qwen2"], instrument, "rationale")
    record = finetune(run)
    out = run.out
    assert check_causal_lm_dir(out).model_type == "qwen2"
    assert load_tokenizer(out).chat_template
    selection = json.loads((out / "selection.json").read_text())
    assert selection["selection"] == "inner_split" and len(selection["epochs"]) == 2
    assert selection["answer_order"] == "rationale_first"  # inference asks the model for it
    assert selection["chosen"]["epoch"] in (1.0, 2.0)
    assert set(selection["epochs"][0]["pearson"]) == {"goal", "task", "bond"}
    assert selection["sft"]["examples"] > 0 and "truncated_sessions" in selection["sft"]
    assert record["chosen"] == selection["chosen"]
    with open(out / "train_log.csv") as handle:
        log_rows = list(csv.DictReader(handle))
    assert log_rows and set(log_rows[0]) >= {"step", "loss", "learning_rate", "tokens_per_second"}
    assert not any(
        p.suffix == ".py" or p.name.startswith(("optimizer", "rng_state")) for p in out.iterdir()
    )
    # the optimizer state is gone; the chosen epoch's weights stay, hard-linked to the model
    assert list(run.checkpoint_dir.glob("checkpoint-*")) == []
    kept = list(run.checkpoint_dir.glob("epoch-*"))
    assert [p.name for p in kept] == [f"epoch-{selection['chosen']['epoch']}"]
    assert (kept[0] / "model.safetensors").samefile(out / "model.safetensors")
    assert selection["validation"]["sessions"] and len(selection["validation"]["sessions"]) == (
        selection["validation_sessions"]
    )
    assert [e["epoch"] for e in selection["epochs"]] == [1, 2]
    assert all(0 <= e["answers_cut"] <= e["items"] for e in selection["epochs"])


def _inventory(directory):
    from care.train import checkpoints

    full = [c.step for c in checkpoints.full_states(directory)]
    return full, sorted(checkpoints.epoch_weights(directory))


def test_checkpoints_kept_at_each_point_of_a_run(
    uninterrupted, tmp_path, tiny_backbones, train_corpus, instrument, monkeypatch
):
    """Retention: <= 2 full states while a save is written, 1 after it, the best epoch's
    weights, nothing resumable once the run is over; pauses and mid-epoch saves do not change
    the trained weights."""
    from care.train import checkpoints, select
    from care.train import run as run_module

    events = []
    rotate, score = checkpoints.rotate, run_module.EpochLoop.score

    def rotating(directory, keep):
        if keep is not None:  # after a save, before the older state goes
            events.append(("saving", *_inventory(directory)))
        rotate(directory, keep)
        events.append(("saved" if keep else "finished", *_inventory(directory)))

    def scoring(self, epoch):
        score(self, epoch)
        scored = select.read_scores(self.dir)
        best = scored[select.choose([select.from_json(r) for r in scored], 0.0, 1.0)]["epoch"]
        events.append(("scored", *_inventory(self.dir), best))

    monkeypatch.setattr(checkpoints, "rotate", rotating)
    monkeypatch.setattr(run_module.EpochLoop, "score", scoring)
    run = make_run(tmp_path, train_corpus, tiny_backbones["llama"], instrument, save_steps=5)
    record = finetune(run)
    per_epoch = record["epochs"][0]["step"]
    saves = [s for s in range(5, 2 * per_epoch, 5) if s % per_epoch] + [per_epoch, 2 * per_epoch]
    saves.sort()
    for kind, full, kept, *best in events:
        assert len(full) <= (2 if kind == "saving" else 1), (kind, full)
        if kind == "scored":
            assert kept == best  # only the best epoch so far keeps its weights
        assert len(kept) <= 1
    assert [e[1][-1] for e in events if e[0] == "saved"] == saves
    assert [e[0] for e in events if e[0] in ("scored", "finished")] == ["scored"] * 2 + ["finished"]
    assert events[-1][1:] == ([], [record["chosen"]["epoch"]])
    leftovers = [p.name for p in run.checkpoint_dir.rglob("*") if p.is_file()]
    assert not [n for n in leftovers if n.startswith(("optimizer", "rng_state", "scheduler"))]
    assert not [n for n in leftovers if "optim_states" in n or "model_states" in n]
    chosen = record["chosen"]["epoch"]
    reference = uninterrupted.checkpoint_dir / f"checkpoint-{chosen * per_epoch}"
    assert same_weights(weights(run.out), weights(reference))


def test_mid_epoch_kill_resumes_from_the_step_checkpoint(
    uninterrupted, tmp_path, tiny_backbones, train_corpus, instrument, monkeypatch, caplog
):
    from care.train import trainer as trainer_module
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt("killed at the first mid-epoch checkpoint")

    make = trainer_module.make_trainer
    monkeypatch.setattr(
        trainer_module, "make_trainer", lambda *a, **k: _with(make(*a, **k), Crash())
    )
    run = make_run(tmp_path, train_corpus, tiny_backbones["llama"], instrument)
    with pytest.raises(KeyboardInterrupt):
        train_only(run, save_steps=5, rotate=True)
    assert [p.name for p in run.checkpoint_dir.glob("checkpoint-*")] == ["checkpoint-5"]
    monkeypatch.setattr(trainer_module, "make_trainer", make)
    caplog.set_level("INFO", logger="care.train")
    train_only(run, save_steps=5, rotate=True)
    assert "checkpoint-5 (step 5," in caplog.text  # resumed mid-epoch, not from scratch
    last = max(run.checkpoint_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(list(run.checkpoint_dir.glob("checkpoint-*"))) == 1
    assert same_weights(weights(last), weights(uninterrupted.checkpoint_dir / last.name))


def _with(trainer, callback):
    trainer.add_callback(callback)
    return trainer


@pytest.mark.slow
def test_zero3_across_two_cpu_ranks(tmp_path, tiny_backbones, train_corpus, instrument, caplog):
    """torchrun with 2 CPU ranks, ZeRO-3 shards the model; gathered weights load back."""
    run = make_run(
        tmp_path,
        train_corpus,
        tiny_backbones["llama"],
        instrument,
        deepspeed="workflow/deepspeed/zero3.json",
        cpu_ranks=2,
        num_train_epochs=1,
    )
    args = [
        "train",
        "run",
        "--backbone",
        run.backbone,
        "--sessions",
        run.sessions,
        "--folds",
        run.folds,
        "--instrument",
        run.instrument,
        "--fold",
        "1",
        "--variant",
        "score_only",
        "--max-length",
        "512",
        "--hp",
        json.dumps(run.settings.as_json()),
        "--checkpoints",
        run.checkpoint_dir,
        "--out",
        run.out,
        "--threads",
        "2",
    ]
    with caplog.at_level(logging.INFO, logger="care.train"):
        care_in_process(*args)  # the command line; the ranks are torchrun's processes
    assert "launching 2 cpu ranks" in caplog.text
    selection = json.loads((run.out / "selection.json").read_text())
    assert selection["ranks"] == 2
    w = weights(run.out)
    assert all(t.numel() > 0 for t in w.values())  # gathered, not ZeRO-3 placeholders
    base = weights(run.backbone)
    assert not all(same_weights({k: w[k]}, {k: base[k]}) for k in base)  # it trained


def test_min_steps_raises_the_epochs_of_a_small_corpus(tmp_path, tiny_backbones, train_corpus,
                                                       instrument):
    """training.min_steps: a corpus too small for the configured epochs to reach that many
    optimizer steps trains more epochs (a tiny model needs a few hundred steps to learn)."""
    from types import SimpleNamespace

    from care.train.run import steps_per_epoch, with_step_floor

    run = make_run(tmp_path, train_corpus, tiny_backbones["llama"], instrument,
                   per_device_train_batch_size=4, num_train_epochs=2)
    rows = [SimpleNamespace(n_examples=1)] * 30
    plan = Plan.make(0, 1, 1, "torchrun")
    assert steps_per_epoch(run.settings, rows, 1) == 8  # ceil(30 / 4)
    assert with_step_floor(run, rows, plan) is run  # no floor
    floored = dataclasses.replace(run, settings=run.settings.replace(min_steps=50))
    assert with_step_floor(floored, rows, plan).settings.num_train_epochs == 7  # ceil(50 / 8)
    packed = [SimpleNamespace(n_examples=4)] * 30  # 4 examples a row: 1 row a step
    assert steps_per_epoch(run.settings, packed, 1) == 30
