"""``care bench infer``: naive vs prefix-shared inference on the same prompts, in one process.

    care bench infer --model results/backbones/llama            # a model directory
    care bench infer --random-model tiny --arch qwen2           # random weights, no files
    care bench infer --random-model llama-3-8b --device cuda --dtype bfloat16   # on a GPU
    care bench infer --backend vllm --random-model llama-3-8b --dtype bfloat16  # vLLM (GPU)

With ``--backend hf`` (default) the same sessions are scored twice with the transformers
backend, naive (every prompt prefilled whole) and prefix-shared (the project's path: each
session's system message + dialogue prefilled once, its units decoded as branches of one
row), and the benchmark prints prefill tokens, wall time and tokens/s for both, their
ratios, and whether the generated tokens are identical. ``--peer`` adds, in the same run
and on the same prompts, the library's own cache reuse (:class:`LibraryCacheReuse`: one
batch per session, the prefix prefilled into a ``DynamicCache``, repeated per unit, then
``generate(cache=...)``) and prints the project path's speed-up over it and the largest
label-probability difference between the runs. With
``--backend vllm`` the sessions are scored by vLLM (prefix caching on) and its throughput is
printed in the same units, to compare with the ``hf`` run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", help="a local model directory (HF format, tokenizer included)")
    src.add_argument(
        "--random-model",
        metavar="SHAPE",
        help="random weights of a shape of care.backbone.SHAPES (tiny, small, llama-3.1-8b, "
        "qwen2.5-7b, ...) or a JSON dict of config sizes (default: tiny)",
    )
    parser.add_argument(
        "--arch",
        choices=["llama", "qwen2"],
        default=None,
        help="architecture and chat template of --random-model (default: the shape's)",
    )
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--sessions", help="sessions.jsonl (default: a generated demo corpus)")
    parser.add_argument("--instrument", help="instrument YAML (default: WAI-SR)")
    parser.add_argument("--n-sessions", type=int, default=8)
    parser.add_argument(
        "--turns",
        type=int,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=(14, 22),
        help="turns per generated session (long dialogues: e.g. 120 160)",
    )
    parser.add_argument("--granularity", choices=["item", "dimension", "session"], default="item")
    parser.add_argument("--variant", choices=["rationale", "score_only"], default="rationale")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--mode",
        choices=["generate", "label_probs"],
        default="generate",
        help="hf: free answers, or the forced score line (label_probs, score_only variant)",
    )
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--device", default="cpu", help="cpu | cuda (hf)")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--gpus", type=int, default=1, help="vllm: tensor parallel size")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--peer",
        action="store_true",
        help="hf: also run transformers' own cache reuse (one batch per session)",
    )


def run(args) -> int:
    import torch

    from care.instrument import load_instrument

    if args.threads:
        torch.set_num_threads(args.threads)
    instrument = load_instrument(args.instrument) if args.instrument else load_instrument()
    sessions = _sessions(args, instrument)
    if args.backend == "vllm":
        results = {"vllm": _run_vllm(args, instrument, sessions)}
    else:
        model, tokenizer = _model(args, sessions)
        results = {}
        runs = [("warmup", "shared"), ("naive", "naive")]
        runs += [("library", "library")] if args.peer else []
        runs += [("prefix_shared", "shared")]
        for name, kind in runs:
            picked = sessions[:1] if name == "warmup" else sessions
            results[name] = _run_hf(args, instrument, model, tokenizer, picked, kind)
        results.pop("warmup")
        _compare(results, tokenizer)
    _print(args, results, len(sessions))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


# --------------------------------------------------------------------------- inputs


def _sessions(args, instrument):
    from care.sessions import iter_sessions

    if args.sessions:
        out = []
        for s in iter_sessions(args.sessions, instrument):
            out.append(s)
            if len(out) == args.n_sessions:
                break
        return out
    from care.corpus import CorpusSpec, generate
    from care.sessions import _to_session

    spec = CorpusSpec(n_clients=max(2, args.n_sessions), turns_per_session=tuple(args.turns))
    records, _ = generate(spec, instrument)
    return [
        _to_session(Path("<generated>"), n, r, instrument)
        for n, r in enumerate(records[: args.n_sessions], start=1)
    ]


def _tokenizer_texts(sessions, instrument):
    from care.prompts import build_messages, session_dialogue, units

    for s in sessions:
        yield from (t.text for t in s.turns)
        dialogue, _ = session_dialogue(s)
        for unit in units(instrument, "item"):
            for variant in ("rationale", "score_only"):
                for m in build_messages(instrument, unit, variant, s.language, dialogue):
                    yield m["content"]


def _random(args, sessions, device: str | None = None):
    """A random model and a tokenizer trained on the sessions, as ``care train backbone tiny``
    builds them (nothing downloaded)."""
    import torch

    from care.backbone import random_backbone
    from care.instrument import load_instrument

    instrument = load_instrument(args.instrument) if args.instrument else load_instrument()
    return random_backbone(
        args.random_model or "tiny",
        _tokenizer_texts(sessions, instrument),
        arch=args.arch,
        dtype=getattr(torch, args.dtype),
        device=device or args.device,
        max_positions=args.max_length + args.max_new_tokens,
    )


def _model(args, sessions):
    if args.model:
        from care.infer.hf import load_model

        return load_model(args.model, device=args.device, dtype=args.dtype)
    return _random(args, sessions)


# --------------------------------------------------------------------------- runs


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _compare(results: dict, tokenizer) -> None:
    """Ratios against the naive run (and the library's), identical tokens, probability gap."""
    naive, shared = results["naive"], results["prefix_shared"]
    runs = [name for name in ("naive", "library", "prefix_shared") if name in results]
    results["ratios"] = {
        "prefill_tokens": naive["prefill_tokens"] / max(shared["prefill_tokens"], 1),
        "wall_time": naive["wall_s"] / max(shared["wall_s"], 1e-9),
    }
    if "library" in results:
        library = results["library"]
        results["ratios"]["library_wall_time"] = naive["wall_s"] / max(library["wall_s"], 1e-9)
        results["ratios"]["library_over_shared"] = library["wall_s"] / max(shared["wall_s"], 1e-9)
    texts = [results[name].pop("texts") for name in runs]
    probs = [results[name].pop("probs") for name in runs]
    results["identical_outputs"] = all(t == texts[0] for t in texts)
    results["tokens_to_first_divergence"] = divergence(texts[0], texts[-1], tokenizer)
    gaps = [
        abs(a - b)
        for other in probs[1:]
        for pa, pb in zip(probs[0], other, strict=True)
        if pa.keys() == pb.keys()
        for item in pa
        for a, b in zip(pa[item], pb[item], strict=True)
    ]
    results["max_label_prob_diff"] = max(gaps, default=0.0)
    results["label_probs_compared"] = len(gaps)
    results["same_label_positions"] = all(
        [p.keys() for p in other] == [p.keys() for p in probs[0]] for other in probs[1:]
    )


def divergence(a: list[str], b: list[str], tokenizer) -> dict:
    """Per prompt, the answer tokens two runs share before they differ (re-encoded from the
    text): low-precision kernels that reduce in another order flip a near-tied argmax, so
    where two correct paths first part says more than whether they are identical."""
    import statistics

    def tokens(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    shared, same = [], 0
    for x, y in zip(a, b, strict=True):
        tx, ty = tokens(x), tokens(y)
        pairs = zip(tx, ty, strict=False)  # the shorter answer may end first
        n = next((k for k, (u, v) in enumerate(pairs) if u != v), min(len(tx), len(ty)))
        shared.append(n)
        same += tx == ty
    return {
        "min": min(shared, default=0),
        "median": statistics.median(shared) if shared else 0,
        "identical_prompts": same,
        "prompts": len(shared),
    }


def _run_hf(args, instrument, model, tokenizer, sessions, kind: str) -> dict:
    from care.infer.hf import HFScorer

    cls = _library_class() if kind == "library" else HFScorer
    settings = _settings(args).replace(prefix_sharing=kind == "shared")
    scorer = cls(model, tokenizer, settings, instrument=instrument)
    _sync(args.device)
    start = time.perf_counter()
    answers = []
    for k in range(0, len(sessions), scorer.sessions_per_group()):
        answers.extend(scorer.answer(sessions[k : k + scorer.sessions_per_group()]))
    _sync(args.device)
    wall = time.perf_counter() - start
    flat = [a for session in answers for _, a in session]
    prompt_tokens = sum(p.prompt_tokens for session in answers for p, _ in session)
    return _figures(wall, scorer.counters["prefill_tokens"], prompt_tokens, flat) | {
        "texts": [a.text for a in flat],
        "probs": [a.probs for a in flat],
    }


def _settings(args):
    """The benchmark's inference settings, from its command line."""
    from care.infer.settings import InferenceSettings

    return InferenceSettings(
        variant=args.variant,
        granularity=args.granularity,
        max_length=args.max_length,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        mode=args.mode,
        device=args.device,
        dtype=args.dtype,
    )


def _library_class():
    from care.infer.hf import HFScorer, LabelRecorder

    class LibraryCacheReuse(HFScorer):
        """The peer: transformers' own prefix-cache reuse, one ``generate`` per session.

        The session's common prefix is prefilled into a ``DynamicCache``, the cache is
        repeated once per unit and ``generate(cache=...)`` continues every unit from it
        (rows ``[prefix][pad holes][suffix]``; positions follow the attention mask).
        """

        def generate_group(self, prompts):
            return [self._session(session) for session in prompts]

        def _session(self, session):
            import torch
            from transformers import DynamicCache, GenerationConfig, LogitsProcessorList

            from care.sft import shared_prefix_length

            units = [p.ids for p in session]
            n = shared_prefix_length(units)
            device = self.model.device
            cache = DynamicCache(config=self.model.config)
            with torch.inference_mode():
                prefix = torch.tensor([units[0][:n]], device=device)
                self.model(input_ids=prefix, cache=cache, use_cache=True)
            cache.batch_repeat_interleave(len(units))
            width = n + max(len(u) - n for u in units)
            ids = torch.full((len(units), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            ids[:, :n], mask[:, :n] = torch.tensor(units[0][:n]), 1
            for k, u in enumerate(units):
                ids[k, width - (len(u) - n) :] = torch.tensor(u[n:])
                mask[k, width - (len(u) - n) :] = 1
            self.counters["prefill_tokens"] += n + sum(len(u) - n for u in units)
            recorder = LabelRecorder(self.label_ids)
            config = GenerationConfig(
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                eos_token_id=self.eos_ids,
                pad_token_id=self.pad_id,
            )
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    cache=cache,
                    generation_config=config,
                    logits_processor=LogitsProcessorList([recorder]),
                )
            steps = torch.stack(recorder.steps, dim=1).cpu()
            new = out[:, width:].cpu()
            return [self._generation(new[k].tolist(), steps[k]) for k in range(len(units))]

        def sessions_per_group(self) -> int:
            return 1

    return LibraryCacheReuse


def __getattr__(name):  # the peer class, built on first use (imports transformers)
    if name == "LibraryCacheReuse":
        return _library_class()
    raise AttributeError(name)


def _run_vllm(args, instrument, sessions) -> dict:
    from care.infer.vllm_backend import VLLMScorer

    with tempfile.TemporaryDirectory(prefix="care-bench-") as tmp:
        path, load_format, tokenizer = args.model, "auto", None
        if not args.model:
            # config + tokenizer only: vLLM initialises random ("dummy") weights itself
            model, tokenizer = _random_config(args, sessions)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            path, load_format = tmp, "dummy"
        settings = _settings(args).replace(
            batch_size=max(args.batch_size, 12 * len(sessions)), tensor_parallel_size=args.gpus
        )
        scorer = VLLMScorer(
            path, settings, instrument=instrument, load_format=load_format, tokenizer=tokenizer
        )
        scorer.answer(sessions[:1])  # engine start-up and warm-up, not timed
        # fresh prompts: the same sessions again would hit vLLM's prefix cache entirely
        start = time.perf_counter()
        answers = scorer.answer(sessions[1:] or sessions)
        wall = time.perf_counter() - start
    flat = [a for session in answers for _, a in session]
    prompt_tokens = sum(p.prompt_tokens for session in answers for p, _ in session)
    return _figures(wall, None, prompt_tokens, flat)


def _random_config(args, sessions):
    """A model object whose config (not weights) vLLM reads; built on the meta device."""
    model, tokenizer = _random(args, sessions, device="meta")
    return _ConfigOnly(model), tokenizer


class _ConfigOnly:
    """Saves a model's config and generation config, not its (meta) weights."""

    def __init__(self, model) -> None:
        self.model = model

    def save_pretrained(self, path) -> None:
        self.model.config.architectures = [type(self.model).__name__]
        self.model.config.save_pretrained(path)
        self.model.generation_config.save_pretrained(path)


def _figures(wall: float, prefill: int | None, prompt_tokens: int, answers) -> dict:
    generated = sum(a.n_generated for a in answers)
    out = {
        "wall_s": wall,
        "prompts": len(answers),
        "prompt_tokens": prompt_tokens,
        "generated_tokens": generated,
        "generated_tokens_per_s": generated / wall if wall else None,
        "prompts_per_s": len(answers) / wall if wall else None,
    }
    if prefill is not None:
        out["prefill_tokens"] = prefill
        out["prefill_tokens_per_s"] = prefill / wall if wall else None
    return out


def _print(args, results: dict, n_sessions: int) -> None:
    model = args.model or f"random {args.random_model or 'tiny'} {args.arch or ''}".rstrip()
    print(
        f"care bench infer: {model}, backend {args.backend}, {args.device}/{args.dtype}, "
        f"{n_sessions} sessions, granularity {args.granularity}, variant {args.variant}, "
        f"max_new_tokens {args.max_new_tokens}, batch {args.batch_size}, mode {args.mode}"
    )
    header = (
        f"{'run':<15}{'prompts':>8}{'prefill tok':>13}{'wall s':>9}{'gen tok':>9}"
        f"{'gen tok/s':>11}{'prompts/s':>11}"
    )
    print(header)
    for name, r in results.items():
        if not isinstance(r, dict) or "wall_s" not in r:
            continue
        prefill = r.get("prefill_tokens")
        print(
            f"{name:<15}{r['prompts']:>8}{prefill if prefill is not None else '-':>13}"
            f"{r['wall_s']:>9.2f}{r['generated_tokens']:>9}"
            f"{r['generated_tokens_per_s']:>11.1f}{r['prompts_per_s']:>11.2f}"
        )
    if "ratios" in results:
        ratios = results["ratios"]
        print(
            f"naive / prefix-shared: prefill tokens {ratios['prefill_tokens']:.2f}x, "
            f"wall time {ratios['wall_time']:.2f}x; identical outputs: "
            f"{results['identical_outputs']}"
        )
        if "library_wall_time" in ratios:
            print(
                f"naive / library cache reuse: wall time {ratios['library_wall_time']:.2f}x; "
                f"library / prefix-shared (the project): {ratios['library_over_shared']:.2f}x"
            )
        print(
            f"largest label-probability difference between runs: "
            f"{results['max_label_prob_diff']:.2e} over {results['label_probs_compared']} "
            f"probabilities (same label positions: {results['same_label_positions']})"
        )
