"""Multiple-testing correction of a table's p-values (``evaluation.multiple_testing``).

A table that stars every cell at p < .05 makes many tests at once (Table 2: each row against
the best baseline per dimension; Table 4: each variant against its reference; Table 8: each
coefficient), so some stars are expected by chance alone. Stars are therefore given on p-values
adjusted over the table's family of tests by statsmodels' ``multipletests``: ``holm`` (the
default; controls the family-wise error rate), ``fdr_bh`` (Benjamini-Hochberg, the false
discovery rate), ``bonferroni``, or ``none``. The CSVs keep the uncorrected p-values beside the
adjusted ones.
"""

from __future__ import annotations

import numpy as np

from care.errors import CareInputError

METHODS = {
    "holm": "Holm",
    "fdr_bh": "Benjamini-Hochberg (false discovery rate)",
    "bonferroni": "Bonferroni",
    "none": "no correction",
}


def check(method: str) -> str:
    if method not in METHODS:
        raise CareInputError(
            "<config>",
            f"unknown multiple-testing method {method!r}; one of {sorted(METHODS)}",
            field="multiple_testing",
        )
    return method


def adjust(p_values, method: str) -> np.ndarray:
    """Adjusted p-values of the finite entries, as one family; NaN stays NaN (not a test)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if check(method) == "none" or not finite.any():
        out[finite] = p[finite]
        return out
    out[finite] = multipletests(p[finite], method=method)[1]
    return out


def describe(method: str, n_tests: int) -> str:
    """For table notes: what the stars' p-values are adjusted for."""
    tests = f"{n_tests} test" + ("" if n_tests == 1 else "s")
    if check(method) == "none":
        return f"uncorrected for the table's {tests}"
    return f"{METHODS[method]}-adjusted over the table's {tests}"
