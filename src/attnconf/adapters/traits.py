"""The optional members of an adapter, read in one place with their defaults.

`attnconf.contract.Adapter` lists these members and `AdapterBase` gives them defaults, but an
adapter need not derive from it: one may leave any of them out. The defaults below apply then:

==========================  ===============================  ===========================================
member                      default                          used for
==========================  ===============================  ===========================================
``framework``               ``""``                           the report's framework column
``api``                     ``""``                           the report's API column
``distributions``           ``()``                           versions read without importing (else
                                                             ``versions()`` is called)
``process_group``           ``None`` (this process)          adapters of one group share a worker
``environment``             ``{}``                           variables its (worker) process needs
``expected_differences``    ``()``                           departures it declares (`conformance.expected`)
``missing()``               available                        why it cannot run here, importing nothing
==========================  ===============================  ===========================================

`traits(obj)` reads them from a class, an instance or a worker proxy; `missing(obj)` asks the
adapter whether it can run here. Nothing else in the package reads these members directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Traits:
    """An adapter's optional members, normalised (strings, tuples; `environment` sorted pairs)."""

    framework: str = ""
    api: str = ""
    distributions: tuple[str, ...] = ()
    process_group: str | None = None
    environment: tuple[tuple[str, str], ...] = ()
    expected_differences: tuple[Mapping[str, Any], ...] = ()

    @property
    def env(self) -> dict[str, str]:
        """`environment` as a dict (variable -> value)."""
        return dict(self.environment)


def traits(obj: Any) -> Traits:
    """The optional members of `obj` (an adapter class, instance or `RemoteAdapter`), defaults filled in."""
    group = getattr(obj, "process_group", None)
    return Traits(
        framework=str(getattr(obj, "framework", None) or ""),
        api=str(getattr(obj, "api", None) or ""),
        distributions=tuple(str(d) for d in getattr(obj, "distributions", None) or ()),
        process_group=str(group) if group else None,
        environment=tuple(sorted((str(k), str(v)) for k, v in dict(getattr(obj, "environment", None) or {}).items())),
        expected_differences=tuple(getattr(obj, "expected_differences", None) or ()),
    )


def missing(obj: Any) -> str | None:
    """Why the adapter `obj` cannot run here (its `missing()`), or None when it can or does not say."""
    check = getattr(obj, "missing", None)
    return check() if callable(check) else None
