"""An adapter whose framework release lacks the API it wraps reports itself unavailable, with why."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest

from attnconf.adapters import keras_ops
from attnconf.adapters.base import Capabilities
from attnconf.adapters.support import AdapterBase, lazy_capabilities


def _installed_as(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: version if d == "keras" else real(d))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # every module "installed"


@pytest.mark.parametrize("cls", [keras_ops.KerasOpsJax, keras_ops.KerasOpsTensorflow, keras_ops.KerasOpsTorch])
def test_keras_without_the_op_is_missing_with_the_reason(monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
    _installed_as(monkeypatch, "3.5.0")
    assert cls.missing() == ("keras 3.5.0 has no keras.ops.dot_product_attention "
                             "(added in 3.6.0, keras-team/keras#20286)")


def test_keras_with_the_op_is_available(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed_as(monkeypatch, "3.6.0")
    assert keras_ops.KerasOpsJax.missing() is None


def test_release_in_reads_metadata_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from attnconf.adapters.support import release_in

    _installed_as(monkeypatch, "3.5.0")
    assert release_in("keras", ">=3.5,<3.7") and not release_in("keras", ">=3.7")
    assert not release_in("no-such-distribution-here", ">=0")


@pytest.mark.parametrize(("keras", "kdim_vdim", "tf_gqa"), [("3.5.0", False, False), ("3.10.0", True, False),
                                                             ("3.15.1", True, True)])
def test_capabilities_follow_the_installed_keras(monkeypatch: pytest.MonkeyPatch, keras: str, kdim_vdim: bool,
                                                 tf_gqa: bool) -> None:
    """What a Keras release can take is declared from its version (measured in the tox matrix)."""
    from attnconf.adapters import keras_mha

    _installed_as(monkeypatch, keras)
    try:
        for base in (keras_mha.KerasMHA, keras_ops.KerasOps):
            lazy_capabilities.clear(base)  # computed again, on first read, for the faked release
        assert keras_mha.KerasMHAJax.capabilities.kdim_vdim is kdim_vdim
        assert keras_mha.KerasMHAScoresTensorflow.capabilities.kdim_vdim is kdim_vdim
        assert keras_ops.KerasOpsTensorflow.capabilities.gqa is tf_gqa
        assert keras_ops.KerasOpsTorch.capabilities.gqa is tf_gqa
        assert keras_ops.KerasOpsJax.capabilities.gqa is True
    finally:
        monkeypatch.undo()
        for base in (keras_mha.KerasMHA, keras_ops.KerasOps):
            lazy_capabilities.clear(base)


def test_capabilities_are_computed_once_on_first_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing at import or class creation; one call per class on first read, cached until cleared."""
    calls: list[str] = []

    class Base(AdapterBase):
        name = "lazy.base"

        @classmethod
        def _capabilities(cls) -> Capabilities:
            calls.append(cls.__name__)
            return Capabilities(gqa=cls.__name__ == "Child")

    class Child(Base):
        name = "lazy.child"

    assert calls == []
    assert Child().capabilities.gqa and Child.capabilities.gqa and not Base.capabilities.gqa
    assert calls == ["Child", "Base"]
    lazy_capabilities.clear(Base)
    assert Child.capabilities.gqa and calls == ["Child", "Base", "Child"]


def test_onnxruntime_without_ir11_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from attnconf.adapters import onnx_attention, onnx_mha

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "1.22.1" if d == "onnxruntime" else real(d))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    for cls in (onnx_attention.OnnxAttention, onnx_mha.OnnxMHA):
        reason = cls.missing()
        assert reason is not None and reason.startswith("onnxruntime 1.22.1 cannot load opset-23 models"), reason
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "1.23.2" if d == "onnxruntime" else real(d))
    assert onnx_attention.OnnxAttention.missing() is None


@pytest.mark.parametrize("dist", ["tensorflow-cpu", "tensorflow-intel", "tf-nightly"])
def test_tensorflow_version_whichever_distribution_installed_it(monkeypatch: pytest.MonkeyPatch, dist: str) -> None:
    """A `tensorflow-cpu` (or -intel, tf-nightly) install reports its version under `tensorflow`: in
    every adapter's versions, in `release_in`, and in a declared departure's version range."""
    from attnconf.adapters.support import distribution_versions, release_in
    from attnconf.adapters.tf_keras_mha import TfKerasMHA
    from attnconf.conformance.expected import Difference

    def version(name: str) -> str:
        if name == dist:
            return "2.99.1"
        if name == "tf_keras":
            return "2.99.0"
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert distribution_versions(("tf_keras", "tensorflow")) == {"tf_keras": "2.99.0", "tensorflow": "2.99.1"}
    assert TfKerasMHA().versions()["tensorflow"] == "2.99.1"
    assert release_in("tensorflow", ">=2.99") and not release_in("tensorflow", "<2.99")
    assert distribution_versions(("torch",)) == {}
    inside = Difference(("x",), ("test_agreement",), "r", "", versions=("tensorflow>=2.99",))
    outside = Difference(("x",), ("test_agreement",), "r", "", versions=("tensorflow<2.99",))
    assert inside.version_in_range() and not outside.version_in_range()
