"""The vLLM backend (GPU): greedy decoding with automatic prefix caching.

vLLM runs in its own environment (``envs/vllm.yaml``: it pins its own torch and
transformers); it is imported only when this backend runs. Prompts are rendered to token
ids by the same code as the ``hf`` backend and handed to vLLM as token prompts, so both
backends see identical inputs; vLLM's prefix cache reuses the KV blocks of a session's
shared system message + dialogue across its items. Scale-label probabilities come from the
top ``logprobs`` at each generated position (labels outside the top k count as
probability 0 before renormalising).
"""

from __future__ import annotations

import math

from care.infer.engine import Scorer
from care.infer.labels import Generation, label_token_ids
from care.infer.settings import InferenceSettings
from care.model.backbone import load_end_of_turn_ids
from care.model.fingerprint import model_fingerprint


class VLLMScorer(Scorer):
    """Score sessions with vLLM on ``tensor_parallel_size`` GPUs."""

    backend = "vllm"
    # Prompts handed to vLLM per generate call (whole sessions: ~21 of 12 items): enough to
    # fill its scheduler's batch (max_num_seqs, 256 by default), and the answer cache is
    # written after each call, so a preempted job redoes at most one chunk, not the fold
    # (25-60 min of 4 GPUs for a 70B). The prefix cache outlives calls. (``batch_size`` is
    # the hf backend's forward batch, not used here.)
    prompts_per_call = 256

    def __init__(
        self,
        path: str,
        settings: InferenceSettings,
        *,
        instrument,
        cache=None,
        tokenizer=None,
        llm=None,
        load_format: str = "auto",
        seed: int = 0,
    ) -> None:
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.path = str(path)
        self.tokenizer = tokenizer
        self.load_format = load_format  # "dummy": random weights (care bench infer)
        self.seed = seed
        langs = {settings.language} if settings.language else {"en", "zh"}
        self.label_ids = label_token_ids(tokenizer, instrument.scale_points, sorted(langs))
        self.eos_ids = load_end_of_turn_ids(self.path, tokenizer)
        self._llm = llm
        super().__init__(
            settings,
            instrument=instrument,
            cache=cache,
            fingerprint=model_fingerprint(path) if cache is not None else "",
        )

    # ------------------------------------------------------------------ engine
    def engine_args(self) -> dict:
        """Keyword arguments for ``vllm.LLM`` (inspectable without a GPU)."""
        settings = self.settings
        return {
            "model": self.path,
            "tokenizer": self.path,
            "tensor_parallel_size": settings.tensor_parallel_size,
            "dtype": settings.dtype,
            "enable_prefix_caching": True,
            "max_model_len": settings.max_length,
            "gpu_memory_utilization": settings.gpu_memory_utilization,
            "max_logprobs": max(settings.top_logprobs, 1),
            "load_format": self.load_format,
            "seed": self.seed,
        }

    def sampling_args(self) -> dict:
        """Keyword arguments for ``vllm.SamplingParams``: the decoding settings in full."""
        return self.decoding.sampling_args(self.eos_ids, self.settings.top_logprobs, self.seed)

    @property
    def llm(self):
        if self._llm is None:
            try:
                from vllm import LLM
            except ImportError as exc:
                raise RuntimeError(
                    "the vllm backend needs vLLM: use its environment, envs/vllm.yaml"
                ) from exc
            self._llm = LLM(**self.engine_args())
        return self._llm

    def sessions_per_group(self) -> int:
        return max(1, self.prompts_per_call // len(self.units))

    # ------------------------------------------------------------------ generation
    def generate_group(self, prompts):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        flat = [TokensPrompt(prompt_token_ids=p.ids) for session in prompts for p in session]
        outputs = self.llm.generate(flat, SamplingParams(**self.sampling_args()), use_tqdm=False)
        gens = [self._generation(out.outputs[0]) for out in outputs]
        grouped, k = [], 0
        for session in prompts:
            grouped.append(gens[k : k + len(session)])
            k += len(session)
        return grouped

    def _generation(self, completion) -> Generation:
        tokens = list(completion.token_ids)
        eos = set(self.eos_ids)
        if tokens and tokens[-1] in eos:
            tokens = tokens[:-1]
        steps = None
        if completion.logprobs:
            # through the stop token's step (a forced position whose argmax is the stop)
            steps = [self._label_logprobs(step) for step in completion.logprobs[: len(tokens) + 1]]

        def char_end(j: int) -> int:
            return len(self._decode(tokens[: j + 1]))

        return Generation(
            text=self._decode(tokens),
            n_generated=len(tokens),
            hit_limit=completion.finish_reason == "length",
            label_logprobs=steps,
            char_end=char_end,
        )

    def _label_logprobs(self, step: dict) -> list[float]:
        out = []
        for ids in self.label_ids:
            values = [step[i].logprob for i in ids if i in step]
            out.append(_logsumexp(values) if values else -math.inf)
        return out

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(
            tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))
