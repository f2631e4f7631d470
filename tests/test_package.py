"""The release artifacts: sdist and wheel build, pass `twine check`, carry the license, `py.typed` and
the data files, and the wheel installed alone into a fresh virtual environment runs `attnconf list`
and a numpy-adapter run from outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)])
    return out


def test_twine_check_passes(dist):
    files = sorted(map(str, dist.iterdir()))
    assert any(f.endswith(".whl") for f in files) and any(f.endswith(".tar.gz") for f in files), files
    r = _run([sys.executable, "-m", "twine", "check", "--strict", *files])
    assert r.stdout.count("PASSED") == len(files), r.stdout


def test_wheel_carries_license_types_and_data(dist):
    from attnconf import __version__

    wheel = next(dist.glob("*.whl"))
    assert f"-{__version__}-" in wheel.name, f"the wheel's version is not attnconf.__version__: {wheel.name}"
    names = zipfile.ZipFile(wheel).namelist()
    for wanted in ("attnconf/py.typed", "attnconf/audit/audit.schema.json", "attnconf/conformance/expected/jax.toml"):
        assert wanted in names, f"{wanted} missing from {wheel.name}"
    assert any(n.endswith("licenses/LICENSE") for n in names), [n for n in names if "dist-info" in n]
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
    for field in ("License-Expression: Apache-2.0", "Classifier: Typing :: Typed", "Project-URL: Changelog"):
        assert field in meta, f"{field!r} not in the wheel's METADATA"


def test_wheel_runs_alone_in_a_fresh_venv(dist, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    wheel = next(dist.glob("*.whl"))
    # nothing of the source tree on the path (a build leaves src/*.egg-info, which pip would take as installed)
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([str(py), "-m", "pip", "install", "-q", str(wheel)], env=clean, cwd=tmp_path)
    where = _run([str(py), "-c", "import attnconf; print(attnconf.__file__)"], env=clean, cwd=tmp_path).stdout
    assert str(env_dir) in where, f"attnconf imported from {where.strip()}, not from the fresh venv"
    listing = _run([str(env_dir / "bin" / "attnconf"), "list"], env=clean, cwd=tmp_path).stdout
    assert "numpy" in listing
    out = tmp_path / "report"
    _run([str(env_dir / "bin" / "attnconf"), "run", "--adapter", "numpy", "--dtype", "float32", "--no-audit",
          "-o", str(out)], env=clean, cwd=tmp_path)
    assert (out / "summary.json").is_file() and (out / "junit.xml").is_file()
