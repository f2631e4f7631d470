"""The registry: entry points from an outside package, module:attr paths, validation, laziness."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from attnconf.adapters import registry

PACKAGE = textwrap.dedent('''
    from attnconf.adapters.numpy_ref import NumpyAdapter

    class ThirdParty(NumpyAdapter):
        name = "thirdparty.Attention"
        framework = "thirdparty"
''')


@pytest.fixture
def outside_package(tmp_path):
    """A tiny installed distribution registering one adapter, exactly as a third party would."""
    (tmp_path / "thirdparty_attn.py").write_text(PACKAGE)
    info = tmp_path / "thirdparty_attn-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-attn\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[attnconf.adapters]\nthirdparty.Attention = thirdparty_attn:ThirdParty\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    return env


def test_outside_adapter_is_listed(outside_package):
    out = subprocess.run([sys.executable, "-m", "attnconf.cli", "list"], env=outside_package,
                         capture_output=True, text=True, check=True).stdout
    assert "thirdparty.Attention" in out and "numpy" in out


def test_outside_adapter_runs_in_the_suite(outside_package, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "attnconf.conformance", "--adapter", "thirdparty.Attention",
         "--dtype", "float64", "-k", "test_agreement", "-q", "-p", "no:cacheprovider"],
        env=outside_package, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    from attnconf.conformance.cases import CONFIGS

    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|skipped|failed)", proc.stdout)}
    # every agreement case ran (passed, or skipped for a capability the adapter lacks), none failed
    assert counts.get("passed", 0) + counts.get("skipped", 0) >= len(CONFIGS) and counts["passed"] > 0, proc.stdout
    assert "failed" not in counts, proc.stdout


def test_listing_imports_only_what_capabilities_read():
    """Versions come from package metadata; the one signature a capability reads (Flax NNX's layer,
    `flax_nnx.takes`) imports Flax and so jax. No other framework is imported."""
    code = ("import sys; from attnconf.commands import list_; import argparse;"
            "list_.main(argparse.Namespace(json=True, capabilities=False));"
            "heavy = [m for m in ('torch', 'tensorflow', 'keras', 'onnxruntime', 'tf_keras') if m in sys.modules];"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_path_selection_and_validation():
    handle = registry.load("attnconf.adapters.numpy_ref:NumpyAdapter")
    assert handle.name == "numpy" and handle.available
    with pytest.raises(registry.AdapterError, match="not of the form"):
        registry.load("no_colon_but:")
    with pytest.raises(registry.AdapterError, match="has no attribute 'Nope'"):
        registry.load("attnconf.adapters.numpy_ref:Nope")
    with pytest.raises(registry.AdapterError, match="cannot be imported"):
        registry.load("not_a_module_xyz:Thing")


def test_explicitly_named_adapter_that_cannot_run_fails(monkeypatch):
    from attnconf.adapters.numpy_ref import NumpyAdapter

    class Missing(NumpyAdapter):
        name = "missing"
        modules = ("a_framework_that_is_not_installed",)

    monkeypatch.setitem(sys.modules, "fake_mod", type(sys)("fake_mod"))
    sys.modules["fake_mod"].Missing = Missing
    with pytest.raises(registry.AdapterError, match="selected explicitly but cannot run: module 'a_framework_that_is_not_installed' is not installed"):
        registry.select(["fake_mod:Missing"])
