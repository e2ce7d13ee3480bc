"""Packed attention's memory against the unpacked examples' at the same shape (CPU).

What a layer's attention keeps from the forward to the backward pass is what fills memory
at 8B without activation checkpointing (every layer's share is held at once). The split
attention must not copy the prefix's keys and values once per branch, nor repeat
grouped-query key/value heads, so what it keeps stays well under what the unpacked
examples keep (each holds the prefix once more).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

HEADS, KV_HEADS, DIM = 8, 2, 16
PREFIX, BRANCHES, BRANCH = 384, 6, 32
GROUPS = HEADS // KV_HEADS


def kept_for_backward(fn) -> int:
    """Bytes of the storages autograd keeps for the backward pass while ``fn`` runs its
    forward (each storage once, however many views of it are saved)."""
    import torch

    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    out.float().sum().backward()  # the saved tensors were what the backward needs
    return sum(storages.values())


def leaves(batch: int, length: int, dtype):
    import torch

    return [
        torch.randn(batch, heads, length, DIM, dtype=dtype, requires_grad=True)
        for heads in (HEADS, KV_HEADS, KV_HEADS)
    ]


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_packed_attention_keeps_less_than_the_unpacked_examples(dtype_name):
    import torch
    from care.model.attention import SharedPrefixPlan, shared_prefix_attention

    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    module = SimpleNamespace(num_key_value_groups=GROUPS, training=True)
    ids = [0] * PREFIX + [j for j in range(1, BRANCHES + 1) for _ in range(BRANCH)]
    plan = SharedPrefixPlan.make(torch.tensor([ids]))
    packed = leaves(1, len(ids), dtype)
    unpacked = leaves(BRANCHES, PREFIX + BRANCH, dtype)

    packed_bytes = kept_for_backward(
        lambda: shared_prefix_attention(module, *packed, None, packed_plan=plan)[0]
    )
    unpacked_bytes = kept_for_backward(  # an unpacked batch's attention: plain causal SDPA
        lambda: shared_prefix_attention(module, *unpacked, None, is_causal=True)[0]
    )
    # the prefix once instead of BRANCHES times (its keys and values copied per branch, or
    # repeated per query head, would undo that)
    assert packed_bytes < 0.5 * unpacked_bytes, (packed_bytes, unpacked_bytes)


def test_packed_attention_is_each_branchs_own():
    """Every branch token's output is that of its unpacked example (prefix + its branch)."""
    import torch
    from care.model.attention import SharedPrefixPlan, shared_prefix_attention

    torch.manual_seed(1)
    module = SimpleNamespace(num_key_value_groups=GROUPS, training=False)
    sizes = [5, 9, 3]
    ids = [0] * 40 + [j for j, n in enumerate(sizes, start=1) for _ in range(n)] + [-1] * 4
    q, k, v = (t.detach() for t in leaves(1, len(ids), torch.float32))
    out, _ = shared_prefix_attention(
        module, q, k, v, None, packed_plan=SharedPrefixPlan.make(torch.tensor([ids]))
    )
    start = 40
    for n in sizes:
        keep = list(range(40)) + list(range(start, start + n))
        alone, _ = shared_prefix_attention(
            module, q[:, :, keep], k[:, :, keep], v[:, :, keep], None, is_causal=True
        )
        assert torch.allclose(out[0, start : start + n], alone[0, 40:], atol=1e-5)
        start += n
    assert torch.equal(out[0, start:], torch.zeros_like(out[0, start:]))  # padding
