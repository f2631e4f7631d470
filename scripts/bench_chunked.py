"""The speed and memory targets of the chunked reference (issue 7), measured in one run.

    python scripts/bench_chunked.py [--sizes 16384,32768] [--repeats 3] [--long 100000] [--json out.json]

1. For each N (d = 64, B = H = 1, no mask), repetitions interleaved call by call of:
   `chunked_attention` in float32 and float64; torch's CPU `scaled_dot_product_attention`
   restricted to its flash backend (float32, in a child process with `torch.set_num_threads`
   equal to the cores, fed the same inputs); NumPy's 4096 x 4096 x 4096 product in float32 and
   float64 (its BLAS threads as configured: all cores by default).
2. The ratios, from medians: chunked float32 / torch flash (target <= 1.5), and the rate
   4*N^2*d / time over NumPy's product rate in the same dtype (target >= 40%). Each is given in
   wall time (the target's definition) and in CPU time of the process (all threads), which other
   jobs on a shared machine distort less.
3. Peak extra memory of one float32 call at the largest N, beyond inputs and output (tracemalloc,
   which sees every NumPy allocation, short-lived ones included).
4. One float32 call at N = 100,000 (`--long 0` skips it).

No target is asserted: this script measures and prints.
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


def timed(f: Any, *args: Any) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    c, t = time.process_time(), time.perf_counter()
    f(*args)
    return time.perf_counter() - t, time.process_time() - c


def torch_child() -> None:
    """Serve "N" lines: time one flash SDPA call on `inputs(N)`, answer "wall cpu"."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    cache: dict[int, Any] = {}
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for line in sys.stdin:
        n = int(line)
        if n not in cache:
            cache.clear()
            cache[n] = [torch.from_numpy(a) for a in inputs(n, "float32")]
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                sdpa(*cache[n])  # warm-up
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.inference_mode():
            wall, cpu = timed(sdpa, *cache[n])
        print(wall, cpu, flush=True)


class Matmul:
    """NumPy's n x n x n product, one timed call at a time."""

    def __init__(self, dtype: str, n: int = 4096):
        self.flops = 2 * n**3
        self.a, self.b = (np.random.default_rng(i).standard_normal((n, n)).astype(dtype) for i in (1, 2))
        self.a @ self.b

    def __call__(self) -> tuple[float, float]:
        return timed(np.matmul, self.a, self.b)


def blas() -> Any:
    try:
        from threadpoolctl import threadpool_info

        return [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                for i in threadpool_info()]
    except ImportError:
        return "threadpoolctl not installed"


def median(runs: list[tuple[float, float]], which: int) -> float:
    return float(np.median([r[which] for r in runs]))


