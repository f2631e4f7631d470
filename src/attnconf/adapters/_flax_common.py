"""The weight mapping both Flax adapters (linen and NNX) share.

Flax's projections (`DenseGeneral` in linen, `LinearGeneral` in NNX) use the einsum layout
`x @ W` with the head axes split out, which is the canonical layout, so nothing transposes::

    query_kernel  (E_q, H, D_k)      <->  params["query"]["kernel"]  (E_q, H, D_k)
    key_kernel    (E_k, H_kv, D_k)   <->  params["key"]["kernel"]    (E_k, H_kv, D_k)
    value_kernel  (E_v, H_kv, D_v)   <->  params["value"]["kernel"]  (E_v, H_kv, D_v)
    output_kernel (H, D_v, E_out)    <->  params["out"]["kernel"]    (H, D_v, E_out)
    query_bias (H, D_k), key_bias (H_kv, D_k), value_bias (H_kv, D_v), output_bias (E_out,)
                                     <->  params[...]["bias"]

Both layers have one `use_bias` flag for all four projections and one head width for query,
key and value (`qkv_features // num_heads`), so D_v = D_k.
"""

from __future__ import annotations

from typing import Any

from attnconf.adapters.support import one_bias_switch
from attnconf.contract import AttentionWeights
from attnconf.reference._checks import invalid

#: canonical name -> (flax submodule, parameter)
NATIVE_NAMES = {
    "query_kernel": ("query", "kernel"), "key_kernel": ("key", "kernel"),
    "value_kernel": ("value", "kernel"), "output_kernel": ("out", "kernel"),
    "query_bias": ("query", "bias"), "key_bias": ("key", "bias"),
    "value_bias": ("value", "bias"), "output_bias": ("out", "bias"),
}


def use_bias(weights: AttentionWeights, api: str) -> bool:
    """Flax's single `use_bias` flag for `weights`: all four biases present, or none (else `ValueError`)."""
    return one_bias_switch(weights, api, "use_bias")


def check_head_widths(weights: AttentionWeights, api: str) -> None:
    """Flax derives one head width for query, key and value from `qkv_features`."""
    if weights.value_head_dim != weights.key_head_dim:
        raise invalid("value_kernel", f"D_v = D_k={weights.key_head_dim} ({api} has one head width)",
                      f"D_v={weights.value_head_dim}")


def to_flax(arrays: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Canonical arrays by name -> Flax's nested params `{"query": {"kernel": ...}, ...}`."""
    params: dict[str, dict[str, Any]] = {}
    for name, array in arrays.items():
        module, leaf = NATIVE_NAMES[name]
        params.setdefault(module, {})[leaf] = array
    return params


def from_flax(params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Flax's nested params -> canonical arrays by name (absent biases left out)."""
    return {name: params[module][leaf] for name, (module, leaf) in NATIVE_NAMES.items()
            if params.get(module, {}).get(leaf) is not None}  # Flax 0.10.2 keeps absent biases as None


def check_params(layer_params: dict[str, Any], params: dict[str, Any], what: str) -> None:
    """Raise unless `params` (from the canonical weights) has exactly the names, shapes and dtypes
    of `layer_params`, the parameters the Flax layer itself declares (`what` names it)."""
    want = {n: (a.shape, a.dtype) for n, a in from_flax(layer_params).items()}
    got = {n: (a.shape, a.dtype) for n, a in from_flax(params).items()}
    if want != got:
        raise invalid("weights", f"the parameters of {what}: {want}", got)
