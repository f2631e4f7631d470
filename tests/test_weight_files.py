"""Weight files: .npz without pickle, .safetensors parsed here, hostile files refused."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from attnconf.conformance.cases import CONFIGS, make_weights
from attnconf.weights_io import WeightFileError, load_weights, save_weights


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
@pytest.mark.parametrize("config", ["self", "gqa", "no_bias", "kdim_vdim"])
def test_round_trip_is_exact(tmp_path, suffix, config):
    w = make_weights(CONFIGS[config], np.random.default_rng(1))
    back = load_weights(save_weights(w, tmp_path / f"w{suffix}"))
    assert sorted(back.arrays()) == sorted(w.arrays())
    for name, a in w.arrays().items():
        assert back.arrays()[name].dtype == a.dtype and np.array_equal(back.arrays()[name], a)


def test_safetensors_readable_by_the_reference_library(tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy", reason="safetensors is not installed")
    w = make_weights(CONFIGS["gqa"], np.random.default_rng(2))
    path = save_weights(w, tmp_path / "w.safetensors")
    theirs = safetensors.load_file(str(path))
    assert all(np.array_equal(theirs[n], a) for n, a in w.arrays().items())


class Payload:
    """Unpickling this would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_npz_is_refused_and_executes_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    good = make_weights(CONFIGS["self"], np.random.default_rng(3)).arrays()
    good["output_bias"] = np.array([Payload(str(marker))], dtype=object)
    np.savez(path, **good)
    with pytest.raises(WeightFileError, match="holds Python objects, which would need pickle"):
        load_weights(path)
    assert not marker.exists()


@pytest.mark.parametrize("content,fragment", [
    (b"", "truncated"),
    (b"PK\x03\x04garbage", "not a valid .npz"),
])
def test_corrupt_files(tmp_path, content, fragment):
    suffix = ".safetensors" if fragment == "truncated" else ".npz"
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    with pytest.raises(WeightFileError, match=fragment):
        load_weights(path)


def test_safetensors_with_lying_offsets(tmp_path):
    header = json.dumps({"query_kernel": {"dtype": "F64", "shape": [1000, 10, 10], "data_offsets": [0, 800000]}}).encode()
    path = tmp_path / "lie.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(WeightFileError, match="offsets 0..800000 do not match"):
        load_weights(path)


def test_unknown_and_missing_names(tmp_path):
    np.savez(tmp_path / "odd.npz", in_proj_weight=np.ones((3, 3)))
    with pytest.raises(WeightFileError, match=r"unknown arrays \['in_proj_weight'\]"):
        load_weights(tmp_path / "odd.npz")
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(WeightFileError, match="expected a .npz or .safetensors"):
        load_weights(tmp_path / "w.pt")
    with pytest.raises(WeightFileError, match="does not exist"):
        load_weights(tmp_path / "nope.npz")


def test_no_unsafe_loading_in_the_project():
    """Nothing in the project unpickles user files."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    offenders = []
    for path in list((root / "src").rglob("*.py")) + list((root / "scripts").rglob("*.py")):
        text = path.read_text()
        for pattern in (r"allow_pickle\s*=\s*True", r"pickle\.loads?\((?!_read)", r"torch\.load\((?![^)]*weights_only\s*=\s*True)"):
            for m in re.finditer(pattern, text):
                offenders.append(f"{path.relative_to(root)}: {m.group(0)}")
    # The worker protocol unpickles frames from this package's own child process only (no file);
    # what a conformance session measured for the audit crosses as JSON (attnconf.audit.measured).
    own = ("src/attnconf/adapters/worker.py",)
    offenders = [o for o in offenders if not o.startswith(own)]
    assert not offenders, offenders
