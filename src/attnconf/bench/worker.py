"""One benchmark subject in its own process: `python -m attnconf.bench.worker SETTINGS_JSON`.

A subject is a kernel-level adapter (entry-point name or ``module:attr``) or one of the
references, ``reference:chunked`` and ``reference:plain``. For each N, in increasing order:

1. predict the step's extra memory; skip it (and every larger N) if it would not fit in the
   memory available now: from the `(B, H, N, N)` score matrices before anything is measured,
   then from the measured growth (quadratic when the last step held at least one score matrix,
   linear otherwise); the chunked reference's buffers are known;
2. predict its time from the last step (quadratic growth) and skip it over `max_seconds`;
3. call the kernel once untimed (compilation, tracing, allocation of caches), then `repeats`
   timed calls; record each wall time, the CPU time per wall time (the cores the kernel really
   used) and the peak extra resident memory of a timed call (`attnconf.memory.PeakRss`),
   and separately of the untimed first call: an allocator that keeps a pool from that call (ONNX
   Runtime's arena, XLA's buffers) shows its growth there, not in the timed calls.

Each step is one JSON line on stdout; the first line describes the process (versions, threads).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from attnconf.memory import MIB, PeakRss, available_bytes, rss_bytes, score_bytes

Array = np.ndarray[Any, Any]
Kernel = Callable[[Array, Array, Array], Array]
REFERENCES = ("reference:chunked", "reference:plain")


def _subject(spec: str, dtype: str, causal: bool, threads: int) -> tuple[Kernel, dict[str, Any]]:
    """The kernel to time, and what describes it (versions, whether it is chunked)."""
    if spec == "reference:chunked":
        from attnconf.reference import chunked_attention

        return (lambda q, k, v: chunked_attention(q, k, v, causal=causal, dtype=dtype, threads=threads),
                {"versions": {"numpy": np.__version__}, "chunked": True})
    if spec == "reference:plain":
        from attnconf.reference import scaled_dot_product_attention

        return (lambda q, k, v: scaled_dot_product_attention(q, k, v, causal=causal, dtype=dtype),
                {"versions": {"numpy": np.__version__}, "chunked": False, "copies": 6})
    from attnconf.adapters import registry

    handle = registry.load(spec)
    if handle.missing:
        raise RuntimeError(f"adapter {handle.name!r} cannot run here: {handle.missing}")
    adapter = registry.instantiate(handle.obj)
    if adapter.capabilities.level != "kernel":
        raise RuntimeError(f"adapter {handle.name!r} is not a kernel (capabilities.level='layer')")

    def kernel(q: Array, k: Array, v: Array) -> Array:
        return np.asarray(adapter.dot_product_attention(q, k, v, None, causal, None, dtype))

    return kernel, {"versions": adapter.versions(), "chunked": False}


def fix_framework_threads(threads: int) -> dict[str, Any]:
    """Set the thread count of frameworks already imported (after the first call imported them)."""
    seen: dict[str, Any] = {}
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
        seen["torch"] = torch.get_num_threads()
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(threads)
        seen["blas"] = sorted({f"{i['internal_api']} {i.get('architecture', '')} x{i['num_threads']}".strip()
                               for i in threadpool_info()})
    except ImportError:
        pass
    return seen


def _inputs(n: int, s: dict[str, Any]) -> tuple[Array, Array, Array]:
    from attnconf.reference import round_to

    rng = np.random.default_rng(n)
    shape = (s["batch"], s["heads"], n, s["head_dim"])
    return tuple(round_to(rng.standard_normal(shape, dtype=np.float32), s["dtype"]) for _ in range(3))  # type: ignore[return-value]


def predict_memory(n: int, s: dict[str, Any], info: dict[str, Any], last: dict[str, Any] | None) -> tuple[int, str]:
    """Predicted extra bytes of one call at `n`, and how they were predicted."""
    from attnconf.reference.precision import compute_dtype

    itemsize = compute_dtype(s["dtype"]).itemsize
    B, H, d = s["batch"], s["heads"], s["head_dim"]
    io = 4 * B * H * n * d * 8  # q, k, v, output; a framework may convert each once
    if info["chunked"]:
        return io + s["threads"] * 1024 * 2048 * 8 + 64 * MIB, "chunked: O(N*d) buffers"
    scores = score_bytes(B, H, n, n, itemsize, info.get("copies", 3))
    if last is None or last.get("status") != "ok":
        return io + scores, f"{info.get('copies', 3)} score matrices of (B, H, N, N)"
    n0, m0 = last["N"], last["peak_extra_bytes"]
    if m0 >= score_bytes(B, H, n0, n0, itemsize, 1):
        return int(m0 * (n / n0) ** 2), f"measured {m0 / MIB:.0f} MiB at N={n0}, quadratic growth"
    return io + int(m0 * (n / n0) * 2), f"measured {m0 / MIB:.0f} MiB at N={n0}, linear growth x2"


def run_step(kernel: Kernel, n: int, s: dict[str, Any]) -> dict[str, Any]:
    """Warm-up call, then `repeats` timed calls at length `n`."""
    q, k, v = _inputs(n, s)
    with PeakRss() as first:  # compilation, tracing, allocator pools: not timed
        kernel(q, k, v)
    times, cpus, peaks = [], [], []
    for _ in range(s["repeats"]):
        with PeakRss() as peak:
            c0, t0 = time.process_time(), time.perf_counter()
            out = kernel(q, k, v)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        del out
        times.append(wall)
        cpus.append(cpu / wall if wall > 0 else 0.0)
        peaks.append(peak.extra)
    return {"status": "ok", "times_s": times, "median_s": float(np.median(times)),
            "cpu_per_wall": float(np.median(cpus)), "peak_extra_bytes": int(max(peaks)),
            "warmup_peak_extra_bytes": first.extra,
            "rss_bytes": rss_bytes()}


def main(argv: list[str]) -> int:
    s = json.loads(argv[0])
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever a framework prints goes to the log, not the results
    try:
        kernel, info = _subject(s["subject"], s["dtype"], s["causal"], s["threads"])
    except Exception as err:
        print(json.dumps({"event": "error", "reason": f"{type(err).__name__}: {err}",
                          "traceback": traceback.format_exc()}), file=out, flush=True)
        return 1
    try:
        kernel(*_inputs(16, s))  # imports the framework, so that its threads can be set
    except Exception as err:
        print(json.dumps({"event": "error", "reason": f"{type(err).__name__}: {err}",
                          "traceback": traceback.format_exc()}), file=out, flush=True)
        return 1
    threads = fix_framework_threads(s["threads"])
    print(json.dumps({"event": "info", **info, "threads": threads, "pid": os.getpid()}), file=out, flush=True)
    last: dict[str, Any] | None = None
    skip: str | None = None
    for n in sorted(s["sizes"]):
        row: dict[str, Any] = {"event": "step", "N": n}
        need, how = predict_memory(n, s, info, last)
        free = available_bytes()
        if skip is None and need > free:
            skip = f"predicted {need / MIB:.0f} MiB ({how}) > {free / MIB:.0f} MiB available at N={n}"
        if skip is None and last and last.get("status") == "ok":
            eta = last["median_s"] * (n / last["N"]) ** 2 * (s["repeats"] + 1)
            if eta > s["max_seconds"]:
                skip = f"predicted {eta:.0f} s at N={n} (quadratic from N={last['N']}) > max {s['max_seconds']:g} s"
        if skip is not None:
            row.update(status="skipped", reason=skip)
        else:
            try:
                row.update(run_step(kernel, n, s), predicted_bytes=need)
            except Exception as err:  # a failing step ends this subject; the other subjects go on
                row.update(status="error", reason=f"{type(err).__name__}: {err}")
                skip = f"an error at a smaller N ({type(err).__name__})"
        print(json.dumps(row), file=out, flush=True)
        last = row
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
