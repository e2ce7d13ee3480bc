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
:func:`attention_inputs` turns them into what the model's attention implementation
(``training.attn_implementation``) takes, on the model's device:

- ``shared_prefix_sdpa`` (default; registered with transformers by :func:`register`): the
  rule computed in two exact parts (:func:`shared_prefix_attention`): the prefix causally
  (SDPA's causal kernels, flash on a GPU), then each row's branches as one batch over the
  prefix's keys and values and their own (SDPA with a small mask: the memory-efficient
  kernel on a GPU). Its cost is that of the unpacked examples' attention, with the prefix's
  projections and MLPs computed once. Unpacked batches (packing: none) get plain SDPA.
- ``sdpa``: one 4-D boolean block mask ``(batch, 1, L, L)``. On a GPU, SDPA runs an explicit
  mask with its memory-efficient kernel (no flash kernel): correct in bf16, memory linear
  in L, but it computes the full causal square, branch-to-branch blocks included, which
  costs more than it saves on a tiny model whose cost is attention.
- ``flex_attention``: a ``BlockMask`` from the same rule; fully masked blocks are skipped
  (needs ``torch.compile``, i.e. a GPU toolchain).
- ``eager``: the 4-D mask as additive floats.

Flash-attention implementations take no arbitrary mask and are refused.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100
SPLIT = "shared_prefix_sdpa"
MASKED_IMPLEMENTATIONS = ("sdpa", "flex_attention", "eager")
IMPLEMENTATIONS = (SPLIT, *MASKED_IMPLEMENTATIONS)


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
    """The model inputs with ``branch_ids`` replaced by the packed attention mask or plan."""
    import torch

    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"training.packing shared_prefix needs an attention implementation that takes "
            f"a custom mask ({', '.join(IMPLEMENTATIONS)}), not {implementation!r}: "
            "set training.attn_implementation"
        )
    inputs = dict(inputs)
    branch_ids = inputs.pop("branch_ids")
    if implementation == SPLIT:
        inputs["attention_mask"] = None
        inputs["packed_plan"] = SharedPrefixPlan.make(branch_ids)
    elif implementation == "flex_attention":
        inputs["attention_mask"] = block_mask(branch_ids)
    elif implementation == "sdpa":
        inputs["attention_mask"] = allowed(branch_ids)
    else:
        ok = allowed(branch_ids)
        inputs["attention_mask"] = torch.zeros(ok.shape, dtype=dtype, device=ok.device).masked_fill(
            ~ok, torch.finfo(dtype).min
        )
    return inputs


# --------------------------------------------------------------------------- split attention


class SharedPrefixPlan:
    """Per packed row: the prefix length, the branch sizes and the branches' mask.

    Built once per batch (the structure is the same in every layer)."""

    def __init__(self, rows: list[tuple[int, list[int], Any]], width: int) -> None:
        self.rows = rows  # (prefix length, branch sizes, branch mask)
        self.width = width
        self._masks: dict[Any, list[Any]] = {}

    def masks(self, dtype) -> list[Any]:
        """The rows' branch masks for queries of ``dtype``, made once per batch.

        Boolean for float32; additive (0 / -inf in ``dtype``) for half precision, where
        CPU SDPA with a boolean mask takes a path about twice as slow (measured in bf16).
        """
        import torch

        if dtype not in self._masks:
            bools = [mask for _, _, mask in self.rows]
            self._masks[dtype] = (
                bools
                if dtype == torch.float32
                else [
                    torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(
                        ~m, float("-inf")
                    )
                    for m in bools
                ]
            )
        return self._masks[dtype]

    @classmethod
    def make(cls, branch_ids) -> SharedPrefixPlan:
        import torch

        device = branch_ids.device
        rows = []
        for ids in branch_ids.tolist():
            prefix = sum(1 for b in ids if b == 0)
            sizes = [ids.count(j) for j in range(1, max(ids, default=0) + 1)]
            longest = max(sizes, default=0)
            valid = torch.arange(longest)[None, :] < torch.tensor(sizes, dtype=torch.long)[:, None]
            causal = torch.ones(longest, longest, dtype=torch.bool).tril()
            # a branch token sees the whole prefix, then its own branch causally
            mask = torch.cat(
                [
                    torch.ones((len(sizes), longest, prefix), dtype=torch.bool),
                    causal[None] & valid[:, None, :],
                ],
                dim=2,
            )[:, None]
            rows.append((prefix, sizes, mask.to(device)))
        return cls(rows, branch_ids.shape[1])


def shared_prefix_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs
):
    """Attention of packed rows in two exact parts, each sized to what it needs.

    The prefix attends to itself causally (SDPA's causal kernels: flash on a GPU); the
    branches of a row form a batch that attends to the prefix's keys and values and to their
    own, causally. The compute is that of the unpacked examples' attention, without the
    branch-to-branch square a single block mask spends. Without a plan (not a packed batch)
    this is plain SDPA.
    """
    import torch
    from torch.nn.functional import pad
    from torch.nn.functional import scaled_dot_product_attention as sdpa
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    plan = kwargs.pop("packed_plan", None)
    if plan is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    p = dropout if module.training else 0.0
    out = []
    masks = plan.masks(query.dtype)
    for b, (prefix, sizes, _) in enumerate(plan.rows):
        mask = masks[b]
        q, k, v = query[b], key[b], value[b]  # (heads, L, dim)
        end = prefix + sum(sizes)
        parts = []
        if prefix:
            parts.append(
                sdpa(q[None, :, :prefix], k[None, :, :prefix], v[None, :, :prefix],
                     is_causal=True, dropout_p=p, scale=scaling)[0]
            )
        if sizes:
            longest, n = max(sizes), len(sizes)

            def branches(x, sizes=sizes, prefix=prefix, end=end, longest=longest):
                # (heads, L, dim) -> (branches, heads, longest, dim); slices, cheap backward
                pieces = x[:, prefix:end].split(sizes, dim=1)
                return torch.stack([pad(t, (0, 0, 0, longest - t.shape[1])) for t in pieces])

            def with_prefix(x, n=n, prefix=prefix):
                shared = x[None, :, :prefix].expand(n, -1, -1, -1)
                return torch.cat([shared, branches(x)], dim=2)

            o = sdpa(branches(q), with_prefix(k), with_prefix(v), attn_mask=mask,
                     dropout_p=p, scale=scaling)
            parts.extend(o[j, :, :size] for j, size in enumerate(sizes))
        if end < plan.width:
            parts.append(q.new_zeros((q.shape[0], plan.width - end, q.shape[-1])))
        out.append(torch.cat(parts, dim=1))
    return torch.stack(out).transpose(1, 2).contiguous(), None


def register() -> None:
    """Make ``shared_prefix_sdpa`` a transformers attention implementation (SDPA's masks)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(SPLIT, shared_prefix_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(SPLIT, sdpa_mask)
