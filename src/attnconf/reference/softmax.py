"""A numerically stable softmax with masking by selection.

Masked positions are excluded from the maximum and the sum, never filled with a finite value:
a fill value of ``-1e9`` overflows float16 and ``-1e4`` is not small enough next to logits of
1e4. A row where nothing may be attended has no defined softmax; the caller names the policy.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from attnconf.reference._checks import as_bool_array, check_choice, invalid

Array = np.ndarray[Any, Any]
FullyMaskedPolicy = Literal["nan", "zeros", "uniform"]
FULLY_MASKED_POLICIES: tuple[str, ...] = ("nan", "zeros", "uniform")


def softmax(
    logits: Array,
    axis: int = -1,
    where: Array | None = None,
    fully_masked: FullyMaskedPolicy = "zeros",
) -> Array:
    """Softmax of `logits` along `axis`, over the positions where `where` is True.

    Args:
        logits: floating array of any shape; `-inf` entries get zero weight.
        axis: the axis to normalise over.
        where: boolean array broadcastable to `logits`; False positions get weight 0 and do not
            take part in the maximum or the sum. `None` means every position.
        fully_masked: the result for a row with no selected finite logit: ``"zeros"`` (all
            weights 0), ``"nan"`` (all NaN) or ``"uniform"`` (1/n over the whole row).

    Returns:
        An array of the shape and dtype of `logits`; each selected row sums to 1.
    """
    check_choice("fully_masked", fully_masked, FULLY_MASKED_POLICIES)
    x = np.asarray(logits)
    if not np.issubdtype(x.dtype, np.floating):
        raise invalid("logits", "a floating-point array", f"dtype {x.dtype}")
    if where is None:
        sel = np.ones(x.shape, dtype=bool)
    else:
        sel = np.broadcast_to(as_bool_array("where", where, range(x.ndim + 1)), x.shape)
    # -inf logits are the additive form of a mask: they are unselected positions too.
    sel = sel & ~np.isneginf(x)
    row_max = np.max(x, axis=axis, where=sel, initial=-np.inf, keepdims=True)
    empty = ~np.isfinite(row_max) & ~np.isnan(row_max)
    row_max = np.where(empty, 0, row_max).astype(x.dtype)
    shifted = np.subtract(x, row_max, where=sel, out=np.zeros_like(x))
    e = np.exp(shifted, where=sel, out=np.zeros_like(x))
    total = np.sum(e, axis=axis, keepdims=True)
    safe_total = np.where(empty, 1, total).astype(x.dtype)
    weights: Array = e / safe_total
    if fully_masked == "nan":
        weights = np.where(empty, np.nan, weights).astype(x.dtype)
    elif fully_masked == "uniform":
        weights = np.where(empty, 1.0 / x.shape[axis], weights).astype(x.dtype)
    return weights
