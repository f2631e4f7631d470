"""`attnconf bench`: subprocess per subject, JSON and plots, skips with reasons, no timing asserted."""

from __future__ import annotations

import json

import pytest

from attnconf.bench import worker
from attnconf.cli import main
from attnconf.memory import MIB, PeakRss

SETTINGS = {"batch": 1, "heads": 2, "head_dim": 64, "dtype": "float32", "threads": 2, "repeats": 1}


def test_bench_writes_json_plots_and_table(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "--adapter", "reference:chunked", "--adapter", "reference:plain", "--sizes", "64", "128",
                 "--repeats", "1", "--threads", "1", "-o", str(out)])
    assert code == 0
    payload = json.loads((out / "bench.json").read_text())
    assert payload["schema"] == "attnconf.bench/1"
    assert set(payload["results"]) == {"reference:chunked", "reference:plain"}
    for result in payload["results"].values():
        assert result["status"] == "ok" and result["versions"]["numpy"]
        assert [s["N"] for s in result["steps"]] == [64, 128]
        assert all(s["status"] == "ok" and s["median_s"] > 0 for s in result["steps"])
    for png in ("bench-time.png", "bench-memory.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "reference:chunked" in table and "N=128" in table


def test_a_step_over_the_time_budget_is_skipped_with_the_reason(tmp_path):
    out = tmp_path / "bench"
    main(["bench", "--adapter", "reference:plain", "--sizes", "32,4096", "--repeats", "1",
          "--max-seconds", "0.000001", "-o", str(out), "--no-plots"])
    steps = json.loads((out / "bench.json").read_text())["results"]["reference:plain"]["steps"]
    assert steps[0]["status"] == "ok"
    assert steps[1]["status"] == "skipped" and "max" in steps[1]["reason"]


def test_memory_prediction_quadratic_before_measuring_then_from_growth():
    plain = {"chunked": False}
    need, how = worker.predict_memory(100_000, SETTINGS, plain, None)
    assert need > 3 * 2 * 100_000**2 * 4 and "score matrices" in how
    quadratic = {"status": "ok", "N": 4096, "peak_extra_bytes": 2 * 4096**2 * 4 * 3}
    need, how = worker.predict_memory(8192, SETTINGS, plain, quadratic)
    assert need == 4 * quadratic["peak_extra_bytes"] and "quadratic" in how
    flash = {"status": "ok", "N": 4096, "peak_extra_bytes": 3 * MIB}
    need, how = worker.predict_memory(8192, SETTINGS, plain, flash)
    assert need < 64 * MIB and "linear" in how
    need, how = worker.predict_memory(100_000, SETTINGS, {"chunked": True}, None)
    assert need < 4 * 2 * 100_000 * 64 * 8 + 256 * MIB and "chunked" in how  # inputs, output, buffers


def test_peak_rss_sees_a_short_allocation():
    import numpy as np

    with PeakRss() as p:
        a = np.ones(64 * MIB // 8)
        del a
    assert p.extra >= 32 * MIB


def test_layer_adapters_and_bad_sizes_are_usage_errors(capsys):
    assert main(["bench", "--adapter", "numpy", "--sizes", "64"]) == 2
    assert "layer" in capsys.readouterr().err
    assert main(["bench", "--sizes", "0,x"]) == 2


@pytest.mark.parametrize("threads, flag", [(1, True), (2, False)])
def test_thread_environment(threads, flag):
    from attnconf.commands.bench import thread_environment

    env = thread_environment(threads)
    assert env["OMP_NUM_THREADS"] == str(threads) and env["OPENBLAS_NUM_THREADS"] == str(threads)
    assert ("xla_cpu_multi_thread_eigen=false" in env.get("XLA_FLAGS", "")) is flag
