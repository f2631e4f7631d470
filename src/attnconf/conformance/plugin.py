"""The pytest plugin (registered under `pytest11` as `attnconf`).

Options: ``--adapter NAME|module:attr`` (repeatable; default every installed adapter),
``--dtype`` (repeatable; default all four), ``--attnconf-isolation auto|none``,
``--attnconf-timeout SECONDS``, ``--attnconf-json PATH``, ``--attnconf-progress PATH``,
``--attnconf-audit PATH``, ``--attnconf-memory-budget SIZE``.

Tests in `attnconf.conformance` (or marked ``@pytest.mark.attnconf``) that request the
`adapter` fixture are parametrised over the selected adapters, and over dtypes if they
request `dtype`; ids read ``test_name[adapter-dtype]``. Outside those tests the plugin is
inert, so installing attnconf never changes another project's test run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
import warnings
from typing import Any

import pytest
from hypothesis import is_hypothesis_test

from attnconf.adapters import registry
from attnconf.adapters.worker import DEFAULT_TIMEOUT, RemoteAdapter, WorkerPool
from attnconf.conformance import expected, profiles
from attnconf.conformance.check import Checker
from attnconf.reference._checks import FLOAT_DTYPES

_STATE = pytest.StashKey[dict[str, Any]]()
_RECORDS = pytest.StashKey[list[dict[str, Any]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attnconf", "attention conformance")
    group.addoption("--adapter", action="append", default=None, metavar="NAME",
                    help="adapter to test: an entry-point name or module:attr (repeatable; default every installed adapter)")
    group.addoption("--dtype", action="append", default=None, choices=FLOAT_DTYPES,
                    help="precision to test (repeatable; default all four)")
    group.addoption("--attnconf-isolation", default="auto", choices=("auto", "none"),
                    help="auto: adapters with a process group run in worker processes; none: all in this process")
    group.addoption("--attnconf-timeout", type=float, default=DEFAULT_TIMEOUT,
                    help="seconds one adapter call may take in a worker before it is killed")
    group.addoption("--attnconf-json", default=None, metavar="PATH",
                    help="write per-test results (outcome, errors, tolerance) as JSON to PATH")
    group.addoption("--attnconf-progress", default=None, metavar="PATH",
                    help="run the tests adapter by adapter and append one JSON line per event to PATH "
                         "(an adapter's start, each test's result): how `attnconf run` follows a session")
    group.addoption("--attnconf-audit", default=None, metavar="PATH",
                    help="after the tests, audit the selected adapters in this process and pickle the "
                         "measurements to PATH (how `attnconf run` audits without importing each framework again)")
    group.addoption("--attnconf-weights", default=None, metavar="FILE",
                    help="also check agreement on these canonical weights (.npz or .safetensors)")
    group.addoption("--attnconf-long", action="store_true", default=False,
                    help="run the long-sequence chapter (test_long, up to N=16384) outside the thorough profile")
    group.addoption("--attnconf-memory-budget", default=None, metavar="SIZE", type=_memory_size,
                    help="resident memory a case may need and a worker process may hold, e.g. 8GiB (default: "
                         "half the memory available when the session starts); cases estimated past it are "
                         "skipped, workers past it are stopped")
    parser.addini("attnconf_adapters", "default adapter selection", type="linelist", default=[])


def _memory_size(text: str) -> int:
    from attnconf.bench.memory import parse_size

    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


_BUDGET = pytest.StashKey[int]()


def memory_budget(config: pytest.Config) -> int:
    """Bytes: ``--attnconf-memory-budget``, else half the memory available when first asked (once per session)."""
    if _BUDGET not in config.stash:
        from attnconf.bench.memory import default_budget

        config.stash[_BUDGET] = config.getoption("attnconf_memory_budget", None) or default_budget()
    return config.stash[_BUDGET]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "attnconf: a conformance test parametrised over adapters")
    config.addinivalue_line("markers", "chapter(name): the spec chapter a conformance test checks")
    config.stash[_RECORDS] = []
    # The chapters' Hypothesis profile: the user's --hypothesis-profile, else `ci` (profiles.py).
    profiles.configure(config.getoption("hypothesis_profile", None), config.getoption("hypothesis_seed", None))


def _is_conformance(module_name: str, definition: Any) -> bool:
    return module_name.startswith("attnconf.conformance.") or definition.get_closest_marker("attnconf") is not None


def state(config: pytest.Config) -> dict[str, Any]:
    """Selected adapters, resolved once per session."""
    if _STATE in config.stash:
        return config.stash[_STATE]
    specs = config.getoption("adapter") or config.getini("attnconf_adapters") or None
    try:
        handles, skipped = registry.select(specs)
    except registry.AdapterError as err:
        raise pytest.UsageError(str(err)) from None
    pool = WorkerPool(timeout=config.getoption("attnconf_timeout"), memory_limit=memory_budget(config))
    isolate = config.getoption("attnconf_isolation") == "auto"
    adapters = []
    for h in handles:
        group = getattr(h.obj, "process_group", None)
        adapters.append(RemoteAdapter(h.spec, h.obj, pool) if isolate and group else registry.instantiate(h.obj))
    try:
        diffs = expected.load(adapters)
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None
    st = {"handles": handles, "skipped": skipped, "adapters": adapters, "pool": pool,
          "dtypes": config.getoption("dtype") or list(FLOAT_DTYPES), "differences": diffs,
          "specs": {h.name: h.spec for h in handles}}
    config.stash[_STATE] = st
    return st


def pytest_report_header(config: pytest.Config) -> list[str]:
    if not any("attnconf" in str(arg) for arg in config.args):
        return []  # not a conformance run: stay out of the way
    st = state(config)
    lines = ["attnconf adapters:"]
    for a in st["adapters"]:
        versions = ", ".join(f"{k} {v}" for k, v in adapter_versions(a).items())
        lines.append(f"  {a.name} ({versions})")
    for h in st["skipped"]:
        lines.append(f"  {h.name}: skipped, {h.missing}")
    lines.append(f"attnconf dtypes: {', '.join(st['dtypes'])}")
    lines.append(profiles.describe())
    return lines


def adapter_versions(adapter: Any) -> dict[str, str]:
    """Versions without starting a worker when the class says which distributions it uses."""
    from attnconf.adapters.support import distribution_versions

    dists = getattr(adapter, "distributions", None) or getattr(getattr(adapter, "cls", None), "distributions", None)
    return distribution_versions(tuple(dists)) if dists else dict(adapter.versions())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "adapter" not in metafunc.fixturenames or not _is_conformance(metafunc.module.__name__, metafunc.definition):
        return
    st = state(metafunc.config)
    if "dtype" in metafunc.fixturenames:
        params = []
        for a in st["adapters"]:
            for d in st["dtypes"]:
                marks = []
                if d not in a.capabilities.dtypes:
                    marks.append(pytest.mark.skip(reason=f"{a.name} does not run {d} (capabilities.dtypes)"))
                params.append(pytest.param(a, d, id=f"{a.name}-{d}", marks=marks))
        metafunc.parametrize("adapter,dtype", params)
    else:
        metafunc.parametrize("adapter", [pytest.param(a, id=a.name) for a in st["adapters"]])


def _param(item: pytest.Item, name: str) -> Any:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(name) if callspec is not None else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _STATE not in config.stash:
        return
    for item in items:
        adapter = _param(item, "adapter")
        if adapter is None:
            continue
        for diff in config.stash[_STATE]["differences"]:
            if diff.applies(adapter.name, item.name, _param(item, "dtype")):
                diff.matched.append(item.nodeid)
                item.add_marker(pytest.mark.xfail(reason=f"expected difference: {diff.reason} ({diff.link})", strict=False))
                item.stash[_DIFF] = diff
                if not config.option.runxfail:
                    _plain_tracebacks(item)
                break


def _plain_tracebacks(item: pytest.Item) -> None:
    """Format this item's failures as Python's plain traceback.

    A declared difference's failure is reported by its reason, never by its traceback, yet
    pytest formats that traceback in full (the source of every frame, the arguments of every
    call, through dozens of framework frames): a quarter of a JAX adapter's run went there.
    """
    item.repr_failure = lambda excinfo, **_: excinfo.getrepr(style="native")  # type: ignore[method-assign]


_DIFF = pytest.StashKey[expected.Difference]()


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """With ``--attnconf-progress``: run adapter by adapter (each adapter's tests in their order),
    so that a session's progress tells which adapters are complete when it crashes or hangs.
    After collection and every reordering plugin (pytest-randomly shuffles, say): this order wins."""
    config = session.config
    if _STATE not in config.stash or not config.getoption("attnconf_progress"):
        return
    order = {a.name: i for i, a in enumerate(config.stash[_STATE]["adapters"])}
    session.items.sort(key=lambda item: order.get(getattr(_param(item, "adapter"), "name", None), -1))


@pytest.fixture
def check(request: pytest.FixtureRequest, adapter: Any) -> Checker:
    """A `Checker` bound to this test's adapter and dtype."""
    dtype = request.node.callspec.params.get("dtype", "float64")
    chapter = request.node.name.split("[")[0]
    reproduce = "pytest --pyargs attnconf.conformance " + " ".join(
        [f"--adapter {shlex.quote(state(request.config)['specs'].get(adapter.name, adapter.name))}", f"--dtype {dtype}",
         f"-k {shlex.quote(chapter)}"]
    )
    if is_hypothesis_test(request.function):
        reproduce += " " + profiles.reproduce_options()
    checker = Checker(adapter=adapter, dtype=dtype, nodeid=request.node.nodeid, reproduce=reproduce)
    request.node.stash[_CHECKER] = checker
    return checker


_CHECKER = pytest.StashKey[Checker]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """A declared difference is expected to fail: its first failing example decides the outcome,
    so Hypothesis does not shrink it (`profiles.first_failure_only`)."""
    test = getattr(item, "obj", None)
    if _DIFF not in item.stash or test is None or not is_hypothesis_test(test):
        return (yield)
    with profiles.first_failure_only(test):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    adapter = _param(item, "adapter")
    if adapter is None or _STATE not in item.config.stash:
        return report
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        diff = item.stash.get(_DIFF, None)
        outcome = "xfailed" if hasattr(report, "wasxfail") and report.skipped else report.outcome
        if hasattr(report, "wasxfail") and report.passed:
            outcome = "xpassed"
            if diff is not None:
                diff.passed.append(item.nodeid)
        checker = item.stash.get(_CHECKER, None)
        record = {
            "nodeid": item.nodeid, "test": item.name.split("[")[0], "adapter": adapter.name,
            "dtype": _param(item, "dtype"), "outcome": outcome,
            "message": "" if report.passed else _short(report),
            "measurements": checker.records if checker else [],
            "duration": report.duration,
        }
        item.config.stash[_RECORDS].append(record)
        _progress(item.config, {"event": "test", **record})
    return report


_STARTED = pytest.StashKey[str]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """With ``--attnconf-progress``: announce an adapter when its first test starts."""
    adapter = _param(item, "adapter")
    if adapter is None or not item.config.getoption("attnconf_progress"):
        return
    if item.config.stash.get(_STARTED, None) != adapter.name:
        item.config.stash[_STARTED] = adapter.name
        _progress(item.config, {"event": "start", "adapter": adapter.name, "time": time.time(),
                                "versions": adapter_versions(adapter)})


def _progress(config: pytest.Config, event: dict[str, Any]) -> None:
    """Append `event` as one JSON line to ``--attnconf-progress`` (flushed: a reader may be waiting)."""
    path = config.getoption("attnconf_progress")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event, default=_json_default) + "\n")


