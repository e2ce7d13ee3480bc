"""Inference: parsing, scores and label probabilities, prefix sharing, determinism, resume,
the counselor baseline and the vLLM / API backends (dry)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from care.infer import PREDICTION_COLUMNS
from care.infer.counselor import counselor_rows
from care.infer.labels import (
    Generation,
    argmax_score,
    expected_score,
    label_distribution,
    read_probs,
)
from care.infer.run import coverage_path, predict_fold, write_predictions
from care.prompts import format_target
from care.sessions import iter_sessions
from scipy import stats

torch = pytest.importorskip("torch")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: extra torch threads only contend with each other on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sessions(small_corpus, instrument):
    return list(iter_sessions(small_corpus[0], instrument))


@pytest.fixture(scope="module")
def texts(small_corpus):
    _, records, refs = small_corpus
    return [t["text"] for r in records for t in r["turns"]] + [x["rationale"] for x in refs]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request, texts):
    """(model, tokenizer) of a randomly initialised tiny model, float32 on CPU."""
    from care.model.backbone import random_backbone

    return random_backbone("tiny", texts, arch=request.param, vocab_size=600, seed=3)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, texts):
    from care.model.backbone import random_backbone

    model, tok = random_backbone("tiny", texts, arch="llama", vocab_size=600, seed=5)
    path = tmp_path_factory.mktemp("model") / "llama"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def settings(**kw):
    """Inference settings of the tests (a small answer budget, a small batch)."""
    from care.infer.settings import InferenceSettings

    base = dict(
        variant="rationale", granularity="item", max_length=1024, max_new_tokens=6, batch_size=12
    )
    return InferenceSettings(**{**base, **kw})


def scorer(model, tok, instrument, cache=None, fingerprint=None, **kw):
    from care.infer.hf import HFScorer

    return HFScorer(
        model, tok, settings(**kw), instrument=instrument, cache=cache, fingerprint=fingerprint
    )


# --------------------------------------------------------------------------- settings


def test_settings_from_the_config_section_refuse_unknown_keys_and_fill_defaults():
    from care.errors import CareInputError
    from care.infer.settings import NOT_SETTINGS, InferenceSettings, section_schema

    run = dict(variant="score_only", granularity="item", max_length=512)
    got = InferenceSettings.from_config(
        {"max_new_tokens": {"score_only": 9}, "backend": "hf", "threads": 2}, **run
    )
    assert got.max_new_tokens == 9 and got.mode == "generate" and got.batch_size == 48
    assert InferenceSettings.from_config({}, **run).max_new_tokens == "auto"
    # the schema's defaults are the dataclass's (the job's keys are not the scorer's)
    defaults = {k: v["default"] for k, v in section_schema()["properties"].items()
                if "default" in v and k not in NOT_SETTINGS}
    assert defaults and all(getattr(got.replace(max_new_tokens="auto"), k) == v
                            for k, v in defaults.items())
    with pytest.raises(CareInputError, match="--settings: field 'batchsize'.*unknown"):
        InferenceSettings.from_config({"batchsize": 4}, source="--settings", **run)
    with pytest.raises(CareInputError, match="field 'batch_size'"):
        InferenceSettings.from_config({"batch_size": 0}, **run)
    with pytest.raises(CareInputError, match="score_only"):
        InferenceSettings.from_config({"mode": "label_probs"}, **{**run, "variant": "rationale"})


# --------------------------------------------------------------------------- probabilities


def test_expected_score_is_the_probability_weighted_mean():
    logp = [math.log(w) for w in (0.1, 0.2, 0.3, 0.3, 0.1)]
    probs = label_distribution([v - 3.0 for v in logp])  # unnormalised over labels
    assert sum(probs) == pytest.approx(1.0)
    points = [1, 2, 3, 4, 5]
    assert expected_score(probs, points) == pytest.approx(float(np.dot(probs, points)))
    assert expected_score(probs, points) == pytest.approx(3.1)
    assert argmax_score(probs, points) == 3.0  # first of the tied maxima


def test_read_probs_takes_the_step_of_the_parsed_score():
    # tokens: "Rationale:", " ok", "\nScore:", " 4"; the label distribution at step 3
    pieces = ["Rationale:", " ok", "\nScore:", " 4"]
    text = "".join(pieces)
    ends = np.cumsum([len(p) for p in pieces]).tolist()
    steps = [[0.0] * 5 for _ in pieces]
    steps[3] = [math.log(p) for p in (0.05, 0.05, 0.1, 0.6, 0.2)]
    gen = Generation(text, len(pieces), False, steps, lambda j: ends[j])
    probs = read_probs(gen, ["4"])["4"]
    assert probs == pytest.approx([0.05, 0.05, 0.1, 0.6, 0.2])
    merged = Generation(text, 3, False, steps[:3], lambda j: [10, 13, len(text)][j])
    assert read_probs(merged, ["4"]) == {}  # "\nScore: 4" as one token: no clean position


def test_recorded_label_logprobs_match_a_forward_pass(tiny, instrument, sessions):
    model, tok = tiny
    sc = scorer(model, tok, instrument)
    ids = sc.builder.prompts(sessions[0])[0].ids
    gen = sc._generate_naive([ids])[0]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    logp = torch.log_softmax(logits.float(), -1)
    want = [torch.logsumexp(logp[label], 0).item() for label in sc.label_ids]
    assert gen.label_logprobs[0] == pytest.approx(want, abs=1e-4)


# --------------------------------------------------------------------------- prefix sharing


@pytest.mark.parametrize("granularity, batch_size", [("item", 24), ("item", 5), ("dimension", 6)])
def test_prefix_shared_output_equals_naive(tiny, instrument, sessions, granularity, batch_size):
    model, tok = tiny
    picked = sessions[:3] if batch_size > 12 else sessions[:2]
    out = {}
    for shared in (False, True):
        sc = scorer(
            model,
            tok,
            instrument,
            granularity=granularity,
            batch_size=batch_size,
            max_new_tokens=10,
            prefix_sharing=shared,
        )
        out[shared] = sc.answer(picked)
        out[f"{shared}-prefill"] = sc.counters["prefill_tokens"]
    flat = {k: [a for session in out[k] for _, a in session] for k in (False, True)}
    assert [a.text for a in flat[True]] == [a.text for a in flat[False]]
    assert [a.n_generated for a in flat[True]] == [a.n_generated for a in flat[False]]
    assert out["True-prefill"] < out["False-prefill"] / (3 if granularity == "item" else 1.5)


# --------------------------------------------------------------------------- outputs


@pytest.fixture(scope="module")
def folds_tsv(tmp_path_factory, sessions):
    path = tmp_path_factory.mktemp("folds") / "folds.tsv"
    pd.DataFrame(
        {
            "session_id": [s.session_id for s in sessions],
            "client_id": [s.client_id for s in sessions],
            "fold": [1 + n % 2 for n, _ in enumerate(sessions)],
        }
    ).to_csv(path, sep="\t", index=False)
    return path


def predict(scorer, corpus, folds_tsv, fold, out) -> dict:
    """Model "m", variant rationale: one fold of the corpus predicted to ``out``."""
    return predict_fold(scorer, sessions_path=corpus[0], instrument=scorer.instrument,
                        folds_path=folds_tsv, fold=fold, model="m", variant="rationale", out=out)


def test_two_runs_give_identical_parquet_bytes(tiny, instrument, small_corpus, folds_tsv, tmp_path):
    model, tok = tiny
    paths = []
    for run in range(2):
        out = tmp_path / f"run{run}" / "fold1.parquet"
        predict(scorer(model, tok, instrument), small_corpus, folds_tsv, 1, out)
        paths.append(out)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    frame = pd.read_parquet(paths[0])
    assert tuple(frame.columns) == PREDICTION_COLUMNS
    assert frame["fold"].eq(1).all() and frame["model"].eq("m").all()
    assert len(frame) == 12 * frame["session_id"].nunique()
    assert list(frame["session_id"]) == sorted(frame["session_id"])
    assert (frame["parsed"] | frame["parse_error"].notna()).all()
    assert frame.loc[~frame["parsed"], "score_generated"].isna().all()
    assert coverage_path(paths[0]).exists()


class Interrupted(Exception):
    pass


def test_killed_run_resumes_without_redoing_finished_items(
    tiny, instrument, small_corpus, folds_tsv, tmp_path
):
    model, tok = tiny
    cache = tmp_path / "cache.sqlite"
    out = tmp_path / "fold2.parquet"
    first = scorer(model, tok, instrument, cache=cache, fingerprint="fp")
    calls = []
    generate = first.generate_group

    def dying(prompts):
        if calls:
            raise Interrupted
        calls.append(sum(len(s) for s in prompts))
        return generate(prompts)

    first.generate_group = dying
    with pytest.raises(Interrupted):
        predict(first, small_corpus, folds_tsv, 2, out)
    assert not out.exists()
    done = calls[0]
    second = scorer(model, tok, instrument, cache=cache, fingerprint="fp")
    summary = predict(second, small_corpus, folds_tsv, 2, out)
    assert summary["answers"]["cached"] == done
    assert summary["answers"]["generated"] == summary["rows"] - done
    fresh = tmp_path / "fresh.parquet"
    predict(scorer(model, tok, instrument), small_corpus, folds_tsv, 2, fresh)
    assert fresh.read_bytes() == out.read_bytes()
    assert coverage_path(fresh).read_bytes() == coverage_path(out).read_bytes()


# --------------------------------------------------------------------------- counselor


def test_counselor_baseline_pearson_equals_scipy(instrument, sessions, tmp_path):
    rows = list(counselor_rows(sessions, instrument, fold=1))
    both = [s for s in sessions if s.counselor_ratings and s.client_ratings]
    assert rows and len({r["session_id"] for r in rows if r["parsed"]}) == len(both)
    out = tmp_path / "fold1.parquet"
    write_predictions(out, rows)
    frame = pd.read_parquet(out)
    assert tuple(frame.columns) == PREDICTION_COLUMNS
    for dim in instrument.dimension_ids:
        per_session = (
            frame[frame["dimension"] == dim].groupby("session_id")[["score", "client_score"]].mean()
        )
        got = np.corrcoef(per_session["score"], per_session["client_score"])[0, 1]
        pairs = sorted(
            (
                s.session_id,
                instrument.dimension_scores(s.counselor_ratings)[dim],
                instrument.dimension_scores(s.client_ratings)[dim],
            )
            for s in both
        )
        want = stats.pearsonr([p[1] for p in pairs], [p[2] for p in pairs]).statistic
        assert got == pytest.approx(want, abs=1e-12)


def test_counselor_baseline_counts_unrated_items_as_unanswered(instrument, sessions):
    """Items the counselor skipped are unparsed rows: coverage shows what cannot be scored."""
    s = sessions[0]
    partial = replace(s, counselor_ratings={"1": 3.0})  # one item of one dimension
    rows = list(counselor_rows([partial], instrument, fold=1))
    assert len(rows) == len(instrument.item_ids)
    assert [r["item_id"] for r in rows if r["parsed"]] == ["1"]
    assert {r["parse_error"] for r in rows if not r["parsed"]} == {"not rated by the counselor"}
    assert all(math.isnan(r["score"]) for r in rows if not r["parsed"])


# --------------------------------------------------------------------------- other backends


def test_vllm_engine_arguments(model_dir, instrument):
    from care.infer.vllm_backend import VLLMScorer

    sc = VLLMScorer(
        str(model_dir),
        settings(variant="score_only", max_length=2048, max_new_tokens=8, tensor_parallel_size=2),
        instrument=instrument,
        llm=object(),
    )
    args = sc.engine_args()
    assert args["enable_prefix_caching"] is True and args["tensor_parallel_size"] == 2
    assert args["max_model_len"] == 2048
    sampling = sc.sampling_args()
    assert sampling["temperature"] == 0.0 and sampling["max_tokens"] == 8
    assert sampling["logprobs"] >= 1 and sampling["stop_token_ids"]


def test_api_backend_through_the_stub_server(instrument, sessions, tmp_path, monkeypatch):
    from care.infer.api import APIScorer
    from care.llm.openai_chat import OpenAIChat

    from tests.stub_server import StubServer

    requests = []

    def answer(request):
        requests.append(request)
        return "Rationale: the client felt heard (turn 2).\nScore: 4"

    def scorer(server):
        entry = {"model": "stub-model", "base_url": server.base_url, "api_key_env": None}
        return APIScorer(
            OpenAIChat.from_config(entry, section="baselines.zero_shot", cache_dir=None),
            settings(max_length=4096, max_new_tokens=64, batch_size=48),
            instrument=instrument,
            cache=tmp_path / "answers.sqlite",
        )

    monkeypatch.chdir(tmp_path)
    with StubServer(answer) as server:
        rows = list(scorer(server).score(sessions[:2], model="stub", variant="zero_shot", fold=1))
        again = list(scorer(server).score(sessions[:2], model="stub", variant="zero_shot", fold=1))
    assert len(rows) == 24 and all(r["parsed"] and r["score"] == 4.0 for r in rows)
    assert all(r["probs"] is None and math.isnan(r["score_expected"]) for r in rows)
    # one cache: the rerun is answered from the engine's answer cache, and the client keeps
    # no second copy of the answers (no response-cache directory)
    assert len(requests) == 24 and again == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.sqlite"]


def test_cli_scores_a_fold_from_a_model_directory(
    model_dir, instrument, small_corpus, folds_tsv, tmp_path
):
    from care.cli import main

    out = tmp_path / "pred" / "fold1.parquet"
    code = main(
        [
            "infer",
            "model",
            "--backend",
            "hf",
            "--model-path",
            str(model_dir),
            "--name",
            "llama",
            "--variant",
            "score_only",
            "--max-length",
            "1024",
            "--settings",
            '{"batch_size": 24, "max_new_tokens": {"score_only": 4}, '
            '"dtype": "float32", "scoring": "expected"}',
            "--sessions",
            str(small_corpus[0]),
            "--instrument",
            instrument.path,
            "--folds",
            str(folds_tsv),
            "--fold",
            "1",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache.sqlite"),
        ]
    )
    assert code == 0
    frame = pd.read_parquet(out)
    assert frame["variant"].eq("score_only").all() and frame["rationale"].isna().all()
    code = main(
        [
            "infer",
            "counselor",
            "--sessions",
            str(small_corpus[0]),
            "--instrument",
            instrument.path,
            "--folds",
            str(folds_tsv),
            "--fold",
            "1",
            "--out",
            str(tmp_path / "counselor.parquet"),
        ]
    )
    assert code == 0


def test_vllm_outputs_become_answers_with_label_probabilities(model_dir, instrument):
    from types import SimpleNamespace

    from care.infer.vllm_backend import VLLMScorer

    sc = VLLMScorer(
        str(model_dir),
        settings(variant="score_only", max_new_tokens=8),
        instrument=instrument,
        llm=object(),
    )
    tok = sc.tokenizer
    ids = tok("Score: 4", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    digit = len(ids) - 2  # the step that produced "4"
    four = next(i for i in sc.label_ids[3] if i == ids[digit])
    two = sc.label_ids[1][0]
    Logprob = SimpleNamespace  # noqa: N806 (vLLM's Logprob has a .logprob)
    steps = [{t: Logprob(logprob=-0.1)} for t in ids]
    steps[digit] = {four: Logprob(logprob=math.log(0.6)), two: Logprob(logprob=math.log(0.2))}
    completion = SimpleNamespace(token_ids=ids, logprobs=steps, finish_reason="stop")
    gen = sc._generation(completion)
    assert gen.text == "Score: 4" and not gen.hit_limit
    probs = read_probs(gen, ["1"])["1"]
    assert probs == pytest.approx([0.0, 0.25, 0.0, 0.75, 0.0])


def test_bench_runs_naive_and_shared_on_a_random_model(tmp_path, capsys):
    from care.cli import main

    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "infer",
                "--random-model",
                "tiny",
                "--n-sessions",
                "2",
                "--max-new-tokens",
                "3",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    import json

    figures = json.loads(out.read_text())
    assert figures["identical_outputs"] is True
    assert figures["ratios"]["prefill_tokens"] > 3
    assert "naive / prefix-shared" in capsys.readouterr().out


def test_bench_peer_is_batched_warmed_and_compared(tmp_path, capsys):
    """--peer: the library's cache reuse batched as the project batches (the same generate
    calls), every method timed --repeats times (median), label probabilities compared at
    every answer's first token (a random model writes no score)."""
    from care.cli import main

    out = tmp_path / "bench.json"
    argv = ["bench", "infer", "--random-model", "tiny", "--n-sessions", "3", "--turns", "10",
            "10", "--max-new-tokens", "3", "--peer", "--repeats", "2", "--json", str(out)]
    assert main(argv) == 0
    import json
    import statistics

    figures = json.loads(out.read_text())
    library, shared = figures["library"], figures["prefix_shared"]
    assert library["generate_calls"] == shared["generate_calls"] < 3  # not one per session
    assert len(library["wall_s_runs"]) == len(figures["naive"]["wall_s_runs"]) == 2
    assert library["wall_s"] == pytest.approx(statistics.median(library["wall_s_runs"]))
    assert figures["label_probs_compared"] == 2 * 36 * 5  # two other runs, 36 prompts, 5 labels
    assert figures["max_label_prob_diff"] < 1e-4 and figures["identical_outputs"] is True
    assert "first answer token" in capsys.readouterr().out


