"""Greedy decoding of a session's units as branches of one row (shared-prefix decoding).

The training layout (:mod:`care.train.packing`) serves inference too. A session is one row:
its prompts' common prefix (system message + dialogue) once, then each unit's suffix (its
question) as a branch. Prefill runs the row in one forward pass with the split attention
(:func:`care.model.attention.shared_prefix_attention`: the prefix causally, the branches over
the prefix and themselves). Each decoding step then appends one token per unfinished branch
to the same row; a 4-D mask lets it see the prefix, its own suffix and its own earlier
tokens, and position ids continue the branch as if it followed the prefix alone. So every
unit gets the context and positions of its own prompt (the naive path's greedy tokens),
while the prefix's keys and values exist once per session: no copy per unit, and each
step's cache append moves one row, not twelve.

Rows of several sessions share a forward pass; :func:`length_groups` keeps sessions of
similar length together so short dialogues are not padded to long ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from care.sft import shared_prefix_length


@dataclass
class Branch:
    row: int
    unit: int
    next_position: int
    prompt: list[int]
    tokens: list[int]
    steps: list[Any]
    done: bool = False


def length_groups(lengths: list[int], max_rows: int, slack: float = 0.25) -> list[list[int]]:
    """Indices grouped in length order so a group's padded size stays within ``slack`` of
    its real size (at most ``max_rows`` per group)."""
    order = sorted(range(len(lengths)), key=lambda k: lengths[k])
    groups: list[list[int]] = []
    for k in order:
        group = groups[-1] if groups else None
        if group and len(group) < max_rows:
            widest = max(lengths[k], *(lengths[g] for g in group))
            real = lengths[k] + sum(lengths[g] for g in group)
            if widest * (len(group) + 1) <= (1 + slack) * real:
                group.append(k)
                continue
        groups.append([k])
    return groups


def row_length(units: list[list[int]]) -> int:
    n = shared_prefix_length(units)
    return n + sum(len(u) - n for u in units)


def decode(
    model,
    sessions: list[list[list[int]]],
    *,
    max_new_tokens,
    eos_ids,
    pad_id,
    labels,
    process=None,
):
    """Greedy answers of each session's unit prompts (ids), one row per session.

    ``labels(scores)`` maps logits ``(n, vocab)`` to label log-probabilities ``(n, labels)``;
    ``process(ids, scores, prompt_length)``, when given, reshapes one branch's logits
    ``(1, vocab)`` from its prompt and generated ids ``(1, length)`` (the logits processors
    ``generate`` runs).
    Returns, per session and unit, (generated tokens through the first eos, label
    log-probabilities per generated token).
    """
    import torch
    from transformers import DynamicCache

    from care.model.attention import SharedPrefixPlan

    device = model.device
    eos = set(eos_ids)
    rows, owners, branches = [], [], []
    for r, units in enumerate(sessions):
        n = shared_prefix_length(units)
        ids, owner, positions = list(units[0][:n]), [0] * n, list(range(n))
        for j, u in enumerate(units, start=1):
            ids.extend(u[n:])
            owner.extend([j] * (len(u) - n))
            positions.extend(range(n, len(u)))
            branches.append(Branch(r, j, len(u), u, [], []))
        rows.append((ids, positions))
        owners.append(owner)
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros_like(ids)
    owner = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, (row, pos) in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        positions[r, : len(row)] = torch.tensor(pos)
        owner[r, : len(row)] = torch.tensor(owners[r])
    # each branch's last prompt token: its first answer token's logits
    last = torch.tensor([_last_index(owners[b.row], b.unit) for b in branches])
    owner = owner.to(device)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        out = model(
            input_ids=ids.to(device),
            position_ids=positions.to(device),
            packed_plan=SharedPrefixPlan.make(owner),
            cache=cache,
            use_cache=True,
            logits_to_keep=torch.unique(last).to(device),
        )
        keep = torch.unique(last).tolist()
        at = {p: k for k, p in enumerate(keep)}
        rows_of = torch.tensor([b.row for b in branches])
        cols = torch.tensor([at[int(p)] for p in last])
        logits = out.logits[rows_of.to(device), cols.to(device)]
        _advance(branches, logits, labels, eos, max_new_tokens, process)
        while True:
            active = [b for b in branches if not b.done]
            if not active:
                break
            owner, logits_at = _step(model, cache, owner, active, len(rows), pad_id, device)
            _advance(active, logits_at, labels, eos, max_new_tokens, process)
    result: list[list[tuple[list[int], Any]]] = [[] for _ in sessions]
    for b in branches:
        result[b.row].append((b.tokens, torch.stack(b.steps) if b.steps else None))
    return result


def _last_index(owner: list[int], unit: int) -> int:
    return len(owner) - 1 - owner[::-1].index(unit)


def _advance(branches: list[Branch], logits, labels, eos, max_new_tokens, process) -> None:
    """Append each branch's greedy token and its label log-probabilities."""
    import torch

    scores = logits.float()
    if process is not None:
        scores = torch.cat(
            [
                process(
                    torch.tensor([b.prompt + b.tokens], device=scores.device),
                    row[None],
                    len(b.prompt),
                )
                for b, row in zip(branches, scores, strict=True)
            ]
        )
    tokens = scores.argmax(dim=-1).tolist()
    steps = labels(scores).cpu()
    for b, token, step in zip(branches, tokens, steps, strict=True):
        b.tokens.append(token)
        b.steps.append(step)
        b.done = token in eos or len(b.tokens) >= max_new_tokens


def _step(model, cache, owner, active: list[Branch], n_rows: int, pad_id: int, device):
    """One decoding step: each active branch's last token enters its session's row."""
    import torch

    per_row: list[list[Branch]] = [[] for _ in range(n_rows)]
    for b in active:
        per_row[b.row].append(b)
    width = max(len(r) for r in per_row)
    ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    positions = torch.zeros_like(ids)
    new_owner = torch.full((n_rows, width), -1, dtype=torch.long)
    for r, row in enumerate(per_row):
        for k, b in enumerate(row):
            ids[r, k] = b.tokens[-1]
            positions[r, k] = b.next_position
            new_owner[r, k] = b.unit
            b.next_position += 1
    owner = torch.cat([owner, new_owner.to(device)], dim=1)
    query = new_owner.to(device)[:, :, None]
    keys = owner[:, None, :]
    # a token sees the prefix and its own branch; a padding query only padding (finite)
    mask = ((keys == 0) & (query >= 0)) | (keys == query)
    out = model(
        input_ids=ids.to(device),
        position_ids=positions.to(device),
        attention_mask=mask[:, None],
        cache=cache,
        use_cache=True,
    )
    rows = torch.tensor([b.row for r in per_row for b in r], device=device)
    cols = torch.tensor([k for r in per_row for k in range(len(r))], device=device)
    return owner, out.logits[rows, cols]
