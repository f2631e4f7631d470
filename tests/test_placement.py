"""Placement: which adapters run in this process and which in a worker, and what each is built as."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from attnconf.adapters import placement, registry
from attnconf.adapters.numpy_ref import NumpyAdapter
from attnconf.adapters.traits import Traits, traits
from attnconf.adapters.worker import RemoteAdapter, WorkerPool

VARIABLE = "ATTNCONF_PLACEMENT_TEST"


class Grouped(NumpyAdapter):
    name = "placement.grouped"
    process_group = "placement-group"


class WithEnvironment(NumpyAdapter):
    """No process group, but a variable its process needs; `versions()` reports what it saw."""

    name = "placement.env"
    environment = {VARIABLE: "from-the-adapter"}

    def versions(self) -> dict[str, str]:
        return {VARIABLE: os.environ.get(VARIABLE, "unset")}


class Where:
    """A helper built next to an adapter: which process it is in, and the adapter it holds."""

    def __init__(self, adapter: object):
        self.adapter = adapter

    def describe(self) -> dict[str, object]:
        return {"pid": os.getpid(), "adapter": type(self.adapter).__name__, VARIABLE: os.environ.get(VARIABLE)}


def handle(cls: type) -> registry.AdapterHandle:
    return registry.AdapterHandle(f"test_placement:{cls.__name__}", cls.name, cls, None, "path")


@pytest.fixture
def pool():
    p = WorkerPool(timeout=60)
    yield p
    p.close()


def test_an_adapter_without_group_or_environment_runs_here(pool: WorkerPool) -> None:
    h = handle(NumpyAdapter)
    for isolation in ("auto", "none"):
        adapter, where = placement.open_adapter(h, pool, isolation)
        assert where == placement.Placement("in-process") and where.lane == "in-process"
        assert type(adapter) is NumpyAdapter
    # "all": a worker of its own, named by the caller
    adapter, where = placement.open_adapter(h, pool, "all", own_group="audit:numpy")
    assert where == placement.Placement("worker", "audit:numpy", ())
    assert isinstance(adapter, RemoteAdapter) and adapter.process_group == "audit:numpy"


def test_a_process_group_runs_in_its_worker_unless_isolation_is_none(pool: WorkerPool) -> None:
    h = handle(Grouped)
    for isolation in ("auto", "all"):
        adapter, where = placement.open_adapter(h, pool, isolation, own_group="unused")
        assert where == placement.Placement("worker", "placement-group", ())
        assert isinstance(adapter, RemoteAdapter) and adapter.process_group == "placement-group"
    assert placement.place(h, "none").in_process
    with pytest.raises(ValueError, match="isolation must be one of"):
        placement.place(h, "sometimes")


def test_an_environment_this_process_lacks_gets_a_worker_that_has_it(
    pool: WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv(VARIABLE, raising=False)
    h = handle(WithEnvironment)
    adapter, where = placement.open_adapter(h, pool, "auto")
    env = ((VARIABLE, "from-the-adapter"),)
    assert where == placement.Placement("worker", f"own:{h.spec}", env) and where.lane == (f"own:{h.spec}", env)
    assert adapter.versions() == {VARIABLE: "from-the-adapter"}  # measured in the worker process
    # a helper built beside it lives in that worker too, next to the adapter instance
    there = placement.beside(adapter, Where).describe()
    assert there == {"pid": there["pid"], "adapter": "WithEnvironment", VARIABLE: "from-the-adapter"}
    assert there["pid"] != os.getpid()
    here = placement.beside(placement.build(h, placement.Placement("in-process"), pool), Where).describe()
    assert here == {"pid": os.getpid(), "adapter": "WithEnvironment", VARIABLE: None}
    # where this process already has the environment (an `attnconf run` session), the adapter runs here
    monkeypatch.setenv(VARIABLE, "from-the-adapter")
    assert placement.place(h, "auto").in_process
    monkeypatch.setenv(VARIABLE, "something else")
    assert not placement.place(h, "auto").in_process


def test_traits_fill_defaults_and_read_proxies(pool: WorkerPool) -> None:
    class Bare:
        name = "bare"

    assert traits(Bare) == Traits()
    assert traits(Bare).env == {}
    remote = RemoteAdapter("test_placement:Grouped", Grouped, pool)
    assert (
        traits(remote)
        == traits(Grouped)
        == Traits(framework="numpy", api=NumpyAdapter.api, distributions=("numpy",), process_group="placement-group")
    )
    with pytest.raises(ValueError, match="declares no process_group"):
        RemoteAdapter("test_placement:Bare", NumpyAdapter, pool)


def test_a_worker_adapter_takes_keyword_arguments(pool: WorkerPool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The convention methods take keywords (`window=`, `layout=`, `cache_lengths=`): they cross to the worker."""
    import numpy as np

    tests = str(Path(__file__).parent)  # the worker imports this module by its path
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
    from attnconf.reference import rotary_embedding, scaled_dot_product_attention

    adapter, _ = placement.open_adapter(handle(Grouped), pool, "auto")
    assert isinstance(adapter, RemoteAdapter)
    q = np.random.default_rng(0).standard_normal((1, 2, 3, 4))
    got = adapter.convention_attention(q, q, q, None, False, None, "float64", window=(1, 0))
    np.testing.assert_array_equal(got, scaled_dot_product_attention(q, q, q, window=(1, 0)))
    rotated = adapter.rotary_embedding(q, np.arange(3), "float64", layout="interleaved", theta=10.0)
    np.testing.assert_array_equal(rotated, rotary_embedding(q, np.arange(3), layout="interleaved", theta=10.0))
