"""Shared fixtures: the default instrument and small demo corpora written to tmp dirs."""

from __future__ import annotations

from pathlib import Path

import pytest
from care.corpus import CorpusSpec, generate
from care.instrument import load_instrument
from care.io import write_jsonl

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def instrument():
    return load_instrument()


@pytest.fixture(scope="session")
def small_spec() -> CorpusSpec:
    return CorpusSpec(n_clients=8, sessions_per_client=(2, 3), n_counselors=3,
                      turns_per_session=(8, 10), seed=11)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, instrument, small_spec):
    """(sessions.jsonl path, session records, reference rationale records)."""
    records, refs = generate(small_spec, instrument)
    path = tmp_path_factory.mktemp("corpus") / "sessions.jsonl"
    write_jsonl(path, records)
    return path, records, refs
