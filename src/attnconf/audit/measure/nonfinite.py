"""NaN and inf from one key: how far a non-finite key or value spreads, visible or masked out.

Key 2 of batch element 0 is poisoned in the key (or value) input; the outcome says which output rows
turn non-finite: every row of that batch element, some, none, or rows of the other batch element too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from attnconf.audit import classify
from attnconf.audit.measure.common import base
from attnconf.audit.observe import Context, Result

Array = np.ndarray[Any, Any]
POISONED = (0, 2)  # (batch, key)


def poisoned_key(which: str, value: float, masked: bool) -> Callable[[Context], Result]:
    """`which` input ("key" or "value") of key POISONED set to `value`; `masked`: that key is masked out."""
    def run(ctx: Context) -> Result:
        p = base()
        b, j = POISONED
        arrays = {"key": p.inputs.key.copy(), "value": p.inputs.value.copy()}
        arrays[which][b, j, :] = value
        changes: dict[str, Any] = {which: arrays[which]}
        if masked:
            mask = np.ones((p.B, p.T, p.S), dtype=bool)
            mask[b, :, j] = False
            changes["mask"] = mask
        name = f"{which}_{value}_{'masked' if masked else 'visible'}"
        probe = p.with_inputs(name, **changes)
        out = np.asarray(ctx.layer(probe).output, dtype=np.float64)
        rows = np.asarray(~np.isfinite(out).all(axis=-1), dtype=bool)  # (B, T)
        outcome = classify.spread(rows, b)
        evidence = {"poisoned": {"input": which, "batch": b, "key": j, "value": str(value), "masked": masked},
                    "nonfinite_rows": rows, "nan_rows": np.isnan(out).any(axis=-1)}
        what = f"{value} in the {which} of {'a masked' if masked else 'a visible'} key"
        return Result(outcome, f"{what}: {int(rows[b].sum())} of {p.T} rows of its batch element non-finite, "
                      f"{int(np.delete(rows, b, axis=0).sum())} rows elsewhere", evidence)
    return run
