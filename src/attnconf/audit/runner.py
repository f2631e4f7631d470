"""Running the audit: every selected adapter through every scenario, each adapter in a worker process.

Where each adapter runs is `attnconf.adapters.placement`'s decision: by default (isolation "all") every
adapter runs in a worker process, adapters with the same `process_group` and environment sharing one; "auto"
keeps adapters without a group in this process (as the pytest plugin does); "none" runs everything
here. Adapters of different workers run in parallel lanes (`jobs`); the report does not depend on the
order they finish in. Each adapter is measured where it lives (`adapter_audit.AdapterAudit`, one call
per scenario), so what comes back from a worker is plain JSON. A worker that crashes or hangs (killed
after `timeout` seconds in one scenario) costs that adapter the rest of its scenarios: its status is ``crashed`` with the reason, and the audit goes on.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from attnconf import __version__
from attnconf.adapters import registry
from attnconf.adapters.placement import ISOLATION, beside, open_adapter
from attnconf.adapters.traits import traits
from attnconf.adapters.worker import AdapterCallError, WorkerError, WorkerPool
from attnconf.audit import schema
from attnconf.audit.adapter_audit import AdapterAudit, decode_captures, result_json
from attnconf.audit.measure import codepaths
from attnconf.audit.measure.common import base
from attnconf.audit.scenarios import GROUPS, Scenario, select

DEFAULT_TIMEOUT = 120.0
Progress = Callable[[str], None]


class AuditInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM during the audit: `finished` and `unfinished` adapter names; no report written."""

    def __init__(self, finished: list[str], unfinished: list[str]):
        super().__init__(f"audit interrupted; unfinished: {', '.join(unfinished) or 'none'}")
        self.finished = finished
        self.unfinished = unfinished


class _Cancelled(Exception):
    pass


@dataclass
class _Audited:
    """One adapter's part of the report, filled by its lane."""

    handle: registry.AdapterHandle
    entry: dict[str, Any]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # by scenario id: outcome, detail, evidence
    example: dict[str, Any] | None = None
    captures: dict[str, Any] = field(default_factory=dict)  # encoded (`adapter_audit`)
    done: bool = False


def _entry(handle: registry.AdapterHandle, status: str, reason: str | None) -> dict[str, Any]:
    t = traits(handle.obj)
    caps = getattr(handle.obj, "capabilities", None)
    return {
        "framework": t.framework, "api": t.api,
        "level": getattr(caps, "level", None), "source": handle.source, "versions": {},
        "capabilities": caps.as_dict() if caps is not None else {}, "status": status, "reason": reason,
        "duration_s": 0.0,
    }


def _audit_adapter(item: _Audited, adapter: Any, scenarios: list[Scenario], cancel: threading.Event,
                   progress: Progress) -> None:
    if cancel.is_set():
        raise _Cancelled
    started = time.monotonic()
    name = item.handle.name
    if getattr(getattr(adapter, "capabilities", None), "level", None) == "rotary":
        for sc in scenarios:  # the scenarios observe attention; a rotary-only adapter has none
            item.results[sc.id] = _result("not_run", "not run: a rotary embedding only (capabilities.level='rotary')")
        item.done = True
        progress(f"audit: {name}: a rotary embedding only, no attention scenario applies")
        return
    progress(f"audit: {name}: starting")
    audit = beside(adapter, AdapterAudit)  # measured where the adapter lives: here, or in its worker
    try:
        item.entry["versions"] = {str(k): str(v) for k, v in dict(audit.versions()).items()}
    except Exception as err:
        if isinstance(err, WorkerError):
            reason = f"failed to load in its worker: {err}"
        elif isinstance(err, AdapterCallError):
            reason = f"failed to load: {err.type_name}: {err.message}"
        else:
            reason = f"failed to load: {type(err).__name__}: {err}"
        item.entry.update(status="crashed", reason=reason.strip()[:600])
        for sc in scenarios:
            item.results[sc.id] = _result("not_run", f"not run: the adapter {reason.strip()[:300]}")
        item.done = True
        progress(f"audit: {name}: crashed ({reason.splitlines()[0][:200]})")
        return
    crashed_in: str | None = None
    for sc in scenarios:
        if cancel.is_set():
            raise _Cancelled
        if crashed_in is not None:
            item.results[sc.id] = _result("not_run", f"not run: the worker crashed in scenario {crashed_in}")
            continue
        try:
            got = audit.scenario(sc.id)
        except WorkerError as err:
            msg = str(err)
            crashed_in = sc.id
            item.results[sc.id] = _result("crashed", msg.splitlines()[0], {"worker": msg[-1500:]})
            item.entry.update(status="crashed", reason=f"the worker crashed or hung in scenario {sc.id}: "
                              f"{msg.splitlines()[0]}")
        else:
            item.results[sc.id] = got["result"]
            item.captures.update(got["captures"])
    if crashed_in is None:
        try:
            got = audit.example()
        except WorkerError as err:
            item.example = {"error": str(err).splitlines()[0]}
        else:
            item.example = got["example"]
            item.captures.update(got["captures"])
    item.entry["duration_s"] = round(time.monotonic() - started, 3)
    item.done = True
    counts = sum(1 for r in item.results.values() if r["outcome"] not in ("not_run",))
    progress(f"audit: {name}: {item.entry['status']} ({counts} scenarios, {item.entry['duration_s']:.1f} s)")


