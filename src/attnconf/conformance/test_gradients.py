"""Chapter `gradients`: the backward pass agrees with the reference's and behaves like attention's.

For adapters that declare ``capabilities.gradients``. The adapter returns the vector-Jacobian
product for a random output cotangent: the gradients of ``sum(output * cotangent)`` with
respect to query, key, value and every present weight (`multi_head_attention_vjp`), or with
respect to q, k, v (`dot_product_attention_vjp`, kernel level). In self-attention the three
input gradients are the partial derivatives with respect to each argument, not their sum.

* Agreement: every gradient is compared with `attnconf.reference.multi_head_attention_vjp`
  evaluated in extended precision on the same rounded inputs, under the tolerance policy of
  `tolerances.py`; the same-precision reference is the reference backward evaluated in the
  requested dtype.
* Masked keys: a key that no query may attend gets no gradient, nor does its value. The
  reference is exactly zero there in every precision, so the bound is the policy's floor.
* Causal: with the cotangent nonzero only on output rows ``t <= i``, keys and values after
  ``i`` (beyond the adapter's declared alignment) and queries after ``i`` get no gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from attnconf.conformance.cases import CONFIGS, Config, make_inputs, make_mask, make_weights, seed_for
from attnconf.conformance.check import Checker, as_float64, exact_precision, passes, weights_float64
from attnconf.conformance.tolerances import derive, measure
from attnconf.contract import AttentionInputs, AttentionWeights
from attnconf.reference import multi_head_attention_vjp, round_to, scaled_dot_product_attention_vjp
from attnconf.reference.precision import storage_dtype

Array = np.ndarray[Any, Any]
Grads = dict[str, Array]

#: Configurations of the agreement tests (ids from `cases.CONFIGS`), few to keep the chapter fast:
#: frameworks that compile per shape and dtype pay for each one.
LAYER_CONFIGS = ["self", "kdim_vdim", "no_bias", "random_mask", "causal_cross", "scale", "gqa"]
KERNEL_CONFIGS = ["cross", "random_mask", "causal_cross", "scale", "gqa", "value_dim"]
#: The configurations also run in float16 and bfloat16: those whose numerics depend on the
#: precision (mask fill values, causal masking, softmax and group sums); the others' features
#: (widths, bias-free, scale) are precision-independent and run in float64 and float32.
LOW_PRECISION_CONFIGS = {"self", "random_mask", "causal_cross", "gqa"}
#: A key-padded cross-attention case for the masked-keys invariant (the shape of "random_mask").
MASKED = Config(T=4, S=7)
METHODS = {"layer": "multi_head_attention_vjp", "kernel": "dot_product_attention_vjp"}


def _require(adapter: Any, level: str) -> None:
    """Skip unless the adapter implements the vjp of `level`; fail if it declares one it lacks."""
    name, caps = adapter.name, adapter.capabilities
    if not caps.gradients:
        pytest.skip(f"{name} declares no gradients (capabilities.gradients=False)")
    if callable(getattr(adapter, METHODS[level], None)):
        return
    if not any(callable(getattr(adapter, m, None)) for m in METHODS.values()):
        pytest.fail(f"{name} declares capabilities.gradients=True but implements neither "
                    f"{METHODS['layer']} nor {METHODS['kernel']}", pytrace=False)
    other = "layer" if level == "kernel" else "kernel"
    pytest.skip(f"{name} implements no {METHODS[level]} (its gradients are tested at the {other} level)")


def _skip_unsupported(adapter: Any, dtype: str, config: str) -> Config:
    """The named config, or a skip with the reason the adapter or this chapter does not run it."""
    cfg = CONFIGS[config]
    reason = cfg.unsupported(adapter.capabilities)
    if reason:
        pytest.skip(reason)
    if dtype in ("float16", "bfloat16") and config not in LOW_PRECISION_CONFIGS:
        pytest.skip(f"the gradients chapter runs {config!r} in float64 and float32 only (its features do not "
                    f"depend on the precision; low precision runs {sorted(LOW_PRECISION_CONFIGS)})")
    return cfg


def _draw(shape: tuple[int, ...], rng: np.random.Generator, dtype: str) -> Array:
    return round_to(rng.standard_normal(shape), dtype)


def _cotangent(shape: tuple[int, ...], rng: np.random.Generator, dtype: str, rows: int | None, axis: int) -> Array:
    """A random cotangent; with `rows`, zero on the output rows after `rows` (along `axis`)."""
    cot = _draw(shape, rng, dtype)
    if rows is not None:
        later = np.arange(shape[axis]) > rows
        cot[(slice(None),) * axis + (later,)] = 0
    return cot


# -- running ---------------------------------------------------------------------------------


def _validated(adapter: Any, got: Any, expected: dict[str, tuple[int, ...]], method: str) -> Grads:
    """The adapter's gradients as NumPy arrays, after checking names and shapes."""
    if not isinstance(got, dict):
        pytest.fail(f"{adapter.name}: {method} returned {type(got).__name__}, expected a dict of arrays", pytrace=False)
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or extra:
        pytest.fail(f"{adapter.name}: {method} returned gradients {sorted(got)}, expected {sorted(expected)} "
                    f"(missing {missing}, unexpected {extra})", pytrace=False)
    out = {n: np.asarray(got[n]) for n in expected}
    for n, shape in expected.items():
        if out[n].shape != shape:
            pytest.fail(f"{adapter.name}: gradient wrt {n} has shape {out[n].shape}, expected {shape}", pytrace=False)
    return out


