"""Declared departures from the spec: data, with a reason and a link, never `if` in a test.

An entry names an adapter (fnmatch pattern), a test (fnmatch pattern on the test name with its
parameters, e.g. ``test_agreement[*-float16-causal_cross]``), optionally a dtype and a version
range (``"torch>=2.1,<2.5"``), a reason and an upstream link. A matching test runs and is
marked as an expected failure; if it passes anyway, or if the entry matches no collected test,
the entry is reported as stale.

Entries come from the TOML files in `expected/` beside this module (one per framework) and from an adapter's own
`expected_differences` attribute (a list of dicts with the same keys), so third-party adapters
declare theirs without touching this package.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATA_DIR = Path(__file__).with_name("expected")
REQUIRED = ("adapter", "test", "reason", "link")


@dataclass
class Difference:
    adapter: str
    test: str
    reason: str
    link: str
    dtype: str | None = None
    versions: str | None = None
    source: str = ""
    matched: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    def applies(self, adapter_name: str, test_name: str, dtype: str | None) -> bool:
        if not fnmatch.fnmatchcase(adapter_name, self.adapter):
            return False
        if not fnmatch.fnmatchcase(test_name, self.test):
            return False
        if self.dtype is not None and dtype != self.dtype:
            return False
        return self.version_in_range()

    def version_in_range(self) -> bool:
        if not self.versions:
            return True
        from packaging.requirements import Requirement

        req = Requirement(self.versions)
        try:
            installed = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            return False
        return req.specifier.contains(installed, prereleases=True)

    def describe(self) -> str:
        return f"{self.adapter} / {self.test}" + (f" / {self.dtype}" if self.dtype else "") + f" ({self.source})"


def parse(entries: list[dict[str, Any]], source: str) -> list[Difference]:
    out = []
    for i, entry in enumerate(entries):
        missing = [k for k in REQUIRED if not entry.get(k)]
        unknown = set(entry) - {"adapter", "test", "reason", "link", "dtype", "versions"}
        if missing or unknown:
            raise ValueError(
                f"{source}: expected difference #{i + 1} is invalid: expected keys {REQUIRED} "
                f"(+ optional dtype, versions); missing {missing}, unknown {sorted(unknown)}"
            )
        out.append(Difference(**entry, source=source))
    return out


def load(adapters: list[Any]) -> list[Difference]:
    """The package's declared differences plus those the selected adapters declare."""
    diffs: list[Difference] = []
    for path in sorted(DATA_DIR.glob("*.toml")):
        with path.open("rb") as f:
            diffs += parse(tomllib.load(f).get("difference", []), f"expected/{path.name}")
    for adapter in adapters:
        extra = getattr(adapter, "expected_differences", None) or []
        diffs += parse(list(extra), f"adapter {adapter.name}")
    return diffs
