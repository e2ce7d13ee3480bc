"""The fine-tune lifecycle around training: the checkpoint lock, what a rerun rescores or
retrains after settings change, missing epochs, cut answers, ranks (world size, scoring)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
from care.errors import CareInputError
from care.train import checkpoints, select
from care.train import run as run_module
from care.train.launch import Plan
from care.train.run import finetune, prepare, stage_checkpoint_dir
from care.train.settings import TrainingSettings

from tests.test_train import make_run


class Trained(Exception):
    """Raised instead of training: a rerun that must not (or must) train."""


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_backbones, train_corpus, instrument):
    """A finished 2-epoch fine-tune that kept every epoch's weights."""
    root = tmp_path_factory.mktemp("finished")
    run = make_run(root, train_corpus, tiny_backbones["llama"], instrument, keep_epoch_weights=True)
    finetune(run)
    return run


def rerun(finished, tmp_path, monkeypatch, *, may_train=False, **hp):
    """A copy of the finished run's checkpoint dir, rerun with ``hp`` changed; scored epochs."""
    import dataclasses

    ckpt = tmp_path / "ckpt"
    shutil.copytree(finished.checkpoint_dir, ckpt)
    settings = TrainingSettings.from_config({**finished.settings.as_json(), **hp})
    run = dataclasses.replace(
        finished, settings=settings, checkpoint_dir=ckpt, out=tmp_path / "model"
    )
    scored = []
    score = run_module.EpochLoop.score

    def counting(self, epoch):
        scored.append(epoch)
        score(self, epoch)

    def no_training(*args, **kwargs):
        raise Trained()

    monkeypatch.setattr(run_module.EpochLoop, "score", counting)
    if not may_train:
        monkeypatch.setattr(run_module, "launch", no_training)
    return run, scored


def validation(finished, **changes):
    return {"validation": {**finished.settings.validation.as_dict(), **changes}}


def test_rerun_with_same_settings_only_exports(finished, tmp_path, monkeypatch):
    run, scored = rerun(finished, tmp_path, monkeypatch)
    record = finetune(run)
    assert scored == [] and record["chosen"]["epoch"] in (1, 2)
    assert (run.out / "model.safetensors").is_file()
    assert record["examples_per_step"] == record["effective_batch"] == 8  # unpacked


def test_changed_choice_setting_rescores_nothing(finished, tmp_path, monkeypatch):
    run, scored = rerun(finished, tmp_path, monkeypatch, **validation(finished, min_parse_rate=0.9))
    finetune(run)
    assert scored == []


def test_changed_validation_rescores_the_kept_epochs(finished, tmp_path, monkeypatch):
    run, scored = rerun(finished, tmp_path, monkeypatch, **validation(finished, max_new_tokens=8))
    record = finetune(run)
    assert scored == [1, 2]  # no training: every epoch's weights were kept
    keys = {r["validation_key"] for r in select.read_scores(run.checkpoint_dir)}
    assert len(keys) == 2  # the old settings' scores are kept beside the new ones
    assert record["validation"]["max_new_tokens"] == 8
    assert record["validation"]["key"] in keys


def test_changed_validation_without_weights_starts_afresh(
    finished, tmp_path, monkeypatch, caplog
):
    run, _ = rerun(
        finished, tmp_path, monkeypatch, keep_epoch_weights=False,
        **validation(finished, max_new_tokens=8),
    )
    chosen = json.loads((finished.out / "selection.json").read_text())["chosen"]["epoch"]
    checkpoints.drop_epochs(run.checkpoint_dir, {chosen})  # what keep_epoch_weights: false kept
    caplog.set_level("WARNING", logger="care.train")
    with pytest.raises(Trained):
        finetune(run)
    assert "cannot all be rescored: starting afresh" in caplog.text
    assert not (run.checkpoint_dir / select.SCORES).exists()  # no partial view survives


def test_a_missing_epoch_fails_loudly(finished, tmp_path, monkeypatch):
    run, _ = rerun(finished, tmp_path, monkeypatch)
    records = [r for r in select.read_scores(run.checkpoint_dir) if r["epoch"] != 1]
    (run.checkpoint_dir / select.SCORES).write_text(
        "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8"
    )
    shutil.rmtree(run.checkpoint_dir / "epoch-1")  # as another trainer's clean-up would
    with pytest.raises(CareInputError, match="epoch 1 was trained but neither"):
        finetune(run)
    assert not run.out.exists()


