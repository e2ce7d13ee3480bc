"""Local models: the ``hf`` backend, and the ``openai`` backend against ``transformers serve``.

A tiny randomly initialised LlamaForCausalLM with a byte-level BPE tokenizer trained here on a
few sentences and a chat template is saved with ``save_pretrained``: nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

SENTENCES = [
    "Counselor: How are you feeling today?",
    "Client: I feel understood here.",
    "Rationale: the counselor agreed on the goal (turn 3).",
    "Score: 4",
    "Let's practise a concrete step this week.",
    "I do not see how that would help me.",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        SENTENCES * 4,
        trainers.BpeTrainer(
            vocab_size=320,
            special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    tok.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def chats(n: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": "Client: I feel understood here. " * (k + 1)}]
        for k in range(n)
    ]


def test_hf_backend_batches_caches_and_keeps_order(tiny_model, tmp_path):
    from care.llm.hf_chat import HFChat

    msgs = chats(5)
    chat = HFChat(tiny_model, batch_size=2, cache_dir=tmp_path / "cache")
    batched = chat.complete_many(msgs, max_tokens=6)
    assert len(batched) == 5 and all(isinstance(a, str) for a in batched)
    assert chat.stats["calls"] == 5 and chat.stats["cache_hits"] == 0
    # greedy, left-padded batches give what each prompt gives alone (fresh cache)
    single = HFChat(tiny_model, batch_size=1, cache_dir=tmp_path / "other")
    assert [single.complete_many([m], max_tokens=6)[0] for m in msgs] == batched
    # a rerun is served from the cache
    assert chat.complete_many(msgs, max_tokens=6) == batched
    assert chat.stats["calls"] == 5 and chat.stats["cache_hits"] == 5


def test_drafting_stops_where_training_ends_a_turn(tiny_model, tmp_path):
    # one end-of-turn definition (care.model.backbone): the generation config's eos ids and the
    # tokenizer's eos, not the first of them that is set
    from care.llm.hf_chat import HFChat
    from care.model.backbone import load_end_of_turn_ids, load_tokenizer
    from transformers import GenerationConfig

    tokenizer = load_tokenizer(tiny_model)
    chat = HFChat(tiny_model, cache_dir=tmp_path / "cache")
    assert chat.eos_ids == load_end_of_turn_ids(tiny_model, tokenizer)
    configured = GenerationConfig.from_pretrained(tiny_model).eos_token_id
    configured = [configured] if isinstance(configured, int) else list(configured or [])
    assert set(configured) | {tokenizer.eos_token_id} == set(chat.eos_ids)


def test_hf_cache_key_follows_the_model_files(tiny_model, tmp_path):
    # care.model.fingerprint: the same files are the same model wherever they are; new weights
    # (a model retrained in place) are another model, whatever their mtime says
    from care.model.fingerprint import model_fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    before = model_fingerprint(copy)
    assert model_fingerprint(tiny_model) == before
    weights = copy / "model.safetensors"
    stamp = (weights.stat().st_atime_ns, weights.stat().st_mtime_ns)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=stamp)
    assert model_fingerprint(copy) != before  # retrained in place: no stale answers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    """``transformers serve`` on the tiny model (needs the serving extra: fastapi, uvicorn)."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    exe = shutil.which("transformers") or os.path.join(
        os.path.dirname(sys.executable), "transformers"
    )
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                exe,
                "serve",
                str(tiny_model),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--device",
                "cpu",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited:\n{log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.25)
        else:
            pytest.fail("transformers serve did not start within 90 s")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_openai_backend_against_transformers_serve(served, tiny_model, tmp_path, monkeypatch):
    from care.llm.hf_chat import HFChat
    from care.llm.openai_chat import OpenAIChat

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a loopback server needs no key
    msgs = chats(3)
    chat = OpenAIChat(str(tiny_model), base_url=served, concurrency=2, cache_dir=tmp_path / "cache")
    answers = chat.complete_many(msgs, max_tokens=6)
    assert chat.stats == {"calls": 3, "cache_hits": 0, "retries": 0}
    # the server runs the same model greedily: the same text as the hf backend
    local = HFChat(tiny_model, batch_size=3, cache_dir=tmp_path / "hf")
    assert answers == local.complete_many(msgs, max_tokens=6)
    rerun = OpenAIChat(str(tiny_model), base_url=served, cache_dir=tmp_path / "cache")
    assert rerun.complete_many(msgs, max_tokens=6) == answers
    assert rerun.stats == {"calls": 0, "cache_hits": 3, "retries": 0}


def test_hf_backend_drafts_rationales(tiny_model, tmp_path, instrument):
    from care.corpus import CorpusSpec, generate
    from care.io import write_jsonl
    from care.rationales.draft import draft_rationales
    from care.sessions import load_sessions

    records, _ = generate(CorpusSpec(n_clients=1, sessions_per_client=(1, 1)), instrument)
    write_jsonl(tmp_path / "s.jsonl", records)
    sessions = load_sessions(tmp_path / "s.jsonl", instrument)
    spec = {"path": str(tiny_model), "batch_size": 6}
    drafts = draft_rationales(
        sessions,
        instrument,
        "hf",
        spec,
        cache_dir=tmp_path / "c",
        max_new_tokens=4,
        dialogue_budget=120,
    )
    assert len(drafts) == 12 and {d["model"] for d in drafts} == {str(tiny_model)}
    assert all(d["backend"] == "hf" and isinstance(d["draft"], str) for d in drafts)