@pytest.fixture(scope="module")
def score_trained(texts, sessions, instrument):
    """A tiny Llama trained for a few steps to answer "Score: N" (short, truncated prompts)."""
    from care.model.backbone import random_backbone

    # the answer format is in the tokenizer's texts, as in care.model.backbone.corpus_texts
    answers = texts + ["Score: 1 2 3 4 5 Rationale:"] * 50
    model, tok = random_backbone("tiny", answers, arch="llama", vocab_size=600, seed=3)
    sc = scorer(model, tok, instrument, variant="score_only", max_length=480)
    seqs = []
    for s in sessions[:1]:
        for p in sc.builder.prompts(s)[:6]:
            target = format_target(p.items, s.client_ratings, None, "score_only", "en")
            seqs.append((p.ids, tok(target, add_special_tokens=False)["input_ids"]))
    width = max(len(a) + len(b) + 1 for a, b in seqs)
    ids = torch.full((len(seqs), width), tok.pad_token_id)
    labels = torch.full((len(seqs), width), -100)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for n, (prompt, target) in enumerate(seqs):
        full = prompt + target + [tok.eos_token_id]
        ids[n, : len(full)] = torch.tensor(full)
        mask[n, : len(full)] = 1
        labels[n, len(prompt) : len(full)] = torch.tensor(full[len(prompt) :])
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), tok


