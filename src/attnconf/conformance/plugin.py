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
from attnconf.adapters.placement import open_adapter
from attnconf.adapters.traits import traits
from attnconf.adapters.worker import DEFAULT_TIMEOUT, WorkerPool
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
                    help="auto: adapters with a process group (or an environment this process lacks) run in worker "
                         "processes; none: all in this process")
    group.addoption("--attnconf-timeout", type=float, default=DEFAULT_TIMEOUT,
                    help="seconds one adapter call may take in a worker before it is killed")
    group.addoption("--attnconf-json", default=None, metavar="PATH",
                    help="write per-test results (outcome, errors, tolerance) as JSON to PATH")
    group.addoption("--attnconf-progress", default=None, metavar="PATH",
                    help="run the tests adapter by adapter and append one JSON line per event to PATH "
                         "(an adapter's start, each test's begin, result and finish): how `attnconf run` follows a session")
    group.addoption("--attnconf-audit", default=None, metavar="PATH",
                    help="after the tests, audit the selected adapters in this process and write the "
                         "measurements to PATH as JSON (how `attnconf run` audits without importing each framework again)")
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
    from attnconf.memory import parse_size

    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


_BUDGET = pytest.StashKey[int]()


def memory_budget(config: pytest.Config) -> int:
    """Bytes: ``--attnconf-memory-budget``, else half the memory available when first asked (once per session)."""
    if _BUDGET not in config.stash:
        from attnconf.memory import default_budget

        config.stash[_BUDGET] = config.getoption("attnconf_memory_budget", None) or default_budget()
    return config.stash[_BUDGET]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "attnconf: a conformance test parametrised over adapters")
    config.addinivalue_line("markers", "chapter(name): the spec chapter a conformance test checks")
    config.stash[_RECORDS] = []
    if config.getoption("attnconf_progress", None):
        config.pluginmanager.register(_Heartbeat(config), "attnconf-heartbeat")
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
    isolation = config.getoption("attnconf_isolation")
    adapters = [open_adapter(h, pool, isolation)[0] for h in handles]
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

    dists = traits(adapter).distributions
    return distribution_versions(dists) if dists else dict(adapter.versions())


#: The chapters a rotary-only adapter (``capabilities.level == "rotary"``: a rotary embedding, no
#: attention) runs; every other chapter is skipped for it, with the reason (`_level_skip`).
ROTARY_CHAPTERS = ("attnconf.conformance.test_rotary",)


