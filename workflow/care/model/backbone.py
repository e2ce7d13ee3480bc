"""Backbones: tiny randomly initialised Llama/Qwen2 models for the demo, and the loader.

``care train backbone tiny --arch llama|qwen2`` builds a ``LlamaForCausalLM`` or
``Qwen2ForCausalLM`` of a few hundred thousand parameters with a byte-level BPE tokenizer
trained on a corpus (the dialogue turns, the rendered prompt templates, the instrument's
wording and any extra text files). The demo trains it on the unlabeled corpus and its
rationales: one tokenizer serves all five folds, so it must see no labeled session, whichever
fold tests it. The tokenizer carries the special tokens and the chat template of its family,
so prompts render exactly as with the real checkpoints:

- Llama 3: ``<|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>``
- Qwen2: ``<|im_start|>{role}\\n{content}<|im_end|>\\n``

Digits are always single tokens (scores and turn numbers). With ``cross_word_merges`` the BPE
merges may span spaces (whole phrases become tokens, as SentencePiece allows), which makes the
demo's templated prompts short; newlines always split, so a dialogue line tokenizes the same
whatever follows it.

:func:`load_causal_lm` / :func:`load_tokenizer` load any local Hugging Face causal-LM
directory (the tiny ones or a real checkpoint given by path); nothing is downloaded, and a
directory that is not a causal LM is rejected with a one-line error.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from care.config import default
from care.errors import CareInputError

# The real templates of each family (Meta-Llama-3-Instruct; Qwen2-Instruct), as format specs.
LLAMA3_TEMPLATE = (
    "{% for message in messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
QWEN2_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """A model family's special tokens, chat template and end-of-turn ids."""

    model_type: str
    specials: tuple[str, ...]
    bos: str | None
    eos: str  # the tokenizer's eos: the chat end-of-turn token
    pad: str
    stop: tuple[str, ...]  # generation_config.eos_token_id, in the family's order
    chat_template: str


FAMILIES = {
    "llama": Family(
        model_type="llama",
        specials=(
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|finetune_right_pad_id|>",
        ),
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
        stop=("<|end_of_text|>", "<|eot_id|>"),
        chat_template=LLAMA3_TEMPLATE,
    ),
    "qwen2": Family(
        model_type="qwen2",
        specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        stop=("<|im_end|>", "<|endoftext|>"),
        chat_template=QWEN2_TEMPLATE,
    ),
}
ROLES = ("system", "user", "assistant")
GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


TINY = "backbones.*.tiny"  # the config section of a tiny backbone


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny backbone (config ``backbones.<name>.tiny``)."""

    arch: str = "llama"
    hidden_size: int = default(f"{TINY}.hidden_size")
    intermediate_size: int = default(f"{TINY}.intermediate_size")
    num_hidden_layers: int = default(f"{TINY}.num_hidden_layers")
    num_attention_heads: int = default(f"{TINY}.num_attention_heads")
    num_key_value_heads: int = default(f"{TINY}.num_key_value_heads")
    max_position_embeddings: int = default(f"{TINY}.max_position_embeddings")
    rope_theta: float = default(f"{TINY}.rope_theta")
    tie_word_embeddings: bool = default(f"{TINY}.tie_word_embeddings")
    vocab_size: int = default(f"{TINY}.vocab_size")
    cross_word_merges: bool = default(f"{TINY}.cross_word_merges")
    tokenizer_texts: tuple[str, ...] = tuple(default(f"{TINY}.tokenizer_texts"))
    # the corpus whose turns and prompts train the tokenizer (the rule passes it as
    # --sessions): text outside the labeled corpus, so no test fold's words become tokens
    tokenizer_sessions: str | None = None
    seed: int = default(f"{TINY}.seed")

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> TinySpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"unknown tiny backbone settings: {unknown}")
        lists = {k: tuple(v) for k, v in section.items() if isinstance(v, list)}
        spec = cls(**{**section, **lists})
        if spec.arch not in FAMILIES:
            raise ValueError(f"unknown arch {spec.arch!r}; expected one of {sorted(FAMILIES)}")
        return spec


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(
    texts: Iterable[str], family: Family, vocab_size: int, cross_word_merges: bool = True
):
    """A byte-level BPE tokenizer trained on ``texts``, wrapped as ``PreTrainedTokenizerFast``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    split = [
        pre_tokenizers.Split(Regex(r"\r?\n+"), behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
    ]
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=not cross_word_merges)
    tok.pre_tokenizer = pre_tokenizers.Sequence([*split, byte_level])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(family.specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    if family.bos:  # like the real Llama 3 tokenizer: encode() prepends <|begin_of_text|>
        bos_id = tok.token_to_id(family.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{family.bos} $A",
            pair=f"{family.bos} $A {family.bos} $B",
            special_tokens=[(family.bos, bos_id)],
        )
    extra = [t for t in family.specials if t not in (family.bos, family.eos, family.pad)]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=family.bos,
        eos_token=family.eos,
        pad_token=family.pad,
        additional_special_tokens=extra,
        chat_template=family.chat_template,
        model_max_length=1_000_000,
        clean_up_tokenization_spaces=False,
    )


