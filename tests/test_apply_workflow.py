"""The application rules end to end under Snakemake, from cached predictions.

Training and inference are other stages' tests; here the corpus, a stand-in model directory
and the predictions exist (older inputs, newer predictions), so Snakemake runs exactly the
application's downstream rules: Figure 2, Table 8, the digests and the session reports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from care.apply import predict
from care.corpus import CorpusSpec, generate
from care.io import write_jsonl

from .conftest import REPO
from .latex import ENGINE, assert_compiles
from .test_apply import fake_rows

TARGETS = ["results/figure2.png", "results/table8.csv", "results/application/digests",
           "results/application/sessions"]


@pytest.mark.slow
def test_application_rules_from_cached_predictions(tmp_path, instrument):
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config["data"]["unlabeled"] = "data/unlabeled.jsonl"
    config["demo_corpus"]["enabled"] = False
    config["instrument"] = str(REPO / "workflow" / "instruments" / "wai_sr.yaml")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

    spec = CorpusSpec(n_clients=10, sessions_per_client=(3, 5), n_counselors=3,
                      turns_per_session=(10, 12), seed=9)
    records, refs = generate(spec, instrument, labeled=True, prefix="u")
    write_jsonl(tmp_path / "data" / "unlabeled.jsonl", records)  # ratings: ignored
    model = tmp_path / "results" / "models" / "llama" / "rationale" / "fold1"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    sessions = predict.load_corpus(tmp_path / "data" / "unlabeled.jsonl", instrument)
    frame = predict.prediction_frame(fake_rows(records, refs, instrument), sessions, instrument,
                                     model="llama", variant="rationale", fold=1)
    pred = tmp_path / "results" / "application" / "predictions.parquet"
    pred.parent.mkdir(parents=True)
    frame.to_parquet(pred)
    # the recipe's held-out folds (client ratings known): the validity every page states
    folds = tmp_path / "results" / "predictions" / "llama" / "rationale"
    folds.mkdir(parents=True)
    rating = {(r["session_id"], i): float(v) for r in records
              for i, v in r["client_ratings"].items()}
    labeled = frame.assign(client_score=[rating[k] for k in zip(
        frame["session_id"], frame["item_id"], strict=True)])
    heldout = [folds / f"fold{k}.parquet" for k in range(1, config["folds"]["n_folds"] + 1)]
    for k, path in enumerate(heldout, 1):
        labeled.assign(fold=k).to_parquet(path)
    old = pred.stat().st_mtime - 60
    for path in (tmp_path / "data" / "unlabeled.jsonl", model, model / "config.json", *heldout):
        os.utime(path, (old, old))

    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d",
           str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "2",
           *TARGETS]
    # the report once the run is done, in the same invocation
    report = ["--report", "results/report.html", "--report-after-run"]
    done = subprocess.run([*cmd, *report], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "predict_corpus" not in done.stderr.split("Job stats:")[1].split("\n\n")[0]

    table = pd.read_csv(tmp_path / "results" / "table8.csv")
    assert set(table["dimension"]) == {"goal", "task", "bond"}
    assert "Challenging - Negative" in (tmp_path / "results" / "table8.md").read_text()
    assert (tmp_path / "results" / "figure2.pdf").stat().st_size > 0
    if ENGINE:
        assert_compiles(tmp_path / "results" / "table8.tex", tmp_path)
    reports = sorted(p.name for p in (tmp_path / "results/application/sessions").glob("*.html"))
    assert "index.html" in reports and len(reports) == 3  # lowest 1, highest 1, index
    digests = list(Path(tmp_path / "results/application/digests").glob("*.html"))
    assert digests
    # single-file pages for the HTML report: all digests, and the lowest session's page
    combined = (tmp_path / "results/application/digests.html").read_text(encoding="utf-8")
    assert combined.count("<body>") == 1 and "counselor" in combined.lower()
    example = (tmp_path / "results/application/session_report.html").read_text(encoding="utf-8")
    assert example.startswith("<!DOCTYPE html>") and "<script src" not in example
    for page in (example, combined):  # the model, its held-out r, what the scores are
        assert "llama · rationale · fold 1" in page and "pooled over the held-out folds" in page
        assert "predictions of how the client would rate" in page
    log = (tmp_path / "logs" / "application" / "table8.log").read_text()
    assert "Table 8 written" in log
    # a second run has nothing to do
    again = subprocess.run([*cmd, "-n"], capture_output=True, text=True, cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr
    # the report: the application's captions (Table 8's stars included) render cleanly
    html = (tmp_path / "results" / "report.html").read_text(encoding="utf-8")
    assert "table8.html" in html
    assert "System Message" not in html and "system-message" not in html
