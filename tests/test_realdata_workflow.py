"""The README's own-data recipe (docs/data.md), end to end, on a corpus unlike the demo in every
assumption: other speaker names (mapped by `care data import`), other item ids, a 1-7
scale, two dimensions of unequal size, no counselor ids or ratings, no unlabeled corpus,
dialogues of 150+ turns, expert rationales of 100+ tokens; one tiny backbone of another
name, one variant, two folds, one epoch. It runs to Table 2 and the HTML report and touches
no demo file."""

from __future__ import annotations

import hashlib
import json
import random

import pandas as pd
import pytest
import yaml

from .conftest import care_in_process, copy_workflow, run_snakemake

WORDS = ("plan week sleep family worry work talk listen change goal step feel trust try "
         "morning anxious calm friend school money help hard better notice small write next "
         "together decide understand because really maybe often again still").split()
ITEMS = {"q_warm": "rapport", "q_aims": "progress", "q_steps": "progress"}


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def conversations(rng: random.Random) -> list[dict]:
    """Raw records as a public support corpus ships them (its own field and role names)."""
    out = []
    for c in range(8):
        for k in range(1 + c % 2):
            dialog = [{"role": "moderator", "utterance": "Session recorded."}]
            for t in range(150 + rng.randrange(20)):
                role = "therapist" if t % 2 == 0 else "patient"
                dialog.append({"role": role, "utterance": sentence(rng, rng.randint(6, 14))})
            out.append({
                "conversation": f"P{c:02d}/visit {k + 1}",   # a '/' in an id, a space too
                "patient": f"P{c:02d}", "dialog": dialog,
                "survey": {name: str(rng.randint(1, 7)) for name in ITEMS},  # text, as exported
            })
    out[0]["survey"] |= {"q_warm": "1", "q_aims": "7"}  # the scale's ends are observed
    return out


MAPPING = {
    "session_id": "conversation", "client_id": "patient", "language": "en", "turns": "dialog",
    "turn": {"speaker": "role", "text": "utterance"},
    "speakers": {"therapist": "counselor", "patient": "client"},
    "client_ratings": {item: f"survey.{item}" for item in ITEMS},
}


def finish_instrument(path) -> None:
    """What the user does to the skeleton `care data import` wrote: dimensions and wording."""
    inst = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert inst["scale"]["min"] == 1 and inst["scale"]["max"] == 7 and inst["scale"]["integer"]
    inst["name"] = "SRS-7"
    inst["title"] = {"en": "Session Rating Scale (seven points)"}
    inst["construct"] = {"en": "the client's sense of the session"}
    inst["dimensions"] = [
        {"id": dim, "name": {"en": dim.capitalize()},
         "items": [i for i, d in ITEMS.items() if d == dim]}
        for dim in dict.fromkeys(ITEMS.values())
    ]
    for item in inst["items"]:
        item["text"] = {"en": f"How the session felt: {item['id'].split('_')[1]}."}
    path.write_text(yaml.safe_dump(inst, sort_keys=False), encoding="utf-8")


def user_config(work) -> dict:
    return {
        "instrument": "data/instrument.yaml",
        "data": {"sessions": "data/sessions.jsonl", "unlabeled": None},
        "folds": {"n_folds": 2, "n_strata": 1},
        "variants": ["rationale"],
        "max_length": 1024,
        "backbones": {"mini": {"tiny": {
            "arch": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 800, "seed": 3,
            # a test stand-in, not a model: its tokenizer may see the labeled corpus
            "tokenizer_sessions": "data/sessions.jsonl",
            "tokenizer_texts": ["data/expert_rationales.jsonl"]}}},
        "training": {"learning_rate": 5.0e-3, "per_device_train_batch_size": 8,
                     "num_train_epochs": 1, "deepspeed": None, "inner_val_fraction": 0.3,
                     # answer limits: `auto` (the default), from the training answers
                     # max_cut_rate 1: a one-epoch mini model does not end its answers
                     # yet; selection's cut-answer guard has its own tests
                     "validation": {"batch_size": 16, "scoring": "expected",
                                    "min_parse_rate": 0.0, "max_cut_rate": 1.0}},
        "inference": {"device": "cpu", "batch_size": 32, "scoring": "expected"},
        "rationales": {"backend": "extractive",
                       "edited_sheet": "data/expert_sheet.edited.xlsx"},
        "evaluation": {"bootstrap": {"n_resamples": 20}},
    }


def expert_rationales(sessions: list[dict], rng: random.Random) -> list[dict]:
    """The experts' edits: long rationales (100+ words) citing turns."""
    out = []
    for s in sessions:
        for item in ITEMS:
            cites = sorted(rng.sample(range(1, len(s["turns"]) + 1), 3))
            body = " ".join(f"In (turn {n}) {sentence(rng, 30)}" for n in cites)
            out.append({"session_id": s["session_id"], "item_id": item, "rationale": body})
    return out


def care(work, *args) -> str:
    return care_in_process(*args, cwd=work)


