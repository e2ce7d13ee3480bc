"""The chat-API backend: any OpenAI-compatible endpoint (GPT-4o, DeepSeek, a local server).

Requests go through :class:`care.llm.openai_chat.OpenAIChat` (its retries and the remote
opt-in: transcripts leave the machine only when the model's config entry says
``allow_remote_transcripts: true``). Answers are cached once, in the scoring engine's
per-fold answer cache (``cache=``, as for every backend), not also in the client's response
cache (the drafting stage's): an interrupted run repeats at most the requests of the group
of sessions in flight (``batch_size`` units). The client returns text only, so the API backend
stores no label probabilities (``probs`` is null, ``score_expected`` NaN). Without a
tokenizer, the dialogue budget and ``prompt_tokens`` use an estimate of 4 characters per
token.
"""

from __future__ import annotations

from care.infer.engine import Scorer
from care.infer.labels import Generation
from care.infer.prompting import approx_tokens


class APIScorer(Scorer):
    """Score sessions through an OpenAI-compatible chat completions endpoint."""

    backend = "openai"

    def __init__(
        self,
        model: str,
        *,
        instrument,
        variant: str,
        granularity: str,
        max_length: int,
        max_new_tokens: int,
        batch_size: int = 48,
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        allow_remote_transcripts: bool = False,
        concurrency: int = 4,
        max_retries: int = 5,
        timeout_s: float = 120,
        language: str | None = None,
        scoring: str = "generated",
        cache=None,
        client=None,
        opt_in_section: str = "the model's config entry",
    ) -> None:
        if client is None:
            from care.llm.openai_chat import OpenAIChat

            client = OpenAIChat(
                model,
                base_url,
                api_key_env,
                allow_remote_transcripts,
                concurrency,
                max_retries,
                timeout_s,
                cache_dir=None,
                opt_in_section=opt_in_section,
            )
        self.client = client
        self.model_name = model
        super().__init__(
            instrument=instrument,
            variant=variant,
            granularity=granularity,
            max_length=max_length,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            language=language,
            scoring=scoring,
            cache=cache,
            fingerprint=f"{model}@{getattr(client, 'base_url', base_url)}",
        )

    # no tokenizer: token counts are approximate and prompts go out as messages
    render = None

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    def generate_group(self, prompts):
        flat = [p.messages for session in prompts for p in session]
        texts = self.client.complete_many(flat, max_tokens=self.max_new_tokens, temperature=0.0)
        grouped, k = [], 0
        for session in prompts:
            grouped.append(
                [
                    Generation(text=t, n_generated=approx_tokens(t), hit_limit=False)
                    for t in texts[k : k + len(session)]
                ]
            )
            k += len(session)
        return grouped
