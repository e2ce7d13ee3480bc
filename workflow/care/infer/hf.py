"""The transformers backend: batched greedy decoding, with per-session prefix sharing.

Naive path: every unit prompt is left-padded into a batch and ``model.generate`` prefills it
whole. Prefix-shared path (``prefix_sharing=True``): the token prefix common to a session's
prompts (system message + dialogue, found as the longest common prefix of the rendered ids)
is run through the model once per session; its KV cache is then repeated for the session's
units and ``model.generate`` prefills only the item-specific suffixes. Layout of a batch row::

    [left pad][session prefix][pad holes][unit suffix] -> generated tokens
     ^------ cached once -----^

The attention mask covers prefix and suffix but not the pads, and ``generate`` derives each
token's position from the mask (cumulative sum), so every row sees exactly the positions and
context it has in the naive path: greedy outputs are the same tokens.
"""

from __future__ import annotations

import copy
import logging

from care.backbone import end_of_turn_ids
from care.fingerprint import model_fingerprint
from care.infer.decoding import neutral_model_defaults
from care.infer.engine import Generation, Scorer, label_token_ids

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
        import torch

        logp = torch.log_softmax(scores.float(), dim=-1)[:, self.flat.to(scores.device)]
        out = torch.full((scores.shape[0], self.n_labels), -torch.inf, device=scores.device)
        # logsumexp over each label's spellings
        for k in range(self.n_labels):
            cols = logp[:, self.owner.to(scores.device) == k]
            out[:, k] = torch.logsumexp(cols, dim=-1)
        self.steps.append(out)  # stays on the device: no sync per step
        return scores


class HFScorer(Scorer):
    """Score sessions with a loaded transformers causal LM and its tokenizer.

    ``scorer.score(sessions, model=..., variant=..., fold=...)`` yields one prediction row per
    (session, item) (the predictions contract's columns). The model is put in eval mode;
    ``cache`` (an SQLite path) keeps every answer so a rerun resumes, keyed by
    ``fingerprint`` (by default :func:`care.fingerprint.model_fingerprint`, computed only
    when caching).
    """

    backend = "hf"

    def __init__(
        self,
        model,
        tokenizer,
        *,
        instrument,
        variant: str,
        granularity: str,
        max_length: int,
        max_new_tokens: int,
        batch_size: int,
        prefix_sharing: bool = True,
        language: str | None = None,
        scoring: str = "generated",
        cache=None,
        fingerprint: str | None = None,
        mode: str = "generate",
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.prefix_sharing = prefix_sharing
        self.eos_ids = end_of_turn_ids(tokenizer, model.generation_config.eos_token_id)
        self.pad_id = _pad_id(tokenizer, self.eos_ids)
        langs = {language} if language else {"en", "zh"}
        self.label_ids = label_token_ids(tokenizer, instrument.scale_points, sorted(langs))
        self.counters = {"prefill_tokens": 0, "generate_calls": 0, "rows": 0}
        super().__init__(
            instrument=instrument,
            variant=variant,
            granularity=granularity,
            max_length=max_length,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            language=language,
            scoring=scoring,
            cache=cache,
            fingerprint=_fingerprint(model, fingerprint, cache),
            mode=mode,
        )
        # every field explicit, and none left for the checkpoint's generation_config.json
        self.generation_config = self.decoding.generation_config(self.eos_ids, self.pad_id)
        neutral_model_defaults(model, self.generation_config)

    def set_max_new_tokens(self, value: int) -> None:
        super().set_max_new_tokens(value)
        self.generation_config = self.decoding.generation_config(self.eos_ids, self.pad_id)
        neutral_model_defaults(self.model, self.generation_config)

    @classmethod
    def from_pretrained(cls, path, *, device: str = "cpu", dtype: str = "auto", **kw) -> HFScorer:
        """Load a model directory (HF format, tokenizer included) and build a scorer on it."""
        model, tokenizer = load_model(path, device=device, dtype=dtype)
        if kw.get("cache") is not None:
            kw.setdefault("fingerprint", model_fingerprint(path))
        return cls(model, tokenizer, **kw)

    # ------------------------------------------------------------------ generation
    def generate_group(self, prompts):
        if self.prefix_sharing:
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
        return self._generate(ids, mask, None)

    def _generate_shared(self, prompts) -> list[list[Generation]]:
        """Prefill each session's common prefix once, then its units' suffixes in batches."""
        import torch

        rows = [(s, p.ids) for s, session in enumerate(prompts) for p in session]
        prefixes = [_common_prefix([p.ids for p in session]) for session in prompts]
        cache, pwidth = self._prefill_prefixes(prefixes)
        gens: list[Generation] = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            owners = torch.tensor([s for s, _ in chunk])
            batch_cache = cache if len(rows) <= self.batch_size else copy.deepcopy(cache)
            batch_cache.batch_select_indices(owners.to(self.model.device))
            suffixes = [ids[len(prefixes[s]) :] for s, ids in chunk]
            swidth = max(len(x) for x in suffixes)
            ids = torch.full((len(chunk), pwidth + swidth), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for n, ((s, _), suffix) in enumerate(zip(chunk, suffixes, strict=True)):
                plen = len(prefixes[s])
                ids[n, pwidth - plen : pwidth] = torch.tensor(prefixes[s])
                mask[n, pwidth - plen : pwidth] = 1
                ids[n, ids.shape[1] - len(suffix) :] = torch.tensor(suffix)
                mask[n, ids.shape[1] - len(suffix) :] = 1
            self.counters["prefill_tokens"] += sum(len(x) for x in suffixes)
            gens.extend(self._generate(ids, mask, batch_cache))
        return _regroup(gens, prompts)

    def _prefill_prefixes(self, prefixes: list[list[int]]):
        """One forward over the sessions' prefixes (left-padded); returns their KV cache."""
        import torch
        from transformers import DynamicCache

        width = max(len(p) for p in prefixes)
        ids = torch.full((len(prefixes), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for n, p in enumerate(prefixes):
            ids[n, width - len(p) :] = torch.tensor(p)
            mask[n, width - len(p) :] = 1
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        device = self.model.device
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            self.model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        self.counters["prefill_tokens"] += sum(len(p) for p in prefixes)
        return cache, width

    def _generate(self, ids, mask, cache) -> list[Generation]:
        import torch
        from transformers import LogitsProcessorList

        recorder = LabelRecorder(self.label_ids)
        device = self.model.device
        kwargs = {"cache": cache} if cache is not None else {}
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                generation_config=self.generation_config,
                logits_processor=LogitsProcessorList([recorder]),
                **kwargs,
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


def _common_prefix(rows: list[list[int]]) -> list[int]:
    """The longest common token prefix, leaving every row at least one token to prefill."""
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    for r in rows[1:]:
        k = 0
        while k < n and r[k] == first[k]:
            k += 1
        n = k
    return first[: max(n, 0)]


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
        from care.backbone import load_causal_lm, load_tokenizer
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
