"""The per-adapter summary of `attnconf run` (`commands.sessions.summarize`): counts and worst errors."""

from __future__ import annotations

from pathlib import Path

from attnconf.commands.run import screen_summary
from attnconf.commands.sessions import summarize
from attnconf.conformance.tolerances import measure


def record(got, exact, atol, dtype="float32"):
    return {"what": "output", "dtype": dtype, "atol": atol, **measure(got, exact).as_dict()}


def test_worst_errors_per_dtype():
    tests = [
        {"nodeid": "a::t[x-float32]", "outcome": "passed", "dtype": "float32", "message": "",
         "measurements": [record([1.0, 2.0], [1.0, 2.000002], atol=1e-5)]},
        {"nodeid": "a::u[x-float32]", "outcome": "passed", "dtype": "float32", "message": "",
         # an exactly-zero result (the key-bias gradient): the reference holds 1e-16 of residue
         "measurements": [record([3e-7, -1e-7], [1e-16, -2e-16], atol=1e-6)]},
        {"nodeid": "a::v[x-float32]", "outcome": "xfailed", "dtype": "float32", "message": "",
         "measurements": [record([5.0], [1.0], atol=1e-6)]},
    ]
    w = summarize(tests, {}, {"name": "x"})["errors_by_dtype"]["float32"]
    assert abs(w["max_abs"] - 2e-6) < 1e-12  # every passed measurement counts for the absolute error
    # and for the error/tolerance ratio: the zero result's 0.3 beats the other's 0.2
    assert abs(w["worst_ratio"] - (3e-7 - 1e-16) / 1e-6) < 1e-12
    # the relative error comes from the measurement whose exact value exceeds its tolerance only:
    # 2e-6 / 2.000002, not 3e-7 / 2e-16 = 1.5e9
    assert abs(w["max_rel"] - 2e-6 / 2.000002) < 1e-12


def test_measure_reports_the_scale_of_the_relative_error():
    e = measure([1.0, -4.5], [1.0, -4.0]).as_dict()
    assert e["max_expected"] == 4.0
    assert e["max_rel"] == 0.5 / 4.0


def test_console_summary_shows_whole_reasons_wrapped_under_the_adapter():
    long = ("pytest exited with code 4 before writing results: ImportError: cannot import name "
            "'scaled_dot_product_attention' from 'torch.nn.functional' (/site-packages/torch/nn/functional.py); "
            "the END of the reason")
    summary = {"adapters": [{"name": "torch.nn.MultiheadAttention", "status": "crashed", "reason": long},
                            {"name": "numpy", "status": "ok", "counts": {"passed": 3}}],
               "skipped": [{"name": "flax.nnx.MultiHeadAttention", "reason": "needs flax (pip install flax) " * 4}]}
    text = screen_summary(summary, Path("report"), width=60)
    lines = text.splitlines()
    wrapped = [line for line in lines if line.startswith(" " * 9)]
    assert wrapped and all(len(line) <= 60 for line in wrapped), [line for line in wrapped if len(line) > 60]
    crashed = lines.index(next(line for line in lines if line.startswith("crashed")))
    below = []
    for line in lines[crashed + 1:]:
        if not line.startswith(" " * 9):
            break
        below.append(line.strip())
    assert " ".join(below) == long  # every word, in order, none cut
    assert "the END of the reason" in " ".join(below)
    skipped = " ".join(line.strip() for line in lines if line.startswith(" " * 9))
    assert skipped.endswith(("needs flax (pip install flax) " * 4).strip())
    assert "3 passed" in next(line for line in lines if line.startswith("ok"))
