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
:func:`attention_inputs` turns them into the mask the model's attention implementation
takes, on the model's device:

- ``sdpa``: a 4-D boolean mask ``(batch, 1, L, L)``. On a GPU, PyTorch's SDPA runs a masked
  batch with its memory-efficient kernel (no flash kernel with an explicit mask): correct
  in bf16, memory linear in L, but the compute of a full causal square.
- ``flex_attention``: a ``BlockMask`` from the same rule; blocks where a branch meets another
  branch are skipped, so compute follows the mask (the efficient choice for long packed
  rows on a GPU; it needs ``torch.compile``, i.e. a GPU toolchain).
- ``eager``: the 4-D mask as additive floats.

Flash-attention implementations take no arbitrary mask and are refused.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100
MASKED_IMPLEMENTATIONS = ("sdpa", "flex_attention", "eager")


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


def allowed(branch_ids):
    """Boolean ``(batch, 1, L, L)``: may query q attend to key k (the rule above)?

    A padding query attends to the earlier padding and prefix, which keeps its softmax
    finite; no real token attends to padding.
    """
    import torch

    width = branch_ids.shape[1]
    q = branch_ids[:, :, None]
    k = branch_ids[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool, device=branch_ids.device).tril()
    return (causal & ((k == 0) | (k == q)))[:, None]


def block_mask(branch_ids):
    """The same rule as a flex-attention ``BlockMask`` (fully masked blocks are skipped)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def rule(b, h, q, k):
        key, query = branch_ids[b, k], branch_ids[b, q]
        return (k <= q) & ((key == 0) | (key == query))

    batch, width = branch_ids.shape
    return create_block_mask(rule, batch, None, width, width, device=branch_ids.device)


def attention_inputs(inputs: dict[str, Any], implementation: str, dtype) -> dict[str, Any]:
    """The model inputs with ``branch_ids`` replaced by the packed attention mask."""
    import torch

    if implementation not in MASKED_IMPLEMENTATIONS:
        raise ValueError(
            f"training.packing shared_prefix needs an attention implementation that takes "
            f"a custom mask ({', '.join(MASKED_IMPLEMENTATIONS)}), not {implementation!r}: "
            "set training.attn_implementation"
        )
    inputs = dict(inputs)
    branch_ids = inputs.pop("branch_ids")
    if implementation == "flex_attention":
        inputs["attention_mask"] = block_mask(branch_ids)
    elif implementation == "sdpa":
        inputs["attention_mask"] = allowed(branch_ids)
    else:
        ok = allowed(branch_ids)
        inputs["attention_mask"] = torch.zeros(ok.shape, dtype=dtype, device=ok.device).masked_fill(
            ~ok, torch.finfo(dtype).min
        )
    return inputs
