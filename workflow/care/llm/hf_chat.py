"""Chat completions from a local transformers causal LM given by path, batched and cached.

Prompts are rendered with the model's own chat template (``apply_chat_template(...,
add_generation_prompt=True)``), padded on the left, and generated greedily unless a
temperature above zero is asked for. Requests are sorted by length so a batch wastes little
padding; answers come back in input order. The cache key names the model by
:func:`care.model.fingerprint.model_fingerprint` (its files' content), so a model retrained in
place is not served stale answers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from care.llm.cache import ResponseCache, cache_key
from care.model.fingerprint import model_fingerprint

log = logging.getLogger(__name__)

Messages = Sequence[dict[str, str]]
DEFAULT_CACHE = Path("results/cache/llm")


class HFChat:
    """A local causal LM; ``complete_many`` has the same signature as ``OpenAIChat``'s."""

    backend = "hf"

    def __init__(
        self,
        model_path: str | os.PathLike,
        batch_size: int = 8,
        cache_dir: str | Path = DEFAULT_CACHE,
        *,
        device: str | None = None,
        dtype: str = "auto",
    ) -> None:
        import torch

        from care.model.backbone import load_causal_lm, load_end_of_turn_ids, load_tokenizer

        self.model_path = str(model_path)
        self.batch_size = max(1, int(batch_size))
        self.cache = ResponseCache(cache_dir)
        self.stats = {"calls": 0, "cache_hits": 0, "retries": 0}
        self._fingerprint = model_fingerprint(model_path)
        # the loaders, stop tokens and fingerprint of training and inference (care.model.backbone)
        self.tokenizer = load_tokenizer(self.model_path)  # a chat template is required
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = load_end_of_turn_ids(self.model_path, self.tokenizer)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_causal_lm(self.model_path, dtype=dtype, device=self.device).eval()

    def __repr__(self) -> str:
        return f"HFChat(model_path={self.model_path!r})"

    @property
    def model_name(self) -> str:
        return self.model_path

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False
        )

    def complete_many(
        self,
        message_lists: Sequence[Messages],
        max_tokens: int,
        temperature: float = 0.0,
        **decoding: Any,
    ) -> list[str]:
        params = {"max_tokens": max_tokens, "temperature": temperature, **decoding}
        keys = [cache_key(self.backend, self._fingerprint, list(m), params) for m in message_lists]
        answers: list[str | None] = [self.cache.get(k) for k in keys]
        todo = [n for n, a in enumerate(answers) if a is None]
        self.stats["cache_hits"] += len(answers) - len(todo)
        if todo:
            log.info(
                "%s: generating %d answers (%d cached), batch size %d",
                self.model_path,
                len(todo),
                len(answers) - len(todo),
                self.batch_size,
            )
            prompts = {n: self.render(message_lists[n]) for n in todo}
            lengths = {n: self.count_tokens(prompts[n]) for n in todo}
            todo.sort(key=lambda n: (-lengths[n], n))
            for start in _progress(range(0, len(todo), self.batch_size)):
                batch = todo[start : start + self.batch_size]
                texts = self._generate(
                    [prompts[n] for n in batch], max_tokens, temperature, decoding
                )
                for n, text in zip(batch, texts, strict=True):
                    self.cache.put(
                        keys[n], text, {"backend": self.backend, "model": self.model_path}
                    )
                    answers[n] = text
        log.info(
            "%s: %d generated, %d cache hits so far",
            self.model_path,
            self.stats["calls"],
            self.stats["cache_hits"],
        )
        return [a or "" for a in answers]

    def _generate(
        self, prompts: list[str], max_tokens: int, temperature: float, decoding: dict[str, Any]
    ) -> list[str]:
        import torch
        from transformers import GenerationConfig

        enc = self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        sample = temperature > 0
        if "seed" in decoding:
            torch.manual_seed(int(decoding["seed"]))
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_p=decoding.get("top_p") if sample else None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.eos_ids,
        )
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=config)
        self.stats["calls"] += len(prompts)
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        return [
            t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        ]


def _progress(iterable):
    from care.progress import bar

    return bar(iterable, desc="generate", unit="batch")
