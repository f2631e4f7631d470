"""Where the JAX-family adapters keep compiled executables (`_jax_common.compile_cache_dir`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from attnconf.adapters._jax_common import _machine_key, compile_cache_dir


@pytest.mark.parametrize("setting", ["off", "OFF", "0", "none", "false", ""])
def test_switched_off(monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    monkeypatch.setenv("ATTNCONF_JAX_CACHE_DIR", setting)
    assert compile_cache_dir() is None


def test_named_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATTNCONF_JAX_CACHE_DIR", str(tmp_path / "c"))
    assert compile_cache_dir() == tmp_path / "c" / _machine_key()


def test_default_is_per_machine_under_xdg_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ATTNCONF_JAX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    key = _machine_key()
    assert len(key) == 12 and key == _machine_key()
    assert compile_cache_dir() == tmp_path / "attnconf" / "jax" / key


def test_a_jitted_call_fills_the_cache(tmp_path: Path) -> None:
    """In a fresh process (JAX is configured once per process): one jitted call writes an entry."""
    pytest.importorskip("jax")
    code = ("from attnconf.adapters._jax_common import jax, jnp\n"
            "print(float(jax().jit(lambda x: (x * 2).sum())(jnp().ones(3))))\n")
    env = {**__import__("os").environ, "ATTNCONF_JAX_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6.0"
    assert any((tmp_path / "cache").iterdir()), "no compiled executable was written"
