"""The known-bug corpus: documented, since-fixed upstream attention bugs the suite must catch.

Each bug pins a framework release that has it (a tox environment ``bug-*``) and a release that
fixed it (``*-fixed``, shared where one release fixed several). The script runs those
environments with tox (each runs ``attnconf run --no-audit`` on the adapters that reach the bug
and writes ``results/<env>/summary.json``), then asserts, from the summaries:

* on every affected release, each test the corpus names for the bug is a FAILED conformance
  test (not an audit cell, not an XFAIL, not a crash);
* on every fixed release, every adapter ran and conformed: no failed test at all.

Usage::

    python scripts/known_bugs.py                     # every environment, then the checks
    python scripts/known_bugs.py --bug keras36-tf-squared-logits
    python scripts/known_bugs.py --no-run            # check the summaries already in results/
    python scripts/known_bugs.py --list              # the corpus and its environments

Exit status: 0 when every check holds, 1 when one does not (the table says which), 2 when a
summary is missing or unreadable, or tox itself failed (an environment that could not be built).
The table of bugs, links and failing tests is in docs/known-bugs.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Bug:
    """One upstream bug: where it is, where it was fixed, and the tests that must fail on it."""

    name: str
    summary: str
    links: tuple[str, ...]
    affected: str  # the pinned affected release(s), in words
    fixed: str  # the first fixed release, in words
    env: str  # tox environment at an affected release
    fixed_env: str  # tox environment at a fixed release
    failing: tuple[str, ...]  # test ids (fnmatch patterns, brackets literal) that must FAIL on `env`
    pins: tuple[tuple[str, str], ...]  # (distribution, version) each adapter of `env` must report
    fixed_pins: tuple[tuple[str, str], ...]  # the same for `fixed_env`
    #: Why a test id needs a suite feature that the current checkout may lack; such a bug is
    #: reported as "not caught yet" instead of failing the run when its tests are not collected.
    needs: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


ORT = ("onnxruntime.Attention", "onnxruntime.MultiHeadAttention")

BUGS: tuple[Bug, ...] = (
    Bug(
        name="keras36-tf-squared-logits",
        summary="keras.ops.dot_product_attention on TensorFlow multiplies the logits by themselves "
        "instead of by the scale: softmax(QK^T * QK^T) for every input",
        links=("https://github.com/keras-team/keras/pull/20510",),
        affected="keras 3.6.0 (TensorFlow backend)",
        fixed="keras 3.7.0",
        env="bug-keras36-tf-squared-logits",
        pins=(("keras", "3.6.0"), ("tensorflow", "2.17.1")),
        fixed_pins=(("keras", "3.7.0"), ("tensorflow", "2.17.1")),
        fixed_env="bug-keras36-tf-squared-logits-fixed",
        failing=tuple(
            f"test_agreement[keras[tensorflow].ops.dot_product_attention-{dtype}-{case}]"
            for dtype in ("float64", "float32", "float16", "bfloat16")
            for case in ("self", "cross", "causal_mask")
        )
        + tuple(
            f"test_{name}[keras[tensorflow].ops.dot_product_attention-float32]"
            for name in ("default_scale_is_inverse_sqrt_dk", "given_scale_is_used", "shift_invariance")
        )
        + ("test_gradients[keras[tensorflow].ops.dot_product_attention-float64-self]",),
        notes=(
            "test_agreement[...-float64-scale] XFAILed before 0.2.0: keras.toml's float64 entry for a scale "
            "rounded to float32 on TensorFlow absorbed an error of any size; since 0.2.0 its bound makes it FAIL",
        ),
    ),
    Bug(
        name="keras314-torch-causal-mask",
        summary="keras.ops.dot_product_attention on torch drops is_causal when a mask is also given "
        "(it sets is_causal=False and passes only the mask to scaled_dot_product_attention): "
        "every query sees later keys",
        links=("https://github.com/keras-team/keras/pull/23040", "https://github.com/keras-team/keras/issues/23038"),
        affected="keras 3.6.0 to 3.14.1 (torch backend)",
        fixed="keras 3.15.0",
        env="bug-keras314-torch-causal-mask",
        pins=(("keras", "3.14.1"),),
        fixed_pins=(("keras", "3.15.0"),),
        fixed_env="bug-keras314-torch-causal-mask-fixed",
        failing=tuple(
            f"test_agreement[keras[torch].ops.dot_product_attention-{dtype}-causal_mask]"
            for dtype in ("float32", "float16", "bfloat16")
        )
        + tuple(
            f"test_causal_flag_is_the_declared_mask[keras[torch].ops.dot_product_attention-{dtype}]"
            for dtype in ("float64", "float32")
        ),
        notes=(
            "test_agreement[...-float64-causal_mask] XFAILed before 0.2.0: keras.toml's float64 entry for the "
            "JAX and torch backends absorbed an error of 1.96; since 0.2.0 its bound makes it FAIL",
        ),
    ),
    Bug(
        name="ort1230-gqa-head-mapping",
        summary="ONNX Runtime's CPU Attention kernel maps query head h to kv head h % H_kv (tiling) "
        "instead of h // (H / H_kv) (grouping): grouped-query attention attends with the wrong keys",
        links=("https://github.com/microsoft/onnxruntime/pull/25966", "https://github.com/onnx/onnx/pull/7274"),
        affected="onnxruntime 1.23.0 (float32)",
        fixed="onnxruntime 1.23.1 (float32; float64 in 1.24.1, see ort1232-float64-function-body)",
        env="bug-ort1230",
        pins=(("onnxruntime", "1.23.0"),),
        fixed_pins=(("onnxruntime", "1.28.0"),),
        fixed_env="bug-ort-fixed",
        failing=tuple(f"test_agreement[{a}-float32-gqa]" for a in ORT)
        + tuple(f"test_gqa_is_mha_with_repeated_kv_heads[{a}-float32]" for a in ORT),
    ),
    Bug(
        name="ort1232-float64-gqa-tile",
        summary="ONNX Runtime 1.23's float64 Attention (the path #25966 did not fix, ONNX's opset-23 "
        "function body before onnx#7274) repeats kv heads with Tile: query head h uses kv head h % H_kv",
        links=("https://github.com/onnx/onnx/pull/7274", "https://github.com/onnx/onnx/pull/7315"),
        affected="onnxruntime 1.23.0 to 1.23.2 (float64)",
        fixed="onnxruntime 1.24.1",
        env="bug-ort1232",
        pins=(("onnxruntime", "1.23.2"),),
        fixed_pins=(("onnxruntime", "1.28.0"),),
        fixed_env="bug-ort-fixed",
        failing=tuple(f"test_gqa_is_mha_with_repeated_kv_heads[{a}-float64]" for a in ORT),
        notes=(
            "test_agreement[...-float64-gqa] XFAILed before 0.2.0: onnxruntime.toml's float64 entry absorbed "
            "an error of 2.4; since 0.2.0 its bound makes it FAIL",
        ),
    ),
    Bug(
        name="ort1232-float64-causal-with-mask",
        summary="ONNX Runtime 1.23's float64 Attention with is_causal=1 and an attn_mask applies the "
        "mask but not the causal triangle (ONNX's opset-23 function body before onnx#7297)",
        links=("https://github.com/onnx/onnx/pull/7297", "https://github.com/onnx/onnx/pull/7315"),
        affected="onnxruntime 1.23.0 to 1.23.2 (float64)",
        fixed="onnxruntime 1.24.1",
        env="bug-ort1232",
        pins=(("onnxruntime", "1.23.2"),),
        fixed_pins=(("onnxruntime", "1.28.0"),),
        fixed_env="bug-ort-fixed",
        failing=tuple(f"test_causal_flag_is_the_declared_mask[{a}-float64]" for a in ORT),
        notes=(
            "test_agreement[...-float64-causal_mask] XFAILed before 0.2.0: onnxruntime.toml's float64 entry "
            "absorbed an error of 2.1; since 0.2.0 its bound makes it FAIL",
        ),
    ),
    Bug(
        name="ort1270-decode-causal",
        summary="ONNX Runtime's CPU Attention with is_causal=1, one query and several keys (no past) "
        "aligns the causal mask bottom-right: the single query sees every key instead of key 0 "
        "(ONNX specifies top-left)",
        links=(
            "https://github.com/microsoft/onnxruntime/issues/29020",
            "https://github.com/microsoft/onnxruntime/pull/29050",
        ),
        affected="onnxruntime 1.23.0 to 1.27.0 (float32, float16)",
        fixed="onnxruntime 1.28.0",
        env="bug-ort1270",
        pins=(("onnxruntime", "1.27.0"),),
        fixed_pins=(("onnxruntime", "1.28.0"),),
        fixed_env="bug-ort-fixed",
        failing=tuple(f"test_agreement[{a}-float32-decode_causal]" for a in ORT),
        needs="the agreement case 'decode_causal' (T = 1, S = 7, causal), added with the decode shapes",
    ),
)


def _match(pattern: str, test: str) -> bool:
    """fnmatch with literal brackets (test ids are full of them)."""
    escaped = pattern.replace("[", "\0").replace("]", "[]]").replace("\0", "[[]")
    return fnmatch.fnmatchcase(test, escaped)


def read_summary(results: Path, env: str) -> dict[str, Any]:
    path = results / env / "summary.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(
            f"known_bugs: no summary for environment {env!r}: expected {path} (run it, or drop --no-run)"
        ) from None
    except (OSError, ValueError) as err:
        raise SystemExit(f"known_bugs: cannot read {path}: {err}") from None


def failed_tests(summary: dict[str, Any]) -> dict[str, str]:
    """Every FAILED test id of the summary, with its message."""
    return {f["test"]: f.get("message", "") for a in summary.get("adapters", []) for f in a.get("failures", [])}


def outcomes(summary: dict[str, Any], run_dir: Path) -> dict[str, str]:
    """Every test id the run collected with its outcome, from each adapter's ``results/<adapter>.json``."""
    seen: dict[str, str] = {}
    for a in summary.get("adapters", []):
        rel = a.get("results")
        if not isinstance(rel, str):
            continue
        try:
            tests = json.loads((run_dir / rel).read_text()).get("tests", [])
        except (OSError, ValueError):
            continue
        for t in tests:
            seen[t["nodeid"].split("::")[-1]] = t["outcome"]
    return seen


