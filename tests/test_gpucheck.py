"""The GPU check's CPU path: every step runs at a tiny size and reports its figures."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_gpu_check_runs_its_cpu_path(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "CARE_GPU_CHECK_ALLOW_CPU": "1"}
    done = subprocess.run(
        [str(REPO / ".ci/gpu_check.sh"), str(out)], capture_output=True, text=True,
        env=env, timeout=900, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["ok"] and report["complete"] and not report["gpu"]
    steps = report["steps"]
    assert set(steps) == {
        "environment", "bench_train", "train_and_select", "bench_infer", "label_probs"
    }
    assert steps["bench_train"]["tokens_per_second"] > 0
    assert steps["train_and_select"]["epochs_scored"] == 2
    # validation decoded with the budget the training answers need (max_new_tokens auto)
    train = steps["train_and_select"]
    assert train["validation_max_new_tokens"] == train["answer_token_limit"] > 20
    assert steps["bench_infer"]["identical_outputs"] is True
    assert steps["bench_infer"]["tokens_to_first_divergence"]["identical_prompts"] > 0
    probs = steps["label_probs"]
    assert probs["label_probs_compared"] >= 12 and probs["max_label_prob_diff"] < 1e-4
    assert steps["environment"]["versions"]["transformers"]


def test_gpu_check_fails_when_torch_cannot_use_a_gpu(tmp_path):
    """The script's default (--require-gpu): a CPU-only torch fails at once, saying why."""
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "care.cli", "bench", "gpu-check", "--require-gpu", "--out",
         str(out)], capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert not report["ok"] and not report["complete"]
    assert "cannot use a GPU" in report["steps"]["environment"]["error"]
    assert list(report["steps"]) == ["environment"]  # nothing ran on the CPU instead


def test_gpu_check_writes_each_step_as_it_finishes(tmp_path, monkeypatch):
    from care import gpucheck

    out = tmp_path / "report.json"
    seen = []

    def first(cuda, work, args):
        return {"ok": True, "figure": 1}

    def second(cuda, work, args):  # what a kill during this step would leave
        seen.append(json.loads(out.read_text(encoding="utf-8")))
        raise RuntimeError("killed")

    monkeypatch.setattr(gpucheck, "STEPS", (("first", first), ("second", second)))
    args = argparse.Namespace(out=str(out), workdir=str(tmp_path / "work"), require_gpu=False,
                              infer_sessions=1)
    assert gpucheck.run(args) == 1
    assert seen[0]["steps"]["first"]["figure"] == 1 and seen[0]["complete"] is False
    final = json.loads(out.read_text(encoding="utf-8"))
    assert final["complete"] and "killed" in final["steps"]["second"]["error"]


def test_tokens_to_first_divergence():
    from care.bench.infer import divergence

    def words(text, add_special_tokens):
        return {"input_ids": text.split()}

    found = divergence(["a b c d", "x y", "p q"], ["a b z d", "x y", "r"], words)
    assert found == {"min": 0, "median": 2, "identical_prompts": 1, "prompts": 3}
