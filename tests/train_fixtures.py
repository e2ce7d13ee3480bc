"""Fixtures shared by the backbone, SFT and training tests: a tiny corpus, folds, backbones.

``train_corpus`` and ``tiny_backbones`` are registered by tests/conftest.py, so they are built
once per session; a module that assigns them again (``train_corpus =
train_fixtures.train_corpus``) would build its own copies.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from care.corpus import CorpusSpec, generate
from care.io import write_jsonl

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 800,
    "max_position_embeddings": 1024,
}


@pytest.fixture(scope="session")
def train_corpus(tmp_path_factory, instrument):
    """sessions.jsonl, reference rationales (jsonl) and a 3-fold folds.tsv, client-grouped."""
    spec = CorpusSpec(
        n_clients=9, sessions_per_client=(2, 3), n_counselors=3, turns_per_session=(8, 10), seed=5
    )
    records, refs = generate(spec, instrument)
    root = tmp_path_factory.mktemp("train_corpus")
    write_jsonl(root / "sessions.jsonl", records)
    write_jsonl(root / "rationales.jsonl", refs)
    write_client_folds(root / "folds.tsv", records, 3)
    return {
        "sessions": root / "sessions.jsonl",
        "rationales": root / "rationales.jsonl",
        "folds": root / "folds.tsv",
        "records": records,
        "refs": refs,
    }


def write_client_folds(path: Path, records: list[dict], n_folds: int) -> Path:
    """A folds.tsv that deals the clients (sorted) over ``n_folds`` folds in turn."""
    clients = sorted({r["client_id"] for r in records})
    fold_of = {c: n % n_folds + 1 for n, c in enumerate(clients)}
    lines = ["session_id\tclient_id\tfold"] + [
        f"{r['session_id']}\t{r['client_id']}\t{fold_of[r['client_id']]}" for r in records
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_backbone(dest: Path, arch: str, corpus: dict, instrument, seed: int = 0) -> Path:
    from care.model.backbone import TinySpec, build_tiny, corpus_texts

    spec = TinySpec(arch=arch, seed=seed, **TINY)
    texts = list(corpus_texts(corpus["sessions"], instrument, [corpus["rationales"]]))
    build_tiny(spec, texts, dest)
    return dest


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory, train_corpus, instrument):
    """{"llama": dir, "qwen2": dir}: tiny random-init backbones with corpus tokenizers."""
    root = tmp_path_factory.mktemp("backbones")
    return {
        arch: build_backbone(root / arch, arch, train_corpus, instrument)
        for arch in ("llama", "qwen2")
    }