def corpus_texts(
    sessions_path: str | Path,
    instrument,
    extra_files: Iterable[str | Path] = (),
    prompt_sessions: int = 40,
) -> Iterator[str]:
    """Texts to train the tokenizer on: turns, rendered prompts and targets, extra files.

    Prompts are rendered for the first ``prompt_sessions`` sessions in every granularity and
    variant, so the templates' wording, the instrument items and the scale become tokens.
    """
    from care import prompts
    from care.sessions import iter_sessions

    yield from ROLES
    for n, session in enumerate(iter_sessions(sessions_path, instrument)):
        for turn in session.turns:
            yield turn.text
        if n >= prompt_sessions:
            continue
        dialogue, _ = prompts.session_dialogue(session)
        for granularity in prompts.GRANULARITIES:
            for unit in prompts.units(instrument, granularity):
                for variant in prompts.VARIANTS:
                    for message in prompts.build_messages(
                        instrument, unit, variant, session.language, dialogue
                    ):
                        yield message["content"]
                scores = {
                    i: instrument.scale_points[(n + k) % len(instrument.scale_points)]
                    for k, i in enumerate(unit)
                }
                yield prompts.format_target(unit, scores, None, "score_only", session.language)
    for path in extra_files:
        yield from _strings_of(Path(path))


def _strings_of(path: Path) -> Iterator[str]:
    """Every string value of a JSON-lines file, or the lines of a text file."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if path.suffix != ".jsonl":
                yield line.rstrip("\n")
                continue
            if line.strip():
                yield from (v for v in json.loads(line).values() if isinstance(v, str))


# --------------------------------------------------------------------------- model


#: Model shapes by name: (arch, sizes). ``tiny`` is the demo's backbone (config.yaml
#: ``backbones.*.tiny``); the others are real checkpoints' published shapes, for the
#: benchmarks (``care bench train --shape``, ``care bench infer --random-model``).
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny": (
        "llama",
        {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 3000,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": True,
        },
    ),
    "small": (
        "llama",
        {
            "hidden_size": 256,
            "intermediate_size": 688,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "vocab_size": 3000,
        },
    ),
    "qwen2.5-0.5b": (
        "qwen2",
        {
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "vocab_size": 151936,
            "tie_word_embeddings": True,
            "rope_theta": 1000000.0,
        },
    ),
    "qwen2.5-1.5b": (
        "qwen2",
        {
            "hidden_size": 1536,
            "intermediate_size": 8960,
            "num_hidden_layers": 28,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "vocab_size": 151936,
            "tie_word_embeddings": True,
            "rope_theta": 1000000.0,
        },
    ),
    "qwen2.5-7b": (
        "qwen2",
        {
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "vocab_size": 152064,
            "tie_word_embeddings": False,
            "rope_theta": 1000000.0,
        },
    ),
    "llama-3.1-8b": (
        "llama",
        {
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "vocab_size": 128256,
            "tie_word_embeddings": False,
            "rope_theta": 500000.0,
        },
    ),
}
SHAPES["llama-3-8b"] = SHAPES["llama-3.1-8b"]  # the same layer shape


def resolve_shape(shape: str | dict, arch: str | None = None) -> tuple[str, dict[str, Any]]:
    """``(arch, sizes)`` of a named shape, or of a dict of sizes (a JSON string too) whose
    ``arch`` key, else ``arch``, else llama, names the family. ``arch`` overrides a name's."""
    if isinstance(shape, str) and shape in SHAPES:
        named_arch, sizes = SHAPES[shape]
        return arch or named_arch, dict(sizes)
    if isinstance(shape, str):
        try:
            shape = json.loads(shape)
        except ValueError:
            raise ValueError(
                f"unknown shape {shape!r}: one of {sorted(SHAPES)} or a JSON dict of sizes"
            ) from None
    sizes = dict(shape)
    return sizes.pop("arch", None) or arch or "llama", sizes


