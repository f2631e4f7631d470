"""The conformance part of `attnconf run`: one pytest session per process group.

Adapters that declare the same `process_group` and environment may share a process (the adapter
contract), so `attnconf run` tests them in one pytest session: the framework is imported, and
its first-call costs paid, once per group instead of once per adapter. Adapters without a group
share one session too, as they share the pytest process in a plain ``pytest`` run.

A session still costs a crashing or hanging adapter only its own results. It runs adapter by
adapter and reports each adapter's start and each test's result as it goes
(``--attnconf-progress``), so when the session dies or an adapter runs past ``--timeout``:

* the adapters before the culprit are complete and keep their results,
* the culprit is reported as crashed, with the signal or the timeout,
* the adapters after it run again in a fresh session.

A session that dies before any adapter has started (an import that aborts, say) names no culprit;
its adapters then run one session each, which does.

Memory: each poll also reads the session's resident high-water mark (``VmHWM``), which is reset
when an adapter starts (``/proc/PID/clear_refs``), so each adapter's entry carries the peak
resident memory of the process while it ran (``peak_rss_bytes``; the poll that notices the next
adapter's start still counts for the previous one, at most `POLL` seconds of it). A session
past ``args.memory_budget`` bytes is killed like one that runs past its timeout: the adapter
running then is reported with "exceeded the memory budget of N GiB", the others keep their results.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnconf.adapters import registry
from attnconf.memory import format_size, peak_rss_bytes, reset_peak

#: How often a running session's progress is read (seconds).
POLL = 0.2

#: The test outcomes that `summarize` counts as results (the others are declared departures or skips).
RESULTS = ("passed", "failed")

children: set[subprocess.Popen[bytes]] = set()
#: Set by `kill_children`: no session starts after it (an interrupted run ends, it does not retry).
stopping = threading.Event()


def kill_children() -> None:
    """Kill every running session (its whole process group), and start no more."""
    stopping.set()
    for proc in list(children):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def safe_name(name: str) -> str:
    """A file name for an adapter or group name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def group_key(handle: registry.AdapterHandle) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(process group, environment): adapters with the same key may share a session."""
    obj = handle.obj
    env = tuple(sorted((str(k), str(v)) for k, v in dict(getattr(obj, "environment", {}) or {}).items()))
    return str(getattr(obj, "process_group", None) or ""), env


#: Seconds assumed for an adapter that no earlier run timed.
UNTIMED = 10.0


def plan(handles: list[registry.AdapterHandle],
         seconds: dict[str, float] | None = None) -> list[list[registry.AdapterHandle]]:
    """The sessions: adapters grouped by `group_key`, each group in the order given, the longest
    first (longest-processing-time order keeps the parallel lanes even). A group's length is the
    sum of its adapters' `seconds` (an earlier run's, by name; `UNTIMED` for others)."""
    seconds = seconds or {}
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[registry.AdapterHandle]] = {}
    for h in handles:
        groups.setdefault(group_key(h), []).append(h)
    return sorted(groups.values(), key=lambda g: sum(seconds.get(h.name, UNTIMED) for h in g), reverse=True)


def previous_seconds(report_dir: Path) -> dict[str, float]:
    """Per-adapter seconds of the report already in `report_dir` (empty if none or unreadable)."""
    try:
        summary = json.loads((report_dir / "summary.json").read_text())
        return {a["name"]: float(a["seconds"]) for a in summary.get("adapters", []) if "seconds" in a}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


@dataclass
class Progress:
    """What a session's ``--attnconf-progress`` file has said so far."""

    path: Path
    started: list[str] = field(default_factory=list)  # adapter names, in order
    start_times: dict[str, float] = field(default_factory=dict)  # child's clock
    versions: dict[str, dict[str, str]] = field(default_factory=dict)
    tests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ended: float | None = None
    seen_at: float | None = None  # parent's monotonic clock when the current adapter was first seen
    _offset: int = 0

    def read(self) -> None:
        """Take in the complete lines written since the last read."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            event = json.loads(line)
            kind = event.get("event")
            if kind == "start":
                name = event["adapter"]
                self.started.append(name)
                self.start_times[name] = event["time"]
                self.versions[name] = event.get("versions", {})
                self.seen_at = time.monotonic()
            elif kind == "test":
                self.tests.setdefault(event["adapter"], []).append(event)
            elif kind == "end":
                self.ended = event["time"]

    @property
    def current(self) -> str | None:
        """The adapter running now (the last one started), if any."""
        return self.started[-1] if self.started else None

    def seconds(self, name: str, session_start: float) -> float:
        """Wall time of adapter `name`: from its start to the next one's (or the session's end);
        the first adapter also carries the session's start-up (pytest, collection)."""
        i = self.started.index(name)
        begin = session_start if i == 0 else self.start_times[name]
        end = self.start_times[self.started[i + 1]] if i + 1 < len(self.started) else (self.ended or time.time())
        return max(0.0, end - begin)


