"""What the PaddlePaddle adapters share: the lazy import, the dtypes its CPU build runs, NumPy <-> tensor.

PaddlePaddle runs in its own worker process (process group ``paddle``): it is imported there, on
the CPU, with one intra-op thread (the conformance cases are tiny, as for torch).

dtypes: the CPU wheel registers `matmul` for float32 and float64 only (measured with paddlepaddle
3.3.1: a float16 or bfloat16 `paddle.matmul` on the CPU raises ``RuntimeError: (NotFound) The kernel
with key (CPU, Undefined(AnyLayout), float16) of kernel `matmul` is not registered``), and both
attention APIs call it, so float16 and bfloat16 are declared limits (`HALF_LIMITS`), not departures.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from attnconf.reference.precision import storage_dtype

Array = np.ndarray[Any, Any]

#: Intra-op threads (`paddle.base.core.set_num_threads`): one, as for torch (`_torch.NUM_THREADS`).
NUM_THREADS = 1

#: The releases measured (3.0.0 and 3.3.1, the tox envs) whose CPU build has no float16/bfloat16 matmul.
#: A release outside this range runs those dtypes until someone measures it.
HALF_MATMUL_MISSING = ">=3.0,<3.4"

HALF_LIMITS = tuple(
    (
        dt,
        f'the CPU build has no {dt} matmul: paddle.matmul raises "RuntimeError: (NotFound) The kernel with key '
        f'(CPU, Undefined(AnyLayout), {dt}) of kernel `matmul` is not registered" (measured, paddlepaddle 3.3.1; '
        "https://github.com/PaddlePaddle/Paddle/blob/develop/paddle/phi/kernels/cpu/matmul_kernel.cc)",
    )
    for dt in ("float16", "bfloat16")
)

_configured = False


def paddle() -> Any:
    """The `paddle` module, imported on first use and configured once (CPU, `NUM_THREADS`)."""
    global _configured
    with warnings.catch_warnings():
        # its C++-extension helper warns on import that ccache is absent (nothing attnconf uses)
        warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
        import paddle as _p

    if not _configured:
        _p.set_device("cpu")
        _p.base.core.set_num_threads(NUM_THREADS)
        _configured = True
    return _p


def half_limits() -> tuple[tuple[str, str], ...]:
    """`HALF_LIMITS` where the installed release is one measured to lack the half-precision CPU matmul."""
    from attnconf.adapters.support import release_in

    return HALF_LIMITS if release_in("paddlepaddle", HALF_MATMUL_MISSING) else ()


def tensor(x: Array, dtype: str, requires_grad: bool = False) -> Any:
    """A tensor of precision `dtype` holding `x` (already rounded to that precision)."""
    p = paddle()
    out = p.to_tensor(np.ascontiguousarray(x)).astype(dtype)
    out.stop_gradient = not requires_grad
    return out


def mask_tensor(m: Array, dtype: str) -> Any:
    """A NumPy mask as a tensor: boolean stays boolean, anything else takes precision `dtype`."""
    m = np.ascontiguousarray(m)
    return paddle().to_tensor(m) if m.dtype == np.bool_ else tensor(m, dtype)


def to_numpy(t: Any, dtype: str) -> Array:
    """A tensor of precision `dtype` as a NumPy array in `storage_dtype(dtype)`."""
    x = t.detach()
    if dtype == "bfloat16":
        x = x.astype("float32")
    return np.asarray(x.numpy(), dtype=storage_dtype(dtype))
