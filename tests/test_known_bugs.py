"""scripts/known_bugs.py: its checks can fail (synthetic summaries; the tox runs are the matrix job's)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("known_bugs", ROOT / "scripts" / "known_bugs.py")
assert spec and spec.loader
kb = importlib.util.module_from_spec(spec)
sys.modules["known_bugs"] = kb  # dataclasses look their module up there
spec.loader.exec_module(kb)

BUG = kb.Bug(
    name="b",
    summary="s",
    links=("https://example.invalid",),
    affected="x 1",
    fixed="x 2",
    env="e",
    fixed_env="f",
    pins=(("x", "1"),),
    fixed_pins=(("x", "1"),),
    failing=("test_agreement[ad-float32-gqa]", "test_gqa_is_mha_with_repeated_kv_heads[ad-*]"),
)


def _run(tmp_path: Path, outcomes: dict[str, str], status: str = "failed") -> tuple[dict, Path]:
    """A summary.json and results/ad.json as `attnconf run` writes them."""
    (tmp_path / "results").mkdir(parents=True, exist_ok=True)
    tests = [{"nodeid": f"test_x.py::{t}", "outcome": o} for t, o in outcomes.items()]
    (tmp_path / "results" / "ad.json").write_text(json.dumps({"tests": tests}))
    failed = [t for t, o in outcomes.items() if o == "failed"]
    summary = {
        "adapters": [
            {
                "name": "ad",
                "status": status,
                "results": "results/ad.json",
                "versions": {"x": "1"},
                "counts": {"failed": len(failed), "passed": sum(o == "passed" for o in outcomes.values())},
                "failures": [{"test": t, "message": "m"} for t in failed],
            }
        ]
    }
    return summary, tmp_path


def test_affected_release_must_fail_every_named_test(tmp_path):
    caught = _run(
        tmp_path / "a",
        {"test_agreement[ad-float32-gqa]": "failed", "test_gqa_is_mha_with_repeated_kv_heads[ad-float64]": "failed"},
    )
    assert kb.check_affected(BUG, *caught) == ("caught", [])
    xfailed = _run(
        tmp_path / "b",
        {"test_agreement[ad-float32-gqa]": "xfailed", "test_gqa_is_mha_with_repeated_kv_heads[ad-float64]": "failed"},
    )
    verdict, problems = kb.check_affected(BUG, *xfailed)
    assert verdict == "missed" and problems == ["expected FAILED, got xfailed: test_agreement[ad-float32-gqa]"]


def test_a_bug_whose_tests_are_not_collected_yet_is_reported_not_counted(tmp_path):
    needs = kb.Bug(**{**BUG.__dict__, "needs": "the case gqa"})
    verdict, problems = kb.check_affected(needs, *_run(tmp_path, {"test_agreement[ad-float32-self]": "passed"}))
    assert verdict == "not caught yet" and "the case gqa" in problems[0]
    passed = _run(
        tmp_path / "p",
        {"test_agreement[ad-float32-gqa]": "passed", "test_gqa_is_mha_with_repeated_kv_heads[ad-float32]": "passed"},
    )
    assert kb.check_affected(needs, *passed)[0] == "missed"  # collected and passing: the suite missed it


def test_a_run_on_another_release_than_the_pin_is_refused(tmp_path):
    summary, run_dir = _run(
        tmp_path,
        {"test_agreement[ad-float32-gqa]": "failed", "test_gqa_is_mha_with_repeated_kv_heads[ad-float64]": "failed"},
    )
    summary["adapters"][0]["versions"] = {"x": "2"}
    assert kb.check_affected(BUG, summary, run_dir) == ("missed", ["ad ran on x 2, the corpus pins 1"])


def test_fixed_release_must_pass_everything(tmp_path):
    assert kb.check_fixed(_run(tmp_path / "a", {"test_agreement[ad-float32-gqa]": "passed"}, "passed")[0]) == []
    assert kb.check_fixed(_run(tmp_path / "b", {"test_agreement[ad-float32-gqa]": "failed"})[0])
    assert kb.check_fixed({"adapters": []}) == ["no adapter ran"]


def _tox_envs() -> set[str]:
    """Every environment name the `[testenv:...]` headers of tox.ini generate (brace factors expanded)."""
    import itertools
    import re

    names = set()
    for header in re.findall(r"^\[testenv:([^\]]+)\]", (ROOT / "tox.ini").read_text(), flags=re.M):
        parts = re.split(r"(\{[^}]*\})", header)
        choices = [p[1:-1].split(",") if p.startswith("{") else [p] for p in parts]
        names |= {"".join(c) for c in itertools.product(*choices)}
    return names


def test_every_bug_has_its_environments_in_tox_ini():
    envs = _tox_envs()
    for bug in kb.BUGS:
        assert bug.env in envs and bug.fixed_env in envs, (bug.name, bug.env, bug.fixed_env)
        assert bug.failing and bug.links and all(link.startswith("https://github.com/") for link in bug.links)
