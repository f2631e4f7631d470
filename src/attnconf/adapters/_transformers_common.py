"""What the Hugging Face transformers adapters share: the attention module as a model calls it.

A model port loads a checkpoint into a model whose attention modules (`BertSelfAttention`,
`LlamaAttention`, ...) dispatch to one of transformers' attention functions by
``config._attn_implementation`` ("eager", "sdpa", "flex_attention"); the model builds the 4-D
mask outside the module with `transformers.masking_utils` and passes it as `attention_mask`.
The adapters do the same: the module is built from a config object (no download), the canonical
weights are loaded into its `nn.Linear` layers (weight `(out, in)`, ``y = x @ W.T + b``, heads
split head-major along `out`: feature ``h * D + d``), and the mask comes from the masking
function the model itself calls, for the configured implementation:

* a key padding mask (the same for every query, `(B, S)`) goes in as the model's 2-D
  ``attention_mask`` (True = real token);
* any other `(B, T, S)` mask goes in as ``and_mask_function`` (documented in
  `create_causal_mask` / `create_bidirectional_mask` for custom patterns), reading the mask;
* the keys' length S reaches the mask builder through that 2-D mask (all True when the spec has
  no mask) or, for BERT's cross-attention, through ``encoder_hidden_states``.

The forward pass takes one `hidden_states` for queries, keys and values. Self-attention (key and
value the very query array) calls the module's `forward`; anything else (cross-attention, or the
gradients, which need separate query, key and value leaves) runs the module's own projection layers
and the module's own attention function (`ALL_ATTENTION_FUNCTIONS.get_interface`, what `forward`
dispatches to), as transformers' cross-attention modules (`BertCrossAttention`) compose them:
nothing of the attention itself is reimplemented.

transformers imports torch only (measured with 5.24: neither tensorflow, jax nor flax is imported;
transformers 5 dropped its TensorFlow and Flax code).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np

from attnconf.adapters import _torch
from attnconf.adapters.support import BIASES
from attnconf.contract import AdapterBase, AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.reference._checks import invalid

Array = np.ndarray[Any, Any]

#: The attention implementations that run on a CPU, in transformers' own names.
IMPLEMENTATIONS = ("eager", "sdpa", "flex_attention")
#: Where transformers dispatches them (source lines the reasons link to).
SOURCE = "https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers"


def linear_weight(kernel: Array) -> Array:
    """An einsum kernel `(E_in, ..., )` -> an `nn.Linear` weight `(out, E_in)` (out = the rest, flattened)."""
    return kernel.reshape(kernel.shape[0], -1).T


def output_weight(kernel: Array) -> Array:
    """The output kernel `(H, D_v, E_out)` -> an `nn.Linear` weight `(E_out, H * D_v)`."""
    return kernel.reshape(-1, kernel.shape[-1]).T


def load(module: Any, params: dict[str, Array], dtype: str) -> None:
    """Copy `params` (NumPy, by parameter name) into `module`'s parameters."""
    t = _torch.torch()
    with t.no_grad():
        for name, array in params.items():
            module.get_parameter(name).copy_(_torch.tensor(np.ascontiguousarray(array), dtype))


def read(module: Any, names: list[str], dtype: str) -> dict[str, Array]:
    """`module`'s parameters `names` as NumPy arrays."""
    return {n: _torch.to_numpy(module.get_parameter(n), dtype) for n in names}


def require_equal(name: str, what: str, got: int, want: int, api: str) -> None:
    if got != want:
        raise invalid(name, f"{what} for {api}", got)


def is_self_attention(inputs: AttentionInputs) -> bool:
    return inputs.key is inputs.query and inputs.value is inputs.query


def key_padding(mask: Array | None) -> Array | None:
    """The `(B, S)` key padding mask when `mask` `(B, T, S)` is the same for every query, else None."""
    if mask is None or not (mask == mask[:, :1]).all():
        return None
    return np.ascontiguousarray(mask[:, 0])


