"""``care bench train``: fine-tuning throughput, peak memory and (on a GPU) MFU.

Builds a randomly initialised Llama/Qwen2 model of a named or given shape (no download), or
loads a local model directory (``--model results/backbones/smollm2-135m``), wraps it with
DeepSpeed ZeRO (stage 0, 2 or 3, the ``workflow/deepspeed`` configs) and
times full forward/backward/optimizer steps on random token sequences::

    care bench train --shape qwen2.5-1.5b --seq-len 4096 --batch-size 1 --steps 200 \\
        --zero 3 --bf16 --gradient-checkpointing

``care bench train --packing`` compares one epoch packed vs unpacked on real examples
instead (:mod:`care.bench.packing`).

Several GPUs: ``torchrun --nproc_per_node 8 -m care.cli bench train ...``. MFU counts
``6 * parameters + 12 * layers * hidden * seq_len`` FLOPs per token (forward and backward,
attention included) against the device's dense bf16 peak (table below).
"""

from __future__ import annotations

import json
import os
import resource
import time

from care.model.backbone import SHAPES

#: Dense bf16 tensor-core peak FLOP/s by device name (substring match, first wins).
BF16_PEAK = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("V100", 125e12),
]


def add_arguments(parser) -> None:
    parser.add_argument(
        "--shape",
        default="tiny",
        help=f"one of {sorted(SHAPES)} (care.model.backbone.SHAPES) or a JSON config (with 'arch')",
    )
    parser.add_argument(
        "--model", help="a local model directory (HF format) instead of a random --shape"
    )
    parser.add_argument(
        "--layers", type=int, default=0, help="decoder layers (0: the shape's own number)"
    )
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=1, help="sequences per rank per step")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed first steps")
    parser.add_argument(
        "--zero",
        type=int,
        choices=[0, 2, 3],
        default=3,
        help="ZeRO stage (workflow/deepspeed/zero{2,3}.json); 0: no DeepSpeed",
    )
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--packing",
        action="store_true",
        help="compare an epoch packed (shared_prefix) vs unpacked: tokens and wall per epoch",
    )
    from care.bench import packing as packing_bench

    packing_bench.add_arguments(parser)


def flops_per_token(model, seq_len: int) -> float:
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    if getattr(cfg, "tie_word_embeddings", False):
        params += cfg.vocab_size * cfg.hidden_size  # the tied head still costs its matmul
    params -= cfg.vocab_size * cfg.hidden_size  # the embedding lookup costs no matmul
    return 6 * params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


def device_peak(name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK if key.lower() in name.lower()), None)


def deepspeed_config(stage: int, args, world: int, hidden: int) -> dict:
    from care.resources import resource_path

    config = json.loads(resource_path("deepspeed", f"zero{stage}.json").read_text())
    config.update(
        train_micro_batch_size_per_gpu=args.batch_size,
        gradient_accumulation_steps=1,
        train_batch_size=args.batch_size * world,
        gradient_clipping=1.0,
    )
    config["bf16"] = {"enabled": bool(args.bf16)}
    config["fp16"] = {"enabled": False}
    # the values transformers fills in for "auto" (integrations/deepspeed.py)
    auto = {
        "reduce_bucket_size": hidden * hidden,
        "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
        "stage3_param_persistence_threshold": 10 * hidden,
    }
    zero = config["zero_optimization"]
    for key, value in list(zero.items()):
        if value == "auto":
            zero[key] = auto[key]
    config["zero_allow_untested_optimizer"] = True
    return config


def run(args) -> int:
    if args.packing:
        from care.bench import packing as packing_bench

        return packing_bench.run(args)
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        from care.train.launch import free_port

        os.environ["MASTER_PORT"] = str(free_port())
    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    world = int(os.environ["WORLD_SIZE"])
    device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if args.model:
        from care.model.backbone import load_causal_lm

        model = load_causal_lm(args.model, dtype="float32")
        arch = model.config.model_type
    else:
        from care.model.backbone import init_model, resolve_shape

        arch, config = resolve_shape(args.shape)
        if args.layers:  # the real layer shape, fewer layers: fits one GPU
            config["num_hidden_layers"] = args.layers
        config["max_position_embeddings"] = max(
            config.get("max_position_embeddings", 2048), args.seq_len
        )
        model = init_model(arch, config, seed=0)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    fpt = flops_per_token(model, args.seq_len)
    n_params = sum(p.numel() for p in model.parameters())
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    step = make_step(model, args, world, device, dtype)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, vocab, (args.batch_size, args.seq_len), generator=gen).to(device)
    for _ in range(args.warmup_steps):
        step(batch)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step(batch)
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    tokens_per_s = args.batch_size * args.seq_len * world * args.steps / elapsed
    figures = {
        "shape": args.model or args.shape,
        "layers": model.config.num_hidden_layers,
        "arch": arch,
        "parameters": n_params,
        "zero": args.zero,
        "bf16": bool(args.bf16),
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "ranks": world,
        "seq_len": args.seq_len,
        "batch_size_per_rank": args.batch_size,
        "steps": args.steps,
        "seconds": round(elapsed, 3),
        "tokens_per_second": round(tokens_per_s, 1),
        "tokens_per_second_per_rank": round(tokens_per_s / world, 1),
        "final_loss": round(float(loss), 4),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
    }
    if cuda:
        figures["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        peak = device_peak(figures["device"])
        achieved = fpt * tokens_per_s / world
        figures["model_tflops_per_rank"] = round(achieved / 1e12, 1)
        figures["mfu"] = round(achieved / peak, 4) if peak else None
    else:
        figures["peak_rss_gib"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3
        )
        figures["model_gflops_per_second"] = round(fpt * tokens_per_s / 1e9, 1)
    if int(os.environ["RANK"]) == 0:
        if args.json:
            print(json.dumps(figures, indent=2))
        else:
            for key, value in figures.items():
                print(f"{key:30s} {value}")
    return 0


def make_step(model, args, world: int, device, dtype):
    """A closure running one optimizer step on a batch; returns the loss."""
    import torch

    if args.zero == 0:
        model.to(device=device, dtype=dtype)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

        def plain(batch):
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.detach()

        return plain
    import deepspeed

    deepspeed.init_distributed()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    engine, *_ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        config=deepspeed_config(args.zero, args, world, model.config.hidden_size),
    )

    def ds_step(batch):
        loss = engine(input_ids=batch, labels=batch).loss
        engine.backward(loss)
        engine.step()
        return loss.detach()

    return ds_step
