"""Peak resident memory of one adapter on the long chapter's cases: the numbers in docs/long.md.

    python -m attnconf.bench.long_memory --adapter NAME [--dtype float32] [--case n4096 ...]

Runs in this process (no worker: the memory measured is the adapter's own), one call per case on
the chapter's own inputs (`attnconf.conformance.test_long`), after a warm-up call on a short
sequence. Prints one JSON line per case: the chapter's estimate (`footprint`), the resident
memory before the call and the peak during it (`PeakRss`: ``VmHWM`` reset before the call), and
the seconds it took. Cases the chapter skips for their returned weights are reported as skipped;
no reference is computed and nothing is compared.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from attnconf.adapters import registry
from attnconf.conformance import test_long as chapter
from attnconf.memory import MIB, PeakRss


def _call(adapter: Any, name: str, case: chapter.Long, dtype: str) -> Any:
    if adapter.capabilities.level == "kernel":
        q, k, v, mask = chapter._kernel_inputs(name, case, dtype)
        return adapter.dot_product_attention(q, k, v, mask, case.causal, None, dtype)
    inputs, weights = chapter._layer_inputs(name, case)
    return adapter.multi_head_attention(inputs.astype(dtype), weights.astype(dtype), dtype)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--case", action="append", choices=list(chapter.CASES), help="default: every case")
    args = parser.parse_args(argv)
    (handle,), _ = registry.select([args.adapter])
    adapter = registry.instantiate(handle.obj)
    _call(adapter, "warm-up", chapter.Long(256, 256), args.dtype)
    for name in args.case or list(chapter.CASES):
        case = chapter.CASES[name]
        need, how = chapter.footprint(adapter, args.dtype, case)
        row: dict[str, Any] = {"adapter": adapter.name, "dtype": args.dtype, "case": name, "T": case.T, "S": case.S,
                               "estimate_mib": round(need / MIB), "estimate": how}
        item = np.dtype(np.float64 if args.dtype == "float64" else np.float32).itemsize
        if adapter.capabilities.level == "layer" and adapter.capabilities.returns_weights and \
                chapter.HEADS * case.T * case.S * item > chapter.WEIGHTS_LIMIT:
            print(json.dumps({**row, "skipped": "returned weights over the chapter's WEIGHTS_LIMIT"}), flush=True)
            continue
        start = time.perf_counter()
        with PeakRss() as p:
            out = _call(adapter, name, case, args.dtype)
        del out
        row.update(before_mib=round(p.before / MIB), peak_mib=round(p.peak / MIB), extra_mib=round(p.extra / MIB),
                   seconds=round(time.perf_counter() - start, 2))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