def _short(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail)
    text = report.longreprtext
    return text[-4000:]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if _STATE not in config.stash:
        return
    import fnmatch

    names = [a.name for a in config.stash[_STATE]["adapters"]]
    # an entry for an adapter that was not selected, or for releases other than the installed
    # one, is not stale, only not exercised here
    relevant = [d for d in config.stash[_STATE]["differences"]
                if any(fnmatch.fnmatchcase(n, d.adapter) for n in names) and d.version_in_range()]
    stale = [d for d in relevant if not d.matched or (d.passed and len(d.passed) == len(d.matched))]
    for d in stale:
        why = "matches no collected test" if not d.matched else "every matching test passed"
        msg = f"stale expected difference {d.describe()}: {why}"
        terminalreporter.write_line(f"attnconf: {msg}", yellow=True)
        warnings.warn(msg, stacklevel=1)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if _STATE not in config.stash:
        return
    path = config.getoption("attnconf_json")
    if path:
        st = config.stash[_STATE]
        payload = {
            "schema": "attnconf.results/1",
            "exitstatus": int(exitstatus),
            "adapters": {a.name: {"versions": adapter_versions(a), "capabilities": a.capabilities.as_dict(),
                                  "framework": getattr(a, "framework", ""), "api": getattr(a, "api", "")}
                         for a in st["adapters"]},
            "skipped": {h.name: h.missing for h in st["skipped"]},
            "tests": config.stash[_RECORDS],
        }
        from attnconf.atomicio import write_text_atomic

        write_text_atomic(path, json.dumps(payload, indent=1, default=_json_default))
    _progress(config, {"event": "end", "time": time.time(), "exitstatus": int(exitstatus)})
    audit = config.getoption("attnconf_audit")
    if audit:
        _audit_here(config.stash[_STATE], audit)
    config.stash[_STATE]["pool"].close()


def _audit_here(st: dict[str, Any], path: str) -> None:
    """The behaviour audit and the real-weights pictures of this session's adapters, measured here
    and pickled to `path` for `attnconf run` (its own process reads them). If this fails, `path` is
    not written and `attnconf run` audits these adapters in worker processes instead."""
    import pickle

    from attnconf.atomicio import write_bytes_atomic
    from attnconf.audit.bank import bank_row
    from attnconf.audit.runner import measure_here

    adapters = st["adapters"]
    try:
        measured = {"audit": measure_here(adapters, st["handles"]), "bank": {a.name: bank_row(a) for a in adapters}}
        data = pickle.dumps(measured, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:  # the conformance results stand; the audit is taken elsewhere
        warnings.warn(f"attnconf: the in-session audit failed ({type(err).__name__}: {err}); "
                      "attnconf run audits these adapters in worker processes", stacklevel=1)
        return
    write_bytes_atomic(path, data)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


