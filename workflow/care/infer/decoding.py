"""Decoding settings: one definition, spelt out in full for every backend.

transformers fills every generation field a caller leaves unset from the checkpoint's
``generation_config.json`` (Qwen2.5 sets ``repetition_penalty`` 1.05, which reshapes the
logits before the label probabilities are read), while vLLM applies only the
``SamplingParams`` it is given. So nothing is left unset: :class:`Decoding` states every
parameter that can change a logit or a stop, builds the ``hf`` backend's
``GenerationConfig`` and the ``vllm`` backend's ``SamplingParams`` arguments from the same
values, and is recorded in the outputs (coverage files, the answer cache key).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Decoding:
    """Greedy decoding (the paper's temperature 0) with no logits processing by default."""

    max_new_tokens: int
    repetition_penalty: float = 1.0  # 1.0: none (the checkpoint's own value is not used)
    min_new_tokens: int = 0  # the end-of-turn token may come at once

    def record(self) -> dict:
        """What the outputs record: every parameter, including the fixed ones."""
        return {
            **asdict(self),
            "strategy": "greedy",
            "temperature": 0.0,
            "top_k": None,
            "top_p": 1.0,
            "min_p": 0.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "no_repeat_ngram_size": 0,
        }

    def generation_config(self, eos_token_id: list[int], pad_token_id: int):
        """transformers' ``GenerationConfig`` with every field that shapes the logits set."""
        from transformers import GenerationConfig

        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.min_new_tokens,
            min_length=0,
            do_sample=False,
            num_beams=1,
            num_beam_groups=1,
            temperature=1.0,  # unused without sampling; 1.0 keeps transformers from warning
            top_k=50,
            top_p=1.0,
            typical_p=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
            repetition_penalty=self.repetition_penalty,
            encoder_repetition_penalty=1.0,
            length_penalty=1.0,
            no_repeat_ngram_size=0,
            encoder_no_repeat_ngram_size=0,
            renormalize_logits=False,
            remove_invalid_values=False,
            guidance_scale=1.0,
            eos_token_id=list(eos_token_id),
            pad_token_id=pad_token_id,
            use_cache=True,
        )

    def sampling_args(self, stop_token_ids: list[int], logprobs: int, seed: int) -> dict:
        """Keyword arguments for ``vllm.SamplingParams`` with the same values."""
        return {
            "n": 1,
            "temperature": 0.0,  # greedy
            "top_p": 1.0,
            "top_k": 0,  # vLLM: 0 (or -1) disables top-k
            "min_p": 0.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "repetition_penalty": self.repetition_penalty,
            "min_tokens": self.min_new_tokens,
            "max_tokens": self.max_new_tokens,
            "stop_token_ids": list(stop_token_ids),
            "ignore_eos": False,
            "logprobs": logprobs,
            "skip_special_tokens": True,
            "seed": seed,
        }


def neutral_model_defaults(model, config) -> None:
    """Replace the checkpoint's generation defaults on a loaded model with ``config``.

    ``generate`` fills any field that is None from ``model.generation_config``; with the
    explicit config there, a field added in a later transformers release cannot bring a
    checkpoint's setting back either.
    """
    model.generation_config = config
