"""The models must learn: a fine-tune on a corpus with an obvious lexical signal predicts held-out
ratings (the demo's recipe: a pretrained tiny backbone, then score-only fine-tuning).

The corpus: every client turn is one of a few positive or negative replies, and each item's
rating follows the share of positive replies, so a bag of words predicts it almost exactly.
A model that only learnt the ratings' marginal (what a random-init backbone fine-tuned on a few
hundred examples does) has r near 0 and nearly constant predictions; this one must reach
r > .5 on the held-out fold.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from care.cli import main
from care.io import write_jsonl

from tests.train_fixtures import write_client_folds

POSITIVE = ["That really helps, thank you.", "Yes, I feel we are getting somewhere.",
            "I trust this plan, it makes sense to me."]
NEGATIVE = ["This is not helping me at all.", "I do not see the point of this.",
            "You are not listening to me."]
COUNSELOR = ["How did that feel?", "Tell me more about it.", "What happened next?"]
TINY = {"arch": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 600,
        "max_position_embeddings": 512, "seed": 0}
RECIPE = {  # config.yaml's training section (unpacked, as the rationale variant), scaled down
    "learning_rate": 3e-3, "per_device_train_batch_size": 6, "num_train_epochs": 4,
    "min_steps": 300,
    "warmup_ratio": 0.1, "deepspeed": None, "packing": "none",
    "inner_val_fraction": 0.2, "seed": 123, "logging_steps": 20,
    "validation": {"scoring": "expected", "max_new_tokens": "auto", "max_cut_rate": 1},
}


def corpus(rng, n_clients: int, prefix: str, items, labeled: bool) -> list[dict]:
    records = []
    for c in range(n_clients):
        for s in range(2):
            share = rng.uniform()
            turns = []
            for _ in range(5):
                turns.append({"speaker": "counselor", "text": str(rng.choice(COUNSELOR))})
                reply = POSITIVE if rng.uniform() < share else NEGATIVE
                turns.append({"speaker": "client", "text": str(rng.choice(reply))})
            positive = sum(t["text"] in POSITIVE for t in turns) / 5
            record = {"session_id": f"{prefix}{c:02d}-{s}", "client_id": f"{prefix}{c:02d}",
                      "counselor_id": f"t{c % 3}", "language": "en", "turns": turns}
            if labeled:
                record["client_ratings"] = {i: int(round(1 + 4 * positive)) for i in items}
            records.append(record)
    return records


#: one dimension of three items: every example of a session carries the signal, and the
#: corpus stays small enough to train for a few hundred steps in well under a minute
INSTRUMENT = {
    "name": "Alliance-3", "title": {"en": "Alliance"}, "construct": {"en": "the alliance"},
    "rating": {"en": "how often the client experienced it"},
    "scale": {"min": 1, "max": 5, "integer": True,
              "labels": {k: {"en": v} for k, v in
                         zip(range(1, 6), ["Never", "Rarely", "Sometimes", "Often", "Always"],
                             strict=True)}},
    "dimensions": [{"id": "alliance", "name": {"en": "Alliance"},
                    "description": {"en": "the working alliance"}, "items": ["a", "b", "c"]}],
    "items": [{"id": i, "text": {"en": t}} for i, t in
              [("a", "We agree on what matters."), ("b", "The work helps me."),
               ("c", "I feel understood.")]],
}


@pytest.fixture(scope="module")
def signal_corpus(tmp_path_factory):
    from care.instrument import load_instrument

    root = tmp_path_factory.mktemp("learning")
    (root / "instrument.yaml").write_text(yaml.safe_dump(INSTRUMENT), encoding="utf-8")
    items = load_instrument(root / "instrument.yaml").item_ids
    rng = np.random.default_rng(7)
    labeled = corpus(rng, 48, "c", items, labeled=True)
    write_jsonl(root / "sessions.jsonl", labeled)
    write_jsonl(root / "unlabeled.jsonl", corpus(rng, 40, "u", items, False))
    write_client_folds(root / "folds.tsv", labeled, 2)
    return root


def test_a_fine_tune_learns_an_obvious_lexical_signal(signal_corpus, tmp_path):
    root = signal_corpus
    ins = str(root / "instrument.yaml")
    init, backbone, model = tmp_path / "init", tmp_path / "backbone", tmp_path / "model"
    assert main(["train", "backbone", "tiny", "--spec", json.dumps(TINY), "--sessions",
                 str(root / "unlabeled.jsonl"), "--instrument", ins, "--out", str(init)]) == 0
    pretrain = {"sessions": [str(root / "unlabeled.jsonl")], "epochs": 4, "batch_size": 8}
    assert main(["train", "pretrain", "--backbone", str(init), "--spec", json.dumps(pretrain),
                 "--instrument", ins, "--out", str(backbone)]) == 0
    data = ["--sessions", str(root / "sessions.jsonl"), "--folds", str(root / "folds.tsv"),
            "--instrument", ins, "--fold", "1", "--granularity", "item", "--max-length", "512"]
    assert main(["train", "run", "--backbone", str(backbone), *data, "--variant", "score_only",
                 "--hp", json.dumps(RECIPE), "--checkpoints", str(tmp_path / "ckpt"),
                 "--out", str(model)]) == 0
    out = tmp_path / "pred.parquet"
    settings = {"scoring": "expected", "max_new_tokens": {"score_only": 6}, "batch_size": 48}
    assert main(["infer", "model", "--model-path", str(model), "--name", "m", "--variant",
                 "score_only", *data, "--settings", json.dumps(settings),
                 "--out", str(out)]) == 0
    pred = pd.read_parquet(out)
    sessions = pred.groupby("session_id")[["score", "client_score"]].mean()
    r = np.corrcoef(sessions["score"], sessions["client_score"])[0, 1]
    spread = sessions["score"].std() / sessions["client_score"].std()
    assert r > 0.5, f"held-out r {r:.2f} (prediction sd {spread:.2f}x the ratings')"
    assert spread > 0.3, f"predictions nearly constant: sd {spread:.2f}x the ratings'"