def model_mask(config: Any, inputs: AttentionInputs, embeds: Any, decoder: bool) -> Any:
    """The `attention_mask` the model passes to its attention modules, built by `transformers.masking_utils`.

    `embeds` is the query's hidden states tensor `(B, T, E)` (batch, length and dtype come from it).
    An encoder (`decoder=False`, BERT's `BertModel`): `create_bidirectional_mask`, with
    ``encoder_hidden_states`` standing for the keys in cross-attention. A decoder (LLaMA's
    `LlamaModel`): `create_causal_mask` with no cache, on a copy of the config whose ``is_causal`` is
    `inputs.causal` (``is_causal=False`` is transformers' switch for running a decoder
    bidirectionally: the builder then makes the bidirectional mask).
    """
    t = _torch.torch()
    from transformers import masking_utils

    B, S = inputs.query.shape[0], inputs.key.shape[1]
    padding = key_padding(inputs.mask)
    extra: dict[str, Any] = {}
    if inputs.mask is not None and padding is None:
        spec = t.from_numpy(np.ascontiguousarray(inputs.mask))

        def spec_mask(batch_idx: Any, head_idx: Any, q_idx: Any, kv_idx: Any) -> Any:
            return spec[batch_idx, q_idx, kv_idx]

        extra["and_mask_function"] = spec_mask
    if not decoder:
        if inputs.causal:
            raise invalid("causal", "False (an encoder's self-attention has no causal flag)", True)
        kv = None if is_self_attention(inputs) else t.zeros((B, S, 1), dtype=embeds.dtype)  # its shape is read
        return masking_utils.create_bidirectional_mask(
            config, embeds, None if padding is None else t.from_numpy(padding), encoder_hidden_states=kv, **extra
        )
    cfg = copy.copy(config)
    cfg.is_causal = bool(inputs.causal)
    two_d = t.from_numpy(padding) if padding is not None else t.ones((B, S), dtype=t.bool)  # S from its length
    return masking_utils.create_causal_mask(cfg, embeds, two_d, None, **extra)


def attention_function(module: Any) -> Any:
    """The attention function `module.forward` dispatches to for its config's implementation."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eager = __import__(type(module).__module__, fromlist=["eager_attention_forward"]).eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(module.config._attn_implementation, eager)


def heads(x: Any, head_dim: int) -> Any:
    """`(B, N, H * D)` -> `(B, H, N, D)`, as the modules' ``view(...).transpose(1, 2)``."""
    return x.view(*x.shape[:-1], -1, head_dim).transpose(1, 2)


def tensors(inputs: AttentionInputs, dtype: str, grad: bool) -> tuple[Any, Any, Any]:
    """query, key and value tensors; self-attention shares one tensor unless `grad` (separate leaves)."""
    q = _torch.tensor(inputs.query, dtype, requires_grad=grad)
    if is_self_attention(inputs) and not grad:
        return q, q, q
    return (
        q,
        _torch.tensor(inputs.key, dtype, requires_grad=grad),
        _torch.tensor(inputs.value, dtype, requires_grad=grad),
    )


