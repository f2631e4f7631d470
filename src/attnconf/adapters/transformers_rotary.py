"""Hugging Face transformers' rotary embeddings, as the models that load with them compute them
(``level="rotary"`` adapters: `rotary_embedding` only, no attention).

Each adapter builds the model's own rotary module from a config (the base in ``rope_parameters``,
``rope_theta``; a partial rotation where the model has one), calls it for cos and sin at the
positions, and applies the model's own helper, exactly the two calls the model's attention makes:

* ``transformers.models.llama`` (layout "half", rotate-half, all of D): `LlamaRotaryEmbedding`,
  `apply_rotary_pos_emb` with `rotate_half`. Llama rotates every feature (no partial rotation).
* ``transformers.models.gpt_neox`` (layout "half", partial): `GPTNeoXRotaryEmbedding` with
  ``partial_rotary_factor = rotary_dim / D``; its `apply_rotary_pos_emb` rotates the first
  ``cos.shape[-1]`` features and passes the rest.
* ``transformers.models.cohere`` (layout "interleaved", all of D): `CohereRotaryEmbedding`
  (frequencies repeated pairwise), `apply_rotary_pos_emb` with its interleaved `rotate_half`;
  it computes in float32 whatever the input dtype and casts back.
* ``transformers.models.gptj`` (layout "interleaved", partial): `GPTJRotaryEmbedding` (a table of
  ``sin, cos`` by position, `create_sinusoidal_positions`, base 10000 fixed in the code: another
  `theta` is refused, ``rotary_theta=False``) and `apply_rotary_pos_emb` with `rotate_every_two`
  on the first ``rotary_dim`` features, the rest passed, as `GPTJAttention` does.

Every module computes its frequencies and angles in float32 (``torch.arange(..., dtype=torch.float)``,
``position_ids.float()``) and casts cos and sin to the input dtype: a float64 input is rotated
at float32 accuracy (`FLOAT64_IN_FLOAT32`). The transformers code runs on CPU tensors; no model
weights are read or downloaded (the configs are built in memory).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from attnconf.adapters import _torch
from attnconf.adapters.support import RotaryAdapterBase
from attnconf.contract import Capabilities
from attnconf.reference._checks import FLOAT_DTYPES, invalid

Array = np.ndarray[Any, Any]

#: The angles are float32 in every module (see the module docstring); measured with transformers 5.24.0.
FLOAT64_IN_FLOAT32 = (
    "float64",
    "float32",
    "transformers computes the rotary frequencies and angles in float32 for every input dtype "
    "(inv_freq from torch.arange(..., dtype=torch.float), position_ids.float(); "
    "https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py); "
    "measured with transformers 5.24.0",
)


def _torch_inputs(x: Array, positions: Array, dtype: str) -> tuple[Any, Any]:
    """x `(B, H, N, D)` as a tensor of `dtype`; positions `(B, N)` (or `(N,)`) as int64 `(B, N)`."""
    t = _torch.torch()
    pos = np.asarray(positions, dtype=np.int64)
    if pos.ndim == 1:
        pos = np.broadcast_to(pos, (np.shape(x)[0], pos.shape[0]))
    return _torch.tensor(x, dtype), t.from_numpy(np.ascontiguousarray(pos))


class HFRotaryBase(RotaryAdapterBase):
    """What the transformers rotary adapters share: identity, capabilities, the call around `_rotate`."""

    framework = "torch"
    distributions = ("transformers", "torch")
    modules = ("transformers", "torch")
    process_group = "torch"
    layout: ClassVar[str]
    partial: ClassVar[bool] = False
    any_theta: ClassVar[bool] = True

    @classmethod
    def _capabilities(cls) -> Capabilities:
        return Capabilities(
            level="rotary",
            causal=False,
            causal_alignment=None,
            causal_with_mask=False,
            boolean_mask=False,
            returns_weights=False,
            rotary_layouts=frozenset({cls.layout}),
            rotary_partial=cls.partial,
            rotary_theta=cls.any_theta,
            precision=(FLOAT64_IN_FLOAT32,),
            dtypes=frozenset(FLOAT_DTYPES),
            limits=() if cls.any_theta else (("rotary_theta", f"{cls.api}: the base is 10000, fixed in the code"),),
            notes=f"{cls.api}: the model's rotary module for cos/sin, its helper to rotate"
            + ("" if cls.any_theta else "; base 10000 only (fixed in the model's code)"),
        )


    def _rotate(self, x: Any, pos: Any, rotary_dim: int, theta: float) -> Any:
        raise NotImplementedError

    def rotary_embedding(
        self,
        x: Array,
        positions: Array,
        dtype: str,
        *,
        layout: str,
        rotary_dim: int | None = None,
        theta: float = 10000.0,
    ) -> Array:
        """x `(B, H, N, D)` rotated at `positions` `(B, N)` -> `(B, H, N, D)` in precision `dtype`."""
        if layout != self.layout:
            raise invalid("layout", repr(self.layout), repr(layout))
        D = int(np.shape(x)[-1])
        r = D if rotary_dim is None else int(rotary_dim)
        if r != D and not self.partial:
            raise invalid("rotary_dim", f"None or D={D} ({self.api} rotates every feature)", repr(rotary_dim))
        if theta != 10000.0 and not self.any_theta:
            raise invalid("theta", f"10000.0 ({self.api} has the base fixed)", repr(theta))
        t = _torch.torch()
        with t.inference_mode():
            tx, pos = _torch_inputs(x, positions, dtype)
            out = self._rotate(tx, pos, r, float(theta))
        return _torch.to_numpy(out, dtype)


class HFLlamaRotary(HFRotaryBase):
    """`LlamaRotaryEmbedding` + `apply_rotary_pos_emb` (rotate-half) of transformers' Llama."""

    name = "transformers.models.llama.apply_rotary_pos_emb"
    api = "transformers LlamaRotaryEmbedding + modeling_llama.apply_rotary_pos_emb"
    layout = "half"

    def _rotate(self, x: Any, pos: Any, rotary_dim: int, theta: float) -> Any:
        from transformers import LlamaConfig
        from transformers.models.llama import modeling_llama as m

        D = x.shape[-1]
        config = LlamaConfig(
            hidden_size=D,
            num_attention_heads=1,
            head_dim=D,
            max_position_embeddings=1,
            rope_parameters={"rope_type": "default", "rope_theta": theta},
        )
        cos, sin = m.LlamaRotaryEmbedding(config)(x, pos)
        return m.apply_rotary_pos_emb(x, x, cos, sin)[0]


