"""Training on shared-prefix packed rows (``training.packing: shared_prefix``).

A packed row (:class:`care.sft.PackedSession`) is ``[prefix][branch 1]...[branch n]``: a
session's system message and dialogue once, then each unit's question and answer. Token
``q`` may attend to token ``k`` when ``k <= q`` and ``k`` is in the prefix or in ``q``'s own
branch; a branch's position ids continue from the end of the prefix, as if it followed the
prefix alone. Each answer token therefore sees the context and positions of its unpacked
example, and the loss (cross-entropy summed over answer tokens, divided by their number
in the optimizer step) and its gradients are those of the unpacked examples.

The collator builds ``branch_ids`` (0 prefix, ``j`` branch ``j``, -1 padding) and a plain
2-D ``attention_mask`` (the Trainer counts non-padding tokens with it);
:func:`care.model.attention.attention_inputs` turns them into what the model's attention
implementation (``training.attn_implementation``) takes.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100


class PackedCollator:
    """Right-pads packed rows; with ``answer_logits_only`` keeps logits at answer positions.

    Labels go to the model as ``shift_labels`` (already aligned to the kept logits: the logit
    at position t is scored against the token at t + 1), which the Trainer also uses to count
    the step's answer tokens for the loss normalisation.
    """

    def __init__(self, pad_id: int, answer_logits_only: bool = True) -> None:
        self.pad_id = pad_id
        self.answer_logits_only = answer_logits_only

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        branch = torch.full((len(rows), width), -1, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for n, r in enumerate(rows):
            k, prefix = len(r["input_ids"]), r["prefix_len"]
            if prefix + sum(r["branches"]) != k:
                raise ValueError(
                    f"packed row of session {r.get('session_id')!r}: prefix and branch "
                    f"lengths do not add up to its {k} tokens"
                )
            ids[n, :k] = torch.tensor(r["input_ids"])
            labels[n, :k] = torch.tensor(r["labels"])
            mask[n, :k] = 1
            positions[n, :prefix] = torch.arange(prefix)
            branch[n, :prefix] = 0
            start = prefix
            for j, size in enumerate(r["branches"], start=1):
                positions[n, start : start + size] = torch.arange(prefix, prefix + size)
                branch[n, start : start + size] = j
                start += size
        shift = torch.cat([labels[:, 1:], torch.full((len(rows), 1), IGNORE)], dim=1)
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            "branch_ids": branch,
        }
        if self.answer_logits_only:
            keep = (shift != IGNORE).any(dim=0).nonzero().flatten()
            if len(keep) == 0:
                keep = torch.tensor([width - 1])
            shift = shift[:, keep]
            batch["logits_to_keep"] = keep
        batch["labels"] = shift
        batch["shift_labels"] = shift
        return batch