def _layer(adapter: Any, check: Checker, inputs: AttentionInputs, weights: AttentionWeights,
           rng: np.random.Generator, rows: int | None) -> tuple[Grads, Grads, Grads]:
    """(adapter, exact reference, same-precision reference) gradients on rounded inputs.

    "Exact" is the reference backward in `check.exact_precision(dtype)`, as for the forward
    chapters (tolerances.py)."""
    dtype = check.dtype
    x, w = inputs.astype(dtype), weights.astype(dtype)
    s = x.shape
    cot = _cotangent((s["B"], s["T"], w.output_dim), rng, dtype, rows, axis=1)
    shapes = {"query": x.query.shape, "key": x.key.shape, "value": x.value.shape,
              **{n: a.shape for n, a in w.arrays().items()}}
    got = _validated(adapter, adapter.multi_head_attention_vjp(x, w, dtype, cot), shapes, METHODS["layer"])
    e = exact_precision(dtype)
    exact = multi_head_attention_vjp(as_float64(x, e), weights_float64(w, e), np.asarray(cot, storage_dtype(e)),
                                     alignment=check.alignment, dtype=e)
    same = multi_head_attention_vjp(x, w, cot, alignment=check.alignment, dtype=check.precision)
    return got, exact, same


def _kernel(adapter: Any, check: Checker, cfg: Config, rng: np.random.Generator,
            mask: Array | None, rows: int | None) -> tuple[Grads, Grads, Grads]:
    """Like `_layer` for `dot_product_attention_vjp` on q, k, v drawn for `cfg`."""
    d, dtype = cfg.dims, check.dtype
    B, H, H_kv, T, S = cfg.B, cfg.H, d["H_kv"], cfg.T, cfg.S
    shapes = ((B, H, T, cfg.D_k), (B, H_kv, S, cfg.D_k), (B, H_kv, S, d["D_v"]))
    q, k, v = (_draw(shape, rng, dtype) for shape in shapes)
    cot = _cotangent((B, H, T, d["D_v"]), rng, dtype, rows, axis=2)
    mask4 = None if mask is None else np.broadcast_to(mask[:, None], (B, H, T, S)).copy()
    args = (q, k, v, mask4, cfg.causal, cfg.scale, dtype, cot)
    got = _validated(adapter, adapter.dot_product_attention_vjp(*args),
                     {"q": q.shape, "k": k.shape, "v": v.shape}, METHODS["kernel"])
    kw = dict(mask=mask4, causal=cfg.causal, alignment=check.alignment, scale=cfg.scale)
    e = exact_precision(dtype)
    exact = scaled_dot_product_attention_vjp(*(np.asarray(a, storage_dtype(e)) for a in (q, k, v, cot)),
                                             dtype=e, **kw)  # type: ignore[arg-type]
    same = scaled_dot_product_attention_vjp(q, k, v, cot, dtype=check.precision, **kw)  # type: ignore[arg-type]
    return got, exact, same


def _run(level: str, adapter: Any, check: Checker, cfg: Config, rng: np.random.Generator,
         mask: Array | None = None, rows: int | None = None) -> tuple[Grads, Grads, Grads]:
    """Gradients at either level, in a common layout: inputs by position, `(B, N, ...)`.

    `mask` `(B, T, S)` replaces the config's; `rows` zeroes the cotangent after that output row.
    Layer gradients keep their names; kernel gradients `(B, H, N, D)` are renamed query, key,
    value and moved to `(B, N, H, D)`, so that ``g["key"][b, s]`` is key `s` at both levels.
    """
    if level == "layer":
        inputs = make_inputs(cfg, rng, check.alignment)
        if mask is not None:
            inputs = dataclasses.replace(inputs, mask=mask)
        return _layer(adapter, check, inputs, make_weights(cfg, rng), rng, rows)
    if mask is None:
        mask = make_mask(cfg, rng, check.alignment)
    names = {"q": "query", "k": "key", "v": "value"}
    results = _kernel(adapter, check, cfg, rng, mask, rows)
    return tuple({names[n]: np.moveaxis(g, 2, 1) for n, g in r.items()} for r in results)  # type: ignore[return-value]


