"""Shared pieces of the ONNX Runtime adapters: dtypes, model building, the session cache.

Imports onnx and onnxruntime lazily (inside functions), so importing the adapter modules stays
framework-free. Models use the default domain at opset 23 (the first with `Attention`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np

from attnconf.reference._checks import invalid

Array = np.ndarray[Any, Any]

OPSET = 23
IR_VERSION = 11  # the lowest IR version for opset 23 (onnx.helper.find_min_ir_version_for)
DISTRIBUTIONS = ("onnx", "onnxruntime")
MODULES = ("onnx", "onnxruntime")
PROVIDERS = ["CPUExecutionProvider"]
#: Precisions the CPU provider runs the `Attention` op in. bfloat16 has no CPU kernel and the
#: function-body fallback fails on Expand(13): https://github.com/microsoft/onnxruntime/issues/27891
DTYPES = frozenset({"float64", "float32", "float16"})
_NUMPY = {"float64": np.float64, "float32": np.float32, "float16": np.float16}
_CACHE_SIZE = 64
#: onnxruntime loads IR version 11 (hence opset 23 and its `Attention`) from 1.23 on; 1.22.1
#: refuses with "Unsupported model IR version: 11, max supported IR version: 10" (tox matrix).
FIRST_RELEASE = ("onnxruntime", "1.23", f"cannot load opset-{OPSET} models (IR version {IR_VERSION}), "
                 "the first opset with Attention: it takes onnxruntime >= 1.23")


def float64_scale_precision() -> tuple[tuple[str, str, str], ...]:
    """`Capabilities.scale_precision` of the `Attention` op in float64 on the CPU (releases measured).

    ONNX Runtime registers CPU kernels for `Attention` in float32 and float16 only; a float64 model
    runs the op's ONNX function body, which computes sqrt(scale) in float32 and casts it to double, so
    Q and K are scaled by a float32-rounded factor: logits carry ~1e-7 relative error (exact only for
    D = 1, 16, 256). The ONNX reference implementation computes the scale in the input precision."""
    from attnconf.adapters.support import release_in

    if not release_in("onnxruntime", ">=1.22,<1.33"):
        return ()
    return (("float64", "float32",
             "no float64 CPU kernel: the op's function body scales Q and K by sqrt(scale) computed in float32 "
             "(https://github.com/onnx/onnx/blob/main/onnx/defs/nn/utils.cc); measured with onnxruntime 1.32"),)


def numpy_dtype(dtype: str) -> Any:
    """The NumPy dtype that feeds ONNX tensors of precision `dtype`."""
    if dtype not in _NUMPY:
        raise invalid("dtype", f"one of {sorted(_NUMPY)} (ONNX Runtime CPU)", repr(dtype))
    return _NUMPY[dtype]


def elem_type(dtype: str | np.dtype[Any]) -> int:
    """The `TensorProto` element type of a precision name or NumPy dtype."""
    from onnx import helper

    np_dtype = np.dtype(numpy_dtype(dtype) if isinstance(dtype, str) else dtype)
    return int(helper.np_dtype_to_tensor_dtype(np_dtype))


def value_info(name: str, dtype: str | np.dtype[Any], shape: tuple[int, ...]) -> Any:
    from onnx import helper

    return helper.make_tensor_value_info(name, elem_type(dtype), list(shape))


def attention_node(inputs: list[str], outputs: list[str], causal: bool, scale: float | None) -> Any:
    """The opset-23 `Attention` node; `scale` None leaves the op's default 1/sqrt(head_size)."""
    from onnx import helper

    attrs: dict[str, Any] = {}
    if causal:
        attrs["is_causal"] = 1
    if scale is not None:
        attrs["scale"] = float(scale)
    if len(outputs) > 3 and outputs[3]:
        attrs["qk_matmul_output_mode"] = 3  # the softmax output: the attention weights
    return helper.make_node("Attention", inputs, outputs, **attrs)


def make_model(
    nodes: list[Any], inputs: list[Any], outputs: list[Any], initializers: tuple[Any, ...] | list[Any] = ()
) -> Any:
    """A checked `ModelProto` at opset 23."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "attnconf", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="attnconf")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _new_session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # small problems; no contention with other workers
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=PROVIDERS)


class SessionCache:
    """InferenceSessions keyed by whatever defines the model (shapes, dtype, flags, weights)."""

    def __init__(self, size: int = _CACHE_SIZE):
        self.size = size
        self._sessions: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any, build: Any) -> Any:
        """The session for `key`, building the model with `build()` on a miss."""
        if key in self._sessions:
            self._sessions.move_to_end(key)
            return self._sessions[key]
        session = _new_session(build().SerializeToString())
        self._sessions[key] = session
        if len(self._sessions) > self.size:
            self._sessions.popitem(last=False)
        return session


def digest(arrays: dict[str, Array]) -> str:
    """A content hash of named arrays (for caching sessions whose weights are initializers)."""
    h = hashlib.sha1()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def as_attn_mask(mask: Array, dtype: str) -> Array:
    """A mask for the op's `attn_mask`: boolean kept (True = attend), float cast to `dtype`."""
    m = np.asarray(mask)
    if m.dtype == np.bool_:
        return m
    if np.issubdtype(m.dtype, np.floating):
        return m.astype(numpy_dtype(dtype))
    raise invalid("mask", "a boolean or floating-point array", f"dtype {m.dtype}")