def _level_skip(adapter: Any, module_name: str) -> list[pytest.MarkDecorator]:
    """A skip mark for an attention chapter on a rotary-only adapter, else none."""
    if adapter.capabilities.level != "rotary" or module_name in ROTARY_CHAPTERS:
        return []
    chapter = module_name.rpartition(".")[2]
    return [pytest.mark.skip(reason=f"{adapter.name} implements a rotary embedding only (capabilities.level="
                                    f"'rotary'), no attention: {chapter} does not apply; test_rotary runs it")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "adapter" not in metafunc.fixturenames or not _is_conformance(metafunc.module.__name__, metafunc.definition):
        return
    st = state(metafunc.config)
    module = metafunc.module.__name__
    if "dtype" in metafunc.fixturenames:
        params = []
        for a in st["adapters"]:
            for d in st["dtypes"]:
                marks = _level_skip(a, module)
                if d not in a.capabilities.dtypes:
                    why = a.capabilities.limit(d)
                    marks.append(pytest.mark.skip(reason=f"{a.name} does not run {d} (capabilities.dtypes)"
                                                  + (f": {why}" if why else "")))
                params.append(pytest.param(a, d, id=f"{a.name}-{d}", marks=marks))
        metafunc.parametrize("adapter,dtype", params)
    else:
        metafunc.parametrize("adapter", [pytest.param(a, id=a.name, marks=_level_skip(a, module))
                                         for a in st["adapters"]])


def _param(item: pytest.Item, name: str) -> Any:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(name) if callspec is not None else None


def _case_id(item: pytest.Item, adapter: Any) -> str:
    """The parameter id after ``adapter-dtype`` ("scale" in ``test_agreement[numpy-float64-scale]``)."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return ""
    dtype = _param(item, "dtype")
    for prefix in ([f"{adapter.name}-{dtype}"] if dtype else []) + [adapter.name]:
        if callspec.id.startswith(prefix):
            return callspec.id[len(prefix):].lstrip("-")
    return callspec.id


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _STATE not in config.stash:
        return
    for item in items:
        adapter = _param(item, "adapter")
        if adapter is None:
            continue
        test_name = getattr(item, "originalname", None) or item.name.split("[")[0]
        for diff in config.stash[_STATE]["differences"]:
            if diff.applies(adapter.name, test_name, _param(item, "dtype"), _case_id(item, adapter)):
                diff.matched.append(item.nodeid)
                diff.seen_adapters.add(adapter.name)
                diff.seen_tests.add(test_name)
                item.stash[_DIFF] = diff
                if not config.option.runxfail:
                    _plain_tracebacks(item)
                break


@pytest.hookimpl(trylast=True)
def pytest_deselected(items: list[pytest.Item]) -> None:
    """Anything deselected (-k, -m, --lf, ...) makes the collection partial: no stale check."""
    if items:
        items[0].config.stash[_PARTIAL] = "tests were deselected"


_PARTIAL = pytest.StashKey[str]()


def _partial_collection(session: pytest.Session) -> str | None:
    """Why this session did not collect every chapter's every test, or None for a full collection."""
    import pkgutil

    import attnconf.conformance as package

    config = session.config
    if _PARTIAL in config.stash:
        return config.stash[_PARTIAL]
    if config.getoption("keyword", "") or config.getoption("markexpr", ""):
        return "tests were selected with -k or -m"
    if any("::" in str(arg) for arg in config.args):
        return "tests were selected by node id"
    chapters = {f"attnconf.conformance.{m.name}" for m in pkgutil.iter_modules(package.__path__)
                if m.name.startswith("test_")}
    collected = {getattr(getattr(item, "module", None), "__name__", "") for item in session.items}
    missing = sorted(chapters - collected)
    if missing:
        return f"{len(missing)} chapters were not collected ({', '.join(m.rsplit('.', 1)[-1] for m in missing[:3])}...)"
    return None


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
    if _STATE not in config.stash:
        return
    config.stash[_STATE]["partial"] = _partial_collection(session)
    if not config.getoption("attnconf_progress"):
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


@pytest.fixture(autouse=True)
def _junit_classname(request: pytest.FixtureRequest) -> None:
    """Under ``--junitxml``, a conformance test's ``classname`` is ``<adapter>.<chapter>`` (the file's
    default, ``attnconf.conformance.test_<chapter>``, would merge every adapter into one class)."""
    callspec = getattr(request.node, "callspec", None)
    adapter = callspec.params.get("adapter") if callspec is not None else None
    if adapter is None or not getattr(request.config.option, "xmlpath", None):
        return
    import warnings

    with warnings.catch_warnings():  # record_xml_attribute is marked experimental; its use here is stable
        warnings.simplefilter("ignore")
        record = request.getfixturevalue("record_xml_attribute")
        record("classname", f"{adapter.name}.{request.node.module.__name__.rsplit('.', 1)[-1]}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """A declared difference is judged by its failing example.

    Hypothesis re-raises the failure of the last example it ran (with shrinking off, the replay of
    the first failing example), so each example gets a fresh list of records and the last one's
    are kept in the item's stash (`_EXAMPLE`) for `pytest_runtest_makereport` to judge; the
    checker's records for the JSON results keep the worst measurement per (what, case) over all
    examples. The first failing example decides the outcome, so Hypothesis does not shrink it
    (`profiles.first_failure_only`): shrinking would spend dozens of further adapter calls, and
    the smallest failing example of a departure need not show the largest error."""
    test = getattr(item, "obj", None)
    if _DIFF not in item.stash or test is None or not is_hypothesis_test(test):
        return (yield)
    handle = getattr(test, "hypothesis", None)
    inner = getattr(handle, "inner_test", None)
    if inner is None:  # pragma: no cover - a Hypothesis release without the documented handle
        with profiles.first_failure_only(test):
            return (yield)

    def one_example(*args: Any, **kwargs: Any) -> Any:
        checker = item.stash.get(_CHECKER, None)
        if checker is None:
            return inner(*args, **kwargs)
        kept = checker.records
        checker.records = []
        try:
            return inner(*args, **kwargs)
        finally:
            item.stash[_EXAMPLE] = checker.records
            checker.records = _merge_records(kept, checker.records)

    handle.inner_test = one_example
    try:
        with profiles.first_failure_only(test):
            return (yield)
    finally:
        handle.inner_test = inner


_EXAMPLE = pytest.StashKey[list[dict[str, Any]]]()


def _merge_records(kept: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`kept` with `new` added: the worse (error / tolerance) of two records of the same (what, case)."""
    out = list(kept)
    for rec in new:
        for j, old in enumerate(out):
            if old.get("what") == rec.get("what") and old.get("case") == rec.get("case"):
                if expected.ratio(rec) > expected.ratio(old):
                    out[j] = rec
                break
        else:
            out.append(rec)
    return out


def _judge(item: pytest.Item, diff: expected.Difference, call: pytest.CallInfo[None],
           report: pytest.TestReport) -> str:
    """Apply a declared difference to a call report; returns the outcome for the JSON results."""
    label = f"expected difference: {diff.reason} ({diff.link})"
    if call.excinfo is None:
        report.wasxfail = label  # type: ignore[attr-defined]  # passed: XPASS, not strict
        diff.outcomes[item.nodeid] = "xpassed"
        return "xpassed"
    exc = call.excinfo.value
    if isinstance(exc, pytest.skip.Exception):
        return "skipped"
    within, measured = diff.within_exception(exc)
    if not within and isinstance(exc, (AssertionError, pytest.fail.Exception)):
        checker = item.stash.get(_CHECKER, None)
        records = item.stash.get(_EXAMPLE, None)
        if records is None:
            records = checker.records if checker is not None else []
        within_numbers, numbers = diff.within_numbers(records)
        within, measured = within_numbers, (numbers if diff.raises is None else f"{numbers}; {measured}")
    if within:
        report.outcome = "skipped"
        report.wasxfail = f"{label}; measured {measured}"  # type: ignore[attr-defined]
        diff.outcomes[item.nodeid] = "xfailed"
        return "xfailed"
    report.outcome = "failed"
    head = (f"exceeds the declared departure {diff.describe()}\n"
            f"  declared: {diff.bound()}\n"
            f"  measured: {measured}\n"
            f"  reason: {diff.reason} ({diff.link})\n\n")
    report.longrepr = head + str(report.longrepr)
    diff.outcomes[item.nodeid] = "failed"
    return "failed"


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
        if diff is not None and report.when == "call" and not item.config.option.runxfail:
            outcome = _judge(item, diff, call, report)
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


class _Heartbeat:
    """With ``--attnconf-progress``: each test's begin and finish (its teardown included) as events,
    the heartbeat by which `attnconf run` tells a hung test (``--call-timeout``) from a slow adapter."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        _progress(self.config, {"event": "begin", "nodeid": nodeid, "time": time.time()})

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        _progress(self.config, {"event": "finish", "nodeid": nodeid, "time": time.time()})


def _progress(config: pytest.Config, event: dict[str, Any]) -> None:
    """Append `event` as one JSON line to ``--attnconf-progress`` (flushed: a reader may be waiting)."""
    path = config.getoption("attnconf_progress")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event, default=_json_default) + "\n")


def _short(report: pytest.TestReport) -> str:
    """A failure's message for the results: the exception's own text (the claim, what disagreed and
    where, and a Hypothesis test's falsifying example) and where it was raised, without the
    traceback's source listings and arguments (a drawn mask printed there once filled the space)."""
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail)
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and crash.message:  # ends like a traceback: "path:line: ExceptionType"
        text = f"{crash.message}\n\n{crash.path}:{crash.lineno}: {crash.message.split(':', 1)[0].strip()}"
    else:
        text = report.longreprtext
    if len(text) <= 8000:
        return text
    return text[:5000] + f"\n[... {len(text) - 8000} characters cut ...]\n" + text[-3000:]


def stale_differences(st: dict[str, Any]) -> list[tuple[expected.Difference, str]]:
    """The declared differences this session shows to be stale, with why; none on a partial collection.

    An entry for an adapter or a dtype that was not selected, or for releases other than the
    installed ones, is not stale, only not exercised here; nor is one whose tests were all skipped."""
    if st.get("partial") is not None:
        return []
    names = {a.name for a in st["adapters"]}
    out = []
    for d in st["differences"]:
        if not (names & set(d.adapter)) or not d.version_in_range():
            continue
        if d.dtype and not set(d.dtype) & set(st["dtypes"]):
            continue
        if not d.matched:
            out.append((d, "matches no collected test"))
            continue
        unused = sorted(set(d.test) - d.seen_tests) + sorted((set(d.adapter) & names) - d.seen_adapters)
        if unused:
            out.append((d, f"{', '.join(unused)} matches no collected test"))
            continue
        ran = [o for o in d.outcomes.values() if o in ("xpassed", "xfailed", "failed")]
        if ran and all(o == "xpassed" for o in ran):
            out.append((d, f"every matching test that ran passed ({len(ran)})"))
    return out


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if _STATE not in config.stash:
        return
    for d, why in stale_differences(config.stash[_STATE]):
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
                                  "framework": traits(a).framework, "api": traits(a).api}
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
    and written to `path` as JSON (`attnconf.audit.measured`) for `attnconf run`. If this fails, `path`
    is not written and `attnconf run` audits these adapters in worker processes instead."""
    from attnconf.atomicio import write_text_atomic
    from attnconf.audit import measured as transfer
    from attnconf.audit.bank import bank_row
    from attnconf.audit.runner import measure_here

    adapters = st["adapters"]
    try:
        measured = {"audit": measure_here(adapters, st["handles"]), "bank": {a.name: bank_row(a) for a in adapters}}
        data = transfer.dumps(measured)
    except Exception as err:  # the conformance results stand; the audit is taken elsewhere
        warnings.warn(f"attnconf: the in-session audit failed ({type(err).__name__}: {err}); "
                      "attnconf run audits these adapters in worker processes", stacklevel=1)
        return
    write_text_atomic(path, data)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