def test_selection_resumes_where_it_stopped(finished, tmp_path, monkeypatch, capsys):
    run, scored = rerun(finished, tmp_path, monkeypatch)
    records = select.read_scores(run.checkpoint_dir)
    (run.checkpoint_dir / select.SCORES).write_text(json.dumps(records[0]) + "\n")
    capsys.readouterr()
    finetune(run)  # killed after scoring epoch 1: only epoch 2 is scored again
    assert scored == [2]
    assert select.read_scores(run.checkpoint_dir)[0] == records[0]
    # selection's own bar in the job log: epochs scored of all, from where it resumed
    log = capsys.readouterr().err
    shown = [x for x in log.splitlines() if x.startswith("progress selection:")]
    assert " 1/2 " in shown[0] and " 2/2 " in shown[-1] and "<" in shown[-1]
    assert "\x1b" not in log  # the inference bar inside it moves no cursor in a log


def write_cut(run, cut_and_r):
    """Rewrite the run's scores: epoch e with cut rate and mean r ``cut_and_r[e]``; an epoch
    with no weights yet gets epoch 2's (hard links), as if trained."""
    records = {r["epoch"]: r for r in select.read_scores(run.checkpoint_dir)}
    for epoch, (cut, r) in cut_and_r.items():
        record = {**records.get(epoch, records[2]), "epoch": epoch}
        record.update(answers_cut=round(record["items"] * cut), cut_rate=cut, mean_pearson=r)
        records[epoch] = record
        if epoch not in checkpoints.epoch_weights(run.checkpoint_dir):
            dest = run.checkpoint_dir / f"epoch-{epoch}"
            shutil.copytree(run.checkpoint_dir / "epoch-2", dest, copy_function=os.link)
            (dest / "epoch.json").unlink()
            (dest / "epoch.json").write_text(json.dumps({"epoch": epoch, "step": 9}))
    (run.checkpoint_dir / select.SCORES).write_text(
        "".join(json.dumps(records[e]) + "\n" for e in sorted(records)), encoding="utf-8"
    )


def epoch_loop(run):
    """The run's EpochLoop, set up as :func:`finetune` sets it up (nothing trained)."""
    _, _, val, examples, stats = prepare(run)
    plan = Plan.make(run.gpus, 1, 1, "torchrun")
    settings = run_module.validation_settings(run.settings, stats)
    vjob = run_module.validation_job(run, plan, val, settings, stats)
    return run_module.EpochLoop(run, plan, examples, vjob, settings)


#: epoch: (cut rate, mean r). Every epoch over max_cut_rate 0; epoch 2 has the fewest cut,
#: epoch 1 the best r (chosen from max_cut_rate 0.5 on), epoch 3 is chosen by none.
ALL_CUT = {1: (0.5, 0.9), 2: (0.25, 0.1), 3: (0.5, 0.05)}


def test_no_epoch_within_max_cut_rate_keeps_what_a_rerun_needs(finished, tmp_path, monkeypatch):
    run, _ = rerun(
        finished, tmp_path, monkeypatch, keep_epoch_weights=False,
        **validation(finished, max_cut_rate=0.0),
    )
    write_cut(run, ALL_CUT)
    epoch_loop(run).retain()  # after scoring an epoch, every epoch over the limit
    assert set(checkpoints.epoch_weights(run.checkpoint_dir)) == {1, 2}


def test_every_epoch_cut_falls_back_with_a_warning(finished, tmp_path, monkeypatch, caplog):
    run, scored = rerun(
        finished, tmp_path / "first", monkeypatch, keep_epoch_weights=False,
        **validation(finished, max_cut_rate=0.0),
    )
    write_cut(run, {e: ALL_CUT[e] for e in (1, 2)})
    caplog.set_level("WARNING", logger="care.train")
    record = finetune(run)
    assert scored == [] and record["chosen"]["epoch"] == 2  # the fewest cut answers
    assert "were cut at max_new_tokens=12" in record["cut_fallback"]
    assert "Exporting epoch 2" in caplog.text
    assert "max_cut_rate: 0.5 exports epoch 1" in caplog.text
    assert "retrains all 2 epochs from the start (~" in caplog.text  # this run's training time
    assert set(checkpoints.epoch_weights(run.checkpoint_dir)) == {1, 2}
    # the rerun the warning names trains and rescores nothing
    again, scored = rerun(run, tmp_path / "again", monkeypatch, **validation(run, max_cut_rate=0.5))
    assert finetune(again)["chosen"]["epoch"] == 1 and scored == []


def test_every_epoch_cut_fails_without_fallback(finished, tmp_path, monkeypatch):
    run, scored = rerun(
        finished, tmp_path, monkeypatch, keep_epoch_weights=True,
        **validation(finished, max_cut_rate=0.0, cut_fallback=False),
    )
    write_cut(run, {e: ALL_CUT[e] for e in (1, 2)})
    with pytest.raises(CareInputError, match="were cut at max_new_tokens=12") as failed:
        finetune(run)
    assert "max_cut_rate: 0.5 exports epoch 1" in str(failed.value)
    assert "rescores all 2 epochs from their kept weights" in str(failed.value)
    assert scored == [] and not run.out.exists()