def measure(sizes: list[int], repeats: int, threads: int) -> dict[str, Any]:
    from attnconf.reference import chunked_attention

    env = {**os.environ, "BENCH_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    child = subprocess.Popen([sys.executable, __file__, "--torch-child"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdin is not None and child.stdout is not None
    torch_info = json.loads(child.stdout.readline())

    def torch_flash(n: int) -> tuple[float, float]:
        child.stdin.write(f"{n}\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
        wall, cpu = child.stdout.readline().split()  # type: ignore[union-attr]
        return float(wall), float(cpu)

    matmuls = {dt: Matmul(dt) for dt in ("float32", "float64")}
    mm: dict[str, list[tuple[float, float]]] = {dt: [] for dt in matmuls}
    out: dict[str, Any] = {"torch": torch_info, "sizes": {}}
    for n in sizes:
        q32, k32, v32 = inputs(n, "float32")
        q64, k64, v64 = (a.astype(np.float64) for a in (q32, k32, v32))
        runs: dict[str, list[tuple[float, float]]] = {"torch_flash_float32": [], "chunked_float32": [],
                                                      "chunked_float64": []}
        torch_flash(n)  # the child's warm-up
        chunked_attention(q32, k32, v32)
        for _ in range(repeats):
            runs["torch_flash_float32"].append(torch_flash(n))
            runs["chunked_float32"].append(timed(chunked_attention, q32, k32, v32))
            runs["chunked_float64"].append(timed(chunked_attention, q64, k64, v64))
            for dt, product in matmuls.items():
                mm[dt].append(product())
        out["sizes"][n] = {"runs_wall_cpu_s": runs, "flops": 4 * n * n * D}
    child.stdin.close()
    child.wait()
    out["matmul"] = {dt: {"gflops": matmuls[dt].flops / median(r, 0) / 1e9,
                          "gflops_per_cpu_second": matmuls[dt].flops / median(r, 1) / 1e9, "runs_wall_cpu_s": r}
                     for dt, r in mm.items()}
    for row in out["sizes"].values():
        wall = {k: median(v, 0) for k, v in row["runs_wall_cpu_s"].items()}
        cpu = {k: median(v, 1) for k, v in row["runs_wall_cpu_s"].items()}
        row.update(median_s=wall, median_cpu_s=cpu,
                   ratio_to_torch_flash=wall["chunked_float32"] / wall["torch_flash_float32"],
                   cpu_ratio_to_torch_flash=cpu["chunked_float32"] / cpu["torch_flash_float32"])
        for dt in ("float32", "float64"):
            rate, rate_cpu = row["flops"] / wall[f"chunked_{dt}"] / 1e9, row["flops"] / cpu[f"chunked_{dt}"] / 1e9
            row[f"fraction_of_matmul_{dt}"] = rate / out["matmul"][dt]["gflops"]
            row[f"cpu_fraction_of_matmul_{dt}"] = rate_cpu / out["matmul"][dt]["gflops_per_cpu_second"]
    return out


def peak_memory(n: int) -> dict[str, Any]:
    """Peak memory of one float32 call beyond its inputs and output (tracemalloc)."""
    from attnconf.memory import MIB
    from attnconf.reference import chunked_attention

    q, k, v = inputs(n, "float32")
    tracemalloc.start()
    try:
        chunked_attention(q, k, v)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"N": n, "dtype": "float32", "extra_mib": (peak - q.nbytes) / MIB, "output_mib": q.nbytes / MIB,
            "inputs_mib": 3 * q.nbytes / MIB, "how": "tracemalloc peak during one call, less the output"}


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        return platform.processor()


def report(n: int, row: dict[str, Any]) -> str:
    w = row["median_s"]
    return (f"N={n}: torch flash {w['torch_flash_float32']:.3f} s, chunked float32 {w['chunked_float32']:.3f} s, "
            f"ratio {row['ratio_to_torch_flash']:.2f} (CPU time {row['cpu_ratio_to_torch_flash']:.2f}), "
            f"{100 * row['fraction_of_matmul_float32']:.0f}% of matmul "
            f"(CPU time {100 * row['cpu_fraction_of_matmul_float32']:.0f}%); float64 {w['chunked_float64']:.3f} s, "
            f"{100 * row['fraction_of_matmul_float64']:.0f}% (CPU time {100 * row['cpu_fraction_of_matmul_float64']:.0f}%)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="16384,32768")
    parser.add_argument("--repeats", type=int, default=3)
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
    sizes = sorted(int(x) for x in args.sizes.split(","))
    result: dict[str, Any] = {
        "machine": {"cpu": _cpu(), "cores": threads, "python": platform.python_version()},
        "numpy": np.__version__, "blas": blas(), "blocks": {"block_q": BLOCK_Q, "block_k": BLOCK_K},
        "date": time.strftime("%Y-%m-%d %H:%M"), "load_before": os.getloadavg(),
    }
    print(f"blocks {BLOCK_Q} x {BLOCK_K}, {threads} threads, load {os.getloadavg()[0]:.1f}", flush=True)
    result.update(measure(sizes, args.repeats, threads))
    mm = result["matmul"]
    print(f"numpy matmul 4096^3: {mm['float32']['gflops']:.1f} GFLOP/s float32, {mm['float64']['gflops']:.1f} float64 "
          f"(per CPU-second {mm['float32']['gflops_per_cpu_second']:.1f}, {mm['float64']['gflops_per_cpu_second']:.1f})")
    for n, row in result["sizes"].items():
        print(report(n, row), flush=True)
    result["peak_memory"] = peak_memory(sizes[-1])
    print("peak extra memory:", json.dumps(result["peak_memory"]), flush=True)
    if args.long:
        q, k, v = inputs(args.long, "float32")
        wall, cpu = timed(chunked_attention, q, k, v)
        result["long"] = {"N": args.long, "seconds": wall, "cpu_seconds": cpu, "dtype": "float32"}
        print(f"N={args.long} float32: {wall:.1f} s ({cpu:.1f} CPU s)", flush=True)
    result["load_after"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
