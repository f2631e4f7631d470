"""The MLX adapters: unavailable with the reason when mlx is missing, capabilities by release, weight layout.

Nothing here imports mlx: the conformance chapters test the adapters themselves
(`attnconf run --adapter mlx.nn.MultiHeadAttention --adapter mlx.core.fast.scaled_dot_product_attention`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from attnconf.adapters import mlx_mha, mlx_sdpa, registry
from attnconf.adapters.support import lazy_capabilities
from attnconf.commands import list_
from attnconf.contract import AttentionWeights

ADAPTERS = {
    "mlx.nn.MultiHeadAttention": "attnconf.adapters.mlx_mha:MlxMHA",
    "mlx.core.fast.scaled_dot_product_attention": "attnconf.adapters.mlx_sdpa:MlxSDPA",
}


def _without_mlx(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] == "mlx" else real(name, *a)
    )


def test_list_shows_why_mlx_adapters_are_unavailable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`attnconf list` with mlx not installed: both adapters listed as missing, with the reason."""
    _without_mlx(monkeypatch)
    eps = {n: importlib.metadata.EntryPoint(n, v, registry.GROUP) for n, v in ADAPTERS.items()}
    monkeypatch.setattr(registry, "entry_points", lambda: eps)
    assert list_.main(argparse.Namespace(json=False, capabilities=False)) == 0
    out = capsys.readouterr().out
    for name in ADAPTERS:
        line = next(x for x in out.splitlines() if x.startswith(name))
        assert " missing " in line, out
    assert out.count("module 'mlx' is not installed") == 2, out


@pytest.mark.parametrize("cls", [mlx_mha.MlxMHA, mlx_sdpa.MlxSDPA])
def test_missing_names_the_module(monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
    _without_mlx(monkeypatch)
    assert cls.missing() == "module 'mlx' is not installed"


def test_modules_import_no_framework() -> None:
    code = (
        "import sys; import attnconf.adapters.mlx_mha, attnconf.adapters.mlx_sdpa; "
        "assert 'mlx' not in sys.modules, 'mlx imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("release", "dtypes"),
    [("0.28.0", {"float32"}), ("0.29.2", {"float32"}), ("0.29.3", {"float64", "float32", "float16", "bfloat16"})],
)
def test_layer_dtypes_follow_the_installed_mlx(monkeypatch: pytest.MonkeyPatch, release: str, dtypes: set[str]) -> None:
    """Before 0.29.3 the biased projections (mx.addmm) raise on the CPU for all but float32 (measured)."""
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: release if d == "mlx" else real(d))
    lazy_capabilities.clear(mlx_mha.MlxMHA)
    try:
        caps = mlx_mha.MlxMHA.capabilities
        assert set(caps.dtypes) == dtypes
        assert {what for what, _ in caps.limits} == {"float64", "float32", "float16", "bfloat16"} - dtypes
        assert all("AddMM::eval_cpu" in why for _, why in caps.limits)
    finally:
        monkeypatch.undo()
        lazy_capabilities.clear(mlx_mha.MlxMHA)


def test_weight_layout_round_trips_and_matches_the_linear_convention() -> None:
    """`to_native` gives MLX Linear weights `(out, in)`: x @ weight.T equals the canonical einsum."""
    rng = np.random.default_rng(0)
    E_q, E_k, E_v, H, D_k, D_v, E_out = 5, 6, 7, 2, 3, 4, 9
    w = AttentionWeights(
        rng.standard_normal((E_q, H, D_k)),
        rng.standard_normal((E_k, H, D_k)),
        rng.standard_normal((E_v, H, D_v)),
        rng.standard_normal((H, D_v, E_out)),
        rng.standard_normal((H, D_k)),
        rng.standard_normal((H, D_k)),
        rng.standard_normal((H, D_v)),
        rng.standard_normal(E_out),
    )
    native = mlx_mha.to_native(w)
    assert native["query_proj.weight"].shape == (H * D_k, E_q)
    assert native["out_proj.weight"].shape == (E_out, H * D_v)
    x = rng.standard_normal((2, 3, E_v))
    heads = (x @ native["value_proj.weight"].T + native["value_proj.bias"]).reshape(2, 3, H, D_v)
    np.testing.assert_allclose(heads, np.einsum("bne,ehd->bnhd", x, w.value_kernel) + w.value_bias, rtol=1e-12)
    back = mlx_mha.from_native(native, H)
    for name, array in w.arrays().items():
        np.testing.assert_array_equal(getattr(back, name), array)
    with pytest.raises(ValueError, match="H_kv = H"):
        mlx_mha.to_native(AttentionWeights(w.query_kernel, w.key_kernel[:, :1], w.value_kernel[:, :1], w.output_kernel))


@pytest.mark.parametrize(("release", "clamped"), [("0.30.4", True), ("0.30.5", False)])
def test_kernel_notes_the_older_causal_alignment(monkeypatch: pytest.MonkeyPatch, release: str, clamped: bool) -> None:
    """mask="causal" with T > S was top-left before mlx 0.30.5 (measured; ml-explore/mlx#2967)."""
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: release if d == "mlx" else real(d))
    lazy_capabilities.clear(mlx_sdpa.MlxSDPA)
    try:
        caps = mlx_sdpa.MlxSDPA.capabilities
        assert caps.causal_alignment == "bottom_right"
        assert ("top-left when T > S" in caps.notes) is clamped
    finally:
        monkeypatch.undo()
        lazy_capabilities.clear(mlx_sdpa.MlxSDPA)