def init_model(
    arch: str,
    sizes: dict[str, Any],
    tokenizer=None,
    *,
    seed: int = 0,
    dtype: Any = None,
    device: str = "cpu",
):
    """A randomly initialised ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` of ``sizes``.

    With a tokenizer of the family (:func:`train_tokenizer`), the vocabulary, the special
    ids and the generation config are the tokenizer's, as in every backbone the workflow
    builds. Built directly on ``device`` in ``dtype`` (an 8B shape never exists in float32
    on the host); ``device="meta"`` gives a weightless model whose config can be saved.
    """
    import torch
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    config_cls, model_cls = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }[arch]
    sizes = dict(sizes)
    sizes.setdefault("max_position_embeddings", 2048)
    special: dict[str, Any] = {}
    if tokenizer is not None:
        family = FAMILIES[arch]
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in family.specials}
        sizes["vocab_size"] = len(tokenizer)
        special = {
            "bos_token_id": ids.get(family.bos) if family.bos else None,
            "eos_token_id": [ids[t] for t in family.stop],
            "pad_token_id": ids[family.pad],
        }
    config = config_cls(**sizes, **special)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    try:
        if dtype is not None:
            torch.set_default_dtype(dtype)
        with torch.device(device):
            model = model_cls(config)
    finally:
        torch.set_default_dtype(previous)
    if special:
        model.generation_config = GenerationConfig(**special, do_sample=False)
    return model


def random_backbone(
    shape: str | dict,
    texts: Iterable[str],
    *,
    arch: str | None = None,
    vocab_size: int = 4000,
    seed: int = 0,
    dtype: Any = None,
    device: str = "cpu",
    max_positions: int = 0,
):
    """``(model, tokenizer)``: a backbone as ``care train backbone tiny`` builds it (the family's
    tokenizer, chat template and special ids), in memory, at any shape; the tokenizer is
    trained on ``texts`` and sets the vocabulary. ``max_positions`` raises the shape's
    context length when a run needs more."""
    arch, sizes = resolve_shape(shape, arch)
    sizes["max_position_embeddings"] = max(
        sizes.get("max_position_embeddings", 2048), max_positions
    )
    tokenizer = train_tokenizer(texts, FAMILIES[arch], vocab_size)
    model = init_model(arch, sizes, tokenizer, seed=seed, dtype=dtype, device=device)
    return model.eval(), tokenizer


def build_tiny(spec: TinySpec, texts: Iterable[str], out_dir: str | Path) -> dict[str, Any]:
    """Train the tokenizer, initialise the model, save both (and the generation config)."""
    family = FAMILIES[spec.arch]
    tokenizer = train_tokenizer(texts, family, spec.vocab_size, spec.cross_word_merges)
    sizes = {
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "rope_theta": spec.rope_theta,
        "tie_word_embeddings": spec.tie_word_embeddings,
    }
    model = init_model(spec.arch, sizes, tokenizer, seed=spec.seed)
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return {
        "arch": spec.arch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
    }


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only on success."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- loading


