"""The GPU check's CPU path: every step runs at a tiny size and reports its figures."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_gpu_check_runs_its_cpu_path(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(REPO / ".ci/gpu_check.sh"), str(out)], capture_output=True, text=True,
        env=env, timeout=900, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["ok"] and not report["gpu"]
    steps = report["steps"]
    assert set(steps) == {"environment", "bench_train", "train_and_select", "bench_infer"}
    assert steps["bench_train"]["tokens_per_second"] > 0
    assert steps["train_and_select"]["epochs_scored"] == 2
    # validation decoded with the budget the training answers need (max_new_tokens auto)
    train = steps["train_and_select"]
    assert train["validation_max_new_tokens"] == train["answer_token_limit"] > 20
    assert steps["bench_infer"]["identical_outputs"] is True
    assert steps["environment"]["versions"]["transformers"]
