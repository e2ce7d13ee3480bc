"""Inference: score sessions with a model and explain each score (the CARE paper, §5.3-5.4).

One engine, three backends that share the prompts, the parsing and the output rows:

- :mod:`care.infer.hf`: transformers, batched greedy decoding; in item granularity the
  system message and dialogue shared by a session's prompts are prefilled once per session
  and their KV cache reused for every item (``prefix_sharing``);
- :mod:`care.infer.vllm_backend`: vLLM on GPUs with automatic prefix caching (optional extra);
- :mod:`care.infer.api`: an OpenAI-compatible chat API (remote use is opt-in).

The backend-independent parts: :mod:`care.infer.prompting` turns sessions into unit
prompts; :mod:`care.infer.answers` caches each unit's answer so an interrupted run resumes;
:mod:`care.infer.labels` reads the label distribution where a score was written;
:mod:`care.infer.engine` (the scorer) runs them and turns answers into prediction rows (the
predictions contract). :mod:`care.infer.run` writes a fold's predictions;
:mod:`care.infer.counselor` is the human counselor baseline.
"""

#: Columns of a predictions table, in order (the path contract in docs/inference.md).
PREDICTION_COLUMNS = (
    "session_id",
    "client_id",
    "fold",
    "item_id",
    "dimension",
    "model",
    "variant",
    "score",
    "score_generated",
    "score_expected",
    "score_argmax",
    "probs",
    "rationale",
    "raw_text",
    "parsed",
    "parse_error",
    "prompt_tokens",
    "truncated",
    "client_score",
)