def test_choose_skips_cut_epochs():
    clean = {"mean_pearson": 0.2, "parse_rate": 1.0, "cut_rate": 0.0}
    cut = {"mean_pearson": 0.9, "parse_rate": 1.0, "cut_rate": 0.01}
    assert select.choose([cut, clean], max_cut_rate=0.0) == 1
    assert select.choose([cut, clean], max_cut_rate=0.05) == 0
    assert select.choose([cut], max_cut_rate=0.0) is None
    more = {**cut, "cut_rate": 0.2, "mean_pearson": 0.95}
    worse = {**more, "mean_pearson": 0.1}
    assert select.fallback([more, cut, worse]) == 1
    assert select.choosable([more, cut, worse]) == {0, 1}


def test_a_second_trainer_is_refused(tiny_backbones, train_corpus, instrument, tmp_path):
    run = make_run(tmp_path, train_corpus, tiny_backbones["llama"], instrument)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom care.train.checkpoints import exclusive\n"
            f"with exclusive({str(run.checkpoint_dir)!r}):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CareInputError) as refused:
            finetune(run)
        message = str(refused.value)
        assert f"PID {holder.pid} on host {socket.gethostname()}" in message
        assert not (run.checkpoint_dir / "job.json").exists()  # nothing touched
    finally:
        holder.kill()
        holder.wait()
    with checkpoints.exclusive(run.checkpoint_dir):  # the kernel released the dead holder's lock
        pass


def test_world_size_is_part_of_the_fingerprint(
    tiny_backbones, train_corpus, instrument, tmp_path, caplog
):
    run = make_run(tmp_path, train_corpus, tiny_backbones["llama"], instrument)
    *_, examples, _ = prepare(run)
    stage_checkpoint_dir(run, examples, Plan.make(0, 2, 2, "torchrun"))
    marker = run.checkpoint_dir / "checkpoint-3"
    marker.mkdir()
    caplog.set_level("WARNING", logger="care.train")
    job = stage_checkpoint_dir(run, examples, Plan.make(0, 1, 1, "torchrun"))
    assert not marker.exists()
    assert "trained on 2 ranks (effective batch 16), this run has 1 (effective batch 8)" in (
        caplog.text
    )
    assert job["ranks"] == 1 and job["effective_batch"] == 8


def test_shards_cover_the_sessions_evenly(train_corpus, instrument):
    from care.sessions import load_sessions

    sessions = load_sessions(train_corpus["sessions"], instrument)
    shares = [select.shard(sessions, r, 3) for r in range(3)]
    ids = [s.session_id for share in shares for s in share]
    assert sorted(ids) == sorted(s.session_id for s in sessions) and len(set(ids)) == len(ids)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert select.shard(sessions, 1, 3) == shares[1]  # deterministic


@pytest.mark.slow
def test_scoring_over_two_ranks_matches_one(finished, tmp_path):
    vjob = select.ValidationJob.read(finished.checkpoint_dir / "validation.json")
    weights = checkpoints.epoch_weights(finished.checkpoint_dir)[2]
    job_path = finished.checkpoint_dir / "validation.json"
    one = select.score_epoch(vjob, job_path, weights, tmp_path / "one", 1)
    two = select.score_epoch(vjob, job_path, weights, tmp_path / "two", 2)
    assert sorted((tmp_path / "two").iterdir()) == [
        tmp_path / "two" / "rank-0-of-2.jsonl",
        tmp_path / "two" / "rank-1-of-2.jsonl",
    ]
    key = lambda r: (r["session_id"], r["item_id"])  # noqa: E731
    one, two = sorted(one, key=key), sorted(two, key=key)
    assert [key(r) for r in one] == [key(r) for r in two]
    assert all(a["parsed"] == b["parsed"] for a, b in zip(one, two, strict=True))
    scores = [b["score"] for b in two]
    assert [a["score"] for a in one] == pytest.approx(scores, abs=1e-4, nan_ok=True)
    # a retried job reuses a rank's finished answers
    (tmp_path / "two" / "rank-0-of-2.jsonl").write_text("")
    again = select.score_epoch(vjob, job_path, weights, tmp_path / "two", 2)
    assert len(again) == len(two) - len(select.shard(vjob.load()[1], 0, 2)) * 12


