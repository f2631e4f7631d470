"""Chapter `permutation`: without positions, attention does not know the order of its inputs.

Self-attention is permutation-equivariant: permuting the sequence permutes the output the same
way. Permuting keys and values together (and the mask's key axis) leaves every output unchanged.
With sinusoidal positions added to the embeddings, word order shows: "the dog bites the man" and
"the man bites the dog" give different outputs at "bites", which without positions they do not.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from attnconf.conformance import invariants, profiles, strategies
from attnconf.conformance.invariants import assert_change, run
from attnconf.contract import AttentionInputs
from attnconf.reference import sinusoidal_positions


@profiles.conformance
@given(data=st.data())
def test_self_attention_is_permutation_equivariant(adapter, dtype, check, data):
    shape = data.draw(strategies.shapes(adapter.capabilities, square=True), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    perm = np.array(data.draw(strategies.permutations(shape.T), label="permutation"))
    inputs, weights = invariants.case(shape, seed, self_attention=True)
    x = inputs.query[:, perm]
    a = run(check, inputs, weights, "sequence")
    b = run(check, dataclasses.replace(inputs, query=x, key=x, value=x), weights, "permuted sequence")
    claim = f"permutation: self-attention without positions is permutation-equivariant (permutation {perm.tolist()})"
    assert_change(check, a, b, claim, map_a=lambda y: y[:, perm])
    if a.got.weights is not None:
        assert_change(check, a, b, claim, what="weights", map_a=lambda w: w[:, :, perm][:, :, :, perm])


@profiles.conformance
@given(data=st.data())
def test_key_value_permutation_invariance(adapter, dtype, check, data):
    caps = adapter.capabilities
    shape = data.draw(strategies.shapes(caps, min_keys=2), label="shape")  # a permutation other than the identity
    seed = data.draw(strategies.seeds(), label="seed")
    mask = data.draw(strategies.optional_masks(caps, shape), label="mask")
    perm = np.array(data.draw(strategies.permutations(shape.S), label="permutation"))
    inputs, weights = invariants.case(shape, seed, mask=mask)
    permuted = dataclasses.replace(inputs, key=inputs.key[:, perm], value=inputs.value[:, perm],
                                   mask=None if mask is None else mask[:, :, perm])
    a = run(check, inputs, weights, "keys and values")
    b = run(check, permuted, weights, "keys and values permuted")
    claim = f"permutation: permuting keys and values together changes no output (permutation {perm.tolist()})"
    assert_change(check, a, b, claim)
    if a.got.weights is not None:
        assert_change(check, a, b, claim, what="weights", map_a=lambda w: w[..., perm])


#: "the dog bites the man ." as token ids (the=0, dog=1, bites=2, man=3, .=4); swapping words 1
#: and 4 gives "the man bites the dog .". Position 2 ("bites") is the same word in both.
SENTENCE = np.array([0, 1, 2, 0, 3, 4])
SWAP = np.array([0, 4, 2, 3, 1, 5])
BITES = 2


@profiles.conformance
@given(data=st.data())
def test_word_order_matters_with_positions(adapter, dtype, check, data):
    shape = data.draw(strategies.shapes(adapter.capabilities, square=True).filter(
        lambda s: s.T == len(SENTENCE)), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    words = np.random.default_rng(seed + 1).standard_normal((shape.B, 5, shape.E))  # embeddings per element
    dog = words[:, SENTENCE]
    man = dog[:, SWAP]  # the same words, "man" and "dog" swapped
    positions = sinusoidal_positions(len(SENTENCE), shape.E)[None]
    _, weights = invariants.case(shape, seed)
    weights = invariants.with_logit_magnitude(AttentionInputs(dog + positions, dog + positions, dog + positions),
                                              weights, 10.0)

    def attend(x, label):
        return run(check, AttentionInputs(x, x, x), weights, label)

    a, b = attend(dog, '"the dog bites the man"'), attend(man, '"the man bites the dog"')
    assert_change(check, a, b, "permutation: without positions, word order does not change the output of a word",
                  map_a=lambda y: y[:, SWAP])
    a, b = attend(dog + positions, '"the dog bites the man" + positions'), attend(
        man + positions, '"the man bites the dog" + positions')
    at_bites = np.arange(len(SENTENCE)) == BITES
    # The spec's outputs at "bites" differ now; the adapter's must differ by the same amount.
    assert_change(check, a, b, 'permutation: with sinusoidal positions, "the dog bites the man" and "the man bites '
                  'the dog" differ at "bites" exactly as the spec says', where=at_bites[None, :, None])