# -- comparing -------------------------------------------------------------------------------


def _agree(check: Checker, got: Grads, exact: Grads, same: Grads, case: str) -> None:
    """Every gradient within its derived tolerance; one failure lists every gradient that is not."""
    failures = []
    for name in exact:
        tol = derive(exact[name], same[name], check.precision)
        errs = measure(got[name], exact[name], tol)
        what = f"gradient wrt {name}"
        check.records.append({"what": what, "case": case, "dtype": check.dtype, "atol": errs.atol,
                              "reference_error": tol.reference_error, **errs.as_dict()})
        if not passes(errs):
            failures.append(check.message(what, case, errs, tol, got[name], exact[name]))
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


def _zero(check: Checker, got: Grads, exact: Grads, same: Grads, where: dict[str, Array], case: str) -> None:
    """Gradients that the spec makes exactly zero at `where[name]` (a boolean index) are zero.

    The reference is exactly 0 there in extended precision and in the test's, so the derived
    tolerance is the policy's floor, ``FACTOR x FLOOR_ULPS x u_dtype``.
    """
    failures = []
    for name, sel in where.items():
        if not sel.any():
            raise AssertionError(f"case {case!r} selects no {name} position: the invariant would test nothing")
        assert not np.any(exact[name][sel]), f"reference gradient wrt {name} is not zero where the spec says so"
        tol = derive(exact[name][sel], same[name][sel], check.precision)
        errs = measure(got[name][sel], exact[name][sel], tol)
        what = f"gradient wrt {name} where it must be zero"
        check.records.append({"what": what, "case": case, "dtype": check.dtype, "atol": errs.atol,
                              "reference_error": tol.reference_error, **errs.as_dict()})
        if not passes(errs):
            idx = tuple(int(i) for i in np.argwhere(sel)[errs.index[0]])
            failures.append(check.message(what, case, errs, tol, got[name][sel], exact[name][sel])
                            + f"\n  (the flat index counts the selected positions; the first one is at {idx})")
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("config", LAYER_CONFIGS)
def test_gradients(adapter, dtype, config, check):
    _require(adapter, "layer")
    cfg = _skip_unsupported(adapter, dtype, config)
    rng = np.random.default_rng(seed_for("gradients", config))
    _agree(check, *_run("layer", adapter, check, cfg, rng), case=config)


@pytest.mark.parametrize("config", KERNEL_CONFIGS)
def test_kernel_gradients(adapter, dtype, config, check):
    _require(adapter, "kernel")
    cfg = _skip_unsupported(adapter, dtype, config)
    rng = np.random.default_rng(seed_for("kernel_gradients", config))
    _agree(check, *_run("kernel", adapter, check, cfg, rng), case=config)


@pytest.mark.parametrize("level", list(METHODS))
def test_gradients_masked_keys_zero(adapter, dtype, level, check):
    _require(adapter, level)
    reason = MASKED.unsupported(adapter.capabilities)
    if reason or not adapter.capabilities.boolean_mask:
        pytest.skip(reason or "adapter takes no boolean mask (capabilities.boolean_mask=False)")
    visible = np.ones((MASKED.B, MASKED.T, MASKED.S), dtype=bool)
    visible[1, :, 3:] = False  # batch 1: keys 3.. are padding
    visible[0, :, 2] = False  # batch 0: key 2 is hidden from every query
    rng = np.random.default_rng(seed_for("gradients_masked", level))
    got, exact, same = _run(level, adapter, check, MASKED, rng, mask=visible)
    hidden = ~visible.any(axis=1)  # (B, S): keys that no query may attend
    case = f"{level}, masked keys (b, s) {np.argwhere(hidden).tolist()}"
    _zero(check, got, exact, same, {"key": hidden, "value": hidden}, case=case)


@pytest.mark.parametrize("level", list(METHODS))
@pytest.mark.parametrize("config", ["causal", "causal_cross"])
def test_gradients_causal_no_flow_back(adapter, dtype, level, config, check):
    _require(adapter, level)
    cfg = CONFIGS[config]
    reason = cfg.unsupported(adapter.capabilities)
    if reason:
        pytest.skip(reason)
    rng = np.random.default_rng(seed_for("gradients_causal", level, config))
    i, T, S = 1, cfg.T, cfg.S
    got, exact, same = _run(level, adapter, check, cfg, rng, rows=i)
    last = i + (0 if check.alignment == "top_left" else S - T)  # the last key output row i sees
    later_keys = np.broadcast_to(np.arange(S) > last, (cfg.B, S))
    later_rows = np.broadcast_to(np.arange(T) > i, (cfg.B, T))
    case = f"{level}, {config}, cotangent on output rows <= {i}, {check.alignment} alignment"
    _zero(check, got, exact, same, {"key": later_keys, "value": later_keys, "query": later_rows}, case=case)

