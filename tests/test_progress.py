"""Progress in job logs, care status, and the end-of-run summary."""

from __future__ import annotations


def test_progress_lines_in_a_log_and_care_status(tmp_path, monkeypatch):
    """In a job log a bar is whole lines with rate and ETA; care status shows running ones."""
    import io
    import sys

    from care.progress import bar
    from care.summary import status_lines

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with bar(total=4, desc="scoring", unit="session", mininterval=0) as shown:
        for _ in range(3):
            shown.update()
        running = log.getvalue()
        shown.update()
    lines = log.getvalue().splitlines()
    assert lines and all(line.startswith("progress scoring:") for line in lines)
    assert "\r" not in log.getvalue() and "3/4" in running and "<" in running  # ETA
    (tmp_path / "infer").mkdir()
    (tmp_path / "infer" / "a.log").write_text(running, encoding="utf-8")
    (tmp_path / "infer" / "b.log").write_text(log.getvalue(), encoding="utf-8")
    now = status_lines(tmp_path)
    assert len(now) == 1 and now[0].startswith("infer/a: scoring:") and "3/4" in now[0]
    assert len(status_lines(tmp_path, finished=True)) == 2


def test_run_summary_counts_outputs_and_prints_table2_and_one_provenance_line(tmp_path):
    import json

    import pandas as pd
    from care.instrument import DEFAULT
    from care.summary import run_summary

    (tmp_path / "results/models/llama").mkdir(parents=True)
    row = {"label": "CARE (llama)", "scoring": "expected", "n_folds": 5}
    for dim, r in (("goal", 0.631), ("task", 0.43), ("bond", -0.05)):
        row |= {f"{dim}_pearson_mean": r, f"{dim}_pearson_sd": 0.1, f"{dim}_pearson_n_folds": 5,
                f"{dim}_coverage": 1.0, f"{dim}_spearman_mean": r, f"{dim}_mse_mean": 1.0}
    pd.DataFrame([row]).to_csv(tmp_path / "results/table2.csv", index=False)
    (tmp_path / "results/table2.md").write_text("wide\n")
    targets = ["results/table2.csv", "results/models/llama", "results/missing.csv"]
    before = run_summary(targets, "2000-01-01T00:00:00+00:00", tmp_path, DEFAULT)
    assert "2 of 2 final outputs built in this run" in before
    assert "tables 1 (1 built); fine-tuned models 1 (1 built)" in before
    assert "| | Goal | Task | Bond |" in before
    assert "| CARE (llama) (expected) | .63 ± .10 | .43 ± .10 | −.05 ± .10 |" in before
    assert "results/models/llama" not in before and "wide" not in before  # counts, no paths
    assert before.count("Provenance") == 1 and "none for this run" in before

    (tmp_path / "results/provenance.json").write_text(json.dumps(
        {"git": {"commit": "0123456789abcdef", "dirty": False}, "finished": "2000-01-02"}))
    after = run_summary(targets, "2000-01-01T00:00:00+00:00", tmp_path, DEFAULT)
    assert "Provenance: results/provenance.json (commit 0123456789, finished 2000-01-02)" in after
    assert max(map(len, after.splitlines())) <= 100
    pd.DataFrame([{"label": "x"}]).to_csv(tmp_path / "results/table2.csv", index=False)
    stale = run_summary(targets, None, tmp_path, DEFAULT)  # another instrument's table
    assert "results/table2.csv: not summarized" in stale and "Provenance" in stale
