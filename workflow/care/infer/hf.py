"""The transformers backend: batched greedy decoding, with per-session prefix sharing.

Naive path: every unit prompt is left-padded into a batch and ``model.generate`` prefills it
whole. Prefix-shared path (``prefix_sharing=True``, :mod:`care.infer.shared_decode`): a
session is one row, the prefix common to its prompts (system message + dialogue) once and
each unit's question as a branch that sees the prefix and itself only, with position ids
continuing from the prefix; greedy decoding appends one token per branch and step to the
same row. Every unit sees exactly the context and positions it has in the naive path: the
same greedy tokens, its prefix computed and cached once. The scorer sets the model's
attention to ``shared_prefix_sdpa`` (:mod:`care.train.packing`), plain SDPA for every batch
but the packed prefill.
"""

from __future__ import annotations

import logging

from care.infer.decoding import neutral_model_defaults
from care.infer.engine import Scorer
from care.infer.labels import Generation, label_token_ids
from care.infer.settings import InferenceSettings
from care.infer.shared_decode import decode, length_groups, row_length
from care.model.backbone import end_of_turn_ids
from care.model.fingerprint import model_fingerprint

log = logging.getLogger(__name__)


class LabelRecorder:
    """A logits processor that keeps, per step, the log-probability of each scale label."""

    def __init__(self, label_ids: list[list[int]]) -> None:
        import torch

        self.flat = torch.tensor([i for ids in label_ids for i in ids])
        self.owner = torch.tensor([k for k, ids in enumerate(label_ids) for _ in ids])
        self.n_labels = len(label_ids)
        self.steps: list = []

    def __call__(self, input_ids, scores):
        self.steps.append(self.log_probs(scores))  # stays on the device: no sync per step
        return scores

    def log_probs(self, scores):
        """Each label's log-probability (over its spellings) from logits ``(n, vocab)``."""
        import torch

        logp = torch.log_softmax(scores.float(), dim=-1)[:, self.flat.to(scores.device)]
        out = torch.full((scores.shape[0], self.n_labels), -torch.inf, device=scores.device)
        for k in range(self.n_labels):
            cols = logp[:, self.owner.to(scores.device) == k]
            out[:, k] = torch.logsumexp(cols, dim=-1)
        return out


