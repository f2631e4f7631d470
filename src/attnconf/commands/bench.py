"""Time and peak memory of attention kernels against sequence length N.

Every kernel-level adapter (capabilities.level == "kernel") and the two references
(``reference:chunked``, O(N*d) memory; ``reference:plain``, which holds the N x N scores) run
one after the other, each in its own process, so that frameworks never share a process and the
memory measured is the subject's own. Inputs are q, k, v of shape (B, H, N, d), no mask.
Warm-up (compilation, tracing) is kept out of the timings; the thread count is fixed in every
process and reported with the cores each kernel really used (CPU time / wall time). A step
predicted not to fit in the memory available, or to run past --max-seconds, is skipped with the
reason; a process whose machine runs short of memory is stopped.

Writes DIR/bench.json and the log-log plots DIR/bench-time.png and DIR/bench-memory.png, and
prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from attnconf.adapters import registry
from attnconf.atomicio import write_text_atomic
from attnconf.bench.worker import REFERENCES
from attnconf.errors import EXIT_CRASHED, EXIT_OK, UsageError
from attnconf.memory import GIB, MIB, RESERVE, available_bytes, rss_bytes
from attnconf.reference._checks import FLOAT_DTYPES

SCHEMA = "attnconf.bench/1"
DEFAULT_SIZES = "1024,2048,4096,8192,16384"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", action="append", metavar="NAME",
                        help="a kernel-level adapter, reference:chunked or reference:plain (repeatable; "
                             "default: every installed kernel-level adapter and both references)")
    parser.add_argument("--sizes", nargs="+", default=[DEFAULT_SIZES], metavar="N",
                        help=f"sequence lengths, separated by spaces or commas (default {DEFAULT_SIZES})")
    parser.add_argument("--dtype", default="float32", choices=FLOAT_DTYPES, help="precision (default float32)")
    parser.add_argument("--causal", action="store_true", help="causal attention (top-left)")
    parser.add_argument("--threads", type=int, default=_cores(), help=f"threads per process (default {_cores()})")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per step; the median is reported")
    parser.add_argument("--batch", type=int, default=1, help="B (default 1)")
    parser.add_argument("--heads", type=int, default=1, help="H (default 1)")
    parser.add_argument("--head-dim", type=int, default=64, help="d (default 64)")
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="skip a step predicted to take longer, warm-up included (default 300)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one subject may take (default 3600)")
    parser.add_argument("-o", "--output", default="attnconf-bench", metavar="DIR",
                        help="output directory (default attnconf-bench/)")
    parser.add_argument("--no-plots", action="store_true", help="write bench.json only")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _sizes(items: list[str]) -> list[int]:
    text = ",".join(items)
    try:
        sizes = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UsageError(f"--sizes expects comma-separated positive integers, received {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise UsageError(f"--sizes expects comma-separated positive integers, received {text!r}")
    return sizes


def subjects(selected: list[str] | None) -> tuple[list[tuple[str, dict[str, str]]], dict[str, str]]:
    """[(spec, environment)] to run, and {name: reason} of kernel adapters that cannot run here."""
    skipped: dict[str, str] = {}
    if selected:
        chosen = []
        for spec in dict.fromkeys(selected):
            if spec in REFERENCES:
                chosen.append((spec, {}))
                continue
            try:
                handles, _ = registry.select([spec])
            except registry.AdapterError as err:
                raise UsageError(str(err)) from None
            obj = handles[0].obj
            if obj.capabilities.level != "kernel":
                raise UsageError(f"adapter {spec!r} is a layer (capabilities.level='layer'); bench times kernels")
            chosen.append((spec, dict(getattr(obj, "environment", {}) or {})))
        return chosen, skipped
    chosen = [(r, {}) for r in REFERENCES]
    for h in registry.discover():
        caps = getattr(h.obj, "capabilities", None)
        if caps is None or caps.level != "kernel":
            continue
        if h.available:
            chosen.append((h.spec, dict(getattr(h.obj, "environment", {}) or {})))
        else:
            skipped[h.name] = str(h.missing)
    return chosen, skipped


def thread_environment(threads: int) -> dict[str, str]:
    """Variables that fix the thread pools of BLAS, OpenMP, TensorFlow and XLA before import."""
    env = {k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                     "TF_NUM_INTRAOP_THREADS", "ATTNCONF_THREADS")}
    env["TF_NUM_INTEROP_THREADS"] = "1"
    if threads == 1:
        env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                            "intra_op_parallelism_threads=1").strip()
    return env


def run_subject(spec: str, env: dict[str, str], settings: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one subject's worker process; stop it if the machine runs short of memory."""
    cmd = [sys.executable, "-m", "attnconf.bench.worker", json.dumps({**settings, "subject": spec})]
    # Large blocks straight from mmap, returned on free: resident memory then shows each step's peak.
    full_env = {**os.environ, **env, **thread_environment(settings["threads"]), "PYTHONUNBUFFERED": "1",
                "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, text=True)
    lines: list[dict[str, Any]] = []
    err_tail: list[str] = []
    readers = [threading.Thread(target=_read_json, args=(proc.stdout, lines), daemon=True),
               threading.Thread(target=_read_tail, args=(proc.stderr, err_tail), daemon=True)]
    for r in readers:
        r.start()
    start, stopped = time.monotonic(), None
    while proc.poll() is None:
        time.sleep(0.05)
        if available_bytes() <= 0:
            stopped = (f"stopped: the machine ran short of memory (process at "
                       f"{rss_bytes(proc.pid) / MIB:.0f} MiB, less than {RESERVE / GIB:.0f} GiB left)")
        elif time.monotonic() - start > timeout:
            stopped = f"stopped after --timeout {timeout:g} s"
        if stopped:
            proc.kill()
            break
    proc.wait()
    for r in readers:
        r.join(timeout=5)
    info = next((x for x in lines if x.get("event") == "info"), {})
    error = next((x for x in lines if x.get("event") == "error"), None)
    steps = [x for x in lines if x.get("event") == "step"]
    done = {s["N"] for s in steps}
    reason = stopped or (error or {}).get("reason") or (None if proc.returncode == 0 else
                                                          f"worker exit code {proc.returncode}")
    if stopped or proc.returncode:  # the step that was running, and the larger ones, did not finish
        steps += [{"event": "step", "N": n, "status": "skipped", "reason": reason}
                  for n in settings["sizes"] if n not in done]
    status = "ok" if reason is None else "stopped" if stopped else "failed"
    return {"subject": spec, "status": status, "reason": reason,
            "versions": info.get("versions", {}), "threads": info.get("threads", {}),
            "chunked": info.get("chunked"), "steps": steps, "log_tail": "".join(err_tail)[-2000:]}


def _read_json(stream: Any, into: list[dict[str, Any]]) -> None:
    for line in stream:
        try:
            into.append(json.loads(line))
        except json.JSONDecodeError:
            pass


def _read_tail(stream: Any, into: list[str]) -> None:
    for line in stream:
        into.append(line)
        del into[:-40]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": _cores(), "python": platform.python_version(),
                            "platform": platform.platform()}
    try:
        info["memory_gib"] = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return info


