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


def test_run_summary_lists_outputs_and_table2(tmp_path):
    from care.summary import run_summary

    (tmp_path / "results").mkdir()
    (tmp_path / "results/table2.csv").write_text("x\n")
    (tmp_path / "results/table2.md").write_text("**Table 2: ...**\n\n| Model |\n")
    text = run_summary(["results/table2.csv", "results/missing.csv"], "2000-01-01T00:00:00+00:00",
                       tmp_path)
    assert "1 of 1 final outputs built in this run" in text
    assert "Tables:\n  * results/table2.csv" in text and "| Model |" in text
