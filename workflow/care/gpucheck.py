"""``care bench gpu-check``: the GPU path checked on one GPU before a paper-scale run.

Run by ``.ci/gpu_check.sh`` on a bare one-GPU machine (nothing downloaded; under 8 minutes
on an H100-class GPU). Steps, each with figures and a pass/fail:

1. environment: library versions (and whether they are in the tested ranges), the device,
   bf16 support and a bf16 matmul against float32;
2. ``care bench train`` at the real Llama-3.1-8B layer shape (a few layers, ZeRO-3, bf16,
   activation checkpointing, 8k tokens): tokens/s, peak memory, MFU;
3. ``care train run`` with one GPU on a small stand-in checkpoint (a tiny backbone built from a
   generated corpus) through checkpoint selection, each epoch scored inside the training job
   while training waits: the GPU memory allocated when scoring starts (training's, still
   held) and the peak;
4. ``care bench infer`` with random weights at the 8B shape in bf16 on paper-length prompts
   (5k+ tokens, 512 new tokens): seconds per validation session (12 items) and how many
   answer tokens prefix-shared and naive decoding share before they first differ (bf16
   kernels that reduce in another order flip near-tied argmaxes of a random model: reported,
   not required to be identical);
5. the same in ``label_probs`` mode: the label probabilities of the two paths agree within
   :data:`LABEL_PROB_TOLERANCE` (every item has them: the score line is forced).

With ``--require-gpu`` (the script's default) the check fails at once when torch cannot use
a GPU, whether or not one is visible (``nvidia-smi``): a CPU-only torch would otherwise pass
the CPU path. Without it and without a GPU every step runs at a tiny size on the CPU (how the
tests check this module). The report is written after every step (``complete`` false until
the last), so a run killed by its time limit leaves what it measured.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("care.gpucheck")

#: Largest label-probability difference allowed between prefix-shared and naive inference
#: (bf16 on the GPU; float32 on the CPU path agrees to ~1e-6).
LABEL_PROB_TOLERANCE = 0.02
#: The shortest mean prompt the GPU path must measure (the corpus's dialogues: 5-8k tokens).
PAPER_PROMPT_TOKENS = 5000


def add_arguments(parser) -> None:
    parser.add_argument("--out", help="also write the figures to this JSON file")
    parser.add_argument("--workdir", help="scratch directory (default: a temporary one)")
    parser.add_argument(
        "--infer-sessions", type=int, default=3, help="sessions for the inference step"
    )
    parser.add_argument(
        "--require-gpu",
        action="store_true",
        help="fail at once unless torch can use a GPU (the default of .ci/gpu_check.sh)",
    )


def run(args) -> int:
    """The check, with ``CARE_ALLOW_UNTESTED=1`` for the commands it runs (it reports
    versions rather than stopping on them), restored afterwards for an in-process caller."""
    before = os.environ.get("CARE_ALLOW_UNTESTED")
    os.environ.setdefault("CARE_ALLOW_UNTESTED", "1")
    try:
        return _run(args)
    finally:
        if before is None:
            os.environ.pop("CARE_ALLOW_UNTESTED", None)


def _run(args) -> int:
    import torch

    cuda = torch.cuda.is_available()
    report = {"gpu": cuda, "ok": False, "complete": False, "steps": {}}
    if args.require_gpu and not cuda:
        report["steps"]["environment"] = gpu_unusable()
        return finish(args, report)
    with tempfile.TemporaryDirectory(prefix="care-gpu-check-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        steps = report["steps"]
        for name, step in STEPS:
            started = time.perf_counter()
            try:
                steps[name] = step(cuda, work, args)
            except Exception as exc:  # one broken step must not hide the others' figures
                log.exception("%s failed", name)
                steps[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            steps[name]["seconds"] = round(time.perf_counter() - started, 1)
            log.info("%s: %s", name, json.dumps(steps[name]))
            report["ok"] = all(s.get("ok") for s in steps.values())
            write_report(args, report)  # a run killed later keeps what it measured
    report["complete"] = True
    return finish(args, report)


def finish(args, report: dict) -> int:
    print(json.dumps(report, indent=2, sort_keys=True))
    write_report(args, report)
    return 0 if report["ok"] and report["complete"] else 1


def write_report(args, report: dict) -> None:
    from care.io import write_json

    if args.out:
        write_json(Path(args.out), report)


def gpu_unusable() -> dict:
    """Why the check stops: torch cannot use a GPU (is one there? nvidia-smi says)."""
    import torch

    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                timeout=60, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    build = torch.version.cuda or "none (a CPU-only wheel)"
    seen = f"nvidia-smi lists {listed!r}" if listed else "nvidia-smi lists no GPU"
    return {
        "ok": False,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "gpu_visible": bool(listed),
        "error": f"torch {torch.__version__} cannot use a GPU (its CUDA build: {build}); "
        f"{seen}. --require-gpu stops here: the CPU path would pass without checking the "
        "GPU path.",
    }

# --------------------------------------------------------------------------- steps


def environment(cuda: bool, work: Path, args) -> dict:
    import platform

    import torch

    from care.versions import STACKS, problems, tested_ranges

    names = sorted({n for stack in STACKS.values() for n in stack})
    out = {
        "python": platform.python_version(),
        "versions": {n: _version(n) for n in names},
        "untested_versions": problems(names, tested_ranges()),
        "cuda": cuda,
    }
    device = "cuda" if cuda else "cpu"
    if cuda:
        props = torch.cuda.get_device_properties(0)
        out.update(
            device=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            torch_cuda=torch.version.cuda,
            bf16_supported=bool(torch.cuda.is_bf16_supported()),
        )
    a = torch.randn(512, 512, device=device)
    b = torch.randn(512, 512, device=device)
    exact = a @ b
    approx = (a.bfloat16() @ b.bfloat16()).float()
    out["bf16_matmul_rel_error"] = float((approx - exact).norm() / exact.norm())
    out["ok"] = out["bf16_matmul_rel_error"] < 0.02 and (not cuda or out["bf16_supported"])
    return out


def bench_train(cuda: bool, work: Path, args) -> dict:
    if cuda:
        size = ["--shape", "llama-3.1-8b", "--layers", "4", "--seq-len", "8192",
                "--steps", "5", "--warmup-steps", "2", "--bf16"]
    else:
        size = ["--shape", "tiny", "--seq-len", "128", "--steps", "2", "--warmup-steps", "1"]
    figures = _care_json(["bench", "train", *size, "--zero", "3",
                          "--gradient-checkpointing", "--json"])
    keep = ("shape", "layers", "seq_len", "tokens_per_second", "peak_memory_gib", "mfu",
            "model_tflops_per_rank", "device", "final_loss", "seconds")
    out = {k: figures[k] for k in keep if k in figures}
    out["ok"] = figures["tokens_per_second"] > 0 and figures["final_loss"] == figures["final_loss"]
    return out


def train_and_select(cuda: bool, work: Path, args) -> dict:
    """One fine-tune on one GPU through selection, scored inside the training job."""
    import torch

    from care.train import run as train_run
    from care.train import select

    run = _stand_in_run(work, gpus=1 if cuda else 0)
    seen = {}
    score = select.score_rows

    def watched(*a, **kw):
        if "allocated_at_selection" not in seen:
            seen["allocated_at_selection"] = _allocated(cuda)
        return score(*a, **kw)

    before = _allocated(cuda)
    select.score_rows = watched
    try:
        record = train_run.finetune(run)
    finally:
        select.score_rows = score
    out = {
        "epochs_scored": len(record["epochs"]),
        "chosen_epoch": record["chosen"]["epoch"],
        "timing_s": record.get("timing_s"),
        "validation_max_new_tokens": record["validation_decoding"]["max_new_tokens"],
        "answer_token_limit": record["sft"]["answer_token_limit"],
        "gpu_bytes_allocated_before_training": before,
        "gpu_bytes_still_allocated_at_selection": seen.get("allocated_at_selection"),
        "model_written": (run.out / "selection.json").is_file(),
    }
    if cuda:
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    out["ok"] = bool(out["model_written"] and out["epochs_scored"] >= 1)
    return out


def _infer_size(cuda: bool) -> list[str]:
    if cuda:  # the 8B shape in bf16; dialogues long enough that truncation cuts them to ~5.6k
        return ["--random-model", "llama-3-8b", "--device", "cuda", "--dtype", "bfloat16",
                "--max-length", "6144", "--turns", "2000", "2000", "--batch-size", "12"]
    return ["--random-model", "tiny", "--max-length", "512"]


def bench_infer(cuda: bool, work: Path, args) -> dict:
    """Generated answers (a full rationale per item): speed, and where the two paths part."""
    new_tokens = "512" if cuda else "8"
    figures = _bench_infer(work, "generate", [*_infer_size(cuda), "--max-new-tokens", new_tokens],
                           args.infer_sessions)
    shared, naive = figures["prefix_shared"], figures["naive"]
    prompt_tokens = naive["prompt_tokens"] / max(naive["prompts"], 1)
    out = {
        "mean_prompt_tokens": round(prompt_tokens),
        "max_new_tokens": int(new_tokens),
        "identical_outputs": figures["identical_outputs"],
        "tokens_to_first_divergence": figures["tokens_to_first_divergence"],
        "seconds_per_session_prefix_shared": round(shared["wall_s"] / args.infer_sessions, 2),
        "seconds_per_session_naive": round(naive["wall_s"] / args.infer_sessions, 2),
        "prefill_ratio": round(figures["ratios"]["prefill_tokens"], 2),
    }
    out["ok"] = not cuda or prompt_tokens >= PAPER_PROMPT_TOKENS
    return out


def label_probs(cuda: bool, work: Path, args) -> dict:
    """The forced score line: every item's label probabilities, both paths, within tolerance."""
    size = [*_infer_size(cuda), "--mode", "label_probs", "--variant", "score_only"]
    figures = _bench_infer(work, "label_probs", size, args.infer_sessions)
    out = {
        "label_probs_compared": figures["label_probs_compared"],
        "max_label_prob_diff": figures["max_label_prob_diff"],
        "tolerance": LABEL_PROB_TOLERANCE,
        "same_label_positions": figures["same_label_positions"],
    }
    out["ok"] = bool(
        out["label_probs_compared"] > 0
        and out["same_label_positions"]
        and out["max_label_prob_diff"] <= LABEL_PROB_TOLERANCE
    )
    return out


