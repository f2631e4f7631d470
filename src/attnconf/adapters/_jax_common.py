"""What the JAX-family adapters share: the configured import, the dtype map, NumPy <-> jax arrays
at the boundary, and a cache of jitted functions.

* float64 needs ``jax_enable_x64``; it is switched on at first use.
* The platform is the CPU unless the environment names one (``JAX_PLATFORMS``), so a run is
  the same on every machine and a GPU run is a deliberate choice.
* bfloat16 crosses the contract as float32 arrays holding bfloat16 values: they become
  `jnp.bfloat16` arrays exactly, and come back as float32 arrays.
* Jitted functions are built once per static configuration (module hyperparameters, flags) and
  kept; `jax.jit` itself compiles once per input shape and dtype, so a conformance run compiles
  each configuration once. XLA's compile (about 0.1-0.5 s of CPU per shape on the CPU) is most of
  what these adapters cost; `ATTNCONF_JAX_CACHE_DIR=DIR` keeps the compiled executables in JAX's
  persistent compilation cache in DIR, every one of them however quick its compile, so a second
  run loads them instead (JAX's own `JAX_COMPILATION_CACHE_DIR` skips compiles under a second).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from attnconf.reference.precision import storage_dtype

Array = np.ndarray[Any, Any]

#: Every adapter of this family runs in one worker process.
PROCESS_GROUP = "jax"

_configured = False


def jax() -> Any:
    """The `jax` module, imported on first use and configured once (x64 on, CPU by default)."""
    global _configured
    import jax as _jax

    if not _configured:
        _jax.config.update("jax_enable_x64", True)
        if not os.environ.get("JAX_PLATFORMS"):
            _jax.config.update("jax_platforms", "cpu")
        cache = os.environ.get("ATTNCONF_JAX_CACHE_DIR")
        if cache:
            _jax.config.update("jax_compilation_cache_dir", cache)
            _jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            _jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        _configured = True
    return _jax


def jnp() -> Any:
    """`jax.numpy`, configured."""
    jax()
    import jax.numpy as _jnp

    return _jnp


def jax_dtype(dtype: str) -> Any:
    """The jax dtype of precision `dtype` ("float64", "float32", "float16", "bfloat16")."""
    j = jnp()
    return {"float64": j.float64, "float32": j.float32, "float16": j.float16, "bfloat16": j.bfloat16}[dtype]


def to_jax(x: Array | None, dtype: str) -> Any:
    """A jax array of precision `dtype` holding `x` (already rounded to it); None stays None."""
    if x is None:
        return None
    return jnp().asarray(np.asarray(x), dtype=jax_dtype(dtype))


def to_numpy(x: Any, dtype: str) -> Array:
    """A jax array of precision `dtype` as a NumPy array in `storage_dtype(dtype)`."""
    return np.asarray(np.asarray(x, dtype=np.float32 if dtype == "bfloat16" else None), dtype=storage_dtype(dtype))


def tree_to_numpy(tree: Any, dtype: str) -> Any:
    """`to_numpy` on every leaf of a nested dict."""
    if isinstance(tree, dict):
        return {k: tree_to_numpy(v, dtype) for k, v in tree.items()}
    return to_numpy(tree, dtype)


class JitCache:
    """Jitted functions by a hashable key; `build(key)` returns the plain function to jit."""

    def __init__(self, build: Callable[..., Callable[..., Any]]):
        self.build = build
        self.functions: dict[Hashable, Callable[..., Any]] = {}

    def __call__(self, *key: Hashable) -> Callable[..., Any]:
        if key not in self.functions:
            self.functions[key] = jax().jit(self.build(*key))
        return self.functions[key]
