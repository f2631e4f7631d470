"""The plug-in path end to end: the Equinox example installs and is tested like any adapter.

`examples/equinox-adapter/` is installed into a temporary virtual environment (no framework is
reinstalled: the environment sees this interpreter's packages), attnconf must discover it
through the `attnconf.adapters` entry-point group, and the conformance suite run on it in a
subprocess must pass. One dtype keeps it short. An outside adapter's own declared differences
reach the suite even when it runs in a worker process.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "equinox-adapter"
NAME = "equinox.nn.MultiheadAttention"

needs_jax = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("jax", "equinox")),
    reason="the Equinox example needs jax and equinox installed",
)


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the example installed in it; its python."""
    root = tmp_path_factory.mktemp("equinox-example")
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    # Inside a virtual environment, --system-site-packages reaches the base interpreter's packages,
    # not this environment's: add this interpreter's site directories (their .pth files included,
    # so an editable attnconf stays importable) after the new environment's own.
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    dirs = [d for d in site.getsitepackages() if Path(d).is_dir()]
    Path(purelib, "_parent_environment.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs) + "\n")
    # Build from a copy, so that the build leaves nothing in the repository.
    source = shutil.copytree(EXAMPLE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    installed = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                      "--no-build-isolation", "--no-index", "--quiet", str(source)])
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python


@needs_jax
def test_example_is_discovered_through_its_entry_point(venv_python: Path) -> None:
    code = (f"from attnconf.adapters import registry; h = registry.load({NAME!r}); "
            "print(h.source); print(h.missing)")
    found = _run([str(venv_python), "-c", code])
    assert found.returncode == 0, found.stderr
    source, missing = found.stdout.strip().splitlines()[-2:]
    assert source == f"entry point {NAME} = attnconf_equinox.adapter:EquinoxMHA", source
    assert missing == "None", f"the example cannot run: {missing}"


@needs_jax
def test_conformance_suite_passes_on_the_example(venv_python: Path, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    run = _run([str(venv_python), "-m", "pytest", "--pyargs", "attnconf.conformance", "--adapter", NAME,
                "--dtype", "float32", "-q", "-p", "no:cacheprovider", "--attnconf-json", str(results)],
               cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    payload = json.loads(results.read_text())
    assert list(payload["adapters"]) == [NAME], payload["adapters"]
    outcomes = [t["outcome"] for t in payload["tests"] if t["adapter"] == NAME]
    assert outcomes.count("passed") >= 20, f"too few tests ran on the example: {outcomes}"
    assert set(outcomes) <= {"passed", "skipped"}, outcomes


def test_declared_differences_survive_process_isolation() -> None:
    """The worker proxy carries the adapter class's `expected_differences` (no process is started)."""
    from attnconf.adapters.base import Capabilities
    from attnconf.adapters.worker import RemoteAdapter, WorkerPool
    from attnconf.conformance import expected

    class Declaring:
        name = "outside-adapter"
        capabilities = Capabilities()
        process_group = "outside"
        expected_differences = [{"adapter": "outside-adapter", "test": "test_agreement", "versions": "numpy>=1",
                                 "max_ratio": 4.0, "reason": "declared by the adapter",
                                 "link": "https://example.org/issue"}]

    pool = WorkerPool()
    try:
        remote = RemoteAdapter("outside:Declaring", Declaring, pool)
        mine = [d for d in expected.load([remote]) if d.adapter == ("outside-adapter",)]
    finally:
        pool.close()
    assert [(d.test, d.source) for d in mine] == [(("test_agreement",), "adapter outside-adapter, entry #1")]