def check_pins(summary: dict[str, Any], pins: tuple[tuple[str, str], ...]) -> list[str]:
    """Each adapter ran on the pinned releases (a drifted pin would make the verdict meaningless)."""
    problems = []
    for a in summary.get("adapters", []):
        versions = a.get("versions") or {}
        for dist, version in pins:
            got = str(versions.get(dist, "not reported")).split("+")[0]
            if got != version:
                problems.append(f"{a['name']} ran on {dist} {got}, the corpus pins {version}")
    return problems


def check_affected(bug: Bug, summary: dict[str, Any], run_dir: Path) -> tuple[str, list[str]]:
    """('caught' | 'missed' | 'not caught yet', problems)."""
    failed = failed_tests(summary)
    seen = outcomes(summary, run_dir)
    problems = check_pins(summary, bug.pins) + [
        f"adapter {a['name']} did not run to the end (status {a.get('status')})"
        for a in summary.get("adapters", [])
        if a.get("status") not in ("passed", "failed")
    ]
    missing = [p for p in bug.failing if not any(_match(p, t) for t in failed)]
    if missing and bug.needs and not problems and not any(_match(p, t) for p in missing for t in seen):
        return "not caught yet", [f"needs {bug.needs}; not collected: {', '.join(missing)}"]
    for p in missing:
        got = sorted({o for t, o in seen.items() if _match(p, t)}) or ["not collected"]
        problems.append(f"expected FAILED, got {'/'.join(got)}: {p}")
    return ("caught" if not problems else "missed"), problems


