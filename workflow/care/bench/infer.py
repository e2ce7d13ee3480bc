"""``care bench infer``: naive vs prefix-shared inference on the same prompts, in one process.

    care bench infer --model results/backbones/llama            # a model directory
    care bench infer --random-model tiny --arch qwen2           # random weights, no files
    care bench infer --random-model llama-3-8b --device cuda --dtype bfloat16   # on a GPU
    care bench infer --backend vllm --random-model llama-3-8b --dtype bfloat16  # vLLM (GPU)

With ``--backend hf`` (default) the same sessions are scored twice with the transformers
backend, naive (every prompt prefilled whole) and prefix-shared (the project's path: each
session's system message + dialogue prefilled once, its units decoded as branches of one
row), and the benchmark prints prefill tokens, wall time and tokens/s for both, their
ratios, and whether the generated tokens are identical (and how many they share before
they first differ). ``--peer`` adds, in the same run and on the same prompts, the strongest
practice the library offers (:class:`LibraryCacheReuse`: sessions batched as the project
batches them, each prefix prefilled once into a ``DynamicCache`` with logits at its last
position only, repeated per unit, then one ``generate(cache=...)``) and prints the
project path's speed-up over it. Every method is warmed up and timed ``--repeats`` times,
interleaved; the figures are medians. The label probabilities are compared at each answer's
first token (every prompt has one, whatever the model writes; ``--mode label_probs``: at
the forced score). With
``--backend vllm`` the sessions are scored by vLLM (prefix caching on) and its throughput is
printed in the same units, to compare with the ``hf`` run.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", help="a local model directory (HF format, tokenizer included)")
    src.add_argument(
        "--random-model",
        metavar="SHAPE",
        help="random weights of a shape of care.model.backbone.SHAPES (tiny, small, llama-3.1-8b, "
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
        help="hf: also run transformers' own cache reuse, batched as the project batches",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="hf: timed runs of each method (medians)"
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
        if args.peer and args.mode == "label_probs":
            raise SystemExit("--peer compares generation; label_probs forces the score line")
        names = ["naive", *(["library"] if args.peer else []), "prefix_shared"]
        results = _timed(args, instrument, model, tokenizer, sessions, names)
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

    from care.instrument import load_instrument
    from care.model.backbone import random_backbone

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
        if len(pa) == len(pb)
        for a, b in zip(pa, pb, strict=True)
    ]
    results["max_label_prob_diff"] = max(gaps, default=math.nan)
    results["label_probs_compared"] = len(gaps)
    results["same_label_positions"] = all(
        [len(p) for p in other] == [len(p) for p in probs[0]] for other in probs[1:]
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


def _timed(args, instrument, model, tokenizer, sessions, names: list[str]) -> dict:
    """Every method warmed up on one session, then ``--repeats`` timed runs, interleaved so
    that drift (clocks, caches, other load) spreads over all of them; median wall time."""
    import statistics

    for name in names:
        _run_hf(args, instrument, model, tokenizer, sessions[:1], name)
    walls: dict[str, list[float]] = {name: [] for name in names}
    results = {}
    for _ in range(max(1, args.repeats)):
        for name in names:
            results[name] = _run_hf(args, instrument, model, tokenizer, sessions, name)
            walls[name].append(results[name]["wall_s"])
    for name in names:
        rerun = _figures(statistics.median(walls[name]), results[name].get("prefill_tokens"),
                         results[name]["prompt_tokens"], results[name].pop("answers"))
        results[name] = {**results[name], **rerun, "wall_s_runs": walls[name]}
    return results


def _run_hf(args, instrument, model, tokenizer, sessions, kind: str) -> dict:
    """One method over the sessions: answers, and the label distribution compared (at the
    first answer token; label_probs: at the forced score)."""
    from care.infer.hf import HFScorer
    from care.infer.labels import label_distribution

    cls = _library_class() if kind == "library" else HFScorer
    settings = _settings(args).replace(prefix_sharing=kind == "prefix_shared")
    scorer = cls(model, tokenizer, settings, instrument=instrument)
    group = scorer.sessions_per_group()
    _sync(args.device)
    start = time.perf_counter()
    if args.mode == "label_probs":
        answered = [a for k in range(0, len(sessions), group)
                    for a in scorer.answer(sessions[k : k + group])]
        prompts = [p for session in answered for p, _ in session]
        flat = [a for session in answered for _, a in session]
        probs = [[v for item in sorted(a.probs) for v in a.probs[item]] for a in flat]
    else:
        units = [scorer.builder.prompts(s) for s in sessions]
        flat = [g for k in range(0, len(units), group)
                for session in scorer.generate_group(units[k : k + group]) for g in session]
        prompts = [p for session in units for p in session]
        probs = [label_distribution(g.label_logprobs[0]) if g.label_logprobs else []
                 for g in flat]
    _sync(args.device)
    wall = time.perf_counter() - start
    prompt_tokens = sum(p.prompt_tokens for p in prompts)
    return _figures(wall, scorer.counters["prefill_tokens"], prompt_tokens, flat) | {
        "texts": [a.text for a in flat],
        "probs": probs,
        "answers": flat,
        "generate_calls": scorer.counters["generate_calls"],
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
        """The peer: transformers' own prefix-cache reuse, batched as the project batches.

        Sessions of similar length (the project's :func:`length_groups`) share a batch: their
        common prefixes are prefilled once, left-padded, into a ``DynamicCache`` (logits at
        the last position only), the cache is repeated once per unit and one
        ``generate(cache=...)`` continues every unit of every session from it (rows
        ``[pad][prefix][pad holes][suffix]``; positions follow the attention mask).
        """

        def generate_group(self, prompts):
            from care.infer.shared_decode import length_groups, row_length

            lengths = [row_length([p.ids for p in session]) for session in prompts]
            gens = [[] for _ in prompts]
            for group in length_groups(lengths, self.sessions_per_group()):
                answers = self._sessions([[p.ids for p in prompts[k]] for k in group])
                for k, session in zip(group, answers, strict=True):
                    gens[k] = session
            return gens

        def _sessions(self, sessions):
            import torch
            from transformers import DynamicCache, GenerationConfig, LogitsProcessorList

            from care.sft import shared_prefix_length

            per = len(sessions[0])
            if any(len(units) != per for units in sessions):
                raise ValueError("every session of a batch needs the same number of units")
            cut = [shared_prefix_length(units) for units in sessions]
            width = max(cut)
            tail = max(len(u) - n for units, n in zip(sessions, cut, strict=True) for u in units)
            ids = torch.full((len(sessions), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, (units, n) in enumerate(zip(sessions, cut, strict=True)):
                ids[r, width - n :], mask[r, width - n :] = torch.tensor(units[0][:n]), 1
            device = self.model.device
            cache = DynamicCache(config=self.model.config)
            with torch.inference_mode():
                self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                           position_ids=((mask.cumsum(-1) - 1).clamp(min=0)).to(device),
                           cache=cache, use_cache=True, logits_to_keep=1)
            cache.batch_repeat_interleave(per)
            rows = ids.repeat_interleave(per, dim=0)
            full = torch.full((len(rows), width + tail), self.pad_id, dtype=torch.long)
            full_mask = torch.zeros_like(full)
            full[:, :width], full_mask[:, :width] = rows, mask.repeat_interleave(per, dim=0)
            k = 0
            for units, n in zip(sessions, cut, strict=True):
                for u in units:
                    full[k, width + tail - (len(u) - n) :] = torch.tensor(u[n:])
                    full_mask[k, width + tail - (len(u) - n) :] = 1
                    k += 1
            self.counters["prefill_tokens"] += sum(
                n + sum(len(u) - n for u in units) for units, n in zip(sessions, cut, strict=True)
            )
            self.counters["generate_calls"] += 1
            recorder = LabelRecorder(self.label_ids)
            config = GenerationConfig(
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                eos_token_id=self.eos_ids,
                pad_token_id=self.pad_id,
            )
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=full.to(device),
                    attention_mask=full_mask.to(device),
                    cache=cache,
                    generation_config=config,
                    logits_processor=LogitsProcessorList([recorder]),
                )
            steps = torch.stack(recorder.steps, dim=1).cpu()
            new = out[:, width + tail :].cpu()
            gens = [self._generation(new[k].tolist(), steps[k]) for k in range(len(new))]
            return [gens[r * per : (r + 1) * per] for r in range(len(sessions))]

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
        where = "forced score" if args.mode == "label_probs" else "first answer token"
        print(
            f"largest label-probability difference between runs ({where}): "
            f"{results['max_label_prob_diff']:.2e} over {results['label_probs_compared']} "
            f"probabilities (same label positions: {results['same_label_positions']}); "
            f"answer tokens shared before they differ: {results['tokens_to_first_divergence']}"
        )
