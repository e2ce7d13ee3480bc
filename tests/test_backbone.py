"""Tiny backbones: chat formats as their families render them, tokens, determinism, loader."""

from __future__ import annotations

import hashlib
import json

import pytest
from care.cli import main
from care.errors import CareInputError
from care.model.backbone import (
    FAMILIES,
    check_causal_lm_dir,
    load_causal_lm,
    load_end_of_turn_ids,
    load_tokenizer,
)

from tests import train_fixtures

build_backbone = train_fixtures.build_backbone

CONVERSATION = [
    {"role": "system", "content": "You rate sessions."},
    {"role": "user", "content": "Rate item 4."},
    {"role": "assistant", "content": "Score: 4"},
]

# The strings the real Meta-Llama-3-Instruct and Qwen2-Instruct templates produce.
LLAMA3_FULL = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou rate sessions.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nRate item 4.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nScore: 4<|eot_id|>"
)
LLAMA3_PROMPT = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou rate sessions.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nRate item 4.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
QWEN2_FULL = (
    "<|im_start|>system\nYou rate sessions.<|im_end|>\n<|im_start|>user\nRate item 4.<|im_end|>\n"
    "<|im_start|>assistant\nScore: 4<|im_end|>\n"
)
QWEN2_PROMPT = (
    "<|im_start|>system\nYou rate sessions.<|im_end|>\n<|im_start|>user\nRate item 4.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.mark.parametrize(
    "arch,full,prompt", [("llama", LLAMA3_FULL, LLAMA3_PROMPT), ("qwen2", QWEN2_FULL, QWEN2_PROMPT)]
)
def test_chat_format_matches_family(tiny_backbones, arch, full, prompt):
    tok = load_tokenizer(tiny_backbones[arch])
    assert tok.apply_chat_template(CONVERSATION, tokenize=False) == full
    assert (
        tok.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
        == prompt
    )


def test_family_details_llama_trims_qwen_adds_default_system(tiny_backbones):
    llama = load_tokenizer(tiny_backbones["llama"])
    padded = [{"role": "user", "content": "  Rate item 4.\n"}]
    assert llama.apply_chat_template(padded, tokenize=False).endswith(
        "<|start_header_id|>user<|end_header_id|>\n\nRate item 4.<|eot_id|>"
    )
    qwen = load_tokenizer(tiny_backbones["qwen2"])
    assert qwen.apply_chat_template(CONVERSATION[1:2], tokenize=False).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    )


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_special_tokens_digits_and_eos(tiny_backbones, arch):
    path = tiny_backbones[arch]
    tok = load_tokenizer(path)
    family = FAMILIES[arch]
    for special in family.specials:  # each special token is one token of its own
        assert tok(special, add_special_tokens=False)["input_ids"] == [
            tok.convert_tokens_to_ids(special)
        ]
    ids = tok("Score: 4 (turn 12)", add_special_tokens=False)["input_ids"]
    pieces = [tok.decode([i]) for i in ids]
    assert "4" in pieces and "1" in pieces and "2" in pieces  # digits are single tokens
    assert tok.eos_token == family.eos
    generation = json.loads((path / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tok.convert_tokens_to_ids(t) for t in family.stop]
    assert set(load_end_of_turn_ids(path, tok)) == set(generation["eos_token_id"])
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == [
        {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[arch]
    ]


def test_loaded_tokenizer_splits_as_trained(tiny_backbones, train_corpus):
    """The saved pipeline survives loading (AutoTokenizer would swap Qwen2's own splitting in)."""
    from tokenizers import Tokenizer

    text = "\n".join(t["text"] for t in train_corpus["records"][0]["turns"])
    for path in tiny_backbones.values():
        raw = Tokenizer.from_file(str(path / "tokenizer.json"))
        assert (
            load_tokenizer(path)(text, add_special_tokens=False)["input_ids"]
            == raw.encode(text, add_special_tokens=False).ids
        )


def test_same_seed_same_backbone(tmp_path, train_corpus, instrument):
    a = build_backbone(tmp_path / "a", "llama", train_corpus, instrument, seed=3)
    b = build_backbone(tmp_path / "b", "llama", train_corpus, instrument, seed=3)
    c = build_backbone(tmp_path / "c", "llama", train_corpus, instrument, seed=4)

    def digest(p):
        return hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest()

    assert digest(a) == digest(b) != digest(c)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_loader_loads_a_causal_lm(tiny_backbones):
    model = load_causal_lm(tiny_backbones["qwen2"], dtype="float32", device="cpu")
    assert type(model).__name__ == "Qwen2ForCausalLM"


def test_loader_rejects_what_is_not_a_causal_lm(tmp_path):
    with pytest.raises(CareInputError, match="not found"):
        check_causal_lm_dir(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CareInputError, match="config.json is missing"):
        check_causal_lm_dir(empty)
    encoder = tmp_path / "bert"
    encoder.mkdir()
    (encoder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bert",
                "architectures": ["BertModel"],
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 64,
            }
        )
    )
    with pytest.raises(CareInputError, match="not a causal language model"):
        check_causal_lm_dir(encoder)
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(
        json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    with pytest.raises(CareInputError, match="no model weights"):
        check_causal_lm_dir(no_weights)


def test_cli_check_reports_bad_dir_in_one_line(tmp_path, capsys):
    assert main(["train", "backbone", "check", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json" in err[0]


def test_cli_tiny_builds_a_loadable_backbone(tmp_path, train_corpus, instrument):
    out = tmp_path / "qwen"
    spec = json.dumps(
        {
            "arch": "qwen2",
            "vocab_size": 600,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "num_hidden_layers": 1,
        }
    )
    assert (
        main(
            [
                "train",
                "backbone",
                "tiny",
                "--spec",
                spec,
                "--sessions",
                str(train_corpus["sessions"]),
                "--instrument",
                instrument.path,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert check_causal_lm_dir(out).model_type == "qwen2"
    assert not list(tmp_path.glob(".qwen.*"))  # the temporary directory is gone
