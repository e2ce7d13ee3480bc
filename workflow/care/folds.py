"""Client-grouped, stratified K-fold split and the paper's Table 1.

Folds come from scikit-learn's ``StratifiedGroupKFold``: groups are clients, so no client's
sessions are split across train and test; strata are quantile bins of a session's composite
client score (the mean of its dimension scores), so each fold spans the alliance range.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from care.errors import CareInputError


def composite_strata(scores: pd.DataFrame, n_strata: int) -> np.ndarray:
    """Quantile bin (0..n_strata-1) of each row's mean over the given score columns."""
    composite = scores.mean(axis=1).to_numpy()
    if n_strata <= 1:
        return np.zeros(len(composite), dtype=int)
    edges = np.quantile(composite, np.linspace(0, 1, n_strata + 1)[1:-1])
    return np.searchsorted(edges, composite, side="right")


def make_folds(
    table: pd.DataFrame, dimensions: list[str], n_folds: int, n_strata: int, seed: int
) -> pd.DataFrame:
    """Assign each session a fold 1..n_folds; returns session_id, client_id, fold."""
    n_clients = table["client_id"].nunique()
    if n_clients < n_folds:
        raise CareInputError(
            "sessions", f"{n_clients} clients cannot fill {n_folds} client-grouped folds",
            field="client_id",
        )
    table = table.sort_values("session_id").reset_index(drop=True)
    strata = composite_strata(table[dimensions], n_strata)
    # imported here: scikit-learn takes ~1.5 s, and every `care` command imports this module
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.zeros(len(table), dtype=int)
    for k, (_, test) in enumerate(splitter.split(table, strata, groups=table["client_id"])):
        fold[test] = k + 1
    out = pd.DataFrame(
        {"session_id": table["session_id"], "client_id": table["client_id"], "fold": fold}
    )
    check_grouping(out)
    return out


def check_grouping(folds: pd.DataFrame) -> None:
    """Every client in exactly one fold, every session in a fold."""
    per_client = folds.groupby("client_id")["fold"].nunique()
    leaked = per_client[per_client > 1]
    assert leaked.empty, f"clients in more than one fold: {list(leaked.index)}"
    assert (folds["fold"] >= 1).all(), "a session was left without a fold"


def table1(table: pd.DataFrame, folds: pd.DataFrame, dimensions: list[str]) -> pd.DataFrame:
    """Per fold (and overall): #clients, #sessions, mean and sd of each client dimension."""
    merged = table.merge(folds[["session_id", "fold"]], on="session_id", validate="1:1")
    rows = [_summary(str(k), part, dimensions) for k, part in merged.groupby("fold")]
    rows.append(_summary("all", merged, dimensions))
    return pd.DataFrame(rows)


def _summary(name: str, part: pd.DataFrame, dimensions: list[str]) -> dict:
    row: dict = {
        "fold": name, "n_clients": part["client_id"].nunique(), "n_sessions": len(part),
    }
    for d in dimensions:
        row[f"{d}_mean"] = part[d].mean()
        row[f"{d}_sd"] = part[d].std(ddof=1)
    return row


def table1_display(summary: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """Table 1 for reading: human headers, ``mean ± sd`` cells (two decimals)."""
    from care.tableformat import mean_sd

    out = pd.DataFrame({
        "Fold": summary["fold"].map(lambda f: "All" if f == "all" else f),
        "Clients": summary["n_clients"].astype(int).astype(str),
        "Sessions": summary["n_sessions"].astype(int).astype(str),
    })
    for dim, label in labels.items():
        out[label] = [mean_sd(m, s)
                      for m, s in zip(summary[f"{dim}_mean"], summary[f"{dim}_sd"], strict=True)]
    return out
