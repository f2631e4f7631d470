"""Finding adapters: the `attnconf.adapters` entry-point group and `module:attr` paths.

This package's own adapters are registered in pyproject.toml exactly as an outside package
registers one. Loading an entry point imports the adapter module only: adapter modules import
their framework lazily, so listing adapters never imports a framework.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
from dataclasses import dataclass
from typing import Any

from attnconf.adapters import traits
from attnconf.contract import Capabilities

GROUP = "attnconf.adapters"


class AdapterError(Exception):
    """An adapter could not be found, loaded or validated."""


class UnknownAdapterError(AdapterError):
    """No adapter is registered under that name (a usage error, not a broken adapter)."""


@dataclass
class AdapterHandle:
    """One selected adapter: where it came from, and whether it can run here."""

    spec: str  # the entry-point name or module:attr path it was selected by
    name: str
    obj: Any | None  # the adapter class or instance (None if it failed to load)
    missing: str | None  # why it cannot run here, or None
    source: str  # "entry point NAME = VALUE" or "path MODULE:ATTR"

    @property
    def available(self) -> bool:
        return self.obj is not None and self.missing is None


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The registered adapters by entry-point name (nothing is imported)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}


def _load_path(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise UnknownAdapterError(f"Adapter path {path!r} is not of the form 'package.module:Attribute'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise AdapterError(f"Adapter path {path!r}: module {module_name!r} cannot be imported: {err}") from err
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            raise AdapterError(f"Adapter path {path!r}: {obj!r} has no attribute {part!r}.") from err
    return obj


def validate(obj: Any, source: str) -> Any:
    """Check that `obj` (a class or an instance) satisfies the contract; return it.

    The error names the plugin and every missing or ill-typed member.
    """
    problems = []
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        problems.append("`name` must be a non-empty str")
    caps = getattr(obj, "capabilities", None)
    if not isinstance(caps, Capabilities):
        problems.append(f"`capabilities` must be an attnconf.adapters.Capabilities, got {type(caps).__name__}")
    if not callable(getattr(obj, "versions", None)):
        problems.append("`versions()` method is missing")
    rotary_only = isinstance(caps, Capabilities) and caps.level == "rotary"
    if rotary_only and not callable(getattr(obj, "rotary_embedding", None)):
        problems.append("level='rotary' but `rotary_embedding(x, positions, dtype, *, layout, ...)` is missing")
    if not rotary_only and not callable(getattr(obj, "multi_head_attention", None)):
        problems.append("`multi_head_attention(inputs, weights, dtype)` method is missing")
    if isinstance(caps, Capabilities):
        if caps.level == "kernel" and not callable(getattr(obj, "dot_product_attention", None)):
            problems.append("level='kernel' but `dot_product_attention(q, k, v, mask, causal, scale, dtype)` is missing")
        if caps.weight_round_trip and not callable(getattr(obj, "round_trip_weights", None)):
            problems.append("weight_round_trip=True but `round_trip_weights(weights, dtype)` is missing")
    if problems:
        raise AdapterError(f"Adapter from {source} does not satisfy the attnconf adapter contract: " + "; ".join(problems) + ".")
    return obj


def _handle(spec: str, obj: Any, source: str) -> AdapterHandle:
    validate(obj, source)
    return AdapterHandle(spec=spec, name=obj.name, obj=obj, missing=traits.missing(obj), source=source)


def load(spec: str) -> AdapterHandle:
    """Load one adapter by entry-point name or `module:attr` path; raise `AdapterError`."""
    if ":" in spec:
        return _handle(spec, _load_path(spec), f"path {spec}")
    eps = entry_points()
    if spec not in eps:
        close = difflib.get_close_matches(spec, list(eps), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        known = ", ".join(sorted(eps)) or "none"
        raise UnknownAdapterError(f"Unknown adapter {spec!r}.{hint} Registered adapters: {known}.")
    ep = eps[spec]
    source = f"entry point {ep.name} = {ep.value}"
    try:
        obj = ep.load()
    except Exception as err:
        raise AdapterError(f"Adapter from {source} failed to load: {type(err).__name__}: {err}") from err
    handle = _handle(spec, obj, source)
    if handle.name != spec:
        raise AdapterError(f"Adapter from {source} is named {handle.name!r}; the entry-point name must equal it.")
    return handle


def discover() -> list[AdapterHandle]:
    """Every registered adapter; one that fails to load is returned with the reason."""
    handles = []
    for name, ep in sorted(entry_points().items()):
        try:
            handles.append(load(name))
        except AdapterError as err:
            handles.append(AdapterHandle(spec=name, name=name, obj=None, missing=str(err),
                                         source=f"entry point {ep.name} = {ep.value}"))
    return handles


def select(specs: list[str] | None) -> tuple[list[AdapterHandle], list[AdapterHandle]]:
    """Resolve a selection into (runnable, skipped).

    With no selection, every registered adapter whose framework is installed runs and the
    others are skipped with the reason. An adapter named explicitly must be runnable:
    otherwise `AdapterError` is raised.
    """
    if not specs:
        found = discover()
        return [h for h in found if h.available], [h for h in found if not h.available]
    chosen = []
    for spec in dict.fromkeys(specs):
        handle = load(spec)
        if handle.missing:
            raise AdapterError(f"Adapter {handle.name!r} was selected explicitly but cannot run: {handle.missing}.")
        chosen.append(handle)
    return chosen, []


def instantiate(obj: Any) -> Any:
    """An adapter instance from a class or an instance."""
    return obj() if inspect.isclass(obj) else obj
