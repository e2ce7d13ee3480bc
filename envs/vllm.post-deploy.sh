#!/usr/bin/env bash
# Snakemake runs this inside the new vLLM environment, from the workflow's directory (the
# repository root): install `care` without its dependencies, which would replace vLLM's
# torch and transformers (envs/vllm.yaml).
set -euo pipefail
python -m pip install --no-deps -e .
