"""References computed once per distinct input in a session, shared by its adapters.

The references are pure NumPy functions of their inputs, and the same ones are asked for again
and again: the agreement and real-weights cases are the same for every adapter of a session and
every check of a test, and Hypothesis repeats examples within a test (its examples differ from
adapter to adapter: the pytest plugin adds the test id, adapter included, to each test's seed).
In the torch session 520 of 1,168 reference evaluations are repeats. `cached(key, compute)`
returns the stored result of an earlier call with an equal key, and calls `compute()` otherwise.

A key is digested exactly: arrays by dtype, shape and every byte of their contents (so two
arrays that differ in one bit are different keys), dataclasses field by field, scalars and
strings by type and ``repr``. Anything else is refused (TypeError) rather than keyed by
identity. Results are returned read-only, on the first call as on every later one, so a test
that would write into a shared reference fails the same way whichever adapter runs first.
The most recently used results are kept up to `LIMIT_BYTES` of arrays.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

#: Bytes of result arrays kept (the long chapter's references are the largest, 16 MiB each).
LIMIT_BYTES = 256 * 2**20

_results: OrderedDict[bytes, tuple[Any, int]] = OrderedDict()
_held = 0
#: Calls answered from the store and calls computed (for tests and diagnostics).
stats = {"hits": 0, "misses": 0}


def _feed(h: Any, part: Any) -> None:
    if isinstance(part, np.ndarray):
        h.update(f"array {part.dtype.str} {part.shape}|".encode())
        h.update(np.ascontiguousarray(part).reshape(-1).view(np.uint8).data)  # every byte, in place
    elif part is None or isinstance(part, (bool, int, float, str, np.generic)):
        h.update(f"{type(part).__name__} {part!r}|".encode())
    elif isinstance(part, (tuple, list)):
        h.update(f"{type(part).__name__} {len(part)}(".encode())
        for p in part:
            _feed(h, p)
        h.update(b")")
    elif dataclasses.is_dataclass(part) and not isinstance(part, type):
        h.update(f"{type(part).__qualname__}(".encode())
        for f in dataclasses.fields(part):
            h.update(f"{f.name}=".encode())
            _feed(h, getattr(part, f.name))
        h.update(b")")
    else:
        raise TypeError(f"memo key part: expected an array, scalar, string, None, tuple, list or dataclass, "
                        f"got {type(part).__name__}")


def digest(key: Any) -> bytes:
    """The 32-byte digest of `key` (see the module docstring for what it covers)."""
    h = hashlib.blake2b(digest_size=32)
    _feed(h, key)
    return h.digest()


def _freeze(result: Any) -> int:
    """Make every array in `result` read-only; return their total size in bytes."""
    if isinstance(result, np.ndarray):
        result.setflags(write=False)
        return result.nbytes
    if isinstance(result, (tuple, list)):
        return sum(_freeze(r) for r in result)
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return sum(_freeze(getattr(result, f.name)) for f in dataclasses.fields(result))
    return 0


def cached(key: Any, compute: Callable[[], T]) -> T:
    """`compute()`, or the result of an earlier call with an equal `key` (read-only arrays)."""
    global _held
    k = digest(key)
    if k in _results:
        _results.move_to_end(k)
        stats["hits"] += 1
        return _results[k][0]  # type: ignore[no-any-return]
    result = compute()
    size = _freeze(result)
    stats["misses"] += 1
    _results[k] = (result, size)
    _held += size
    while _held > LIMIT_BYTES and len(_results) > 1:
        _, (_, dropped) = _results.popitem(last=False)
        _held -= dropped
    return result


def clear() -> None:
    """Forget every stored result."""
    global _held
    _results.clear()
    _held = 0
