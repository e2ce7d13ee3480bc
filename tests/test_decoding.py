"""Decoding is explicit and the same on both local backends.

transformers fills unset generation fields from the checkpoint's ``generation_config.json``;
the checkpoint here carries Qwen2.5's ``repetition_penalty`` 1.05 and more. The logits
processors that ``generate`` builds for the hf backend must be exactly what the vllm
backend's ``SamplingParams`` arguments ask for (vLLM is not installed: its side is the
arguments as data).
"""

from __future__ import annotations

import json
import warnings

import pytest
from care.infer.answers import prompt_key
from care.infer.decoding import Decoding
from care.infer.hf import HFScorer
from care.infer.vllm_backend import VLLMScorer

from tests import test_infer

# fixtures shared with tests/test_infer.py
model_dir, sessions, texts = test_infer.model_dir, test_infer.sessions, test_infer.texts
settings = test_infer.settings

# A checkpoint's own generation defaults, the kind Qwen2.5 and others ship.
CHECKPOINT_DEFAULTS = {
    "repetition_penalty": 1.05,
    "no_repeat_ngram_size": 4,
    "suppress_tokens": [7],
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
    "do_sample": True,
}


def hf_effective(scorer: HFScorer) -> dict:
    """The logits processors ``generate`` would apply, as {setting: value}."""
    from transformers.generation import logits_process as lp

    model = scorer.model
    config, _ = model._prepare_generation_config(scorer.generation_config)
    processors = model._get_logits_processor(
        generation_config=config, input_ids_seq_length=4, device="cpu", model_kwargs={}
    )
    out = {}
    for proc in processors:
        if isinstance(proc, lp.RepetitionPenaltyLogitsProcessor):
            out["repetition_penalty"] = round(float(proc.penalty), 6)
        elif isinstance(proc, lp.MinNewTokensLengthLogitsProcessor):
            out["min_tokens"] = proc.min_new_tokens
        else:  # anything else changes logits in a way vLLM's arguments do not express
            out[type(proc).__name__] = True
    if config.do_sample:
        out["sampling"] = True
    return out


def vllm_effective(args: dict) -> dict:
    """The same view of vLLM ``SamplingParams`` arguments."""
    out = {}
    if args["temperature"] > 0:
        out["sampling"] = True
    if args["repetition_penalty"] != 1.0:
        out["repetition_penalty"] = round(float(args["repetition_penalty"]), 6)
    if args["min_tokens"] > 0:
        out["min_tokens"] = args["min_tokens"]
    for key, neutral in (("presence_penalty", 0.0), ("frequency_penalty", 0.0), ("min_p", 0.0),
                         ("top_p", 1.0)):
        if args[key] != neutral:
            out[key] = True
    if args["top_k"] not in (0, -1):
        out["top_k"] = True
    assert args["n"] == 1 and not args["ignore_eos"]
    assert set(args) <= {*Decoding(1).sampling_args([], 1, 0)}, "an unknown sampling argument"
    return out


@pytest.fixture(scope="module")
def qwen_like_dir(model_dir, tmp_path_factory):
    """The test model with a checkpoint generation_config.json that sets many defaults."""
    import shutil

    path = tmp_path_factory.mktemp("gen") / "model"
    shutil.copytree(model_dir, path)
    gen = json.loads((path / "generation_config.json").read_text(encoding="utf-8"))
    gen.update(CHECKPOINT_DEFAULTS)
    (path / "generation_config.json").write_text(json.dumps(gen), encoding="utf-8")
    return path


@pytest.mark.parametrize("penalty", [1.0, 1.1])
def test_hf_and_vllm_apply_the_same_logits_processing(qwen_like_dir, instrument, penalty):
    kw = dict(variant="score_only", granularity="item", max_length=512, max_new_tokens=8)
    hf = HFScorer.from_pretrained(
        qwen_like_dir, settings(**kw, batch_size=4), instrument=instrument
    )
    vllm = VLLMScorer(str(qwen_like_dir), settings(**kw), instrument=instrument, llm=object())
    for scorer in (hf, vllm):
        scorer.decoding = Decoding(8, repetition_penalty=penalty)
    hf.generation_config = hf.decoding.generation_config(hf.eos_ids, hf.pad_id)
    expected = {} if penalty == 1.0 else {"repetition_penalty": penalty}
    assert hf_effective(hf) == expected
    assert vllm_effective(vllm.sampling_args()) == expected
    assert hf.eos_ids == vllm.eos_ids  # the same stops


def test_checkpoint_defaults_do_not_reach_generate(qwen_like_dir, instrument):
    hf = HFScorer.from_pretrained(
        qwen_like_dir,
        settings(variant="score_only", granularity="item", max_length=512, max_new_tokens=8,
                 batch_size=4),
        instrument=instrument,
    )
    assert hf_effective(hf) == {}
    assert hf.model.generation_config.repetition_penalty == 1.0
    assert hf.decoding.record()["repetition_penalty"] == 1.0


def test_vllm_answers_are_cached_chunk_by_chunk(model_dir, instrument, sessions, tmp_path,
                                                monkeypatch):
    """A preempted vLLM job keeps the answers of every call that finished: a call is a chunk
    of ~256 prompts (~21 sessions), not a whole fold (25-60 min of 4 GPUs for a 70B)."""
    import sys
    from types import SimpleNamespace

    assert VLLMScorer.prompts_per_call == 256
    # vLLM is not installed here: its two input classes as plain data
    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(SamplingParams=dict))
    monkeypatch.setitem(sys.modules, "vllm.inputs", SimpleNamespace(TokensPrompt=dict))

    class Preempted(Exception):
        pass

    calls = []

    class Engine:
        def generate(self, prompts, params, use_tqdm):
            calls.append(len(prompts))
            if len(calls) == 2:
                raise Preempted()
            done = SimpleNamespace(token_ids=answer, logprobs=None, finish_reason="stop")
            return [SimpleNamespace(outputs=[done]) for _ in prompts]

    scorer = VLLMScorer(
        str(model_dir),
        settings(variant="score_only", granularity="item", max_length=512, max_new_tokens=8),
        instrument=instrument,
        llm=Engine(),
        cache=tmp_path / "answers.sqlite",
    )
    answer = scorer.tokenizer("Score: 4", add_special_tokens=False)["input_ids"]
    items = len(instrument.item_ids)
    assert scorer.sessions_per_group() * items <= VLLMScorer.prompts_per_call
    monkeypatch.setattr(scorer, "prompts_per_call", 2 * items)  # two sessions a call here
    with pytest.raises(Preempted):
        list(scorer.score(sessions))
    first = {prompt_key(scorer.decoding_fingerprint(), p)
             for s in sessions[:2] for p in scorer.builder.prompts(s)}
    kept = {k for (k,) in scorer.cache.db.execute("SELECT key FROM answers")}
    assert calls == [2 * items, 2 * items] and kept == first  # the first call's answers


def test_prefix_shared_scoring_uses_no_deprecated_argument(model_dir, instrument, sessions):
    """``past_key_values=`` is deprecated in the installed transformers (``cache=``)."""
    hf = HFScorer.from_pretrained(
        model_dir,
        settings(variant="score_only", granularity="item", max_length=512, max_new_tokens=3,
                 batch_size=8, prefix_sharing=True),
        instrument=instrument,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        rows = list(hf.score(sessions[:1]))
    assert len(rows) == len(instrument.item_ids)
