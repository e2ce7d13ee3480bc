"""The chat-API backend: any OpenAI-compatible endpoint (GPT-4o, DeepSeek, a local server).

Requests go through a :class:`care.llm.openai_chat.OpenAIChat` client built from the model's
config entry (``OpenAIChat.from_config``: its retries and the remote opt-in: transcripts
leave the machine only when the entry says ``allow_remote_transcripts: true``). Answers are
cached once, in the scoring engine's per-fold answer cache (``cache=``, as for every
backend), not also in the client's response cache (the drafting stage's): an interrupted
run repeats at most the requests of the group of sessions in flight (``batch_size`` units).
The client returns text only, so the API backend stores no label probabilities (``probs``
is null, ``score_expected`` NaN). Without a tokenizer, the dialogue budget and
``prompt_tokens`` use an estimate of 4 characters per token.
"""

from __future__ import annotations

from care.errors import CareInputError
from care.infer.engine import Scorer
from care.infer.labels import Generation
from care.infer.prompting import approx_tokens
from care.infer.settings import InferenceSettings


class APIScorer(Scorer):
    """Score sessions through an OpenAI-compatible chat completions endpoint."""

    backend = "openai"

    def __init__(self, client, settings: InferenceSettings, *, instrument, cache=None) -> None:
        if settings.mode != "generate":
            raise CareInputError(
                "inference settings",
                f"mode {settings.mode} needs label probabilities (backend hf or vllm)",
                field="mode",
            )
        self.client = client  # care.llm.openai_chat.OpenAIChat, built without its own cache
        self.model_name = client.model_name
        super().__init__(
            settings,
            instrument=instrument,
            cache=cache,
            fingerprint=f"{client.model_name}@{client.base_url}",
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
