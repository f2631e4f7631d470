"""The conformance part of `attnconf run`: one pytest session per process group.

Adapters that declare the same `process_group` and environment may share a process (the adapter
contract), so `attnconf run` tests them in one pytest session: the framework is imported, and
its first-call costs paid, once per group instead of once per adapter. Adapters without a group
share one session too, as they share the pytest process in a plain ``pytest`` run.

A `Supervisor` starts the sessions, watches them, stops one that passes a limit, attributes what
it did and collects the results. A session still costs a crashing or hanging adapter only its own
results. It runs adapter by adapter and reports each adapter's start, each test's start and finish
and each test's result as it goes (``--attnconf-progress``), so when the session dies, an adapter
runs past ``--timeout`` or one test runs past ``--call-timeout`` with no test starting or finishing
(the heartbeat: a hung call is reported within the call timeout, while a slow adapter whose tests
progress still gets its whole ``--timeout``):

* the adapters before the culprit are complete and keep their results,
* the culprit is reported as crashed, with the signal or the timeout (for a hung test, its id),
* the adapters after it run again in a fresh session.

A session that dies before any adapter has started (an import that aborts, say) names no culprit;
its adapters then run one session each, which does.

Memory: each poll also reads the session's resident high-water mark (``VmHWM``), which is reset
when an adapter starts (``/proc/PID/clear_refs``), so each adapter's entry carries the peak
resident memory of the process while it ran (``peak_rss_bytes``; the poll that notices the next
adapter's start still counts for the previous one, at most `POLL` seconds of it). A session
past the memory budget (``--memory-budget``) is killed like one that runs past its timeout: the adapter
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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from attnconf.adapters import registry
from attnconf.adapters.traits import traits
from attnconf.memory import format_size, peak_rss_bytes, reset_peak

#: How often a running session's progress is read (seconds).
POLL = 0.2

#: Seconds one test may run with no test starting or finishing before its session is stopped (``--call-timeout``).
DEFAULT_CALL_TIMEOUT = 120.0

#: The test outcomes that `summarize` counts as results (the others are declared departures or skips).
RESULTS = ("passed", "failed")


def safe_name(name: str) -> str:
    """A file name for an adapter or group name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def group_key(handle: registry.AdapterHandle) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(process group, environment): adapters with the same key may share a session."""
    t = traits(handle.obj)
    return t.process_group or "", t.environment


#: Seconds assumed for an adapter that no earlier run timed.
UNTIMED = 10.0


def plan(
    handles: list[registry.AdapterHandle], seconds: dict[str, float] | None = None
) -> list[list[registry.AdapterHandle]]:
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
    running: str | None = None  # the test begun and not finished yet (its node id), if any
    running_since: float | None = None  # parent's monotonic clock when that test was first seen
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
            self._take(json.loads(line))

    def _take(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            name = event["adapter"]
            self.started.append(name)
            self.start_times[name] = event["time"]
            self.versions[name] = event.get("versions", {})
            self.seen_at = time.monotonic()
        elif kind == "test":
            self.tests.setdefault(event["adapter"], []).append(event)
        elif kind == "begin":  # the heartbeat: a test starts ...
            self.running, self.running_since = event["nodeid"], time.monotonic()
        elif kind == "finish":  # ... and finishes (its teardown included)
            self.running = self.running_since = None
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
            w = worst.setdefault(
                m.get("dtype") or t.get("dtype") or "?", {"max_abs": 0.0, "max_rel": 0.0, "worst_ratio": 0.0}
            )
            w["max_abs"] = max(w["max_abs"], m["max_abs"])
            if m.get("max_expected", math.inf) > m["atol"]:
                w["max_rel"] = max(w["max_rel"], m.get("max_rel", 0.0))
            if "ratio" in m:  # per-element tolerances: the worst error / bound over the elements
                w["worst_ratio"] = max(w["worst_ratio"], m["ratio"])
            elif m["atol"] > 0:
                w["worst_ratio"] = max(w["worst_ratio"], m["max_abs"] / m["atol"])
    failures = [
        {"test": t["nodeid"].split("::")[-1], "message": t["message"][:1500]} for t in tests if t["outcome"] == "failed"
    ]
    status = "failed" if counts.get("failed", 0) else "passed"
    return {
        **entry,
        "status": status,
        "counts": counts,
        "errors_by_dtype": worst,
        "versions": versions,
        "failures": failures,
    }


@dataclass(frozen=True)
class Stop:
    """Why the supervisor stopped a session: `kind` ("memory", "timeout" or "hung"), the adapter running
    then ("(start-up)" before the first) and the reason reported for it."""

    kind: str
    adapter: str
    reason: str

    @property
    def keeps_results(self) -> bool:
        """Whether a results file the session wrote still counts (not past the memory budget)."""
        return self.kind != "memory"


class Supervisor:
    """Runs the conformance sessions of one `attnconf run`: starts them, watches their progress,
    stops one that runs past its limits, attributes what it did to its adapters and collects
    their results into `stage` (``results/``, ``logs/``, ``sessions/``). `report(entry)` receives
    one entry per adapter, from the session's thread, as soon as the adapter is complete.

    `timeout`: seconds one adapter (or a session's start-up) may take; `call_timeout`: seconds one
    test may run with no test starting or finishing; `memory_budget`: bytes a session may hold
    (None: no limit); `dtypes`, `audit` and `pytest_args` shape each session's pytest command.
    """

    def __init__(
        self,
        stage: Path,
        report: Callable[[dict[str, Any]], None],
        *,
        timeout: float,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        memory_budget: int | None = None,
        dtypes: Sequence[str] = (),
        audit: bool = True,
        pytest_args: str = "",
    ) -> None:
        self.stage, self.report = stage, report
        self.timeout, self.call_timeout, self.memory_budget = timeout, call_timeout, memory_budget
        self.dtypes, self.audit, self.pytest_args = list(dtypes), audit, pytest_args
        self._children: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def run(self, handles: list[registry.AdapterHandle], jobs: int, seconds: dict[str, float] | None = None) -> None:
        """Test `handles`, their groups (`plan`) in `jobs` parallel lanes; no session runs on return."""
        pool = ThreadPoolExecutor(max_workers=jobs)
        futures = [pool.submit(self.run_group, group) for group in plan(handles, seconds)]
        try:
            for fut in as_completed(futures):
                fut.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            self.stop()

    def run_group(self, handles: list[registry.AdapterHandle]) -> None:
        """Test `handles` (one group) in as few sessions as crashes allow."""
        remaining = list(handles)
        while remaining and not self._stopping.is_set():
            leftover = _Session(self, remaining).run()
            if len(leftover) == len(remaining) > 1:  # died before any adapter started: one session each
                for h in leftover:
                    if not self._stopping.is_set():
                        _Session(self, [h]).run()
                return
            remaining = leftover

    def stop(self) -> None:
        """Kill every running session (its whole process group), and start no more."""
        self._stopping.set()
        with self._lock:
            running = list(self._children)
        for proc in running:
            _kill(proc)

    def spawn(self, cmd: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        """Start a session process (in its own process group, killed by `stop`)."""
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir(), start_new_session=True
        )
        with self._lock:
            self._children.add(proc)
        if self._stopping.is_set():  # stopped while this one was starting
            _kill(proc)
        return proc

    def release(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._children.discard(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class _Session:
    """One pytest session over some adapters of a group, run and read by its `Supervisor`."""

    def __init__(self, sup: Supervisor, handles: list[registry.AdapterHandle]) -> None:
        self.sup, self.handles = sup, handles
        self.by_name = {h.name: h for h in handles}
        self.tag = _free_tag(sup.stage, handles)
        self.results = sup.stage / "sessions" / f"{self.tag}.json"
        self.progress = Progress(sup.stage / "sessions" / f"{self.tag}.progress.jsonl")
        self.log = sup.stage / "logs" / f"{self.tag}.log"
        self.peaks: dict[str, int] = {}  # adapter -> peak resident bytes while it ran ("" before the first one)
        self.watched = ""  # the adapter whose peak the session's high-water mark holds now
        self.reported: set[str] = set()  # adapters reported while the session runs
        self.wall_start, self.start = time.time(), time.monotonic()
        self.code: int | None = None  # the session's exit code (None: killed by the supervisor)
        self.stopped: Stop | None = None

    def run(self) -> list[registry.AdapterHandle]:
        """Run the session, report what it attributes; return the adapters to run again."""
        self.results.parent.mkdir(exist_ok=True)
        env = {**os.environ, **traits(self.handles[0].obj).env}
        self.wall_start, self.start = time.time(), time.monotonic()
        with self.log.open("wb") as out:
            proc = self.sup.spawn(self.command(), env, out)
            try:
                self.code = self.watch(proc)
            finally:
                self.sup.release(proc)
        self.progress.read()
        if self.results.exists() and (self.stopped is None or self.stopped.keeps_results):
            self.collect()  # complete, even if the session died afterwards (in its audit: taken elsewhere)
            return []
        return self.attribute()

    def command(self) -> list[str]:
        sup, sessions = self.sup, self.results.parent
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            "attnconf.conformance",
            "--attnconf-isolation",
            "none",
            f"--attnconf-json={self.results}",
            f"--attnconf-progress={self.progress.path}",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "console_output_style=classic",
            "-rfE",
        ]
        for h in self.handles:
            cmd += ["--adapter", h.spec]
        for d in sup.dtypes:
            cmd += ["--dtype", d]
        if sup.audit:
            cmd.append(f"--attnconf-audit={sessions / f'{self.tag}.audit.json'}")
        if sup.memory_budget:
            cmd.append(f"--attnconf-memory-budget={int(sup.memory_budget)}")
        return cmd + shlex.split(sup.pytest_args)

    def watch(self, proc: subprocess.Popen[bytes]) -> int | None:
        """Follow the session until it exits (its exit code) or is stopped (None, `stopped` says why)."""
        while True:
            try:
                return proc.wait(timeout=POLL)
            except subprocess.TimeoutExpired:
                pass
            self.progress.read()
            resident = self.watch_memory(proc.pid)
            for name in self.progress.started[:-1]:  # complete: the next one has started
                if name not in self.reported:
                    self.reported.add(name)
                    self.sup.report(self.complete(name))
            self.stopped = self.limit(resident)
            if self.stopped is not None:
                _kill(proc)
                proc.wait()
                return None

    def watch_memory(self, pid: int) -> int:
        """The session's resident high-water mark, recorded for the adapter running now (reset when a new one started)."""
        current = self.progress.current or ""
        if current != self.watched:
            self.peaks[self.watched] = max(self.peaks.get(self.watched, 0), peak_rss_bytes(pid))
            reset_peak(pid)
            self.watched = current
        peak = peak_rss_bytes(pid)
        self.peaks[current] = max(self.peaks.get(current, 0), peak)
        return peak

    def limit(self, resident: int) -> Stop | None:
        """The limit the session has passed, if any: memory, the adapter's timeout, a test's call timeout."""
        sup, now, current = self.sup, time.monotonic(), self.progress.current or "(start-up)"
        if sup.memory_budget and resident > sup.memory_budget:
            return Stop(
                "memory",
                current,
                f"exceeded the memory budget of {format_size(int(sup.memory_budget))} (the session "
                f"held {format_size(resident)}; killed); see logs/{self.log.name}",
            )
        if now - (self.progress.seen_at or self.start) > sup.timeout:  # the current adapter's, or start-up's
            return Stop("timeout", current, f"timed out after {sup.timeout:.0f} s (killed)")
        test, since = self.progress.running, self.progress.running_since
        if test is not None and since is not None and now - since > sup.call_timeout:
            return Stop(
                "hung",
                current,
                f"hung in {test}: no test started or finished for {now - since:.0f} s "
                f"(--call-timeout {sup.call_timeout:g} s; killed); see logs/{self.log.name}",
            )
        return None

    def entry(self, h: registry.AdapterHandle) -> dict[str, Any]:
        """The fields of `h`'s summary entry that the session itself says: time, log, memory, session."""
        started = self.progress.started
        seconds = self.progress.seconds(h.name, self.wall_start) if h.name in started else time.monotonic() - self.start
        t = traits(h.obj)
        e = {
            "name": h.name,
            "spec": h.spec,
            "seconds": round(seconds, 2),
            "log": f"logs/{self.log.name}",
            "framework": t.framework,
            "api": t.api,
            "session": [x.name for x in self.handles],
        }
        peak = max(self.peaks.get(h.name, 0), self.peaks.get("", 0) if started[:1] == [h.name] else 0)
        if peak:
            e["peak_rss_bytes"] = peak
        return e

    def complete(self, name: str) -> dict[str, Any]:
        """The entry of an adapter the session completed, from its progress records."""
        return _from_progress(self.by_name[name], self.progress, self.entry(self.by_name[name]))

    def collect(self) -> None:
        """Report every adapter not reported yet from the session's results file."""
        data = json.loads(self.results.read_text())
        code = self.code
        for h in self.handles:
            if h.name in self.reported:
                continue
            tests = [t for t in data["tests"] if t["adapter"] == h.name]
            versions = data["adapters"].get(h.name, {}).get("versions", {})
            e = summarize(tests, versions, {**self.entry(h), "exit_code": code})
            if code is not None and code not in (0, 1, 5) and code >= 0:
                e["status"] = "failed"
                e["reason"] = f"pytest exited with code {code}; see {e['log']}"
            e["results"] = _write_results(self.sup.stage, h.name, data, tests)
            self.sup.report(e)

    def attribute(self) -> list[registry.AdapterHandle]:
        """A session that crashed or was stopped: the adapters before the culprit are complete, the
        culprit crashed; return the adapters after it (all of them if no adapter had started)."""
        progress = self.progress
        stopped_at = self.stopped.adapter if self.stopped is not None else None
        culprit = progress.current if stopped_at is None else (stopped_at if stopped_at in self.by_name else None)
        if culprit is None and len(self.handles) > 1:
            return self.handles  # no adapter had started: nothing to attribute
        culprit = culprit or self.handles[0].name
        for name in progress.started:
            if name == culprit:
                break
            if name not in self.reported:
                self.sup.report(self.complete(name))
        self.sup.report(self.crashed(culprit))
        done = set(
            progress.started[: progress.started.index(culprit) + 1] if culprit in progress.started else [culprit]
        )
        return [h for h in self.handles if h.name not in done]

    def crashed(self, name: str) -> dict[str, Any]:
        """The entry of the adapter that crashed or was stopped, with why (and, when stopped for its memory
        or a hung test, the tests it completed before)."""
        e = {**self.entry(self.by_name[name]), "status": "crashed", "reason": self.crash_reason()}
        if self.stopped is not None and self.stopped.kind != "timeout" and self.progress.tests.get(name):
            done_so_far = summarize(self.progress.tests[name], self.progress.versions.get(name, {}), {})
            e.update(counts=done_so_far["counts"], failures=done_so_far["failures"])
        return e

    def crash_reason(self) -> str:
        if self.stopped is not None:
            return self.stopped.reason
        if self.code is not None and self.code < 0:
            return f"killed by signal {signal.Signals(-self.code).name}; see logs/{self.log.name}"
        tail = self.log.read_text(errors="replace")[-800:]
        return f"pytest exited with code {self.code} before writing results: {tail}"


def _free_tag(stage: Path, handles: list[registry.AdapterHandle]) -> str:
    """A name for a session's files not used yet in `stage`: the adapter's, or the group's."""
    tag = safe_name(handles[0].name if len(handles) == 1 else f"{group_key(handles[0])[0] or 'default'}-group")
    n = 0
    while (stage / "logs" / f"{tag}{'' if n == 0 else f'-{n}'}.log").exists():
        n += 1
    return tag if n == 0 else f"{tag}-{n}"


def _from_progress(h: registry.AdapterHandle, progress: Progress, entry: dict[str, Any]) -> dict[str, Any]:
    """The entry of a complete adapter from its session's progress records (and its results file)."""
    tests = progress.tests.get(h.name, [])
    e = summarize(tests, progress.versions.get(h.name, {}), entry)
    stage = progress.path.parent.parent
    e["results"] = _write_results(stage, h.name, {"adapters": {h.name: {"versions": e["versions"]}}}, tests)
    return e


def audits(stage: Path) -> dict[str, dict[str, Any]]:
    """What the sessions measured for the audit (``--attnconf-audit``, `attnconf.audit.measured`
    JSON): "audit" and "bank", each by adapter name. Sessions that died before the end wrote none;
    their adapters are missing here (and are audited in worker processes)."""
    from attnconf.audit import measured as transfer

    merged: dict[str, dict[str, Any]] = {"audit": {}, "bank": {}}
    for path in sorted((stage / "sessions").glob("*.audit.json")):
        part = transfer.loads(path.read_text(encoding="utf-8"))
        for key in merged:
            merged[key].update(part[key])
    return merged


def _write_results(stage: Path, name: str, data: dict[str, Any], tests: list[dict[str, Any]]) -> str:
    """One adapter's share of a session's results, as ``results/<adapter>.json``; its relative path."""
    payload = {
        "schema": data.get("schema", "attnconf.results/1"),
        "exitstatus": data.get("exitstatus"),
        "adapters": {k: v for k, v in data.get("adapters", {}).items() if k == name},
        "skipped": {},
        "tests": tests,
    }
    path = stage / "results" / f"{safe_name(name)}.json"
    path.write_text(json.dumps(payload, indent=1))
    return f"results/{path.name}"