def environment() -> dict[str, Any]:
    """Python, platform and device of this machine."""
    return {
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "device": _device(), "numpy": np.__version__,
    }


def _device() -> str:
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
            gpus = [line.split(" (UUID")[0] for line in out.splitlines() if line.startswith("GPU")]
            if gpus:
                return "cpu; " + "; ".join(gpus)
        except (OSError, subprocess.SubprocessError):
            pass
    return "cpu"


def measure_here(adapters: Sequence[Any], handles: Sequence[registry.AdapterHandle],
                 scenarios: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Audit `adapters` (instances, in this process; `handles` are their registry handles) and
    return each one's measurements by name, for `run_audit(measured=...)` in another process:
    plain JSON values (`json.dumps` takes them; captured arrays keep their dtype and every bit).

    `attnconf run` calls this at the end of a conformance session, where the framework is
    already imported: the audit then costs its scenarios, not another import per adapter.
    """
    by_name = {h.name: h for h in handles}
    per_adapter = [s for s in select(scenarios) if not s.cross]
    out: dict[str, dict[str, Any]] = {}
    for adapter in adapters:
        item = _Audited(by_name[adapter.name], {**_entry(by_name[adapter.name], "ok", None),
                                                 "measured_in": "conformance session"})
        _audit_adapter(item, adapter, per_adapter, threading.Event(), lambda line: None)
        out[adapter.name] = _measurement(item)
    return out


def _measurement(item: _Audited) -> dict[str, Any]:
    """One adapter's measurements, plain JSON values (what crosses from a conformance session)."""
    return {"entry": schema.jsonable(item.entry), "results": item.results, "example": item.example,
            "captures": item.captures}


def _result(outcome: str, detail: str, evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"outcome": outcome, "detail": detail, "evidence": evidence or {}}


def run_audit(
    handles: Sequence[registry.AdapterHandle], out_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None, *, scenarios: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT,
    isolation: str = "all", jobs: int | None = None, extra_sections: Sequence[tuple[str, str]] = (),
    measured: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Audit `handles` (from `registry.select`/`discover`; unavailable ones are reported as skipped).

    Returns the report (a JSON-ready dict valid against ``audit.schema.json``); with `out_dir`, also
    writes audit.json, audit.md and audit.html there (`write_reports`). `progress` receives one line
    per event. `scenarios` narrows the catalog by id (`KeyError` for unknown ids). `measured` holds
    adapters already audited elsewhere (`measure_here`, same scenarios), by name: they are taken as
    they are, the others are measured here. Raises `AuditInterrupted` on SIGINT (and SIGTERM where
    the caller maps it to KeyboardInterrupt): no report is written then, so a previous one stays intact.
    """
    if isolation not in ISOLATION:
        raise ValueError(f"isolation must be one of {ISOLATION}, got {isolation!r}")
    say: Progress = progress or (lambda line: None)
    chosen = select(scenarios)
    per_adapter = [s for s in chosen if not s.cross]
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.monotonic()
    pool = WorkerPool(timeout=timeout)
    items: list[_Audited] = []
    lanes: dict[Any, list[tuple[_Audited, Any]]] = {}
    for h in handles:
        if not h.available:
            items.append(_Audited(h, _entry(h, "skipped", h.missing or "not available"), done=True))
            continue
        if measured and h.name in measured:
            m = measured[h.name]
            items.append(_Audited(h, m["entry"], m["results"], m["example"], m["captures"], done=True))
            continue
        # every adapter without a process group gets its own worker (isolation "all")
        adapter, where = open_adapter(h, pool, isolation, own_group=f"audit:{h.spec}")
        item = _Audited(h, {**_entry(h, "ok", None),
                            "measured_in": "audit process" if where.in_process else "audit worker"})
        items.append(item)
        lanes.setdefault(where.lane, []).append((item, adapter))
    ran = [i for i in items if i.entry["status"] == "ok"]
    say(f"audit: {len(ran)} adapters, {len(items) - len(ran)} skipped, {len(chosen)} scenarios, "
        f"{len(lanes)} worker lanes" + (f"; {sum(1 for i in ran if i.done)} measured in their conformance session"
                                        if measured else ""))
    cancel = threading.Event()

    # Lanes with more adapters first: the slowest workers start early (the report's order is fixed anyway).
    ordered = sorted(lanes.values(), key=len, reverse=True)

    def lane_job(members: list[tuple[_Audited, Any]]) -> None:
        for item, adapter in members:
            _audit_adapter(item, adapter, per_adapter, cancel, say)

    n_jobs = max(1, min(jobs or min(4, os.cpu_count() or 1), len(lanes) or 1))
    try:
        if n_jobs == 1:
            for members in ordered:
                lane_job(members)
        else:
            with ThreadPoolExecutor(max_workers=n_jobs, thread_name_prefix="attnconf-audit") as ex:
                pending: set[Future[None]] = {ex.submit(lane_job, m) for m in ordered}
                try:
                    while pending:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for f in done:
                            f.result()
                except BaseException:
                    cancel.set()
                    pool.close()  # kills the workers: lanes waiting on them see the crash and stop
                    ex.shutdown(wait=True, cancel_futures=True)
                    pool.close()  # any worker a lane started meanwhile
                    raise
    except (KeyboardInterrupt, _Cancelled):
        cancel.set()
        pool.close()
        raise AuditInterrupted([i.handle.name for i in ran if i.done],
                               [i.handle.name for i in ran if not i.done]) from None
    finally:
        pool.close()
    report = _assemble(items, chosen, started_at, time.monotonic() - t0, isolation, timeout)
    if out_dir is not None:
        from attnconf.audit.report import write_reports

        write_reports(report, out_dir, extra_sections=extra_sections)
    return report


def _assemble(items: list[_Audited], chosen: list[Scenario], started_at: str, duration: float,
              isolation: str, timeout: float) -> dict[str, Any]:
    ran = [i for i in items if i.entry["status"] != "skipped"]
    cross: dict[str, dict[str, dict[str, Any]]] = {}
    for sc in chosen:
        if sc.cross:
            try:
                paths = codepaths.code_paths({i.handle.name: decode_captures(i.captures) for i in ran})
                cross[sc.id] = {name: result_json(r) for name, r in paths.items()}
            except Exception as err:  # a bug in the audit: reported as such, the report is still written
                trace = traceback.format_exc(limit=6)
                cross[sc.id] = {i.handle.name: _result("audit_error", f"the audit failed: {type(err).__name__}: {err}",
                                                      {"traceback": trace}) for i in ran}
    scenarios_out: dict[str, Any] = {}
    for sc in chosen:
        results = {}
        for i in ran:
            r = cross[sc.id][i.handle.name] if sc.cross else i.results[sc.id]
            results[i.handle.name] = {"outcome": r["outcome"], "detail": r["detail"], "evidence": r["evidence"]}
        scenarios_out[sc.id] = {
            "group": sc.group, "title": sc.title, "description": sc.description, "spec": sc.spec,
            "spec_note": sc.spec_note, "outcomes": sc.all_outcomes(), "setup": sc.setup,
            "reproduce": f"attnconf audit --adapter NAME --scenario {sc.id}",
            "results": results,
        }
    p = base()
    report = {
        "schema": schema.AUDIT_SCHEMA, "attnconf": __version__,
        "run": {"started": started_at, "duration_s": round(duration, 3), "isolation": isolation,
                "timeout_s": timeout, "scenarios": [s.id for s in chosen]},
        "environment": environment(),
        "adapters": {i.handle.name: i.entry for i in items},
        "groups": {g: t for g, t in GROUPS.items() if any(s.group == g for s in chosen)},
        "scenarios": scenarios_out,
        "example": {
            "description": "Effective attention weights of batch element 0, head 0 on the base probe (float32; "
                           "read off the output with one-hot values), the reference's, and |adapter - reference|.",
            "reference": p.reference()[0, 0],
            "adapters": {i.handle.name: i.example for i in ran if i.example is not None},
        },
    }
    return schema.jsonable(report)  # type: ignore[no-any-return]