def table(payload: dict[str, Any]) -> str:
    """Median time (ms) and peak extra memory (MiB) per subject and N; skips as '-' with reasons."""
    results = payload["results"]
    names = list(results)
    sizes = payload["settings"]["sizes"]
    width = max([len(n) for n in names] + [8])
    lines = [f"{'subject':<{width}}  " + "  ".join(f"{'N=' + str(n):>17}" for n in sizes)]
    notes: dict[str, int] = {}
    for name in names:
        by_n = {s["N"]: s for s in results[name]["steps"]}
        cells = []
        for n in sizes:
            s = by_n.get(n, {})
            if s.get("status") == "ok":
                cells.append(f"{s['median_s'] * 1e3:>8.1f}ms {s['peak_extra_bytes'] / MIB:>5.0f}M")
            else:
                reason = s.get("reason") or results[name].get("reason") or "not run"
                mark = notes.setdefault(reason, len(notes) + 1)
                cells.append(f"{'skipped [' + str(mark) + ']':>17}")
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    lines += [f"[{i}] {r}" for r, i in notes.items()]
    lines.append("")
    for name in names:
        r = results[name]
        ok = [s for s in r["steps"] if s.get("status") == "ok"]
        used = f"{ok[-1]['cpu_per_wall']:.1f} cores used at N={ok[-1]['N']}" if ok else "nothing ran"
        versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items())
        lines.append(f"{name}: {versions or '-'}; threads set {r['threads'] or '-'}; {used}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    sizes = _sizes(args.sizes)
    for name in ("threads", "repeats", "batch", "heads", "head_dim"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} expects a positive integer, received {getattr(args, name)}")
    chosen, missing = subjects(args.adapter)
    settings = {"sizes": sizes, "dtype": args.dtype, "causal": args.causal, "threads": args.threads,
                "repeats": args.repeats, "batch": args.batch, "heads": args.heads, "head_dim": args.head_dim,
                "max_seconds": args.max_seconds}
    results: dict[str, Any] = {}
    for spec, env in chosen:
        print(f"attnconf bench: {spec} ...", file=sys.stderr, flush=True)
        results[spec] = run_subject(spec, env, settings, args.timeout)
    payload = {"schema": SCHEMA, "machine": machine(), "settings": settings, "results": results,
               "not_installed": missing, "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    out = Path(args.output)
    write_text_atomic(out / "bench.json", json.dumps(payload, indent=1))
    written = [out / "bench.json"]
    if not args.no_plots:
        from attnconf.bench.plot import write_plots

        try:
            written += write_plots(payload, out)
        except ImportError as err:
            print(f"attnconf bench: no plots ({err}); install them with "
                  "pip install 'attention-conformance[report]'", file=sys.stderr)
    print(table(payload))
    for name, reason in missing.items():
        print(f"{name}: not installed ({reason})")
    print("wrote " + ", ".join(str(p) for p in written))
    failed = [n for n, r in results.items() if r["status"] == "failed"]
    for n in failed:
        print(f"{n}: {results[n]['reason']}", file=sys.stderr)
    return EXIT_CRASHED if failed else EXIT_OK