def check_causal_lm_dir(path: str | Path):
    """The model config of a local causal-LM directory; :class:`CareInputError` otherwise."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    root = Path(path)
    if not root.is_dir():
        raise CareInputError(root, "model directory not found (give a local Hugging Face dir)")
    if not (root / "config.json").is_file():
        raise CareInputError(
            root / "config.json", "not a Hugging Face model directory: config.json is missing"
        )
    try:
        config = AutoConfig.from_pretrained(root, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CareInputError(root / "config.json", f"unreadable model config: {exc}") from None
    archs = list(getattr(config, "architectures", None) or [])
    causal = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and (
        not archs or any(a.endswith("ForCausalLM") for a in archs)
    )
    if not causal:
        raise CareInputError(
            root / "config.json",
            f"not a causal language model (model_type {config.model_type!r}, "
            f"architectures {archs})",
            field="architectures",
        )
    weights = (
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    )
    if not any((root / w).is_file() for w in weights):
        raise CareInputError(root, "no model weights (model.safetensors or pytorch_model.bin)")
    return config


def load_causal_lm(path: str | Path, *, dtype: Any = "auto", device: str = "cpu"):
    """Load a local causal LM (never downloads); ``dtype`` a torch dtype, its name or "auto"."""
    import torch
    from transformers import AutoModelForCausalLM

    check_causal_lm_dir(path)
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    return model.to(device)


def load_tokenizer(path: str | Path):
    """Load the tokenizer of a local model dir; it must have a chat template."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    # A tokenizer saved as the generic fast backend (the tiny ones) loads as saved:
    # AutoTokenizer would swap in the family's class (Qwen2Tokenizer) and its own splitting.
    config_file = Path(path) / "tokenizer_config.json"
    declared = (
        json.loads(config_file.read_text(encoding="utf-8")).get("tokenizer_class")
        if config_file.is_file()
        else None
    )
    loader = PreTrainedTokenizerFast if declared in GENERIC_TOKENIZERS else AutoTokenizer
    try:
        tokenizer = loader.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CareInputError(path, f"no usable tokenizer: {exc}") from None
    if not tokenizer.chat_template:
        raise CareInputError(path, "the tokenizer has no chat template", field="chat_template")
    return tokenizer


def end_of_turn_ids(tokenizer, *eos_values: Any) -> list[int]:
    """Token ids that end the assistant's turn: the one definition for training and inference.

    The union of the given eos ids (a generation config's), the tokenizer's eos and the
    special token the chat template writes right after an assistant message (Llama 3's
    ``<|eot_id|>``, ChatML's ``<|im_end|>`` for Qwen2 and SmolLM2): training labels the
    answer through the first of them and decoding stops at any of them.
    """
    ids: set[int] = set()
    for value in (*eos_values, tokenizer.eos_token_id, template_end_of_turn(tokenizer)):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
    if not ids:
        raise ValueError("the model and tokenizer define no end-of-turn token")
    return sorted(ids)


def template_end_of_turn(tokenizer) -> int | None:
    """The special token the chat template closes an assistant message with, if any."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    mark = "\u2063"  # an invisible character that no template writes itself
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": mark}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template that cannot render a plain exchange: no end-of-turn known
        return None
    if mark not in text:
        return None
    after = text[text.rindex(mark) + len(mark) :]
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    for token in tokenizer(after, add_special_tokens=False)["input_ids"]:
        if token in special:
            return int(token)
    return None


def load_end_of_turn_ids(path: str | Path, tokenizer) -> list[int]:
    """End-of-turn ids of a model dir: its generation config's eos ids and the tokenizer's."""
    from transformers import AutoConfig, GenerationConfig

    root = Path(path)
    if (root / "generation_config.json").is_file():
        eos = GenerationConfig.from_pretrained(root, local_files_only=True).eos_token_id
    else:
        eos = getattr(AutoConfig.from_pretrained(root, local_files_only=True), "eos_token_id", None)
    return end_of_turn_ids(tokenizer, eos)
