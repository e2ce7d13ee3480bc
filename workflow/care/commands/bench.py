"""``care bench train|infer|evaluate|scale``: benchmarks that print speed and memory figures.

Targets live here, never in timed tests. Each benchmark module defines
``add_arguments(parser)`` (light) and ``run(args)`` (imports torch when called).
"""

import importlib

BENCHMARKS = {
    "train": ("care.bench.train", "fine-tuning throughput, peak memory, MFU on a GPU"),
    "infer": ("care.bench.infer", "naive vs prefix-shared inference: prefill tokens, wall time"),
    "evaluate": ("care.bench.evaluate", "evaluation stage timings"),
    "coverage": ("care.evaluate.coverage", "simulated coverage of the tables' intervals"),
    "gpu-check": ("care.gpucheck", "the GPU path on one GPU (.ci/gpu_check.sh); CPU: tiny"),
    "scale": ("care.bench.scale", "CPU stages at 1x/4x/16x the demo corpus: time, memory, growth"),
}


def register(subparsers) -> None:
    for name, (module, help_text) in BENCHMARKS.items():
        bench = subparsers.add_parser(f"bench {name}", typed=True, help=help_text)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        mod.add_arguments(bench)
        bench.set_defaults(func=mod.run)
