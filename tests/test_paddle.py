"""The PaddlePaddle adapters: unavailable with the reason when paddle is missing, the weight mapping,
and the half-precision limits declared from the release (and true of the installed CPU build)."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from attnconf.adapters import paddle_mha, paddle_sdpa, registry
from attnconf.adapters.support import lazy_capabilities
from attnconf.commands import list_
from attnconf.contract import AttentionWeights

ADAPTERS = [paddle_mha.PaddleMHA, paddle_sdpa.PaddleSDPA]
PATHS = ["attnconf.adapters.paddle_mha:PaddleMHA", "attnconf.adapters.paddle_sdpa:PaddleSDPA"]


def test_list_shows_why_paddle_adapters_are_unavailable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "paddle" else real(name, *a))
    monkeypatch.setattr(registry, "discover", lambda: [registry.load(p) for p in PATHS])
    assert list_.main(argparse.Namespace(json=False, capabilities=False)) == 0
    out = capsys.readouterr().out
    for cls in ADAPTERS:
        assert cls.missing() == "module 'paddle' is not installed"
        line = next(s for s in out.splitlines() if s.startswith(cls.name))
        assert "missing" in line.split()
    assert out.count("module 'paddle' is not installed") == 2
    assert "paddle" not in sys.modules  # listing (and the capabilities) import no paddle


@pytest.mark.parametrize(("release", "half"), [("3.3.1", False), ("3.0.0", False), ("3.4.0", True)])
def test_half_precisions_follow_the_release(monkeypatch: pytest.MonkeyPatch, release: str, half: bool) -> None:
    """float16/bfloat16 are limits on the measured releases; a later release is tested strictly."""
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: release if d == "paddlepaddle" else real(d))
    try:
        for cls in ADAPTERS:
            lazy_capabilities.clear(cls)
            caps = cls.capabilities
            assert ("float16" in caps.dtypes) is half and ("bfloat16" in caps.dtypes) is half
            assert {what for what, _ in caps.limits} == (set() if half else {"float16", "bfloat16"})
    finally:
        monkeypatch.undo()
        for cls in ADAPTERS:
            lazy_capabilities.clear(cls)


def test_weight_mapping_round_trips_and_is_head_major() -> None:
    rng = np.random.default_rng(0)
    E_q, E_k, E_v, H, D = 8, 6, 5, 2, 4
    w = AttentionWeights(
        query_kernel=rng.normal(size=(E_q, H, D)),
        key_kernel=rng.normal(size=(E_k, H, D)),
        value_kernel=rng.normal(size=(E_v, H, D)),
        output_kernel=rng.normal(size=(H, D, E_q)),
        query_bias=rng.normal(size=(H, D)),
        key_bias=None,
        value_bias=None,
        output_bias=rng.normal(size=(E_q,)),
    )
    native = paddle_mha.to_native(w)
    assert native["k_proj.weight"].shape == (E_k, E_q) and native["out_proj.weight"].shape == (E_q, E_q)
    # paddle's Linear is x @ weight (in, out); feature h * D + d is head h, component d
    assert native["q_proj.weight"][3, 1 * D + 2] == w.query_kernel[3, 1, 2]
    assert native["out_proj.weight"][1 * D + 2, 5] == w.output_kernel[1, 2, 5]
    assert not native["k_proj.bias"].any()  # one bias switch: an absent bias is zeros
    back = paddle_mha._given(w, paddle_mha.from_native(native, H).arrays())
    assert set(back) == set(w.arrays())
    for name, array in w.arrays().items():
        np.testing.assert_array_equal(back[name], array)


def test_the_half_precision_limit_is_what_the_cpu_build_does() -> None:
    """The declared limit, measured: a float16 paddle.matmul on the CPU raises (own process: paddle
    does not share one with the frameworks other tests import)."""
    if importlib.util.find_spec("paddle") is None:
        pytest.skip("paddle is not installed")
    code = (
        "import warnings; warnings.simplefilter('ignore'); import paddle; paddle.set_device('cpu')\n"
        "for dt in ('float16', 'bfloat16'):\n"
        "    x = paddle.ones([2, 2], dtype=dt)\n"
        "    try:\n        paddle.matmul(x, x); print(dt, 'ran')\n"
        "    except RuntimeError as e:\n        print(dt, 'raised', 'is not registered' in str(e))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    declared = paddle_mha.PaddleMHA.capabilities.limits
    for dt in ("float16", "bfloat16"):
        assert (f"{dt} raised True" in out) is any(what == dt for what, _ in declared), out


def test_kernel_before_its_scale_argument_is_missing_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    real_version, real_spec = importlib.metadata.version, importlib.util.find_spec
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "3.0.0" if d == "paddlepaddle" else real_version(d))
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "paddle" else real_spec(name, *a)
    )
    assert paddle_sdpa.PaddleSDPA.missing() == (
        "paddlepaddle 3.0.0 has no `scale` or grouped kv heads in paddle.nn.functional.scaled_dot_product_attention "
        "(added in 3.3.0, PaddlePaddle/Paddle#76446)"
    )
    assert paddle_mha.PaddleMHA.missing() is None  # the layer runs on 3.0.0 (measured)
