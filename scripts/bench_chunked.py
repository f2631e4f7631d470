"""The speed and memory targets of the chunked reference (issue 7), measured in one run.

    python scripts/bench_chunked.py [--sizes 16384,32768] [--repeats 5] [--json out.json]

1. NumPy's rate on a large square matrix product (n = 4096, float32 and float64), its BLAS
   threads as configured (all cores by default);
2. for each N (d = 64, B = H = 1, no mask), interleaved repetitions of
   `chunked_attention` (float32 and float64) and torch's CPU `scaled_dot_product_attention`
   restricted to its flash backend (float32, in a child process with `torch.set_num_threads`
   equal to the cores, fed the same inputs), and the ratios: chunked / torch (target <= 1.5)
   and the rate 4*N^2*d / time over NumPy's matmul rate (target >= 40%);
3. peak extra memory of one float32 call at the largest N (tracemalloc, which sees every NumPy
   allocation), beyond the inputs and the output;
4. one float32 call at N = 100,000 (`--long 0` skips it).

Medians are reported. No target is asserted: this script measures and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import numpy as np

D = 64


def inputs(n: int, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    return tuple(rng.standard_normal((1, 1, n, D), dtype=np.float32).astype(dtype) for _ in range(3))  # type: ignore[return-value]


def torch_child() -> None:
    """Serve "N" lines: time one flash SDPA call on `inputs(N)`, answer with the seconds."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    cache: dict[int, Any] = {}
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        n = int(line)
        if n not in cache:
            cache.clear()
            cache[n] = [torch.from_numpy(a) for a in inputs(n, "float32")]
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # warm-up
                torch.nn.functional.scaled_dot_product_attention(*cache[n])
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.inference_mode():
            t = time.perf_counter()
            torch.nn.functional.scaled_dot_product_attention(*cache[n])
            print(time.perf_counter() - t, flush=True)


def matmul_rate(dtype: str, n: int = 4096, repeats: int = 5) -> float:
    a, b = (np.random.default_rng(i).standard_normal((n, n)).astype(dtype) for i in (1, 2))
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / float(np.median(times))


def timed(f: Any, *args: Any) -> float:
    t = time.perf_counter()
    f(*args)
    return time.perf_counter() - t


def blas() -> Any:
    try:
        from threadpoolctl import threadpool_info

        return [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                for i in threadpool_info()]
    except ImportError:
        return "threadpoolctl not installed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="16384,32768")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--long", type=int, default=100_000, help="N of the single long run (0: skip)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_child:
        torch_child()
        return 0
    from attnconf.reference import chunked_attention
    from attnconf.reference.chunked import BLOCK_K, BLOCK_Q, default_threads

    threads = default_threads()
    env = {**os.environ, "BENCH_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    child = subprocess.Popen([sys.executable, __file__, "--torch-child"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdin is not None and child.stdout is not None
    torch_info = json.loads(child.stdout.readline())

    def torch_time(n: int) -> float:
        child.stdin.write(f"{n}\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
        return float(child.stdout.readline())  # type: ignore[union-attr]

    result: dict[str, Any] = {
        "machine": {"cpu": _cpu(), "cores": threads, "python": platform.python_version()},
        "versions": {"numpy": np.__version__, **torch_info}, "blas": blas(),
        "blocks": {"block_q": BLOCK_Q, "block_k": BLOCK_K}, "load_before": os.getloadavg(),
        "matmul_gflops": {dt: matmul_rate(dt) / 1e9 for dt in ("float32", "float64")}, "sizes": {},
    }
    print(f"numpy matmul 4096^3: {result['matmul_gflops']['float32']:.1f} GFLOP/s float32, "
          f"{result['matmul_gflops']['float64']:.1f} float64; blocks {BLOCK_Q} x {BLOCK_K}, {threads} threads",
          flush=True)
    for n in sorted(int(x) for x in args.sizes.split(",")):
        q32, k32, v32 = inputs(n, "float32")
        q64, k64, v64 = (a.astype(np.float64) for a in (q32, k32, v32))
        runs: dict[str, list[float]] = {"torch_flash_float32": [], "chunked_float32": [], "chunked_float64": []}
        torch_time(n)  # the child's warm-up
        chunked_attention(q32, k32, v32)
        for _ in range(args.repeats):
            runs["torch_flash_float32"].append(torch_time(n))
            runs["chunked_float32"].append(timed(chunked_attention, q32, k32, v32))
            runs["chunked_float64"].append(timed(chunked_attention, q64, k64, v64))
        med = {k: float(np.median(v)) for k, v in runs.items()}
        flops = 4 * n * n * D
        row = {"runs_s": runs, "median_s": med,
               "ratio_to_torch_flash": med["chunked_float32"] / med["torch_flash_float32"],
               "fraction_of_matmul_float32": flops / med["chunked_float32"] / 1e9 / result["matmul_gflops"]["float32"],
               "fraction_of_matmul_float64": flops / med["chunked_float64"] / 1e9 / result["matmul_gflops"]["float64"]}
        result["sizes"][n] = row
        print(f"N={n}: torch flash {med['torch_flash_float32']:.3f} s, chunked float32 {med['chunked_float32']:.3f} s "
              f"(ratio {row['ratio_to_torch_flash']:.2f}, {100 * row['fraction_of_matmul_float32']:.0f}% of matmul), "
              f"float64 {med['chunked_float64']:.3f} s ({100 * row['fraction_of_matmul_float64']:.0f}% of matmul)",
              flush=True)
    child.stdin.close()
    child.wait()
    result["peak_memory"] = peak_memory(max(int(x) for x in args.sizes.split(",")))
    print("peak extra memory:", json.dumps(result["peak_memory"]), flush=True)
    if args.long:
        q, k, v = inputs(args.long, "float32")
        t = timed(chunked_attention, q, k, v)
        result["long"] = {"N": args.long, "seconds": t, "dtype": "float32"}
        print(f"N={args.long} float32: {t:.1f} s", flush=True)
    result["load_after"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def peak_memory(n: int) -> dict[str, Any]:
    """Peak memory of one float32 call beyond its inputs and output.

    tracemalloc sees every NumPy array allocation (NumPy reports them to it), including the
    short-lived ones; resident memory would hide blocks that the allocator reuses.
    """
    from attnconf.bench.memory import MIB
    from attnconf.reference import chunked_attention

    q, k, v = inputs(n, "float32")
    output = q.nbytes
    tracemalloc.start()
    try:
        chunked_attention(q, k, v)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"N": n, "dtype": "float32", "extra_mib": (peak - output) / MIB, "output_mib": output / MIB,
            "inputs_mib": 3 * q.nbytes / MIB, "how": "tracemalloc peak during one call, less the output"}


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
