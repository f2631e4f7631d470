"""The pytest plugin, driven through pytester against a correct and a deliberately wrong adapter."""

from __future__ import annotations

import json

import pytest

ADAPTERS = '''
import numpy as np
from attnconf.adapters.numpy_ref import NumpyAdapter
from attnconf.adapters.base import AdapterBase, AttentionOutputs, Capabilities
from attnconf.reference import multi_head_attention, rotary_embedding

class Good(NumpyAdapter):
    name = "good"

class WrongScale(NumpyAdapter):
    """Scales logits by 1/d_k instead of 1/sqrt(d_k)."""
    name = "wrong-scale"
    capabilities = Capabilities(level="layer", custom_scale=False, dtypes=frozenset({"float64", "float32"}))

    def multi_head_attention(self, inputs, weights, dtype):
        import dataclasses
        d_k = weights.key_head_dim
        return multi_head_attention(dataclasses.replace(inputs, scale=1.0 / d_k), weights, dtype=dtype)

class NotAnAdapter:
    name = "broken"

class RotaryOnly(AdapterBase):
    """A rotary embedding and nothing else (the reference's): level "rotary"."""
    name = "rotary-only"
    capabilities = Capabilities(level="rotary", rotary_layouts=frozenset({"half"}))

    def rotary_embedding(self, x, positions, dtype, *, layout, rotary_dim=None, theta=10000.0):
        return rotary_embedding(x, positions, layout=layout, rotary_dim=rotary_dim, theta=theta, dtype=dtype)

class WindowWithoutMethod(AdapterBase):
    """Declares sliding windows and implements no convention_attention."""
    name = "window-without-method"
    capabilities = Capabilities(level="layer", conventions=frozenset({"window"}))

    def multi_head_attention(self, inputs, weights, dtype):
        return multi_head_attention(inputs, weights, dtype=dtype)

class WrongScaleDeclared(WrongScale):
    """WrongScale with its departure declared, one entry for releases not installed, one stale."""
    name = "wrong-scale-declared"
    expected_differences = [
        {"adapter": "wrong-scale-declared", "test": "test_agreement", "case": "self", "versions": "numpy>=1",
         "max_abs": 10.0, "reason": "declared", "link": "https://example.org/1"},
        {"adapter": "wrong-scale-declared", "test": "test_agreement", "case": "single_head", "versions": "numpy<1",
         "max_abs": 10.0, "reason": "old releases only", "link": "https://example.org/2"},
        {"adapter": "wrong-scale-declared", "test": "test_no_such_chapter", "versions": "numpy>=1", "max_abs": 10.0,
         "reason": "stale", "link": "https://example.org/3"},
    ]

class CountingWrongScale(WrongScale):
    """WrongScale that appends a line to $CALLS for every call."""
    name = "counting-wrong-scale"

    def multi_head_attention(self, inputs, weights, dtype):
        import os
        with open(os.environ["CALLS"], "a") as f:
            f.write("call\\n")
        return super().multi_head_attention(inputs, weights, dtype)

class CountingWrongScaleDeclared(CountingWrongScale):
    name = "counting-wrong-scale-declared"
    expected_differences = [{"adapter": "counting-wrong-scale-declared", "test": "test_default_scale_is_inverse_sqrt_dk",
                             "versions": "numpy>=1", "max_abs": 10.0, "reason": "declared", "link": "https://example.org/4"}]
'''


@pytest.fixture
def adapters_module(pytester):
    pytester.makepyfile(my_adapters=ADAPTERS)
    pytester.syspathinsert()
    return pytester


def test_correct_adapter_passes(adapters_module):
    result = adapters_module.runpytest_subprocess("--pyargs", "attnconf.conformance", "--adapter", "my_adapters:Good",
                                                  "--dtype", "float64", "-k", "agreement or round_trip", "-p", "no:randomly")
    outcomes = result.parseoutcomes()
    from attnconf.adapters.numpy_ref import NumpyAdapter
    from attnconf.conformance.cases import CONFIGS

    # at least every agreement case the adapter's capabilities take (the round trips come on top)
    runs = sum(c.unsupported(NumpyAdapter.capabilities) is None for c in CONFIGS.values())
    assert runs > 0 and outcomes.get("passed", 0) > runs, (runs, outcomes)
    assert "failed" not in outcomes and "errors" not in outcomes, outcomes
    result.stdout.fnmatch_lines(["attnconf adapters:", "  good (numpy *)"])


def test_wrong_adapter_fails_with_a_useful_message(adapters_module):
    out = adapters_module.path / "results.json"
    result = adapters_module.runpytest_subprocess(
        "--pyargs", "attnconf.conformance", "--adapter", "my_adapters:WrongScale", "--dtype", "float32",
        "-k", "test_agreement", f"--attnconf-json={out}")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 9, outcomes
    text = result.stdout.str()
    assert "test_agreement[wrong-scale-float32-self]" in text
    for fragment in ("output of adapter 'wrong-scale' in float32 (case 'self')", "max abs error", "at index (",
                     "expected ", "got ", "tolerance: atol", "reproduce: pytest --pyargs attnconf.conformance --adapter my_adapters:WrongScale --dtype float32"):
        assert fragment in text, fragment
    results = json.loads(out.read_text())
    assert results["schema"] == "attnconf.results/1"
    failed = [t for t in results["tests"] if t["outcome"] == "failed"]
    assert failed and all(t["adapter"] == "wrong-scale" for t in failed)
    assert failed[0]["measurements"][0]["max_abs"] > failed[0]["measurements"][0]["atol"]