def _bench_infer(work: Path, name: str, size: list[str], sessions: int) -> dict:
    out_json = work / f"bench_infer_{name}.json"
    _care(["bench", "infer", *size, "--n-sessions", str(sessions), "--json", str(out_json)])
    return json.loads(out_json.read_text(encoding="utf-8"))


#: The check's steps, in order: (name, function(cuda, work, args) -> figures with "ok").
STEPS = (
    ("environment", environment),
    ("bench_train", bench_train),
    ("train_and_select", train_and_select),
    ("bench_infer", bench_infer),
    ("label_probs", label_probs),
)


# --------------------------------------------------------------------------- helpers


def _stand_in_run(work: Path, gpus: int):
    """A small corpus, folds and a tiny backbone; a 2-epoch fine-tune of it."""
    from care.corpus import CorpusSpec, generate
    from care.instrument import load_instrument
    from care.io import write_jsonl
    from care.model.backbone import TinySpec, build_tiny, corpus_texts
    from care.resources import resource_path
    from care.train.run import FineTune
    from care.train.settings import TrainingSettings

    instrument = load_instrument()
    spec = CorpusSpec(n_clients=9, sessions_per_client=(2, 3), n_counselors=3,
                      turns_per_session=(8, 10), seed=5)
    records, refs = generate(spec, instrument)
    write_jsonl(work / "sessions.jsonl", records)
    write_jsonl(work / "rationales.jsonl", refs)
    clients = sorted({r["client_id"] for r in records})
    fold_of = {c: n % 3 + 1 for n, c in enumerate(clients)}
    (work / "folds.tsv").write_text(
        "session_id\tclient_id\tfold\n"
        + "".join(f"{r['session_id']}\t{r['client_id']}\t{fold_of[r['client_id']]}\n"
                  for r in records),
        encoding="utf-8",
    )
    backbone = work / "backbone"
    if not (backbone / "config.json").is_file():
        texts = list(corpus_texts(work / "sessions.jsonl", instrument, [work / "rationales.jsonl"]))
        build_tiny(TinySpec(arch="llama", seed=0, hidden_size=64, intermediate_size=128,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            vocab_size=800, max_position_embeddings=1024), texts, backbone)
    hp = {
        "learning_rate": 5e-3, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1,
        "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
        "num_train_epochs": 2, "optim": "adamw_torch", "seed": 123, "bf16": "auto",
        "gradient_checkpointing": True, "deepspeed": str(resource_path("deepspeed", "zero3.json")),
        "answer_logits_only": True, "logging_steps": 2, "selection": "inner_split",
        # max_cut_rate 1: a 2-epoch random-init stand-in rarely ends its answers; this checks
        # the path and the memory, not the model (the cut-answer guard has its own tests)
        "inner_val_fraction": 0.3,
        "validation": {"batch_size": 48, "scoring": "expected", "max_cut_rate": 1.0},
        "cpu_ranks": 1, "launcher": "torchrun",
    }
    return FineTune(
        backbone=backbone,
        sessions=work / "sessions.jsonl",
        folds=work / "folds.tsv",
        instrument=instrument.path,
        fold=1,
        variant="rationale",
        granularity="item",
        max_length=512,
        settings=TrainingSettings.from_config(hp, "rationale"),
        checkpoint_dir=work / "checkpoints",
        out=work / "model",
        rationales=work / "rationales.jsonl",
        gpus=gpus,
        threads=max(1, os.cpu_count() or 1),
    )


def _allocated(cuda: bool) -> int:
    import torch

    if not cuda:
        return 0
    torch.cuda.synchronize()
    return int(torch.cuda.memory_allocated())


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _care(argv: list[str]) -> str:
    """Run a ``care`` command in a fresh interpreter (its own CUDA and DeepSpeed state)."""
    done = subprocess.run([sys.executable, "-m", "care.cli", *argv], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"care {' '.join(argv[:2])} failed: {done.stderr[-2000:]}")
    return done.stdout


def _care_json(argv: list[str]) -> dict:
    out = _care(argv)
    return json.loads(out[out.index("{") : out.rindex("}") + 1])
