"""Randomly initialised causal LMs and a small BPE tokenizer, built offline from a spec.

For the inference benchmark (``care bench infer --random-model``, e.g. a Llama-3-8B shape on a
GPU) and for tests: nothing is downloaded. The chat templates follow the Llama 3 and Qwen2
formats, so prompts render exactly as with the real checkpoints' templates.
"""

from __future__ import annotations

from collections.abc import Iterable

CHAT_TEMPLATES = {
    "llama": (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}"
    ),
    "qwen2": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
}
SPECIALS = {
    "llama": {
        "bos": "<|begin_of_text|>",
        "eos": "<|eot_id|>",
        "pad": "<|pad|>",
        "extra": ["<|start_header_id|>", "<|end_header_id|>"],
    },
    "qwen2": {"bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>", "extra": ["<|im_start|>"]},
}

#: Shapes for ``--random-model``: a name or a JSON dict of config overrides.
SHAPES = {
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "small": {
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
    },
    "llama-3-8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "rope_theta": 500000.0,
    },
    "qwen2.5-7b": {
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "rope_theta": 1000000.0,
    },
}


def train_tokenizer(texts: Iterable[str], arch: str = "llama", vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained on ``texts``, with the arch's chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = SPECIALS[arch]
    specials = [t for t in (spec["bos"], spec["eos"], spec["pad"], *spec["extra"]) if t]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec["bos"],
        eos_token=spec["eos"],
        pad_token=spec["pad"],
        additional_special_tokens=spec["extra"],
        chat_template=CHAT_TEMPLATES[arch],
    )


def random_model(
    arch: str,
    shape: str | dict,
    vocab_size: int,
    *,
    seed: int = 0,
    max_positions: int = 8192,
    dtype=None,
    device: str = "cpu",
):
    """A randomly initialised ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` of a given shape.

    Built directly on ``device`` in ``dtype`` (an 8B shape never exists in float32 on the
    host); ``device="meta"`` gives a weightless model whose config can be saved.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    dims = dict(SHAPES[shape]) if isinstance(shape, str) else dict(shape)
    dims.setdefault("max_position_embeddings", max_positions)
    config_cls, model_cls = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }[arch]
    config = config_cls(vocab_size=vocab_size, tie_word_embeddings=False, **dims)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    try:
        if dtype is not None:
            torch.set_default_dtype(dtype)
        with torch.device(device):
            model = model_cls(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def set_special_ids(model, tokenizer) -> None:
    """Point the model's generation config at the tokenizer's special tokens."""
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
