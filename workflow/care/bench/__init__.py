"""Benchmarks (``care bench``): speed and memory figures, never timed in tests.

Each module defines ``add_arguments(parser)`` (light) and ``run(args)`` (imports torch when
called): :mod:`care.bench.train` (fine-tuning throughput; ``--packing``:
:mod:`care.bench.packing`), :mod:`care.bench.infer` (naive vs prefix-shared inference),
:mod:`care.bench.evaluate` (evaluation stage timings), :mod:`care.bench.scale` (CPU stages
at growing corpus sizes).
"""
