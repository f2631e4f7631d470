"""Where an adapter runs: in this process, or in a worker process behind a `RemoteAdapter` proxy.

Every part of the package that runs adapters (the pytest plugin, the audit, the real-weights
pictures) asks here: `place` decides, `build` makes the instance or the proxy, `open_adapter`
does both. The decision depends on the adapter's declared `process_group` and `environment`
(`attnconf.adapters.traits`) and on the caller's isolation policy:

``"none"``
    every adapter in this process;
``"auto"``
    in a worker when the adapter declares a process group, or an environment this process does
    not have (it could not be honoured here); otherwise in this process;
``"all"``
    every adapter in a worker; one without a process group gets a worker of its own
    (`own_group`), so that its crash costs only itself.

Adapters placed in the same group with the same environment share one worker (`Placement.lane`).
`beside(adapter, Helper)` builds a helper next to the adapter, wherever it was placed (the audit
measures an adapter this way, in the process where the adapter lives).
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Final, Literal

from attnconf.adapters import registry
from attnconf.adapters.traits import traits
from attnconf.adapters.worker import RemoteAdapter, WorkerPool

ISOLATION = ("all", "auto", "none")
Where = Literal["in-process", "worker"]
IN_PROCESS: Final[Where] = "in-process"
WORKER: Final[Where] = "worker"


@dataclass(frozen=True)
class Placement:
    """Where one adapter runs: `where` is "in-process" or "worker"; a worker's `group` and `environment`."""

    where: Where
    group: str | None = None
    environment: tuple[tuple[str, str], ...] = ()

    @property
    def in_process(self) -> bool:
        return self.where == IN_PROCESS

    @property
    def lane(self) -> Hashable:
        """Adapters with equal lanes run one after another (in this process, or in one shared worker)."""
        return IN_PROCESS if self.in_process else (self.group, self.environment)


def _environment_is_here(environment: tuple[tuple[str, str], ...]) -> bool:
    return all(os.environ.get(k) == v for k, v in environment)


def place(handle: registry.AdapterHandle, isolation: str = "auto", own_group: str | None = None) -> Placement:
    """Where `handle`'s adapter runs under `isolation` (see the module docstring).

    `own_group` names the worker of an adapter that declares no process group but needs one
    (default ``own:<spec>``). Raises `ValueError` for an unknown `isolation`.
    """
    if isolation not in ISOLATION:
        raise ValueError(f"isolation must be one of {ISOLATION}, got {isolation!r}")
    t = traits(handle.obj)
    if isolation == "none":
        return Placement(IN_PROCESS)
    if isolation == "auto" and t.process_group is None and _environment_is_here(t.environment):
        return Placement(IN_PROCESS)
    return Placement(WORKER, t.process_group or own_group or f"own:{handle.spec}", t.environment)


def build(handle: registry.AdapterHandle, where: Placement, pool: WorkerPool) -> Any:
    """The adapter placed `where`: an instance here, or a `RemoteAdapter` whose worker comes from `pool`
    (the worker process starts on the first call)."""
    if where.in_process:
        return registry.instantiate(handle.obj)
    return RemoteAdapter(handle.spec, handle.obj, pool, where.group)


def open_adapter(
    handle: registry.AdapterHandle, pool: WorkerPool, isolation: str = "auto", own_group: str | None = None
) -> tuple[Any, Placement]:
    """`(adapter, placement)`: `place` then `build`."""
    where = place(handle, isolation, own_group)
    return build(handle, where, pool), where


def beside(adapter: Any, helper: type[Any]) -> Any:
    """`helper(adapter)` built where `adapter` lives: here for an instance, in its worker process for a
    `RemoteAdapter` (then a proxy: the helper's method arguments and results cross the pipe, so they
    must be plain data, and a worker that dies raises `WorkerError` from the call)."""
    if isinstance(adapter, RemoteAdapter):
        return adapter.beside(f"{helper.__module__}:{helper.__qualname__}")
    return helper(adapter)
