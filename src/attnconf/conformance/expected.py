"""Declared departures from the spec: data with a signature, never `if` in a test.

An entry (a TOML table ``[[difference]]``, or a dict) names, literally:

- ``adapter``: an adapter name, or a list of them;
- ``test``: a test function name (``test_agreement``), or a list of them;
- ``case`` (optional): parameter ids after ``adapter-dtype`` (``"scale"``, ``"mqa"``), or a list;
- ``dtype`` (optional): a precision, or a list of them;
- ``versions`` (required): the releases it applies to, a requirement on a distribution
  (``"jax>=0.4.36,<0.11"``), or a list of them that must all hold;
- ``reason`` and ``link``: what differs, measured, and the upstream issue or documentation;

and a signature of what it tolerates, at least one of:

- ``max_abs``: the largest absolute error allowed in any measurement of the failing example, and/or
  ``max_ratio``: the largest error / derived tolerance allowed (the checker's ``ratio``; > 1);
- ``raises``: the name of the exception class (or of one of its bases) the failure raises,
  with ``match``: a regular expression searched in its message (optional).

A matching test runs. A failure within the signature is XFAIL; a failure beyond the bound, or of
another kind, is FAILED with a message that starts "exceeds the declared departure"; a pass is
XPASS (not strict: a departure seen on some Hypothesis draws may not show on others). On a full
collection, an entry whose every exercised test passed, or that matches no collected test, is
reported as stale.

Entries come from the TOML files in `expected/` beside this module (one per framework) and from an
adapter's own `expected_differences` attribute (a list of dicts with the same keys), so third-party
adapters declare theirs without touching this package.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnconf.reference._checks import FLOAT_DTYPES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATA_DIR = Path(__file__).with_name("expected")
KEYS = ("adapter", "test", "case", "dtype", "versions", "reason", "link", "max_abs", "max_ratio", "raises", "match")
_TEST_NAME = re.compile(r"test_\w+\Z")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_0-9.]*\Z")
_PATTERN_CHARS = set("*?")


@dataclass
class Difference:
    """One declared departure. Names are literal; `versions` holds requirement strings."""

    adapter: tuple[str, ...]
    test: tuple[str, ...]
    reason: str
    link: str
    versions: tuple[str, ...]
    case: tuple[str, ...] = ()
    dtype: tuple[str, ...] = ()
    max_abs: float | None = None
    max_ratio: float | None = None
    raises: str | None = None
    match: str | None = None
    source: str = ""
    #: node ids of the collected tests it matches, and what happened to them ("xfailed",
    #: "xpassed", "failed"; absent: not run)
    matched: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)
    #: the adapter and test names of the collected tests it matched
    seen_adapters: set[str] = field(default_factory=set)
    seen_tests: set[str] = field(default_factory=set)

    def applies(self, adapter_name: str, test_name: str, dtype: str | None, case: str = "") -> bool:
        """Whether this entry covers the test `test_name` (no parameters) of `adapter_name`."""
        if adapter_name not in self.adapter or test_name not in self.test:
            return False
        if self.dtype and dtype not in self.dtype:
            return False
        if self.case and case not in self.case:
            return False
        return self.version_in_range()

    def version_in_range(self) -> bool:
        from packaging.requirements import Requirement

        from attnconf.contract import installed_version

        for spec in self.versions:
            req = Requirement(spec)
            installed = installed_version(req.name)
            if installed is None or not req.specifier.contains(installed, prereleases=True):
                return False
        return True

    def bound(self) -> str:
        """The signature in words: "max_ratio 40, raises ValueError matching '...'"."""
        parts = []
        if self.max_abs is not None:
            parts.append(f"max_abs {self.max_abs:.3g}")
        if self.max_ratio is not None:
            parts.append(f"max_ratio {self.max_ratio:.3g} (error / derived tolerance)")
        if self.raises is not None:
            parts.append(f"raises {self.raises}" + (f" matching {self.match!r}" if self.match else ""))
        return ", ".join(parts)

    def describe(self) -> str:
        def one(values: tuple[str, ...]) -> str:
            return values[0] if len(values) == 1 else "[" + ", ".join(values) + "]"

        text = f"{one(self.adapter)} / {one(self.test)}"
        if self.case:
            text += f" / case {one(self.case)}"
        if self.dtype:
            text += f" / {one(self.dtype)}"
        return text + f" / {', '.join(self.versions)} ({self.source})"

    # -- judging a failure ---------------------------------------------------------------------

    def within_numbers(self, records: list[dict[str, Any]]) -> tuple[bool, str]:
        """Whether a tolerance failure with these measurements (one example's) is within the bound.

        Returns (within, what was measured). Only a failure on the numbers qualifies: at least one
        measurement must exceed its tolerance (else the failure was something else)."""
        if self.max_abs is None and self.max_ratio is None:
            return False, "a failure on the numbers, and this entry declares no error bound"
        if not records:
            return False, "no measurement was recorded"
        worst_abs = max(_float(r.get("max_abs")) for r in records)
        worst_ratio = max(ratio(r) for r in records)
        measured = f"max_abs {worst_abs:.3g}, ratio {worst_ratio:.3g} (error / derived tolerance)"
        if not worst_ratio > 1:
            return False, f"{measured}: every measurement is within its tolerance, so the failure is not on the numbers"
        if any(r.get("nan_mismatch") is not None for r in records):
            return False, f"{measured}, with a non-finite value where the reference is finite"
        ok = (self.max_abs is None or worst_abs <= self.max_abs) and (
            self.max_ratio is None or worst_ratio <= self.max_ratio
        )
        return ok, measured

    def within_exception(self, exc: BaseException) -> tuple[bool, str]:
        """Whether a raised exception is the declared one (type name in its MRO, message matches)."""
        text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        if self.raises is None:
            return False, f"raised {text}, and this entry declares no exception"
        names = {c.__name__ for c in type(exc).__mro__}
        remote = getattr(exc, "type_name", None)  # raised in a worker process (worker.AdapterCallError)
        if isinstance(remote, str):
            names |= {remote, remote.rsplit(".", 1)[-1]}
        if self.raises not in names:
            return False, f"raised {text}"
        if self.match is not None and not re.search(self.match, str(exc)):
            return False, f"raised {text} (the message does not match)"
        return True, f"raised {text}"


def ratio(record: dict[str, Any]) -> float:
    """A measurement's error / tolerance: its `ratio`, else max_abs / atol (inf where atol is 0)."""
    if record.get("ratio") is not None:
        return _float(record["ratio"])
    err, atol = _float(record.get("max_abs")), _float(record.get("atol"))
    if atol > 0:
        return err / atol
    return 0.0 if err == 0 else math.inf


def _float(x: Any) -> float:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return math.inf
    return math.inf if math.isnan(value) else value


# -- parsing ---------------------------------------------------------------------------------


class EntryError(ValueError):
    """An invalid entry: says where, what, what was expected and what was received."""


def _names(where: str, key: str, value: Any, *, required: bool, check: Any, expected: str) -> tuple[str, ...]:
    if value is None:
        if required:
            raise EntryError(f"{where}: `{key}` is required: expected {expected}, received nothing")
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise EntryError(
            f"{where}: `{key}` is invalid: expected {expected} (a string or a non-empty list of them), "
            f"received {value!r}"
        )
    for v in values:
        problem = check(v)
        if problem:
            raise EntryError(f"{where}: `{key}` value {v!r} is invalid: expected {expected}; {problem}")
    return tuple(values)


def _literal_adapter(v: str) -> str | None:
    if not v.strip():
        return "received an empty name"
    if _PATTERN_CHARS & set(v) or "[[]" in v or "[]]" in v:
        return "received a pattern (names are literal, no fnmatch)"
    return None


def _literal_test(v: str) -> str | None:
    if not _TEST_NAME.match(v):
        return "received something else (no parameters, no patterns: the case goes in `case`)"
    return None


def _literal_case(v: str) -> str | None:
    if not v or _PATTERN_CHARS & set(v) or "[" in v:
        return "received a pattern or an empty id"
    return None


def _dtype(v: str) -> str | None:
    return None if v in FLOAT_DTYPES else f"received an unknown precision (one of {', '.join(FLOAT_DTYPES)})"


def _requirement(v: str) -> str | None:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(v)
    except InvalidRequirement as err:
        return f"received an invalid requirement ({err})"
    if not str(req.specifier):
        return "received a distribution without a version range"
    return None


def _bound(where: str, key: str, value: Any, minimum: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= minimum:
        raise EntryError(f"{where}: `{key}` is invalid: expected a finite number > {minimum:g}, received {value!r}")
    return float(value)


def parse_entry(entry: Any, where: str) -> Difference:
    """One entry (a dict) as a `Difference`, or `EntryError` naming `where` (file and entry number)."""
    if not isinstance(entry, dict):
        raise EntryError(f"{where}: expected a table of keys {KEYS}, received {type(entry).__name__}")
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise EntryError(f"{where}: unknown keys {unknown}: expected keys among {KEYS}")
    for key in ("reason", "link"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise EntryError(f"{where}: `{key}` is required: expected a non-empty string, received {entry.get(key)!r}")
    adapter = _names(
        where,
        "adapter",
        entry.get("adapter"),
        required=True,
        check=_literal_adapter,
        expected="a literal adapter name like 'jax.nn.dot_product_attention'",
    )
    test = _names(
        where,
        "test",
        entry.get("test"),
        required=True,
        check=_literal_test,
        expected="a literal test function name like 'test_agreement'",
    )
    case = _names(
        where,
        "case",
        entry.get("case"),
        required=False,
        check=_literal_case,
        expected="a literal parameter id like 'scale'",
    )
    dtype = _names(where, "dtype", entry.get("dtype"), required=False, check=_dtype, expected="a precision")
    versions = _names(
        where,
        "versions",
        entry.get("versions"),
        required=True,
        check=_requirement,
        expected="a version range of the framework's distribution like 'jax>=0.4.36,<0.11'",
    )
    max_abs = _bound(where, "max_abs", entry.get("max_abs"), 0.0)
    max_ratio = _bound(where, "max_ratio", entry.get("max_ratio"), 1.0)
    raises, match = entry.get("raises"), entry.get("match")
    if raises is not None and (not isinstance(raises, str) or not _IDENTIFIER.match(raises)):
        raise EntryError(
            f"{where}: `raises` is invalid: expected an exception class name like 'ValueError', received {raises!r}"
        )
    if match is not None:
        if raises is None:
            raise EntryError(
                f"{where}: `match` needs `raises`: expected the exception class name too, received only match={match!r}"
            )
        try:
            re.compile(match)
        except (re.error, TypeError) as err:
            raise EntryError(
                f"{where}: `match` is invalid: expected a regular expression, received {match!r} ({err})"
            ) from None
    if max_abs is None and max_ratio is None and raises is None:
        raise EntryError(
            f"{where}: no signature: expected an error bound (`max_abs` or `max_ratio`) and/or an "
            f"exception (`raises`), received none of them"
        )
    return Difference(
        adapter=adapter,
        test=test,
        case=case,
        dtype=dtype,
        versions=versions,
        reason=entry["reason"].strip(),
        link=entry["link"].strip(),
        max_abs=max_abs,
        max_ratio=max_ratio,
        raises=raises,
        match=match,
        source=where,
    )


def parse(entries: Iterable[Any], source: str) -> list[Difference]:
    """The entries of one source (a file, an adapter), numbered from 1 in error messages."""
    if not isinstance(entries, list):
        raise EntryError(
            f"{source}: expected a list of entries ([[difference]] tables), received {type(entries).__name__}"
        )
    return [parse_entry(entry, f"{source}, entry #{i + 1}") for i, entry in enumerate(entries)]


def load_file(path: Path) -> list[Difference]:
    with path.open("rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise EntryError(
                f"expected/{path.name}: expected TOML, received a file that does not parse ({err})"
            ) from None
    unknown = sorted(set(data) - {"difference"})
    if unknown:
        raise EntryError(f"expected/{path.name}: unknown top-level keys {unknown}: expected only [[difference]] tables")
    return parse(data.get("difference", []), f"expected/{path.name}")


def load(adapters: list[Any]) -> list[Difference]:
    """The package's declared differences plus those the selected adapters declare."""
    diffs: list[Difference] = []
    for path in sorted(DATA_DIR.glob("*.toml")):
        diffs += load_file(path)
    for adapter in adapters:
        extra = getattr(adapter, "expected_differences", None) or []
        diffs += parse(list(extra), f"adapter {adapter.name}")
    return diffs
