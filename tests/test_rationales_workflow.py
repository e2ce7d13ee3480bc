"""The rationale rules end to end on the tiny test config (Snakemake in a scratch directory)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from care.rationales.sheet import OUTPUT_COLUMNS
from care.rationales.stats import STATS_COLUMNS

from .conftest import TINY_CONFIG, run_snakemake

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str):
    exe = shutil.which("snakemake") or str(Path(sys.executable).parent / "snakemake")
    return subprocess.run(
        [
            exe,
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(workdir),
            "--configfile",
            str(REPO / ".test" / "config.yaml"),
            "--cores",
            "2",
            *args,
            "--config",
            f"instrument={REPO / 'workflow/instruments/wai_sr.yaml'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_rationales_from_scratch(tiny_finished, instrument):
    """The rationale stages of the shared tiny run (conftest.tiny_finished, from scratch):
    drafts, the simulated expert's sheet, the final rationales and their statistics."""
    work = tiny_finished
    frame = pd.read_parquet(work / "results/rationales.parquet")
    assert tuple(frame.columns) == OUTPUT_COLUMNS
    sessions = pd.read_json(work / "results/demo/sessions.jsonl", lines=True)
    assert len(frame) == len(sessions) * len(instrument.item_ids)
    assert set(frame["editor_id"]) == {"demo-expert"}
    refs = pd.read_json(
        work / "results/demo/reference_rationales.jsonl", lines=True, dtype={"item_id": str}
    )
    merged = frame.merge(refs, on=["session_id", "item_id"])
    assert (merged["final"] == merged["rationale"]).all()  # the simulated expert's edits
    stats = pd.read_csv(work / "results/rationale_stats.csv")
    assert tuple(stats.columns) == STATS_COLUMNS
    assert stats["dimension"].tolist() == [*instrument.dimension_ids, "overall"]
    assert "extractive drafts" in (work / "logs/rationales/draft.log").read_text()
    # nothing left to do on a rerun
    again = run_snakemake(work, "-n", "results/rationale_stats.csv", *TINY_CONFIG)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_real_data_needs_the_edited_sheet(tmp_path):
    real = tmp_path / "real.yaml"  # real data: the reviewer's sheet, no simulated expert
    real.write_text(
        "rationales:\n  backend: extractive\n  cache_dir: results/cache/drafts\n"
        "  allow_unedited: true\n  edited_sheet: experts/edited.xlsx\n"
        "  simulate_experts_from: null\n"
    )
    run = snakemake(
        tmp_path,
        "-n",
        "results/rationales.parquet",
        "--configfile",
        str(REPO / ".test" / "config.yaml"),
        str(real),
    )
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "MissingInputException" in output and "experts/edited.xlsx" in output
    (tmp_path / "experts").mkdir()
    (tmp_path / "experts/edited.xlsx").write_bytes(b"")  # the reviewer's file
    run = snakemake(
        tmp_path,
        "-n",
        "results/rationales.parquet",
        "--configfile",
        str(REPO / ".test" / "config.yaml"),
        str(real),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "simulate_expert_edits" not in run.stdout and "import_expert_edits" in run.stdout
