"""`onnxruntime.MultiHeadAttention`: a multi-head attention graph run by ONNX Runtime (CPU).

The whole layer is one ONNX model (opset 23) with the weights as initializers, the way an
exported transformer layer looks; sessions are cached per (shapes, dtype, flags, weights).

Mapping, canonical -> ONNX initializers (einsum kernels flattened head-major):

    query_kernel (E_q, H, D_k)     -> Wq (E_q, H*D_k)       query_bias (H, D_k)    -> bq (H*D_k,)
    key_kernel (E_k, H_kv, D_k)    -> Wk (E_k, H_kv*D_k)    key_bias (H_kv, D_k)   -> bk (H_kv*D_k,)
    value_kernel (E_v, H_kv, D_v)  -> Wv (E_v, H_kv*D_v)    value_bias (H_kv, D_v) -> bv (H_kv*D_v,)
    output_kernel (H, D_v, E_out)  -> Wo (H*D_v, E_out)     output_bias (E_out,)   -> bo (E_out,)

Graph: ``x @ W (+ b)`` (MatMul, Add) -> Reshape (B, N, heads, D) -> Transpose (B, heads, N, D)
-> `Attention` (is_causal, scale; Y and qk_matmul_output_mode=3 for the weights (B, H, T, S))
-> Transpose (B, T, H, D_v) -> Reshape (B, T, H*D_v) -> MatMul Wo (+ bo) -> output (B, T, E_out).
The mask `(B, T, S)` enters as `attn_mask` `(B, 1, T, S)`, True = takes part (the op's polarity
is ours); `native_mask_attention` feeds it unconverted (bool or float additive).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from attnconf.adapters import _onnx_common as common
from attnconf.adapters.support import AdapterBase
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities

Array = np.ndarray[Any, Any]

_KERNELS = {"query_kernel": "Wq", "key_kernel": "Wk", "value_kernel": "Wv", "output_kernel": "Wo"}
_BIASES = {"query_bias": "bq", "key_bias": "bk", "value_bias": "bv", "output_bias": "bo"}


def to_initializers(weights: AttentionWeights, dtype: str) -> dict[str, Array]:
    """Canonical weights -> ONNX initializer arrays by name (see the module docstring)."""
    np_dtype = common.numpy_dtype(dtype)
    out = {}
    for name, array in weights.arrays().items():
        a = np.asarray(array)
        flat: Array
        if name == "output_kernel":
            flat = a.reshape(a.shape[0] * a.shape[1], a.shape[2])
        elif name in _KERNELS:
            flat = a.reshape(a.shape[0], a.shape[1] * a.shape[2])
        else:
            flat = a.reshape(-1)
        out[_KERNELS.get(name) or _BIASES[name]] = flat.astype(np_dtype)
    return out


def from_initializers(arrays: dict[str, Array], H: int, H_kv: int, D_k: int, D_v: int) -> AttentionWeights:
    """ONNX initializer arrays -> canonical weights (the inverse of `to_initializers`)."""
    shapes = {"Wq": (-1, H, D_k), "Wk": (-1, H_kv, D_k), "Wv": (-1, H_kv, D_v), "Wo": (H, D_v, -1),
              "bq": (H, D_k), "bk": (H_kv, D_k), "bv": (H_kv, D_v), "bo": (-1,)}
    names = {**{v: k for k, v in _KERNELS.items()}, **{v: k for k, v in _BIASES.items()}}
    return AttentionWeights(**{names[n]: np.asarray(a).reshape(shapes[n]) for n, a in arrays.items()})


def build_model(weights: AttentionWeights, dtype: str, shapes: Mapping[str, tuple[int, ...]],
                mask_dtype: Any | None, causal: bool, scale: float | None) -> Any:
    """The layer as a `ModelProto`; `shapes` has "query", "key", "value" (and "attn_mask")."""
    from onnx import numpy_helper

    H, H_kv, D_k, D_v = weights.num_heads, weights.num_kv_heads, weights.key_head_dim, weights.value_head_dim
    init = to_initializers(weights, dtype)
    np_dtype = common.numpy_dtype(dtype)
    consts = {"q_shape": [0, 0, H, D_k], "k_shape": [0, 0, H_kv, D_k], "v_shape": [0, 0, H_kv, D_v],
              "o_shape": [0, 0, H * D_v]}
    initializers = [numpy_helper.from_array(a, n) for n, a in init.items()]
    initializers += [numpy_helper.from_array(np.asarray(v, np.int64), n) for n, v in consts.items()]
    nodes: list[Any] = []

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        from onnx import helper

        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def heads(x: str, w: str, b: str, shape: str) -> str:
        y = node("MatMul", [x, w], f"{x}_proj")
        if b in init:
            y = node("Add", [y, b], f"{x}_biased")
        y = node("Reshape", [y, shape], f"{x}_split")  # (B, N, heads, D)
        return node("Transpose", [y], f"{x}_heads", perm=[0, 2, 1, 3])  # (B, heads, N, D)

    attn_inputs = [heads("query", "Wq", "bq", "q_shape"), heads("key", "Wk", "bk", "k_shape"),
                   heads("value", "Wv", "bv", "v_shape")]
    inputs = [common.value_info(n, np_dtype, shapes[n]) for n in ("query", "key", "value")]
    if mask_dtype is not None:
        attn_inputs.append("attn_mask")
        inputs.append(common.value_info("attn_mask", mask_dtype, shapes["attn_mask"]))
    nodes.append(common.attention_node(attn_inputs, ["Y", "", "", "weights"], causal, scale))
    y = node("Transpose", ["Y"], "Y_t", perm=[0, 2, 1, 3])  # (B, T, H, D_v)
    y = node("Reshape", [y, "o_shape"], "Y_merged")  # (B, T, H*D_v)
    y = node("MatMul", [y, "Wo"], "projected" if "bo" in init else "output")
    if "bo" in init:
        node("Add", [y, "bo"], "output")
    (B, T, _), S = shapes["query"], shapes["key"][1]
    outputs = [common.value_info("output", np_dtype, (B, T, weights.output_dim)),
               common.value_info("weights", np_dtype, (B, H, T, S))]
    return common.make_model(nodes, inputs, outputs, initializers)


class OnnxMHA(AdapterBase):
    """Multi-head attention as an ONNX graph (MatMul/Add, Reshape/Transpose, `Attention`)."""

    name = "onnxruntime.MultiHeadAttention"
    framework = "onnxruntime"
    api = "onnx graph: MatMul + Add, Attention (opset 23); onnxruntime CPUExecutionProvider"
    distributions = common.DISTRIBUTIONS
    modules = common.MODULES
    first_release = common.FIRST_RELEASE
    process_group = "onnxruntime"
    @classmethod
    def _capabilities(cls) -> Capabilities:
        return Capabilities(
            level="layer", dtypes=common.DTYPES, causal_alignment="top_left", gqa=True, kdim_vdim=True,
            value_dim=True, output_dim=True, custom_scale=True, weight_round_trip=True,
            scale_precision=common.float64_scale_precision(),
            notes="weights as initializers; attention weights from qk_matmul_output_mode=3; no bfloat16 on CPU",
        )

    def __init__(self) -> None:
        self._sessions = common.SessionCache()

    def _run(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
             attn_mask: Array | None) -> AttentionOutputs:
        np_dtype = common.numpy_dtype(dtype)
        feeds = {"query": np.asarray(inputs.query, np_dtype), "key": np.asarray(inputs.key, np_dtype),
                 "value": np.asarray(inputs.value, np_dtype)}
        if attn_mask is not None:
            feeds["attn_mask"] = common.as_attn_mask(attn_mask, dtype)[:, None]  # (B, 1, T, S)
        shapes = {n: a.shape for n, a in feeds.items()}
        mask_dtype = None if attn_mask is None else feeds["attn_mask"].dtype
        key = (tuple(shapes.items()), dtype, str(mask_dtype), inputs.causal, inputs.scale,
               common.digest(weights.arrays()))
        session = self._sessions.get(
            key, lambda: build_model(weights, dtype, shapes, mask_dtype, inputs.causal, inputs.scale))
        out, attn = session.run(["output", "weights"], feeds)
        return AttentionOutputs(output=np.asarray(out), weights=np.asarray(attn))

    def multi_head_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str
    ) -> AttentionOutputs:
        return self._run(inputs, weights, dtype, inputs.mask)

    def native_mask_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, native_mask: Array
    ) -> AttentionOutputs:
        """`native_mask` `(B, T, S)`, bool or float, handed to `attn_mask` as is."""
        return self._run(inputs, weights, dtype, native_mask)

    def round_trip_weights(self, weights: AttentionWeights, dtype: str) -> AttentionWeights:
        """Canonical -> initializers of the serialized model -> `numpy_helper` -> canonical."""
        import onnx
        from onnx import numpy_helper

        B, T = 1, 2
        shapes = {"query": (B, T, weights.query_dim), "key": (B, T, weights.key_dim),
                  "value": (B, T, weights.value_dim)}
        model = onnx.load_model_from_string(build_model(weights, dtype, shapes, None, False, None).SerializeToString())
        arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name in _NAMES}
        return from_initializers(arrays, weights.num_heads, weights.num_kv_heads,
                                 weights.key_head_dim, weights.value_head_dim)


_NAMES = frozenset(_KERNELS.values()) | frozenset(_BIASES.values())
