"""Logit soft-capping: ``cap * tanh(logits / cap)`` (Gemma 2; Grok-1).

In attention the cap applies to the *scaled* logits: scale, then cap, then bias and mask, then
softmax (`scaled_dot_product_attention(logit_softcap=...)`). The cap maps `-inf` to `-cap`, so a
mask applied before the cap is lost: masks and `-inf` biases come after it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from attnconf.reference._checks import as_float_array, check_dtype_name, invalid, precision_of
from attnconf.reference.precision import in_compute, round_to

Array = np.ndarray[Any, Any]


def check_cap(name: str, cap: object) -> float:
    """Raise unless `cap` is a positive finite float; return it as float."""
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not (0 < cap < math.inf):
        raise invalid(name, "a positive finite float", repr(cap))
    return float(cap)


def softcap(logits: Array, cap: float, *, dtype: str | None = None) -> Array:
    """``cap * tanh(logits / cap)``, elementwise, any shape; values in ``[-cap, cap]``.

    Args:
        logits: a floating array of any rank >= 0.
        cap: the cap `c`, a positive finite float.
        dtype: precision to evaluate in; None keeps the dtype of `logits`. `cap` is rounded to
            `dtype`; the division, the tanh and the product are each computed in the compute dtype
            and rounded to `dtype`.

    Returns:
        An array of the shape of `logits`, in the storage dtype of the precision.
    """
    c = check_cap("cap", cap)
    x_precision = precision_of(logits)
    arr = np.asarray(logits)
    x = as_float_array("logits", arr.reshape(1) if arr.ndim == 0 else arr, range(1, 33))
    precision = check_dtype_name("dtype", dtype) if dtype is not None else check_dtype_name("logits", x_precision)
    cap_p = in_compute(round_to(np.asarray(c), precision), precision)
    y = in_compute(round_to(in_compute(x, precision) / cap_p, precision), precision)
    t = in_compute(round_to(np.tanh(y), precision), precision)
    out = round_to(t * cap_p, precision)
    return out.reshape(arr.shape)