def summarize(tests: list[dict[str, Any]], versions: dict[str, str], entry: dict[str, Any]) -> dict[str, Any]:
    """`entry` completed from one adapter's test records: counts, worst error per dtype, failures.

    The worst relative error skips results whose exact value is below the tolerance everywhere
    (`max_expected <= atol`): such a result is zero at this precision (the gradient with respect to
    the key bias is exactly zero, its reference holds rounding residue of 1e-16), and an error
    divided by that residue says nothing. Their absolute error and error/tolerance ratio count."""
    counts: dict[str, int] = {}
    worst: dict[str, dict[str, Any]] = {}
    for t in tests:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
        if t["outcome"] not in RESULTS:
            continue  # declared departures (xfail) are reported by count, not in the worst error
        for m in t.get("measurements", []):
            if not isinstance(m, dict) or "max_abs" not in m or "atol" not in m:
                continue  # a chapter's own record without errors and tolerance
            w = worst.setdefault(m.get("dtype") or t.get("dtype") or "?", {"max_abs": 0.0, "max_rel": 0.0, "worst_ratio": 0.0})
            w["max_abs"] = max(w["max_abs"], m["max_abs"])
            if m.get("max_expected", math.inf) > m["atol"]:
                w["max_rel"] = max(w["max_rel"], m.get("max_rel", 0.0))
            if "ratio" in m:  # per-element tolerances: the worst error / bound over the elements
                w["worst_ratio"] = max(w["worst_ratio"], m["ratio"])
            elif m["atol"] > 0:
                w["worst_ratio"] = max(w["worst_ratio"], m["max_abs"] / m["atol"])
    failures = [{"test": t["nodeid"].split("::")[-1], "message": t["message"][:1500]}
                for t in tests if t["outcome"] == "failed"]
    status = "failed" if counts.get("failed", 0) else "passed"
    return {**entry, "status": status, "counts": counts, "errors_by_dtype": worst, "versions": versions,
            "failures": failures}


def run_group(handles: list[registry.AdapterHandle], args: Any, stage: Path,
              report: Callable[[dict[str, Any]], None]) -> None:
    """Test `handles` (one group) in as few sessions as crashes allow; `report(entry)` per adapter."""
    remaining = list(handles)
    while remaining and not stopping.is_set():
        leftover = _session(remaining, args, stage, report)
        if len(leftover) == len(remaining) > 1:  # died before any adapter started: one session each
            for h in leftover:
                if not stopping.is_set():
                    _session([h], args, stage, report)
            return
        remaining = leftover