class HFGPTNeoXRotary(HFRotaryBase):
    """`GPTNeoXRotaryEmbedding` (partial_rotary_factor) + `apply_rotary_pos_emb` of transformers' GPT-NeoX."""

    name = "transformers.models.gpt_neox.apply_rotary_pos_emb"
    api = "transformers GPTNeoXRotaryEmbedding + modeling_gpt_neox.apply_rotary_pos_emb"
    layout = "half"
    partial = True

    def _rotate(self, x: Any, pos: Any, rotary_dim: int, theta: float) -> Any:
        from transformers import GPTNeoXConfig
        from transformers.models.gpt_neox import modeling_gpt_neox as m

        D = x.shape[-1]
        # the base and the factor go in rope_parameters: GPTNeoXConfig(rope_theta=..., partial_rotary_factor=...)
        # keeps its defaults (10000, 0.25) silently (measured, transformers 5.24.0)
        config = GPTNeoXConfig(
            hidden_size=D,
            num_attention_heads=1,
            max_position_embeddings=1,
            rope_parameters={"rope_type": "default", "rope_theta": theta, "partial_rotary_factor": rotary_dim / D},
        )
        cos, sin = m.GPTNeoXRotaryEmbedding(config)(x, pos)
        if cos.shape[-1] != rotary_dim:
            raise invalid(
                "rotary_dim",
                f"a width GPT-NeoX's int(D * partial_rotary_factor) reproduces ({rotary_dim})",
                cos.shape[-1],
            )
        return m.apply_rotary_pos_emb(x, x, cos, sin)[0]


class HFCohereRotary(HFRotaryBase):
    """`CohereRotaryEmbedding` + `apply_rotary_pos_emb` (interleaved) of transformers' Cohere."""

    name = "transformers.models.cohere.apply_rotary_pos_emb"
    api = "transformers CohereRotaryEmbedding + modeling_cohere.apply_rotary_pos_emb"
    layout = "interleaved"

    def _rotate(self, x: Any, pos: Any, rotary_dim: int, theta: float) -> Any:
        from transformers import CohereConfig
        from transformers.models.cohere import modeling_cohere as m

        D = x.shape[-1]
        config = CohereConfig(
            hidden_size=D,
            num_attention_heads=1,
            max_position_embeddings=1,
            rope_parameters={"rope_type": "default", "rope_theta": theta},
        )
        cos, sin = m.CohereRotaryEmbedding(config)(x, pos)
        return m.apply_rotary_pos_emb(x, x, cos, sin)[0]


class HFGPTJRotary(HFRotaryBase):
    """`GPTJRotaryEmbedding` + `apply_rotary_pos_emb` (rotate_every_two) of transformers' GPT-J."""

    name = "transformers.models.gptj.apply_rotary_pos_emb"
    api = "transformers GPTJRotaryEmbedding + modeling_gptj.apply_rotary_pos_emb"
    layout = "interleaved"
    partial = True
    any_theta = False

    def _rotate(self, x: Any, pos: Any, rotary_dim: int, theta: float) -> Any:
        from transformers import GPTJConfig
        from transformers.models.gptj import modeling_gptj as m

        t = _torch.torch()
        D = x.shape[-1]
        config = GPTJConfig(n_embd=D, n_head=1, rotary_dim=rotary_dim, n_positions=int(pos.max()) + 1)
        xs = x.transpose(1, 2)  # GPT-J rotates (B, N, heads, D)
        sin, cos = m.GPTJRotaryEmbedding(config)(xs, pos)
        rotated = m.apply_rotary_pos_emb(xs[..., :rotary_dim], sin, cos)  # as GPTJAttention: rotate, then pass
        return t.cat([rotated, xs[..., rotary_dim:]], dim=-1).transpose(1, 2)