def digest_of(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_readme_real_data_recipe_end_to_end(tmp_path):
    (tmp_path / "wf").mkdir()
    work = copy_workflow(tmp_path / "wf")
    demo_files = [work / "config.yaml", *sorted((work / "workflow/instruments").glob("*")),
                  *sorted((work / "workflow/prompts").glob("*"))]
    before = digest_of(demo_files)
    rng = random.Random(7)
    raw = tmp_path / "raw.jsonl"
    raw.write_text("\n".join(json.dumps(c) for c in conversations(rng)), encoding="utf-8")
    (work / "mapping.yaml").write_text(yaml.safe_dump(MAPPING), encoding="utf-8")

    # 1. convert, finish the instrument skeleton, check
    care(work, "data", "import", "conversations", "--input", raw, "--mapping", "mapping.yaml",
         "--out", "data/sessions.jsonl", "--instrument-out", "data/instrument.yaml")
    finish_instrument(work / "data/instrument.yaml")
    summary = care(work, "data", "validate", "--sessions", "data/sessions.jsonl", "--instrument",
                   "data/instrument.yaml", "--summary")
    assert "sessions: 12" in summary and "counselors: 1" in summary
    sessions = [json.loads(line) for line in
                (work / "data/sessions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert min(len(s["turns"]) for s in sessions) >= 150
    assert {s["counselor_id"] for s in sessions} == {"unknown"}
    refs = expert_rationales(sessions, rng)
    (work / "data/expert_rationales.jsonl").write_text(
        "\n".join(json.dumps(r) for r in refs), encoding="utf-8")
    (work / "my.yaml").write_text(yaml.safe_dump(user_config(work)), encoding="utf-8")

    # 2. drafts and the expert sheet; the experts fill it (played by simulate-edits)
    step = run_snakemake(work, "results/rationales/expert_sheet.xlsx", "--configfile", "my.yaml")
    assert step.returncode == 0, (step.stdout + step.stderr)[-4000:]
    care(work, "rationales", "simulate-edits", "--sheet", "results/rationales/expert_sheet.xlsx",
         "--references", "data/expert_rationales.jsonl", "--editor", "expert-1",
         "--out", "data/expert_sheet.edited.xlsx")

    # 3. every table and figure and the run's record, then the report
    run = run_snakemake(work, "--configfile", "my.yaml", timeout=1800)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    record = json.loads((work / "results/provenance.json").read_text(encoding="utf-8"))
    assert "results/table2.csv" in record["outputs"]
    assert "Provenance: results/provenance.json (commit" in run.stdout + run.stderr
    report = run_snakemake(work, "--report", "results/report.html", "--configfile", "my.yaml")
    assert report.returncode == 0, (report.stdout + report.stderr)[-4000:]
    html = (work / "results/report.html").read_text(encoding="utf-8", errors="replace")
    assert len(html) > 10_000 and "No provenance record" not in html and "provenance.json" in html

    table = pd.read_csv(work / "results/table2.csv")
    assert any(c.startswith("rapport") for c in table.columns)
    assert any(c.startswith("progress") for c in table.columns)
    assert not any("goal" in c or "bond" in c for c in table.columns)
    md = (work / "results/table2.md").read_text(encoding="utf-8")
    assert "CARE (mini)" in md and "Goal" not in md
    assert "prediction of the client's sense of the session against" in md
    assert "alliance" not in md.lower()

    # nothing of the demo: no demo output, no demo name, no demo file changed
    assert not (work / "results/demo").exists()
    assert sorted(p.name for p in (work / "results/models").iterdir()) == ["mini"]
    assert digest_of(demo_files) == before

    # prompts name this instrument, never WAI
    from care.instrument import load_instrument
    from care.prompts import build_messages

    inst = load_instrument(work / "data/instrument.yaml")
    text = " ".join(m["content"] for m in build_messages(inst, ["q_aims"], "rationale", "en", ""))
    assert "Session Rating Scale" in text and "Working Alliance" not in text

    # no answer truncated: the answers are long, and the limits derived from them fit them
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(work / "results/backbones/mini")
    final = pd.read_parquet(work / "results/rationales.parquet")["final"]
    assert min(len(tok(t)["input_ids"]) for t in final) >= 100
    for k in (1, 2):
        selection = json.loads(
            (work / f"results/models/mini/rationale/fold{k}/selection.json").read_text())
        sft = selection["sft"]
        assert sft["max_answer_tokens"] >= 100 and sft["dropped_examples"] == 0
        assert sft["answer_token_limit"] > sft["max_answer_tokens"]
    for k in (1, 2):
        preds = pd.read_parquet(work / f"results/predictions/mini/rationale/fold{k}.parquet")
        assert set(preds["item_id"]) == set(ITEMS)
        # one epoch on 4 sessions teaches a random-init model no answer format: Table 2 then
        # shows dashes and "Scored 0%", which is what the coverage files say
        coverage = json.loads((work / f"results/predictions/mini/rationale/fold{k}.coverage.json"
                               ).read_text())
        assert coverage["rows"] == len(preds) and coverage["sessions"] == 6

    # the same corpus under a one-dimension instrument: another instrument is a config edit
    inst = yaml.safe_load((work / "data/instrument.yaml").read_text(encoding="utf-8"))
    inst["dimensions"] = [{"id": "overall", "items": list(ITEMS)}]
    (work / "data/one.yaml").write_text(yaml.safe_dump(inst), encoding="utf-8")
    one = {**user_config(work), "instrument": "data/one.yaml"}
    (work / "one.yaml").write_text(yaml.safe_dump(one), encoding="utf-8")
    step = run_snakemake(work, "--configfile", "one.yaml", "--", "results/table1.csv")
    assert step.returncode == 0, (step.stdout + step.stderr)[-4000:]
    assert "overall" in (work / "results/table1.md").read_text(encoding="utf-8").lower()