def test_rotary_only_adapter_runs_the_rotary_chapter_alone(adapters_module):
    result = adapters_module.runpytest_subprocess(
        "--pyargs", "attnconf.conformance.test_rotary", "attnconf.conformance.test_agreement",
        "attnconf.conformance.test_causality", "attnconf.conformance.test_windows", "--adapter",
        "my_adapters:RotaryOnly", "--dtype", "float32", "-p", "no:randomly", "-rs")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 2 and "failed" not in outcomes and "errors" not in outcomes, outcomes
    result.stdout.fnmatch_lines([
        "*test_agreement*rotary-only implements a rotary embedding only (capabilities.level='rotary'), no attention: "
        "test_agreement does not apply; test_rotary runs it*",
        "*test_windows*rotary-only implements a rotary embedding only*",
    ])


def test_a_declared_convention_without_its_method_fails(adapters_module):
    result = adapters_module.runpytest_subprocess(
        "--pyargs", "attnconf.conformance.test_windows", "attnconf.conformance.test_decode", "--adapter",
        "my_adapters:WindowWithoutMethod", "--dtype", "float64", "-p", "no:randomly", "-rs")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 2 and outcomes.get("skipped") == 3, outcomes  # windows fail, decode skips
    result.stdout.fnmatch_lines([
        "*window-without-method declares 'window' (capabilities.conventions=*) but implements no convention_attention",
        "*window-without-method does not declare 'kv_cache' (capabilities.kv_cache=False)*",
    ])


def test_object_that_is_not_an_adapter_is_refused(adapters_module):
    result = adapters_module.runpytest_subprocess("--pyargs", "attnconf.conformance", "--adapter", "my_adapters:NotAnAdapter")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*my_adapters:NotAnAdapter does not satisfy the attnconf adapter contract*capabilities*"])


def test_unknown_adapter_name_suggests_close_names(adapters_module):
    result = adapters_module.runpytest_subprocess("--pyargs", "attnconf.conformance", "--adapter", "numpi")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*Unknown adapter 'numpi'. Did you mean 'numpy'*"])


def test_plugin_is_inert_outside_conformance_tests(pytester):
    pytester.makepyfile(test_other="def test_x(adapter=1):\n    assert adapter == 1\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    assert "attnconf adapters" not in result.stdout.str()


def test_declared_differences_by_release(adapters_module):
    """A declared departure xfails; one for other releases does not apply; on a partial collection
    (-k) nothing is called stale (tests/test_expected.py covers stale entries on a full one)."""
    result = adapters_module.runpytest_subprocess(
        "--pyargs", "attnconf.conformance", "--adapter", "my_adapters:WrongScaleDeclared", "--dtype", "float32",
        "-k", "test_agreement and (self or single_head)", "-p", "no:randomly")
    outcomes = result.parseoutcomes()
    assert outcomes.get("xfailed") == 1 and outcomes.get("failed") == 1, outcomes
    text = result.stdout.str()
    assert "FAILED test_agreement.py::test_agreement[wrong-scale-declared-float32-single_head]" in text
    assert "stale expected difference" not in text


def test_declared_difference_is_not_shrunk(adapters_module, monkeypatch):
    """A Hypothesis chapter that fails as declared stops at its first failing example; the same
    failure undeclared is shrunk as usual (more adapter calls), and the outcomes are unchanged."""
    calls = {}
    for name, outcome in (("CountingWrongScale", "failed"), ("CountingWrongScaleDeclared", "xfailed")):
        log = adapters_module.path / f"{name}.calls"
        monkeypatch.setenv("CALLS", str(log))
        result = adapters_module.runpytest_subprocess(
            "--pyargs", "attnconf.conformance", "--adapter", f"my_adapters:{name}", "--dtype", "float32",
            "-k", "test_default_scale_is_inverse_sqrt_dk", "-p", "no:randomly")
        assert result.parseoutcomes().get(outcome) == 1 and len(result.parseoutcomes()) == 2, result.parseoutcomes()
        calls[name] = len(log.read_text().splitlines())
    # first example: two calls (D and 2 D); the replay of the failure: two more
    assert calls["CountingWrongScaleDeclared"] <= 4 < calls["CountingWrongScale"], calls


def test_progress_runs_adapter_by_adapter(adapters_module):
    """With --attnconf-progress the session runs one adapter after the other (what lets `attnconf
    run` attribute a crash), even after another plugin reorders the tests (here: reverses them)."""
    adapters_module.makeconftest("def pytest_collection_modifyitems(items):\n    items.reverse()\n")
    progress = adapters_module.path / "progress.jsonl"
    result = adapters_module.runpytest_subprocess(
        "--pyargs", "attnconf.conformance", "--adapter", "my_adapters:Good", "--adapter", "numpy", "--dtype", "float64",
        "-k", "agreement or batches", f"--attnconf-progress={progress}", "-p", "no:randomly")
    assert result.ret == 0, result.stdout.str()[-2000:]
    events = [json.loads(line) for line in progress.read_text().splitlines()]
    assert [e["adapter"] for e in events if e["event"] == "start"] == ["good", "numpy"]
    tests = [e["adapter"] for e in events if e["event"] == "test"]
    assert tests == sorted(tests, key=["good", "numpy"].index) and len(set(tests)) == 2, tests
    assert events[-1]["event"] == "end"
