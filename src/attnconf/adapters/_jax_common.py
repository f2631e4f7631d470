"""What the JAX-family adapters share: the configured import, the dtype map, NumPy <-> jax arrays
at the boundary, and a cache of jitted functions.

* float64 needs ``jax_enable_x64``; it is switched on at first use.
* The platform is the CPU unless the environment names one (``JAX_PLATFORMS``), so a run is
  the same on every machine and a GPU run is a deliberate choice.
* bfloat16 crosses the contract as float32 arrays holding bfloat16 values: they become
  `jnp.bfloat16` arrays exactly, and come back as float32 arrays.
* Jitted functions are built once per static configuration (module hyperparameters, flags) and
  kept; `jax.jit` itself compiles once per input shape and dtype, so a conformance run compiles
  each configuration once. XLA's compile (about 0.1-0.8 s of CPU per program on the CPU) is most
  of what these adapters cost in a first run, so the compiled executables are kept in JAX's
  persistent compilation cache, every one of them however quick its compile (JAX's own default
  skips compiles under a second): a later run on the same machine loads them instead. The cache
  lives in `compile_cache_dir()`; ``ATTNCONF_JAX_CACHE_DIR=DIR`` moves it, ``=off`` switches it
  off. JAX's cache key covers the program, the compile options, the backend and the jax/jaxlib
  versions, not the host CPU, so the default directory is per machine type (architecture and CPU
  flags): a home directory shared between different machines never loads code built for another.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import numpy as np

from attnconf.reference.precision import storage_dtype

Array = np.ndarray[Any, Any]

#: Every adapter of this family runs in one worker process.
PROCESS_GROUP = "jax"

_configured = False


def _machine_key() -> str:
    """A short digest of what compiled CPU code depends on: architecture, CPU model and flags."""
    facts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    facts.append(line.strip())
                elif not line.strip() and len(facts) > 2:  # the first processor's block is enough
                    break
    except OSError:  # not Linux: the architecture alone
        pass
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:12]


def compile_cache_dir() -> Path | None:
    """Where compiled XLA executables are kept between runs, or None when switched off.

    ``ATTNCONF_JAX_CACHE_DIR=DIR``: ``DIR/<machine>``; ``=off`` (also ``0``, ``none``, ``false``):
    no cache; unset: ``$XDG_CACHE_HOME/attnconf/jax/<machine>`` (``~/.cache`` when XDG_CACHE_HOME
    is unset). ``<machine>`` is `_machine_key()`, so a directory shared between machines (a CI
    cache, a network home) never hands one machine code compiled for another.
    """
    setting = os.environ.get("ATTNCONF_JAX_CACHE_DIR")
    if setting is not None:
        if setting.strip().lower() in ("", "0", "off", "none", "false", "no"):
            return None
        return Path(setting).expanduser() / _machine_key()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "attnconf" / "jax" / _machine_key()


def jax() -> Any:
    """The `jax` module, imported on first use and configured once (x64 on, CPU by default,
    the persistent compilation cache of `compile_cache_dir()`)."""
    global _configured
    import jax as _jax

    if not _configured:
        _jax.config.update("jax_enable_x64", True)
        if not os.environ.get("JAX_PLATFORMS"):
            _jax.config.update("jax_platforms", "cpu")
        cache = compile_cache_dir()
        if cache is not None:
            _jax.config.update("jax_compilation_cache_dir", str(cache))
            for option in ("jax_persistent_cache_min_compile_time_secs", "jax_persistent_cache_min_entry_size_bytes"):
                try:  # older releases lack the size threshold: their defaults then apply
                    _jax.config.update(option, 0)
                except (AttributeError, KeyError):
                    pass
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
    """A jax array of precision `dtype` holding `x` (already rounded to it); None stays None.

    The conversion happens in NumPy (`jnp.bfloat16` is NumPy's bfloat16 from ml_dtypes), where it
    is exact for values already rounded to `dtype`: converting on the device would compile one
    more XLA program per shape, which is most of what a bfloat16 run of these adapters compiles.
    """
    if x is None:
        return None
    return jax().device_put(np.asarray(x, dtype=jax_dtype(dtype)))


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


#: jax.nn.dot_product_attention asks dot_general for the algorithm F16_F16_F32 on float16 inputs,
#: which the CPU does not implement; its fallback to the default precision catches the error only
#: while tracing, so under jax.jit (how JAX code runs, and how the adapters run it) every float16
#: call raises "The precision 'F16_F16_F32' is not supported by dot_general on CPU". Measured with
#: jax/jaxlib 0.10.2; the lower bound, where the op started to request dot algorithms, is not
#: measured. The audit still runs float16 there (capabilities.limits) and records the error.
DPA_FLOAT16_LIMIT = (
    "float16", "under jax.jit on the CPU, jax.nn.dot_product_attention raises \"The precision 'F16_F16_F32' is "
    "not supported by dot_general on CPU\" (its fallback to the default precision works only eagerly; "
    "measured with jax 0.10.2; https://github.com/keras-team/keras-hub/pull/2354)",
)


#: jax.nn.dot_product_attention casts the logits to float32 for the softmax whatever the input
#: dtype (jax/_src/nn/functions.py, _dot_product_attention_core), float64 included, and casts the
#: probabilities back: a float64 caller gets float32 accuracy (errors ~1e-7 relative, measured
#: 2e7 to 1e8 times the float64 tolerance with jax 0.10.2). Declared for the releases measured.
DPA_FLOAT64_PRECISION = (
    "float64", "float32", "jax.nn.dot_product_attention computes the softmax in float32 for every input dtype "
    "(jax/_src/nn/functions.py, _dot_product_attention_core; discussed in the review of "
    "https://github.com/jax-ml/jax/pull/34112); measured with jax 0.10.2",
)


def dpa_float64_in_float32() -> bool:
    """Whether the installed jax is a release measured to run the float64 softmax of jax.nn.dot_product_attention in float32."""
    from attnconf.adapters.support import release_in

    return release_in("jax", ">=0.4.31,<0.11")


def dpa_float16_fails() -> bool:
    """Whether the installed jax is a release where jitted float16 jax.nn.dot_product_attention raises on the CPU."""
    from attnconf.adapters.support import release_in

    return release_in("jax", ">=0.4.36")