def _session(handles: list[registry.AdapterHandle], args: Any, stage: Path,
             report: Callable[[dict[str, Any]], None]) -> list[registry.AdapterHandle]:
    """One pytest session over `handles`; reports what it attributes, returns the adapters to rerun."""
    tag = safe_name(handles[0].name if len(handles) == 1 else f"{group_key(handles[0])[0] or 'default'}-group")
    n = 0
    while (stage / "logs" / f"{tag}{'' if n == 0 else f'-{n}'}.log").exists():
        n += 1
    tag = tag if n == 0 else f"{tag}-{n}"
    results = stage / "sessions" / f"{tag}.json"
    progress = Progress(stage / "sessions" / f"{tag}.progress.jsonl")
    log = stage / "logs" / f"{tag}.log"
    results.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", "--pyargs", "attnconf.conformance", "--attnconf-isolation", "none",
           f"--attnconf-json={results}", f"--attnconf-progress={progress.path}", "-q", "-p", "no:cacheprovider",
           "-o", "console_output_style=classic", "-rfE"]
    for h in handles:
        cmd += ["--adapter", h.spec]
    for d in args.dtype or []:
        cmd += ["--dtype", d]
    if not args.no_audit:
        cmd.append(f"--attnconf-audit={stage / 'sessions' / f'{tag}.audit.pkl'}")
    budget = getattr(args, "memory_budget", None)
    if budget:
        cmd.append(f"--attnconf-memory-budget={int(budget)}")
    cmd += shlex.split(args.pytest_args)
    env = {**os.environ, **dict(getattr(handles[0].obj, "environment", {}) or {})}
    wall_start, start = time.time(), time.monotonic()
    timed_out: str | None = None
    over_budget: tuple[str, int] | None = None  # (adapter, resident bytes) when the session passed the budget
    peaks: dict[str, int] = {}  # adapter -> peak resident bytes while it ran ("" before the first one)
    by_name = {h.name: h for h in handles}
    reported: set[str] = set()  # adapters reported while the session runs

    def entry(h: registry.AdapterHandle) -> dict[str, Any]:
        seconds = progress.seconds(h.name, wall_start) if h.name in progress.started else time.monotonic() - start
        e = {"name": h.name, "spec": h.spec, "seconds": round(seconds, 2), "log": f"logs/{log.name}",
             "framework": getattr(h.obj, "framework", ""), "api": getattr(h.obj, "api", ""),
             "session": [x.name for x in handles]}
        peak = max(peaks.get(h.name, 0), peaks.get("", 0) if progress.started[:1] == [h.name] else 0)
        if peak:
            e["peak_rss_bytes"] = peak
        return e

    def watch_memory(pid: int, current: str) -> int:
        """Record the session's peak for the adapter running now; reset it when a new one started."""
        if current != watched[0]:
            peaks[watched[0]] = max(peaks.get(watched[0], 0), peak_rss_bytes(pid))
            reset_peak(pid)
            watched[0] = current
        peak = peak_rss_bytes(pid)
        peaks[current] = max(peaks.get(current, 0), peak)
        return peak

    watched = [""]

    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir(),
                                start_new_session=True)
        children.add(proc)
        if stopping.is_set():  # interrupted while this one was starting
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            while True:
                try:
                    code: int | None = proc.wait(timeout=POLL)
                    break
                except subprocess.TimeoutExpired:
                    pass
                progress.read()
                resident = watch_memory(proc.pid, progress.current or "")
                for name in progress.started[:-1]:  # complete: the next one has started
                    if name not in reported:
                        reported.add(name)
                        report(_from_progress(by_name[name], progress, entry(by_name[name])))
                if budget and resident > budget:
                    over_budget = (progress.current or "(start-up)", resident)
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    code = None
                    break
                if time.monotonic() - (progress.seen_at or start) > args.timeout:  # the current adapter's, or start-up's
                    timed_out = progress.current or "(start-up)"
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    code = None
                    break
        finally:
            children.discard(proc)
    progress.read()
    if results.exists() and over_budget is None:  # complete, even if the session died afterwards (in its audit: taken elsewhere)
        data = json.loads(results.read_text())
        for h in handles:
            if h.name in reported:
                continue
            tests = [t for t in data["tests"] if t["adapter"] == h.name]
            versions = data["adapters"].get(h.name, {}).get("versions", {})
            e = summarize(tests, versions, {**entry(h), "exit_code": code})
            if code is not None and code not in (0, 1, 5) and code >= 0:
                e["status"] = "failed"
                e["reason"] = f"pytest exited with code {code}; see {e['log']}"
            e["results"] = _write_results(stage, h.name, data, tests)
            report(e)
        return []
    # crashed or timed out: the adapters before the culprit are complete
    stopped_at = timed_out if over_budget is None else over_budget[0]
    culprit = progress.current if stopped_at is None else (stopped_at if stopped_at in by_name else None)
    if culprit is None and len(handles) > 1:
        return handles  # no adapter had started: nothing to attribute
    culprit = culprit or handles[0].name
    for name in progress.started:
        if name == culprit:
            break
        if name not in reported:
            report(_from_progress(by_name[name], progress, entry(by_name[name])))
    if over_budget is not None:
        reason = (f"exceeded the memory budget of {format_size(int(budget))} (the session held "
                  f"{format_size(over_budget[1])}; killed); see logs/{log.name}")
    elif timed_out is not None:
        reason = f"timed out after {args.timeout:.0f} s (killed)"
    elif code is not None and code < 0:
        reason = f"killed by signal {signal.Signals(-code).name}; see logs/{log.name}"
    else:
        tail = log.read_text(errors="replace")[-800:]
        reason = f"pytest exited with code {code} before writing results: {tail}"
    crashed = {**entry(by_name[culprit]), "status": "crashed", "reason": reason}
    if over_budget is not None and progress.tests.get(culprit):  # what it completed before it was stopped
        done_so_far = summarize(progress.tests[culprit], progress.versions.get(culprit, {}), {})
        crashed.update(counts=done_so_far["counts"], failures=done_so_far["failures"])
    report(crashed)
    done = set(progress.started[: progress.started.index(culprit) + 1] if culprit in progress.started else [culprit])
    return [h for h in handles if h.name not in done]


