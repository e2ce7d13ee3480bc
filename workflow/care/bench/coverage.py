"""``care bench coverage``: its options. The simulation (:mod:`care.evaluate.coverage`) loads
pandas, scipy and scikit-learn, so it is imported only when the benchmark runs: every
``care`` command builds this parser."""

from __future__ import annotations

#: corpus shapes the benchmark simulates (care.evaluate.coverage.SHAPES defines each)
SHAPE_NAMES = ("demo", "paper")


def add_arguments(parser) -> None:
    parser.add_argument("--corpora", type=int, default=200, help="simulated corpora per shape")
    parser.add_argument("--population", type=int, default=300,
                        help="corpora pooled to estimate the true r (per shape)")
    # fewer than the tables' 1000 to fit a few minutes on 2 cores; the header says how many
    parser.add_argument("--resamples", type=int, default=500, help="bootstrap resamples")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPE_NAMES), choices=SHAPE_NAMES)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--workers", type=int, default=2, help="processes")


def run(args) -> int:
    from care.evaluate.coverage import run as simulate_coverage

    return simulate_coverage(args)
