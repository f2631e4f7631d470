"""What the torch adapters share: the lazy import, the dtype map, NumPy <-> tensor at the boundary.

bfloat16 crosses the contract as float32 arrays holding bfloat16 values: they become
`torch.bfloat16` tensors exactly, and come back as float32 arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.reference.precision import storage_dtype

Array = np.ndarray[Any, Any]

#: Intra-op threads. The conformance cases are tiny (a few hundred flops per matmul): one
#: thread is faster than two there (no fork/join per op), and leaves the other core to the
#: other worker processes of a run.
NUM_THREADS = 1

_configured = False


def torch() -> Any:
    """The `torch` module, imported on first use and configured once."""
    global _configured
    import torch as _t

    if not _configured:
        _t.set_num_threads(NUM_THREADS)
        _configured = True
    return _t


def torch_dtype(dtype: str) -> Any:
    """The torch dtype of precision `dtype` ("float64", "float32", "float16", "bfloat16")."""
    t = torch()
    return {"float64": t.float64, "float32": t.float32, "float16": t.float16, "bfloat16": t.bfloat16}[dtype]


def tensor(x: Array, dtype: str, requires_grad: bool = False) -> Any:
    """A tensor of precision `dtype` holding `x` (already rounded to that precision)."""
    t = torch()
    out = t.from_numpy(np.ascontiguousarray(x)).to(torch_dtype(dtype))
    return out.requires_grad_(True) if requires_grad else out


def to_numpy(t: Any, dtype: str) -> Array:
    """A tensor of precision `dtype` as a NumPy array in `storage_dtype(dtype)`."""
    return np.asarray(t.detach().to("cpu", torch().float32 if dtype == "bfloat16" else t.dtype).numpy(),
                      dtype=storage_dtype(dtype))