def _from_progress(h: registry.AdapterHandle, progress: Progress, entry: dict[str, Any]) -> dict[str, Any]:
    """The entry of a complete adapter from its session's progress records (and its results file)."""
    tests = progress.tests.get(h.name, [])
    e = summarize(tests, progress.versions.get(h.name, {}), entry)
    stage = progress.path.parent.parent
    e["results"] = _write_results(stage, h.name, {"adapters": {h.name: {"versions": e["versions"]}}}, tests)
    return e


def audits(stage: Path) -> dict[str, dict[str, Any]]:
    """What the sessions measured for the audit (``--attnconf-audit``): "audit" and "bank", each by
    adapter name. Sessions that died before the end wrote none; their adapters are missing here.

    The files are pickles that this package's own session processes wrote into `stage`, the run's
    private staging directory (``tempfile.mkdtemp``: mode 0700, this user's). Nothing else is
    unpickled: if `stage` is not private, nothing is read and every adapter is audited in worker
    processes instead.
    """
    import pickle
    import stat

    merged: dict[str, dict[str, Any]] = {"audit": {}, "bank": {}}
    info = stage.stat()
    if stat.S_IMODE(info.st_mode) & 0o077 or info.st_uid != os.getuid():
        return merged
    for path in sorted((stage / "sessions").glob("*.audit.pkl")):
        part = pickle.loads(path.read_bytes())  # written by this package's own session processes
        for key in merged:
            merged[key].update(part[key])
    return merged


def _write_results(stage: Path, name: str, data: dict[str, Any], tests: list[dict[str, Any]]) -> str:
    """One adapter's share of a session's results, as ``results/<adapter>.json``; its relative path."""
    payload = {"schema": data.get("schema", "attnconf.results/1"), "exitstatus": data.get("exitstatus"),
               "adapters": {k: v for k, v in data.get("adapters", {}).items() if k == name},
               "skipped": {}, "tests": tests}
    path = stage / "results" / f"{safe_name(name)}.json"
    path.write_text(json.dumps(payload, indent=1))
    return f"results/{path.name}"