class TransformersAttention(AdapterBase):
    """An attention module of transformers behind the contract; subclasses name the model and implementation.

    Subclasses set `implementation` (one of `IMPLEMENTATIONS`) and implement `_build` (the modules for a
    config), `to_native` / `from_native` (canonical weights <-> parameters by name), `_forward` (the
    module's own forward on one hidden_states tensor) and `_project` / `_finish` (its projection layers
    and output projection around its attention function, for cross-attention and gradients).
    """

    framework = "transformers"
    distributions = ("transformers", "torch")
    modules = ("transformers", "torch")
    process_group = "transformers"
    implementation: ClassVar[str] = "eager"
    decoder: ClassVar[bool] = False

    def __init__(self) -> None:
        self._modules: dict[tuple[Any, ...], Any] = {}

    # -- subclass hooks --------------------------------------------------------------------------
    def _key(self, w: AttentionWeights) -> tuple[Any, ...]:
        raise NotImplementedError

    def _build(self, w: AttentionWeights, dropout: float) -> Any:
        raise NotImplementedError

    def to_native(self, w: AttentionWeights) -> dict[str, Array]:
        raise NotImplementedError

    def from_native(self, p: dict[str, Array], w: AttentionWeights) -> AttentionWeights:
        raise NotImplementedError

    def _forward(self, m: Any, x: Any, mask: Any, **kwargs: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def _project(self, m: Any, q: Any, k: Any, v: Any) -> tuple[Any, Any, Any]:
        raise NotImplementedError

    def _finish(self, m: Any, context: Any) -> Any:
        raise NotImplementedError

    def _attention_module(self, m: Any) -> Any:
        raise NotImplementedError

    # -- the calls -------------------------------------------------------------------------------
    def _module(self, w: AttentionWeights, dtype: str, dropout: float = 0.0) -> Any:
        """The modules for `w`'s shapes (cached per shape, dtype and dropout; eval mode) with `w` loaded."""
        key = (*self._key(w), dtype, dropout)
        if key not in self._modules:
            self._modules[key] = self._build(w, dropout).to(_torch.torch_dtype(dtype)).eval()
        m = self._modules[key]
        load(m, self.to_native(w), dtype)
        return m

    def _attend(self, m: Any, inputs: AttentionInputs, dtype: str, mask: Any, grad: bool) -> tuple[Any, ...]:
        """(output, weights or None, query, key, value tensors)."""
        if inputs.scale is not None:
            raise invalid("scale", f"None ({self.api} takes its scale 1/sqrt(head_dim) from the config)", inputs.scale)
        q, k, v = tensors(inputs, dtype, grad)
        if mask is _MODEL:
            mask = model_mask(self._attention_module(m).config, inputs, q, self.decoder)
        # A decoder model (LLaMA's, through `merge_with_config_defaults`) hands `is_causal` down to each
        # attention module's attention function as a keyword; an encoder's (BERT's) hands nothing.
        kw = {"is_causal": bool(inputs.causal)} if self.decoder else {}
        if is_self_attention(inputs) and not grad:
            out, weights = self._forward(m, q, mask, **kw)
        else:
            attn = self._attention_module(m)
            qh, kh, vh = self._project(m, q, k, v)
            context, weights = attention_function(attn)(attn, qh, kh, vh, mask, dropout=0.0, scaling=attn.scaling, **kw)
            out = self._finish(m, context.reshape(*q.shape[:-1], -1).contiguous())
        return out, weights, q, k, v

    def _run(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, mask: Any = None, dropout: float = 0.0
    ) -> AttentionOutputs:
        m = self._module(weights, dtype, dropout)
        with _torch.torch().no_grad():
            out, attn, *_ = self._attend(m, inputs, dtype, _MODEL if mask is None else mask, grad=False)
        returned = attn if self.capabilities.returns_weights else None
        return AttentionOutputs(
            _torch.to_numpy(out, dtype), None if returned is None else _torch.to_numpy(returned, dtype)
        )

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        return self._run(inputs, weights, dtype)

    def with_dropout(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, rate: float
    ) -> AttentionOutputs:
        """The modules built with attention dropout `rate` in the config, called in eval mode (`module.eval()`)."""
        return self._run(inputs, weights, dtype, dropout=rate)

    def native_mask_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, native_mask: Array
    ) -> AttentionOutputs:
        """`native_mask` `(B, T, S)` handed to the module's `attention_mask` as is (bool or float), as `(B, 1, T, S)`."""
        m = np.asarray(native_mask)[:, None]
        t = _torch.torch()
        mask = t.from_numpy(np.ascontiguousarray(m)) if m.dtype == np.bool_ else _torch.tensor(m, dtype)
        return self._run(inputs, weights, dtype, mask=mask)

    def round_trip_weights(self, weights: AttentionWeights, dtype: str) -> AttentionWeights:
        m = self._module(weights, dtype)
        back = self.from_native(read(m, list(self.to_native(weights)), dtype), weights)
        return AttentionWeights(**given(weights, back.arrays()))

    def multi_head_attention_vjp(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, cotangent: Array
    ) -> dict[str, Array]:
        """Gradients of `sum(output * cotangent)` by torch autograd through the modules, canonical layout."""
        t = _torch.torch()
        m = self._module(weights, dtype)
        names = list(self.to_native(weights))
        params = [m.get_parameter(n) for n in names]
        for p in params:
            p.requires_grad_(True)
        out, _, q, k, v = self._attend(m, inputs, dtype, _MODEL, grad=True)
        grads = t.autograd.grad(out, [q, k, v, *params], _torch.tensor(cotangent, dtype))
        native = {n: _torch.to_numpy(g, dtype) for n, g in zip(names, grads[3:], strict=True)}
        canonical = given(weights, self.from_native(native, weights).arrays())
        return {
            "query": _torch.to_numpy(grads[0], dtype),
            "key": _torch.to_numpy(grads[1], dtype),
            "value": _torch.to_numpy(grads[2], dtype),
            **canonical,
        }


