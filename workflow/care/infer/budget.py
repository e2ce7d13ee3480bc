"""What a fine-tune recorded about its answers: the budget ``max_new_tokens: auto`` and
the answer order.

A model fine-tuned here carries the number its training measured (``selection.json``);
another model's tokenizer measures the training folds' answers
(:func:`care.sft.answer_token_limit`, with a margin).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from care.errors import CareInputError


def _selection(model_path: str | Path | None) -> tuple[Path, dict] | None:
    """A fine-tune's ``selection.json`` and its record (None: the model is not one)."""
    selection = Path(model_path or "") / "selection.json"
    if not model_path or not selection.is_file():
        return None
    return selection, json.loads(selection.read_text(encoding="utf-8"))


def trained_budget(model_path: str | Path | None) -> int | None:
    """The budget a fine-tune measured and recorded beside its weights (None: not one)."""
    found = _selection(model_path)
    limit = found[1].get("sft", {}) if found else {}
    return int(limit["answer_token_limit"]) if "answer_token_limit" in limit else None


def check_answer_order(model_path: str | Path | None, prompt_variant: str) -> None:
    """A fine-tune answers in the order it was trained in (``selection.json``); asking it
    for the other order reads its scores where it never wrote them."""
    from care.prompts import answer_order

    found = _selection(model_path) if prompt_variant == "rationale" else None
    if found is None:
        return
    selection, record = found
    trained = record.get("answer_order")
    if trained and trained != answer_order():
        raise CareInputError(
            selection,
            f"the model was trained to answer {trained}, not {answer_order()}: set the "
            f"config's answer_order (care --answer-order) to {trained}",
            field="answer_order",
        )


def auto_budget(
    count_tokens: Callable[[str], int],
    instrument,
    *,
    prompt_variant: str,
    granularity: str,
    model_path: str | Path | None = None,
    sessions: str | Path | None = None,
    folds: str | Path | None = None,
    fold: int | None = None,
    rationales: str | Path | None = None,
) -> int:
    """``auto`` resolved for a scorer: the trained budget, else measured with ``count_tokens``
    on the sessions outside the held-out ``fold`` (their rationales for that answer format)."""
    from care.infer.run import fold_sessions, read_folds
    from care.sft import answer_token_limit, load_rationales, target_token_lengths

    trained = trained_budget(model_path)
    if trained is not None:
        return trained
    loaded = None
    if prompt_variant == "rationale":
        if not rationales:
            raise CareInputError("--rationales", "max_new_tokens auto measures the rationales")
        loaded = load_rationales(rationales)
    if not sessions:
        raise CareInputError("--sessions", "max_new_tokens auto needs the training sessions")
    assigned = read_folds(folds) if folds else {}
    training = [
        s
        for s in fold_sessions(sessions, instrument, None, None)
        if fold is None or assigned.get(s.session_id) != fold
    ]
    lengths = target_token_lengths(
        count_tokens, instrument, training, loaded, prompt_variant, granularity
    )
    return answer_token_limit(lengths)
