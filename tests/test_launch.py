"""Both launchers start the training ranks: the DeepSpeed launcher here (2 CPU ranks), torchrun
in test_train.py and test_train_lifecycle.py.

The DeepSpeed launcher passes ``--local_rank=N`` to the script unless told not to, and with
``--num_gpus`` it ignores the GPUs SLURM assigned (``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import pytest
from care.train.checkpoints import full_states
from care.train.launch import Plan, launch
from care.train.run import prepare, stage_checkpoint_dir
from care.train.trainer import main as trainer_main

from tests.test_train import make_run


def test_deepspeed_command_names_the_visible_gpus(monkeypatch):
    plan = Plan.make(gpus=2, cpu_ranks=1, threads=16, launcher="deepspeed")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    cmd = plan.command("job.json")
    assert cmd[cmd.index("--include") + 1] == "localhost:4,6"
    assert "--num_gpus" not in cmd and "--no_local_rank" in cmd
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(RuntimeError, match="CUDA_VISIBLE_DEVICES=3"):
        plan.command("job.json")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    cmd = plan.command("job.json")
    assert cmd[cmd.index("--num_gpus") + 1] == "2"


def test_worker_accepts_a_local_rank_argument(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("care.train.trainer.run_worker", seen.append)
    job = tmp_path / "job.json"
    job.write_text('{"x": 1}', encoding="utf-8")
    assert trainer_main(["--job", str(job), "--local_rank=1"]) == 0
    assert seen == [{"x": 1}]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["deepspeed"])
def test_two_cpu_ranks_train_with_the_deepspeed_launcher(
    launcher, tmp_path, tiny_backbones, train_corpus, instrument
):
    # torchrun's two CPU ranks train in test_train.py (test_zero3_across_two_cpu_ranks, through
    # the CLI) and in test_train_lifecycle.py (test_a_retry_on_fewer_ranks_starts_afresh, this
    # test's launch and check, then a retry): not a third time here
    run = make_run(
        tmp_path,
        train_corpus,
        tiny_backbones["llama"],
        instrument,
        deepspeed="workflow/deepspeed/zero3.json",
        cpu_ranks=2,
        launcher=launcher,
        num_train_epochs=1,
    )
    *_, examples, _ = prepare(run)
    plan = Plan.make(0, 2, 2, launcher)
    job = stage_checkpoint_dir(run, examples, plan)
    launch(plan, job, run.checkpoint_dir / "job.json")
    assert [c.epoch_end for c in full_states(run.checkpoint_dir)] == [1]
