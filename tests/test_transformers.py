"""The transformers adapters: unavailable with the reason when transformers is missing, and their
capabilities per attention implementation (cheap: no module is built, transformers is not imported)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest
import tomllib

from attnconf.adapters import registry, transformers_bert, transformers_llama, transformers_rotary

ADAPTERS = [
    transformers_bert.BertSelfAttentionEager,
    transformers_bert.BertSelfAttentionSdpa,
    transformers_bert.BertSelfAttentionFlex,
    transformers_llama.LlamaAttentionEager,
    transformers_llama.LlamaAttentionSdpa,
    transformers_llama.LlamaAttentionFlex,
]


@pytest.mark.parametrize("cls", ADAPTERS, ids=lambda c: c.name)
def test_missing_transformers_is_the_reason(monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a)
    )
    assert cls.missing() == "module 'transformers' is not installed"


def _registered() -> dict[str, importlib.metadata.EntryPoint]:
    """The transformers entry points of this repository's pyproject.toml (the installed metadata may be older)."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    group = pyproject["project"]["entry-points"]["attnconf.adapters"]
    return {
        name: importlib.metadata.EntryPoint(name, value, registry.GROUP)
        for name, value in group.items()
        if name.startswith("transformers.")
    }


#: The rotary helpers (level "rotary", issue 17's conventions) are registered under the same prefix.
ROTARY = [transformers_rotary.HFLlamaRotary, transformers_rotary.HFGPTNeoXRotary, transformers_rotary.HFCohereRotary,
          transformers_rotary.HFGPTJRotary]


def test_entry_points_name_every_adapter() -> None:
    assert {name: ep.value for name, ep in _registered().items()} == {
        c.name: f"{c.__module__}:{c.__name__}" for c in [*ADAPTERS, *ROTARY]
    }


def test_attnconf_list_shows_why(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from attnconf import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(registry, "entry_points", _registered)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a)
    )
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for cls in ADAPTERS:
        line = next(i for i, text in enumerate(out.splitlines()) if text.startswith(cls.name + " "))
        assert "missing" in out.splitlines()[line]
        assert "module 'transformers' is not installed" in out.splitlines()[line + 1]


@pytest.mark.parametrize("cls", ADAPTERS, ids=lambda c: c.name)
def test_capabilities_per_implementation(cls: type) -> None:
    caps = cls.capabilities
    assert cls.framework == "transformers" and cls.process_group == "transformers"
    assert caps.returns_weights is (cls.implementation == "eager")  # sdpa and flex return no weights
    assert caps.gradients is (cls.implementation != "flex_attention")
    assert (caps.limit("gradients") is not None) is (cls.implementation == "flex_attention")
    assert caps.gqa is caps.causal is (cls.decoder is True)  # LLaMA: kv heads and causal; BERT: neither
    softmax32 = cls.decoder and cls.implementation == "eager"  # LLaMA's eager softmax runs in float32
    assert caps.accuracy("float64") == ("float32" if softmax32 else "float64")


@pytest.mark.parametrize(
    "cls", [transformers_bert.BertSelfAttentionFlex, transformers_llama.LlamaAttentionFlex], ids=lambda c: c.name
)
def test_flex_runs_only_when_switched_on(monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
    from attnconf.adapters import _transformers_common as common

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # every module "installed"
    monkeypatch.delenv(common.FLEX_SWITCH, raising=False)
    assert cls.missing() == common.FLEX_OFF
    monkeypatch.setenv(common.FLEX_SWITCH, "1")
    assert cls.missing() is None
