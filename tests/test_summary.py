"""The per-adapter summary of `attnconf run` (`commands.sessions.summarize`): counts and worst errors."""

from __future__ import annotations

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