def test_scores_and_label_probabilities_of_a_model_that_answers(
    score_trained, instrument, sessions
):
    model, tok = score_trained
    sc = scorer(model, tok, instrument, variant="score_only", max_length=480, scoring="expected")
    rows = list(sc.score(sessions[:2], model="m", fold=1))
    assert all(r["truncated"] and r["prompt_tokens"] <= 480 - 6 for r in rows)
    answered = [r for r in rows if r["parsed"]]
    assert len(answered) >= len(rows) // 2
    points = instrument.scale_points
    for r in answered:
        assert r["raw_text"].startswith("Score:") and r["probs"] is not None
        assert sum(r["probs"]) == pytest.approx(1.0)
        assert r["score"] == r["score_expected"]
        assert r["score_expected"] == pytest.approx(float(np.dot(r["probs"], points)))
        assert r["score_argmax"] == points[int(np.argmax(r["probs"]))]


@pytest.mark.parametrize("penalty, least", [(1.0, 0), (1.3, 3)])
def test_shared_decoding_gives_the_naive_tokens_and_label_probabilities(
    score_trained, instrument, sessions, penalty, least
):
    from care.infer.decoding import Decoding

    model, tok = score_trained
    out = {}
    for shared in (False, True):
        sc = scorer(
            model, tok, instrument, variant="score_only", max_length=480, prefix_sharing=shared
        )
        # logits processing (repetition penalty, a minimum length) applies per branch too
        sc.decoding = Decoding(6, repetition_penalty=penalty, min_new_tokens=least)
        sc.generation_config = sc.decoding.generation_config(sc.eos_ids, sc.pad_id)
        out[shared] = [a for session in sc.answer(sessions[:2]) for _, a in session]
    if least:
        assert all(a.n_generated >= least for a in out[True])
    assert [a.text for a in out[True]] == [a.text for a in out[False]]
    with_probs = [(a, b) for a, b in zip(out[False], out[True], strict=True) if a.probs]
    assert len(with_probs) >= len(out[False]) // 2
    for naive, shared in with_probs:
        assert shared.probs.keys() == naive.probs.keys()
        for item in naive.probs:
            assert shared.probs[item] == pytest.approx(naive.probs[item], abs=1e-5)


def test_sessions_of_unlike_length_are_not_padded_together():
    from care.infer.shared_decode import length_groups

    groups = length_groups([100, 3000, 110, 2900, 105], max_rows=4)
    assert sorted(map(sorted, groups)) == [[0, 2, 4], [1, 3]]
    assert length_groups([100] * 5, max_rows=2) == [[0, 1], [2, 3], [4]]