class HFScorer(Scorer):
    """Score sessions with a loaded transformers causal LM and its tokenizer.

    ``scorer.score(sessions, model=..., variant=..., fold=...)`` yields one prediction row per
    (session, item) (the predictions contract's columns). The model is put in eval mode;
    ``cache`` (an SQLite path) keeps every answer so a rerun resumes, keyed by
    ``fingerprint`` (by default :func:`care.model.fingerprint.model_fingerprint`, computed only
    when caching).
    """

    backend = "hf"

    def __init__(
        self,
        model,
        tokenizer,
        settings: InferenceSettings,
        *,
        instrument,
        cache=None,
        fingerprint: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.eos_ids = end_of_turn_ids(tokenizer, model.generation_config.eos_token_id)
        self.pad_id = _pad_id(tokenizer, self.eos_ids)
        langs = {settings.language} if settings.language else {"en", "zh"}
        self.label_ids = label_token_ids(tokenizer, instrument.scale_points, sorted(langs))
        self.recorder = LabelRecorder(self.label_ids)
        if settings.prefix_sharing:
            from care.model.attention import SPLIT, register

            register()  # plain SDPA unless a batch carries a shared-prefix plan
            self.model.set_attn_implementation(SPLIT)
        self.counters = {"prefill_tokens": 0, "generate_calls": 0, "rows": 0}
        super().__init__(
            settings,
            instrument=instrument,
            cache=cache,
            fingerprint=_fingerprint(model, fingerprint, cache),
        )
        # every field explicit, and none left for the checkpoint's generation_config.json
        self.generation_config = self.decoding.generation_config(self.eos_ids, self.pad_id)
        neutral_model_defaults(model, self.generation_config)

    def set_max_new_tokens(self, value: int) -> None:
        super().set_max_new_tokens(value)
        self.generation_config = self.decoding.generation_config(self.eos_ids, self.pad_id)
        neutral_model_defaults(self.model, self.generation_config)

    @classmethod
    def from_pretrained(cls, path, settings: InferenceSettings, **kw) -> HFScorer:
        """Load a model directory (HF format, tokenizer included) on ``settings``' device and
        dtype and build a scorer on it."""
        model, tokenizer = load_model(path, device=settings.torch_device(), dtype=settings.dtype)
        if kw.get("cache") is not None:
            kw.setdefault("fingerprint", model_fingerprint(path))
        return cls(model, tokenizer, settings, **kw)

    # ------------------------------------------------------------------ generation
    def generate_group(self, prompts):
        if self.settings.prefix_sharing:
            return self._generate_shared(prompts)
        flat = [p.ids for session in prompts for p in session]
        gens: list[Generation] = []
        for start in range(0, len(flat), self.batch_size):
            gens.extend(self._generate_naive(flat[start : start + self.batch_size]))
        return _regroup(gens, prompts)

    def _generate_naive(self, rows: list[list[int]]) -> list[Generation]:
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for n, r in enumerate(rows):
            ids[n, width - len(r) :] = torch.tensor(r)
            mask[n, width - len(r) :] = 1
        self.counters["prefill_tokens"] += sum(len(r) for r in rows)
        return self._generate(ids, mask)

    def _generate_shared(self, prompts) -> list[list[Generation]]:
        """Each session one row, its units branches of it (:mod:`care.infer.shared_decode`);
        sessions of similar length share a forward pass."""
        lengths = [row_length([p.ids for p in session]) for session in prompts]
        gens: list[list[Generation]] = [[] for _ in prompts]
        for group in length_groups(lengths, self.sessions_per_group()):
            answers = decode(
                self.model,
                [[p.ids for p in prompts[k]] for k in group],
                max_new_tokens=self.max_new_tokens,
                eos_ids=self.eos_ids,
                pad_id=self.pad_id,
                labels=self.recorder.log_probs,
                process=self._branch_processor(),
            )
            for k, session in zip(group, answers, strict=True):
                gens[k] = [self._generation(tokens, steps) for tokens, steps in session]
            self.counters["prefill_tokens"] += sum(lengths[k] for k in group)
            self.counters["generate_calls"] += 1
            self.counters["rows"] += len(group)
        return gens

    def _branch_processor(self):
        """The logits processing ``generate`` applies under :attr:`generation_config`, for one
        branch at a time; ``None`` when it changes nothing (greedy, no penalties)."""
        from transformers import (
            LogitsProcessorList,
            MinNewTokensLengthLogitsProcessor,
            RepetitionPenaltyLogitsProcessor,
        )

        config = self.generation_config
        penalty, least = config.repetition_penalty, config.min_new_tokens or 0
        if penalty == 1.0 and least == 0:
            return None

        def process(ids, scores, prompt_length):
            chain = LogitsProcessorList()
            if penalty != 1.0:  # generate's order: the penalty, then the minimum length
                chain.append(RepetitionPenaltyLogitsProcessor(penalty))
            if least:
                chain.append(
                    MinNewTokensLengthLogitsProcessor(
                        prompt_length, least, self.eos_ids, scores.device
                    )
                )
            return chain(ids, scores)

        return process

    def _generate(self, ids, mask) -> list[Generation]:
        import torch
        from transformers import LogitsProcessorList

        recorder = LabelRecorder(self.label_ids)
        device = self.model.device
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                generation_config=self.generation_config,
                logits_processor=LogitsProcessorList([recorder]),
            )
        self.counters["generate_calls"] += 1
        self.counters["rows"] += ids.shape[0]
        new = out[:, ids.shape[1] :].cpu()
        steps = torch.stack(recorder.steps, dim=1).cpu() if recorder.steps else None
        return [
            self._generation(new[n].tolist(), steps[n] if steps is not None else None)
            for n in range(new.shape[0])
        ]

    def _generation(self, tokens: list[int], steps) -> Generation:
        n = next((k for k, t in enumerate(tokens) if t in self.eos_ids), None)
        hit_limit = n is None
        tokens = tokens if n is None else tokens[:n]

        def char_end(j: int) -> int:
            return len(self._decode(tokens[: j + 1]))

        return Generation(
            text=self._decode(tokens),
            n_generated=len(tokens),
            hit_limit=hit_limit,
            # through the stop token's step: a forced position whose argmax is the stop
            label_logprobs=steps[: len(tokens) + 1].tolist() if steps is not None else None,
            char_end=char_end,
        )

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(
            tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )


# --------------------------------------------------------------------------- helpers


def _regroup(gens: list[Generation], prompts) -> list[list[Generation]]:
    out, k = [], 0
    for session in prompts:
        out.append(gens[k : k + len(session)])
        k += len(session)
    return out


def _fingerprint(model, given: str | None, cache) -> str:
    """The given fingerprint; else hash the weights, but only when answers are cached."""
    if given is not None:
        return given
    return model_fingerprint(model) if cache is not None else ""


def _pad_id(tokenizer, eos_ids: list[int]) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]


def load_model(path, *, device: str = "cpu", dtype: str = "auto"):
    """Load a causal LM and its tokenizer from a local directory (never downloads)."""
    import torch

    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    try:
        from care.model.backbone import load_causal_lm, load_tokenizer
    except ImportError:
        load_causal_lm = load_tokenizer = None
    if load_causal_lm is not None:
        model = load_causal_lm(path, device=device, dtype=torch_dtype)
        tokenizer = load_tokenizer(path)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, local_files_only=True
        ).to(device)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer
