"""What the MLX adapters share: the configured import, the dtype map, NumPy <-> `mx.array` at the boundary.

* The device is MLX's CPU (`mx.set_default_device(mx.cpu)` at first use), so a run is the same on
  every machine: MLX's Metal backend has no float64, and a GPU run is a deliberate choice elsewhere.
* `mx.array(x)` of a float64 NumPy array makes a float32 array unless a dtype is given, so every
  conversion names the dtype (`mx.array(x, dtype=...)`).
* bfloat16 crosses the contract as float32 arrays holding bfloat16 values: they become
  `mx.bfloat16` arrays exactly (`mx.array(x).astype(mx.bfloat16)`), and come back as float32 arrays.
* MLX evaluates lazily; `to_numpy` forces the evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.reference.precision import storage_dtype

Array = np.ndarray[Any, Any]

#: Both MLX adapters run in one worker process of their own.
PROCESS_GROUP = "mlx"

#: The distributions reported: `mlx` is the Python package; on Linux its CPU runtime is `mlx-cpu`.
DISTRIBUTIONS = ("mlx", "mlx-cpu")

#: float64 is taken and returned, and the projections run in it, but the attention itself is
#: computed in float32 (measured with mlx 0.32.4 on the CPU: worst 1.1e-7 against float64 on
#: D = 4 heads, float32-sized, with the scale 0.5 exact in float32 as well).
FLOAT64_PRECISION = (
    "float64",
    "float32",
    "mx.fast.scaled_dot_product_attention computes its softmax in float32 whatever the input precision "
    "(documented in its docstring: https://ml-explore.github.io/mlx/build/html/python/_autosummary/"
    "mlx.core.fast.scaled_dot_product_attention.html) and takes its scale as a C++ float "
    "(https://github.com/ml-explore/mlx/blob/main/mlx/fast.h); measured with mlx 0.27.1 and 0.32.4 on the CPU",
)

#: Before mlx 0.29.3 the CPU's `mx.addmm` (a Linear with a bias) takes float32 only. Measured with
#: mlx 0.27.1, 0.28.0, 0.29.0, 0.29.1, 0.29.2 (raises; on 0.27.1 inside a lazy evaluation it aborts the
#: process) and 0.29.3, 0.29.4, 0.30.6, 0.31.2, 0.32.4 (runs).
ADDMM_FLOAT32_ONLY = "<0.29.3"
ADDMM_LIMIT = (
    "'[AddMM::eval_cpu] Currently only supports float32.' from the biased Linear projections (mx.addmm) on the "
    "CPU before mlx 0.29.3 (measured 0.27.1 to 0.29.2; the check came with "
    "https://github.com/ml-explore/mlx/pull/1814); on 0.27.1 the error aborts the process"
)

_configured = False


def mx() -> Any:
    """The `mlx.core` module, imported on first use; the default device set to the CPU once."""
    global _configured
    import mlx.core as _mx

    if not _configured:
        _mx.set_default_device(_mx.cpu)
        _configured = True
    return _mx


def mlx_dtype(dtype: str) -> Any:
    """The MLX dtype of precision `dtype` ("float64", "float32", "float16", "bfloat16")."""
    m = mx()
    return {"float64": m.float64, "float32": m.float32, "float16": m.float16, "bfloat16": m.bfloat16}[dtype]


def to_mlx(x: Array, dtype: str) -> Any:
    """An `mx.array` of precision `dtype` holding `x` (already rounded to that precision); a
    boolean array stays boolean."""
    m = mx()
    a = np.ascontiguousarray(x)
    if a.dtype == np.bool_:
        return m.array(a)
    if dtype == "bfloat16":  # float32 values that are bfloat16 numbers: exact
        return m.array(a.astype(np.float32), dtype=m.float32).astype(m.bfloat16)
    return m.array(a.astype(storage_dtype(dtype)), dtype=mlx_dtype(dtype))


def to_numpy(a: Any, dtype: str) -> Array:
    """An `mx.array` of precision `dtype` as a NumPy array in `storage_dtype(dtype)` (evaluates it)."""
    m = mx()
    if a.dtype == m.bfloat16:
        a = a.astype(m.float32)
    return np.asarray(np.array(a), dtype=storage_dtype(dtype))