#: "build the mask as the model does" (`model_mask`), as opposed to a native mask given as is.
_MODEL: Any = object()


def given(w: AttentionWeights, arrays: dict[str, Array]) -> dict[str, Array]:
    """`arrays` less the biases that `w` does not have (zeros stood in for them in the module)."""
    return {n: a for n, a in arrays.items() if n not in BIASES or getattr(w, n) is not None}


#: Why flex_attention has no gradients here (measured with torch 2.13 on the CPU).
FLEX_NO_BACKWARD = (
    "torch's flex_attention raises NotImplementedError 'FlexAttention does not support backward on "
    "CPU' (torch/nn/attention/flex_attention.py, _validate_device)"
)
#: Why the eager attention of LLaMA-style models has float32 accuracy in float64 (softmax in float32).
EAGER_SOFTMAX = (
    f"eager_attention_forward computes the softmax with dtype=torch.float32 and casts back "
    f"({SOURCE}/models/llama/modeling_llama.py, eager_attention_forward)"
)


def capabilities(
    implementation: str, *, causal: bool, gqa: bool, head_dim: bool, eager_softmax_float32: bool, notes: str
) -> Capabilities:
    """The capabilities of a transformers attention module under `implementation`."""
    eager = implementation == "eager"
    flex = implementation == "flex_attention"
    limits: list[tuple[str, str]] = []
    if flex:
        limits.append(("gradients", FLEX_NO_BACKWARD))
    precision = (("float64", "float32", EAGER_SOFTMAX),) if eager and eager_softmax_float32 else ()
    return Capabilities(
        level="layer",
        causal=causal,
        causal_alignment="top_left" if causal else None,
        causal_with_mask=causal,
        returns_weights=eager,
        gqa=gqa,
        mqa=gqa,
        kdim_vdim=False,
        value_dim=False,
        head_dim=head_dim,
        output_dim=False,
        bias_free=True,
        custom_scale=False,
        weight_round_trip=True,
        gradients=not flex,
        notes=f"attn_implementation={implementation!r}; {notes}",
        limits=tuple(limits),
        precision=precision,
    )


#: Set to 1 to run the flex_attention adapters (they are left out by default: see `FLEX_OFF`).
FLEX_SWITCH = "ATTNCONF_TRANSFORMERS_FLEX"
#: Why the flex_attention adapters do not run by default (measured with torch 2.13.0+cpu, transformers 5.24.0).
FLEX_OFF = (
    f"flex_attention runs on the CPU only through torch.compile (inductor, a C++ compiler): about 50 s of "
    f"compilation per new shape (8 tests of BertSelfAttention[flex_attention] in float32 took 393 s), and "
    f"inductor fails to compile the kernel for a mask that differs between queries (CppCompileError "
    f"\"'cur_kvSplitSize5' was not declared in this scope\"); set {FLEX_SWITCH}=1 to run it"
)


class FlexMixin:
    """flex_attention: unavailable unless `FLEX_SWITCH` is set (the reason is `FLEX_OFF`)."""

    @classmethod
    def missing(cls) -> str | None:
        import os

        reason = super().missing()  # type: ignore[misc]
        if reason is None and os.environ.get(FLEX_SWITCH) != "1":
            return FLEX_OFF
        return reason