@pytest.mark.slow
def test_a_retry_on_fewer_ranks_starts_afresh(
    tiny_backbones, train_corpus, instrument, tmp_path, caplog
):
    """ZeRO-3 state from 2 CPU ranks, then a retry on 1: a log line and a clean run, no crash."""
    from care.io import write_json
    from care.train.launch import launch

    run = make_run(
        tmp_path,
        train_corpus,
        tiny_backbones["llama"],
        instrument,
        deepspeed="workflow/deepspeed/zero3.json",
        cpu_ranks=2,
    )
    *_, examples, _ = prepare(run)
    plan = Plan.make(0, 2, 2, "torchrun")
    job = stage_checkpoint_dir(run, examples, plan)
    job["pause_at_epoch_end"] = True  # a job that stopped after epoch 1
    write_json(run.checkpoint_dir / "job.json", job)
    launch(plan, job, run.checkpoint_dir / "job.json")
    assert [c.epoch_end for c in checkpoints.full_states(run.checkpoint_dir)] == [1]
    import dataclasses

    caplog.set_level("INFO", logger="care.train")
    retry = dataclasses.replace(run, settings=run.settings.replace(cpu_ranks=1))
    record = finetune(retry)
    assert "trained on 2 ranks (effective batch 16), this run has 1" in caplog.text
    assert record["ranks"] == 1 and [e["epoch"] for e in record["epochs"]] == [1, 2]


def test_mid_epoch_saves_by_time(monkeypatch):
    """save_minutes: a save after that much training since the last one, not at epoch ends."""
    from care.train import trainer
    from transformers import TrainerControl, TrainerState

    now = [1000.0]
    monkeypatch.setattr(trainer.time, "monotonic", lambda: now[0])
    callback = trainer.lifecycle_callback({"save_minutes": 30, "rotate": False})
    state, control = TrainerState(epoch=0.3, global_step=7), TrainerControl()
    callback.on_train_begin(None, state, control)
    now[0] += 29 * 60
    assert not callback.on_step_end(None, state, control).should_save
    now[0] += 61
    assert callback.on_step_end(None, state, control).should_save
    control.should_save = False
    callback.on_save(None, state, control)  # the clock restarts at each save
    now[0] += 25 * 60
    assert not callback.on_step_end(None, state, control).should_save
    state.epoch, now[0] = 1.0, now[0] + 3600  # an epoch end saves by itself
    assert not callback.on_step_end(None, state, control).should_save


def test_the_batch_records_whole_packed_rows(tiny_backbones, train_corpus, instrument, tmp_path):
    """Packed, a device takes a whole row (a session's 12 items) even when per-device
    examples say 1: the job and selection.json record the examples a step really holds."""
    run = make_run(tmp_path, train_corpus, tiny_backbones["llama"], instrument,
                   packing="shared_prefix", per_device_train_batch_size=1,
                   gradient_accumulation_steps=2)
    *_, rows, _ = prepare(run)
    job = stage_checkpoint_dir(run, rows, Plan.make(0, 2, 2, "torchrun"))
    assert job["effective_batch"] == 4  # 1 x 2 accumulation x 2 ranks, as configured
    assert job["examples_per_step"] == 12 * 2 * 2
    assert run_module.examples_per_step(run.settings, 2, rows) == job["examples_per_step"]


def test_a_restart_does_not_rehash_the_backbone(
    tiny_backbones, train_corpus, instrument, tmp_path, monkeypatch
):
    """Every start (retry, resume) reuses the backbone digest while its files are unchanged:
    reading an 8B model's 16 GB again kept the job's GPUs waiting."""
    from care.model import fingerprint

    backbone = tmp_path / "backbone"
    shutil.copytree(tiny_backbones["llama"], backbone)
    run = make_run(tmp_path, train_corpus, backbone, instrument)
    *_, examples, _ = prepare(run)
    hashed, digest = [], fingerprint.directory_digest
    monkeypatch.setattr(fingerprint, "directory_digest", lambda p: hashed.append(p) or digest(p))
    plan = Plan.make(0, 1, 1, "torchrun")
    first = stage_checkpoint_dir(run, examples, plan)
    again = stage_checkpoint_dir(run, examples, plan)
    assert len(hashed) == 1 and again["fingerprint"] == first["fingerprint"]
    config = backbone / "config.json"
    config.write_bytes(config.read_bytes())  # written again: another signature, same bytes
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))
    third = stage_checkpoint_dir(run, examples, plan)
    assert len(hashed) == 2 and third["fingerprint"] == first["fingerprint"]


def test_epochs_are_scored_while_the_ranks_wait(
    tiny_backbones, train_corpus, instrument, tmp_path, monkeypatch
):
    """One launch trains every epoch: each is scored after its save while training waits (no
    exit, no reload of the backbone and the optimizer state per epoch)."""
    launches, real = [], run_module.launch

    def counting(*args, **kwargs):
        launches.append(kwargs.get("on_epoch_saved"))
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "launch", counting)
    record = finetune(make_run(tmp_path, train_corpus, tiny_backbones["llama"], instrument))
    assert len(launches) == 1 and launches[0] is not None
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    scores = select.read_scores(tmp_path / "ckpt")
    assert all(r["train_seconds"] > 0 for r in scores)  # each epoch's own training time
