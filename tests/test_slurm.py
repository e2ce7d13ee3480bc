"""The tiny demo DAG submitted to a real SLURM cluster through profiles/slurm.

Needs a running cluster (``.ci/slurm_setup.sh`` makes a single-node one) and runs only with
``CARE_SLURM=1`` (``.ci/slurm_test.sh`` sets it): with it set, a missing cluster is a
failure, not a skip, so CI cannot pass without really going through sbatch.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .cluster_helpers import snakemake, table_files
from .conftest import copy_workflow

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# The paper's tables: everything upstream of them (corpus, rationales, 12 fine-tunes, their
# inference, zero-shot and counselor baselines, metrics, the application) runs to make them.
TABLES = [f"results/table{n}.csv" for n in (1, 2, 3, 4, 5, 8)]

# A cluster without an accounting database (as the CI one): job status from squeue; check
# status often so the short CI jobs do not wait 40 s each.
SLURM_ARGS = (
    "--profile",
    "profiles/slurm",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--slurm-keep-successful-logs",
    "--latency-wait",
    "10",
)


@pytest.fixture(scope="module")
def cluster():
    if os.environ.get("CARE_SLURM") != "1":
        pytest.skip("set CARE_SLURM=1 with a running SLURM cluster (.ci/slurm_setup.sh)")
    if shutil.which("sinfo") is None:
        pytest.fail("CARE_SLURM=1 but there is no sinfo: run .ci/slurm_setup.sh first")
    proc = subprocess.run(
        ["sinfo", "--noheader", "--format", "%t"], capture_output=True, text=True, timeout=30
    )
    states = proc.stdout.split()
    assert proc.returncode == 0 and set(states) & {"idle", "mix", "alloc"}, (
        f"no usable SLURM node: {proc.stdout}{proc.stderr}"
    )
    return states


def test_tiny_dag_through_slurm_matches_local_run(cluster, tmp_path):
    local = copy_workflow(_mkdir(tmp_path / "local"))
    slurm = copy_workflow(_mkdir(tmp_path / "slurm"))

    ran_local = snakemake(local, *TABLES, "--configfile", ".test/config.yaml", timeout=3000)
    assert ran_local.returncode == 0, ran_local.stdout[-4000:] + ran_local.stderr[-4000:]

    # The cluster run also fills a between-workflow cache: cached rules run inside SLURM jobs.
    cache = tmp_path / "cache"
    ran_slurm = snakemake(
        slurm,
        *TABLES,
        *SLURM_ARGS,
        "--cache",
        "--configfile",
        ".test/config.yaml",
        # the CI nodes share this venv (no conda): jobs run in it, as the local run's
        env={"SNAKEMAKE_OUTPUT_CACHE": str(cache), "CARE_SLURM_SOFTWARE": "none"},
        cores=None,
        timeout=3000,
    )
    log = ran_slurm.stdout + ran_slurm.stderr
    assert ran_slurm.returncode == 0, log[-8000:] + _slurm_logs(slurm)

    submitted = re.findall(r"submitted with SLURM jobid (\d+)", log)
    assert submitted, "no job went through sbatch"
    remote_rules = set(re.findall(r"^rule (\w+):", log, re.M))
    assert {"train", "infer_finetuned", "infer_zero_shot"} <= remote_rules, remote_rules
    local_rules = set(re.findall(r"^localrule (\w+):", log, re.M))
    assert {"folds", "table2"} <= local_rules, local_rules  # light rules on the submit node
    print(f"{len(submitted)} SLURM jobs; cluster rules: {sorted(remote_rules)}")

    assert (slurm / "results/models/llama/rationale/fold1").is_symlink(), "train was not cached"
    assert any(cache.glob("*.parquet")), "no predictions in the cache"

    local_tables, slurm_tables = table_files(local), table_files(slurm)
    assert sorted(local_tables) == sorted(Path(t).name for t in TABLES)
    assert sorted(slurm_tables) == sorted(local_tables)
    for name, content in local_tables.items():
        assert slurm_tables[name] == content, f"{name} differs between local and SLURM runs"


def _mkdir(path):
    path.mkdir(parents=True)
    return path


def _slurm_logs(workdir) -> str:
    logs = sorted((workdir / ".snakemake/slurm_logs").rglob("*.log"))
    return "".join(f"\n--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in logs[-5:])
