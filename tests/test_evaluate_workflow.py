"""The evaluation rules through Snakemake on the test config, with synthetic predictions.

Training and inference are other stages; here their outputs are stand-ins written in the
predictions contract, and ``--allowed-rules`` keeps Snakemake from rebuilding them.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from care.evaluate import synthetic
from care.instrument import load_instrument

from .conftest import care_in_process, copy_workflow, run_snakemake
from .latex import ENGINE, assert_compiles

EVAL_RULES = [
    "lexical_baseline",  # the text baselines fit on the data stage's folds, no model
    "evaluation_metrics",
    "text_metrics",
    "table2",
    "table3",
    "table4",
    "table5",
    "human_eval_export",
    "figure3",
    "scatter_figure",
    "ablation_figure",
]


def _prepare(work):
    """Config with two backbones (added if the training stage has not defined them)."""
    config = yaml.safe_load((work / ".test/config.yaml").read_text(encoding="utf-8"))
    extra = {}
    if "backbones" not in config:
        extra["backbones"] = {"llama": {}, "qwen": {}}
        schema_path = work / "workflow/schemas/config.schema.yaml"
        schema = yaml.safe_load(schema_path.read_text(encoding="utf-8"))
        schema["properties"].setdefault("backbones", {"type": "object"})
        schema_path.write_text(yaml.safe_dump(schema, sort_keys=False), encoding="utf-8")
    (work / "extra.yaml").write_text(yaml.safe_dump(extra), encoding="utf-8")
    config.update(extra)
    return config


def _stand_in_predictions(work, config):
    instrument = load_instrument(work / config["instrument"])
    sessions = [json.loads(line) for line in open(work / config["data"]["sessions"])]
    refs = [json.loads(line) for line in open(work / "results/demo/reference_rationales.jsonl")]
    folds = pd.read_csv(work / "results/folds.tsv", sep="\t", dtype=str).astype({"fold": int})
    baselines = config.get("baselines", {})
    runs = [(b, v, {"noise": 0.6}) for b in config["backbones"] for v in config["variants"]]
    runs += [(z["name"], "zero_shot", {"noise": 2.0}) for z in baselines.get("zero_shot", [])]
    if baselines.get("counselor"):
        runs.append(("counselor", "human", {"client_ratings": "counselor_ratings"}))
    for n, (model, variant, kw) in enumerate(runs):
        per = synthetic.predictions(sessions, refs, folds, instrument, model, variant, seed=n, **kw)
        for k, frame in per.items():
            path = work / f"results/predictions/{model}/{variant}/fold{k}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(path, index=False)
    expert = pd.DataFrame(refs).rename(columns={"rationale": "final"})
    expert["dimension"] = expert["item_id"].map(instrument.dimension_of)
    expert.to_parquet(work / "results/rationales.parquet", index=False)
    return runs


@pytest.mark.slow
def test_tables_figures_report_from_predictions(tmp_path):
    work = copy_workflow(tmp_path)
    config = _prepare(work)
    configs = ["--configfile", ".test/config.yaml", "extra.yaml"]
    data = run_snakemake(work, "results/folds.tsv", "results/data/sessions.tsv", *configs)
    assert data.returncode == 0, data.stderr[-3000:]
    runs = _stand_in_predictions(work, config)

    targets = [
        "results/table2.csv",
        "results/table3.csv",
        "results/table4.csv",
        "results/table5.csv",
        "results/figures/figure3.png",
        "results/figures/ablation.pdf",
        "results/human_eval/rating_sheet.xlsx",
        *[f"results/figures/scatter/{b}/rationale.png" for b in config["backbones"]],
    ]
    allowed = ["--allowed-rules", *EVAL_RULES]
    # the report once the run is done, in the same invocation; Table 1 is the data stage's
    # (its rule may be named, it has nothing to do)
    report = ["--report", "results/report.html", "--report-after-run", "results/table1.csv"]
    proc = run_snakemake(work, *report, *targets, *configs, *allowed, "folds")
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert _planned_rules(proc.stdout + proc.stderr) <= set(EVAL_RULES)

    table2 = pd.read_csv(work / "results/table2.csv")
    n_baselines = sum(1 for _, v, _ in runs if v in ("zero_shot", "human"))
    text = {"lexical", "length"}  # on by default (baselines.lexical, baselines.length)
    assert set(table2["model"]) >= text
    assert len(table2) == n_baselines + len(text) + len(config["backbones"])
    assert table2["goal_pearson_mean"].notna().all()
    table4 = pd.read_csv(work / "results/table4.csv")
    assert "lexical" in set(table4["model"])  # the line every model is read against
    assert len(table4) == 1 + len(config["backbones"]) * len(config["variants"])
    table3 = pd.read_csv(work / "results/table3.csv")
    assert table3["goal_bertscore_mean"].between(0, 1).all()
    assert set(pd.read_csv(work / "results/table5.csv")["dimension"]) == {"goal", "task", "bond"}
    for target in targets:
        assert (work / target).stat().st_size > 0
    if ENGINE:  # every table a real LaTeX engine typesets, without overflow
        texs = sorted((work / "results").glob("*.tex"))
        assert {t.stem for t in texs} >= {"table1", "table2", "table3", "table4", "table5"}
        for tex in texs:
            assert_compiles(tex, tmp_path)

    _readme_follows_the_run(work)

    again = run_snakemake(work, *targets, *configs, *allowed)
    assert "Nothing to be done" in again.stdout + again.stderr

    html = (work / "results/report.html").read_text(encoding="utf-8")
    assert "table2.html" in html and "figure3.png" in html
    assert "table1.html" in html
    # every caption and the first page render without a docutils warning or error
    assert "System Message" not in html and "system-message" not in html

    # an ablation edit (drop a variant) reruns Table 4, not the other runs' metrics
    edit = run_snakemake(
        work, "-n", *targets, *configs, *allowed, "--config", "variants=[rationale]"
    )
    assert edit.returncode == 0, edit.stderr[-3000:]
    planned = _planned_rules(edit.stdout + edit.stderr)
    assert "table4" in planned and "evaluation_metrics" not in planned


def _planned_rules(output: str) -> set[str]:
    """Rule names of a dry run's "Job stats" table."""
    lines = output.split("Job stats:", 1)[1].splitlines()[3:]
    rules = set()
    for line in lines:
        if not line.strip() or line.startswith("total"):
            break
        rules.add(line.split()[0])
    return rules


def _readme_follows_the_run(work):
    """The README block written from this run's Table 2 checks clean; an edited number fails."""
    import re

    from care.readme import END, START

    readme = work / "README.md"
    readme.write_text(f"# demo\n\n{START}\n{END}\n", encoding="utf-8")
    care = ["readme", "--table2", "results/table2.csv", "--instrument",
            "workflow/instruments/wai_sr.yaml", "--readme", "README.md"]
    care_in_process(*care, "--write", cwd=work)
    care_in_process(*care, "--check", cwd=work)
    text = readme.read_text(encoding="utf-8")
    stale = re.sub(r"\| (−?)\.(\d)(\d) ±", lambda m: f"| {m[1]}.{m[2]}{(int(m[3]) + 1) % 10} ±",
                   text, count=1)
    readme.write_text(stale, encoding="utf-8")
    assert "README.md:" in care_in_process(*care, "--check", cwd=work, status=1)
