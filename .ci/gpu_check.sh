#!/usr/bin/env bash
# The GPU check: run on a bare one-GPU machine from a copy of this repository, before a
# paper-scale run (docs/scale.md). Nothing is downloaded: it uses the machine's
# own torch / transformers / deepspeed (their versions are reported, not enforced) and this
# copy's `care` package from source. Under 8 minutes on an H100-class GPU. Prints (and
# writes to $1, default gpu_check.json) the figures of `care bench gpu-check`:
#   environment and bf16; care bench train at the Llama-3.1-8B layer shape (4 layers,
#   ZeRO-3, bf16, activation checkpointing, 8k tokens): tokens/s, peak memory, MFU;
#   care train with one GPU on a tiny stand-in through selection (each epoch scored in
#   the training job while it waits: memory at scoring, peak); prefix-shared vs naive inference in bf16 at the 8B shape on 5k+-token
#   prompts with 512 new tokens (seconds per validation session, answer tokens shared before
#   the paths first differ) and their label probabilities within a tolerance.
# The report is rewritten after every step ("complete": false until the end), so a run cut
# by the time limit keeps what it measured. Exit status 0 only if every step passed.
# It fails at once when torch cannot use a GPU (--require-gpu); CARE_GPU_CHECK_ALLOW_CPU=1
# runs the steps at a tiny size on the CPU instead (tests/test_gpucheck.py). Libraries the machine lacks can come as wheels
# in the copy: CARE_WHEELS=dir installs them from there (--no-index) first.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check.json}"
export PYTHONPATH="$PWD/workflow${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [ -n "${CARE_WHEELS:-}" ]; then
    python -m pip install -q --no-index --find-links "$CARE_WHEELS" "$CARE_WHEELS"/*.whl
fi
missing="$(python - <<'PY'
import importlib.util
need = ["torch", "transformers", "accelerate", "deepspeed", "tokenizers", "safetensors",
        "numpy", "pandas", "pyarrow", "jsonschema", "yaml", "sklearn", "scipy", "packaging"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)"
if [ -n "$missing" ]; then
    echo "gpu_check: missing Python packages: $missing (bring wheels: CARE_WHEELS=dir)" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
require=(--require-gpu)
if [ "${CARE_GPU_CHECK_ALLOW_CPU:-0}" = 1 ]; then require=(); fi
exec timeout 470 python -m care.cli bench gpu-check "${require[@]}" --out "$out"
