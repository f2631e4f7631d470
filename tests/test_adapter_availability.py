"""An adapter whose framework release lacks the API it wraps reports itself unavailable, with why."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest

from attnconf.adapters import keras_ops


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
