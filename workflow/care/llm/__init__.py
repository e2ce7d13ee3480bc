"""Chat backends shared by rationale drafting and zero-shot inference.

Every backend has ``complete_many(list_of_message_lists, max_tokens, temperature=0.0,
**decoding) -> list[str]`` (answers in input order) and a ``stats`` dict (``calls``,
``cache_hits``, ``retries``), and caches every answer on disk (:class:`ResponseCache`), so
a rerun or a resumed run repeats no request already answered.

- :class:`~care.llm.openai_chat.OpenAIChat`: any OpenAI-compatible endpoint (OpenAI,
  DeepSeek, a local vLLM or ``transformers serve``) through the official ``openai`` client.
- :class:`~care.llm.hf_chat.HFChat`: a local transformers causal LM given by path.

Transcripts are sensitive: a non-loopback endpoint needs an explicit opt-in
(:func:`~care.llm.remote.require_remote_opt_in`), and API keys never reach a log.
"""

from care.llm.cache import ResponseCache, cache_key

__all__ = ["ResponseCache", "cache_key"]