def check_fixed(summary: dict[str, Any]) -> list[str]:
    problems = []
    adapters = summary.get("adapters", [])
    if not adapters:
        problems.append("no adapter ran")
    for a in adapters:
        counts = a.get("counts", {})
        if a.get("status") != "passed" or counts.get("failed", 0):
            problems.append(
                f"{a['name']}: status {a.get('status')}, {counts.get('failed', 0)} failed "
                f"(first: {', '.join(f['test'] for f in a.get('failures', [])[:3])})"
            )
        if not counts.get("passed"):
            problems.append(f"{a['name']}: no test passed")
    return problems


def run_env(env: str, tox: str, results: Path) -> float:
    """`tox run -e env` with results under `results`; its wall time in seconds."""
    start = time.monotonic()
    proc = subprocess.run([tox, "run", "-e", env], cwd=ROOT, env={**os.environ, "ATTNCONF_RESULTS": str(results)})
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(
            f"known_bugs: tox run -e {env} exited {proc.returncode} (environment not built or the run "
            f"crashed; conformance failures alone exit 0 there)"
        )
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bug", action="append", choices=[b.name for b in BUGS], help="only these bugs (repeatable)")
    parser.add_argument("--no-run", action="store_true", help="check the summaries already written, run nothing")
    parser.add_argument("--results", type=Path, default=Path(os.environ.get("ATTNCONF_RESULTS", ROOT / "results")))
    parser.add_argument("--tox", default=shutil.which("tox") or "tox", help="the tox executable")
    parser.add_argument("--json", type=Path, help="write the checks as JSON here")
    parser.add_argument("--list", action="store_true", help="print the corpus and its environments, run nothing")
    args = parser.parse_args(argv)
    bugs = [b for b in BUGS if not args.bug or b.name in args.bug]
    envs = list(dict.fromkeys([e for b in bugs for e in (b.env, b.fixed_env)]))
    if args.list:
        for b in bugs:
            print(f"{b.name}: {b.affected} -> {b.fixed}; envs {b.env}, {b.fixed_env}\n  {b.summary}")
        return 0
    seconds: dict[str, float] = {}
    if not args.no_run:
        for env in envs:
            print(f"known_bugs: tox run -e {env}", flush=True)
            seconds[env] = run_env(env, args.tox, args.results)
    summaries = {env: read_summary(args.results, env) for env in envs}
    report, ok = [], True
    for b in bugs:
        verdict, problems = check_affected(b, summaries[b.env], args.results / b.env)
        fixed_problems = check_pins(summaries[b.fixed_env], b.fixed_pins) + check_fixed(summaries[b.fixed_env])
        ok &= verdict != "missed" and not fixed_problems
        report.append(
            {
                "bug": b.name,
                "env": b.env,
                "verdict": verdict,
                "problems": problems,
                "fixed_env": b.fixed_env,
                "fixed_passes": not fixed_problems,
                "fixed_problems": fixed_problems,
                "failed_on_affected": sorted(
                    t for t in failed_tests(summaries[b.env]) if any(_match(p, t) for p in b.failing)
                ),
            }
        )
    width = max(len(b.name) for b in bugs)
    for r in report:
        fixed = "fixed release passes" if r["fixed_passes"] else "FIXED RELEASE FAILS"
        print(
            f"{r['bug']:<{width}}  {r['verdict']:<15} ({r['env']}; {len(r['failed_on_affected'])} named tests failed)"
            f"  {fixed} ({r['fixed_env']})"
        )
        for p in r["problems"] + r["fixed_problems"]:
            print(f"{'':<{width}}    {p}")
    for env, s in seconds.items():
        print(f"  {env}: {s:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"bugs": report, "seconds": seconds}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
