"""Shared-prefix attention: the masks and the split attention of packed rows.

A packed row is ``[prefix][branch 1]...[branch n]``: a session's system message and
dialogue once, then each unit's question and answer. Token ``q`` may attend to token ``k``
when ``k <= q`` and ``k`` is in the prefix or in ``q``'s own branch; a branch's position ids
continue from the end of the prefix, as if it followed the prefix alone. ``branch_ids``
(0 prefix, ``j`` branch ``j``, -1 padding) carry the rule; :func:`attention_inputs` turns
them into what the model's attention implementation (``training.attn_implementation``)
takes, on the model's device:

- ``shared_prefix_sdpa`` (default; registered with transformers by :func:`register`): the
  rule computed in two exact parts (:func:`shared_prefix_attention`): the prefix causally
  (SDPA's causal kernels, flash on a GPU), then each row's branch tokens as one batch over
  the row's keys and values (views, grouped-query heads unrepeated: no copies) with a mask
  of the prefix and their own branch (the memory-efficient kernel on a GPU). Its cost is
  the unpacked examples' attention plus the masked branch-to-branch columns, with the
  prefix's projections and MLPs computed once. Unpacked batches (packing: none) get plain
  SDPA.
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

SPLIT = "shared_prefix_sdpa"
MASKED_IMPLEMENTATIONS = ("sdpa", "flex_attention", "eager")
IMPLEMENTATIONS = (SPLIT, *MASKED_IMPLEMENTATIONS)


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

    Built once per batch (the structure is the same in every layer). A row's mask is
    ``(branch tokens, row end)``: a branch token may see the whole prefix, then its own
    branch causally (the other branches' columns are masked: a little wasted compute, no
    per-branch copy of the prefix's keys and values).
    """

    def __init__(self, rows: list[tuple[int, list[int], Any]], width: int) -> None:
        self.rows = rows  # (prefix length, branch sizes, branch mask)
        self.width = width
        self._masks: dict[Any, list[Any]] = {}

    def masks(self, dtype) -> list[Any]:
        """The rows' branch masks for queries of ``dtype``, made once per batch.

        Additive (0 / -inf in ``dtype``): SDPA turns a boolean mask into that in every call
        (and keeps the copy for the backward pass), and CPU SDPA with a boolean mask takes a
        path about twice as slow in bf16. The last dimension is allocated to a multiple of
        16 (a view is passed): the GPU's memory-efficient kernel would otherwise pad a copy
        in every layer.
        """
        import torch

        if dtype not in self._masks:
            out = []
            for _, _, allowed in self.rows:
                n, end = allowed.shape
                mask = torch.zeros((n, -(-end // 16) * 16), dtype=dtype, device=allowed.device)
                mask = mask[:, :end]
                mask.masked_fill_(~allowed, float("-inf"))
                out.append(mask[None, None])
            self._masks[dtype] = out
        return self._masks[dtype]

    @classmethod
    def make(cls, branch_ids) -> SharedPrefixPlan:
        import torch

        device = branch_ids.device
        rows = []
        for ids in branch_ids.tolist():
            prefix = sum(1 for b in ids if b == 0)
            sizes = [ids.count(j) for j in range(1, max(ids, default=0) + 1)]
            end = prefix + sum(sizes)
            keys = torch.tensor(ids[:end], dtype=torch.long)
            queries = keys[prefix:, None]
            at = torch.arange(end)
            allowed = (keys[None, :] == 0) | (
                (keys[None, :] == queries) & (at[None, :] <= at[prefix:, None])
            )
            rows.append((prefix, sizes, allowed.to(device)))
        return cls(rows, branch_ids.shape[1])


def shared_prefix_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs
):
    """Attention of packed rows in two exact parts, without copying keys or values.

    The prefix attends to itself causally (SDPA's causal kernels, grouped-query heads as
    they are: flash on a GPU); a row's branch tokens then attend, as one batch, to the row's
    keys up to its end (views of the layer's keys and values) under the plan's mask: the
    prefix and their own branch, causally. Without a plan (not a packed batch) this is plain
    SDPA.
    """
    import torch
    from torch.nn.functional import scaled_dot_product_attention as sdpa
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plan = kwargs.pop("packed_plan", None)
    if plan is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    groups = getattr(module, "num_key_value_groups", 1)
    p = dropout if module.training else 0.0
    masks = plan.masks(query.dtype)
    out = []
    for b, (prefix, sizes, _) in enumerate(plan.rows):
        q, k, v = query[b], key[b], value[b]  # (heads, L, dim)
        end = prefix + sum(sizes)
        parts = []
        if prefix:
            parts.append(
                sdpa(
                    q[None, :, :prefix],
                    k[None, :, :prefix],
                    v[None, :, :prefix],
                    is_causal=True,
                    dropout_p=p,
                    scale=scaling,
                    enable_gqa=groups > 1,
                )[0]
            )
        if sizes:
            parts.append(
                branch_attention(
                    q[:, prefix:end], k[:, :end], v[:, :end], masks[b], groups, p, scaling
                )
            )
        if end < plan.width:
            parts.append(q.new_zeros((q.shape[0], plan.width - end, q.shape[-1])))
        out.append(torch.cat(parts, dim=1))
    return torch.stack(out).transpose(1, 2).contiguous(), None


def branch_attention(q, k, v, mask, groups: int, dropout: float, scaling):
    """Branch queries ``(heads, n, dim)`` over keys and values ``(kv heads, end, dim)``.

    Grouped-query attention without repeating keys and values: the ``groups`` query heads
    that share a key/value head go to the batch dimension, where the keys and values are
    broadcast (stride-0 views), so SDPA's masked kernels run without a copy (its
    ``enable_gqa`` takes the math kernel when a GPU call has a mask).
    """
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    heads, n, dim = q.shape
    kv_heads, end, _ = k.shape
    grouped = q.view(kv_heads, groups, n, dim).transpose(0, 1)  # (groups, kv heads, n, dim)
    o = sdpa(
        grouped,
        k.expand(groups, -1, -1, -1),
        v.expand(groups, -1, -1, -1),
        attn_mask=mask,
        dropout_p=dropout,
        scale=scaling,
    )
    return o.transpose(0, 1).reshape(heads, n, dim)


def register() -> None:
    """Make ``shared_prefix_sdpa`` a transformers attention implementation (SDPA's masks)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(SPLIT, shared_prefix_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(SPLIT, sdpa_mask)
