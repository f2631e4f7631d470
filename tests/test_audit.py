"""The behaviour audit: outcomes are measured (faulty adapters with known conventions are reported
exactly), reports are valid and deterministic, crashes and hangs cost only their adapter, HTML and
Markdown escape what adapters say, and an interrupted audit leaves the previous report intact."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import audit_faulty
import audit_synthetic
import numpy as np
import pytest
from waiting import hang_marker, wait_until

from attnconf.adapters import registry
from attnconf.adapters.base import Capabilities
from attnconf.audit import classify, schema
from attnconf.audit.layout import anchor
from attnconf.audit.measure import common, conventions, heads, masks
from attnconf.audit.report import write_reports
from attnconf.audit.runner import AuditInterrupted, measure_here, run_audit
from attnconf.audit.scenarios import CATALOG, COMMON_OUTCOMES, SCENARIOS
from attnconf.cli import main as cli_main
from attnconf.reference._checks import FLOAT_DTYPES

TESTS = Path(__file__).parent
KNOWN = ["NanBottomRight", "UniformTopLeft", "FiniteFill", "DecodeFlip", "ScaledTwice", "GradUniform", "GradTwice", "PathPlain", "PathSame",
         "PathNan", "PathNoHalf", "Evil"]
TIMING = (("run", "started"), ("run", "duration_s"))


def handles(*names: str) -> list[registry.AdapterHandle]:
    return [registry.load(f"audit_faulty:{n}") for n in names]


def name_of(cls: str) -> str:
    return str(getattr(audit_faulty, cls).name)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return run_audit(handles(*KNOWN) + registry.select(["numpy"])[0], isolation="none", jobs=1)


EXTRA = [("<script>alert(5)</script> bank", "<p>trusted fragment</p>")]


@pytest.fixture(scope="module")
def written(report: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("audit")
    paths = write_reports(report, out, extra_sections=EXTRA)
    assert [p.name for p in paths] == ["audit.json", "audit.md", "audit.html"]
    return out


@pytest.fixture
def worker_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes import tests/audit_faulty.py too."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))


def strip_timing(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for section, key in TIMING:
        doc[section].pop(key)
    for a in doc["adapters"].values():
        a.pop("duration_s")
    return doc


# -- outcomes are measured -----------------------------------------------------------------------

@pytest.mark.parametrize("cls", sorted(audit_faulty.EXPECTED))
def test_known_conventions_are_reported_exactly(report: dict[str, Any], cls: str) -> None:
    name = name_of(cls)
    got = {sid: report["scenarios"][sid]["results"][name]["outcome"] for sid in audit_faulty.EXPECTED[cls]}
    assert got == audit_faulty.EXPECTED[cls]


def test_declared_alignment_is_not_trusted(report: dict[str, Any]) -> None:
    r = report["scenarios"]["causal_alignment"]["results"][name_of("NanBottomRight")]
    assert (r["outcome"], r["evidence"]["declared"]) == ("bottom_right", "top_left")
    assert "declares top_left" in r["detail"]


def test_reference_adapter_has_the_spec_outcomes(report: dict[str, Any]) -> None:
    for sid, sc in report["scenarios"].items():
        outcome = sc["results"]["numpy"]["outcome"]
        if sc["spec"] is not None:
            assert outcome in (sc["spec"], "unsupported"), (sid, outcome)
        assert outcome not in ("audit_error", "invalid", "crashed", "not_run", "other"), (sid, outcome)


def test_code_paths_compare_siblings(report: dict[str, Any]) -> None:
    results = report["scenarios"]["code_paths"]["results"]
    assert results["faulty.path[same]"]["outcome"] == "identical"
    assert results["faulty.path[nan]"]["outcome"] == "differs"
    assert "masked_row.float32" in results["faulty.path[nan]"]["detail"]
    assert results["faulty.path"]["outcome"] == "differs"
    no_half = results["faulty.path[nohalf]"]
    assert no_half["outcome"] == "differs" and "masked_row.float16" in no_half["detail"]
    assert no_half["evidence"]["compared_with"]["faulty.path"]["masked_row.float16"]["note"] == "raised TypeError vs ran"
    assert results["numpy"]["outcome"] == "unsupported"


def test_adapter_errors_are_outcomes_with_the_message(report: dict[str, Any]) -> None:
    r = report["scenarios"]["fully_masked_row"]["results"]["<script>alert(1)</script>"]
    assert r["outcome"] == "crashed"  # a ValueError it does not declare: not a documented refusal
    assert r["evidence"]["error"]["type"] == "ValueError"
    assert "<img src=x" in r["evidence"]["error"]["message"]


DECLARED_SCENARIOS = ["returned_weights", "fully_masked_row.float16", "fully_masked_row", "mask_polarity",
                      "causal_alignment", "softmax_precision.float16"]


@pytest.fixture(scope="module")
def declared_report() -> dict[str, Any]:
    chosen = handles("DeclaresLimits", "UniformTopLeft") + registry.select(["numpy"])[0]
    return run_audit(chosen, isolation="none", jobs=1, scenarios=DECLARED_SCENARIOS)


def test_declared_refusals_are_rejected_and_other_raises_crashed(declared_report: dict[str, Any]) -> None:
    results = {sid: sc["results"][name_of("DeclaresLimits")] for sid, sc in declared_report["scenarios"].items()}
    f16 = results["fully_masked_row.float16"]
    assert f16["outcome"] == "rejected" and "F16 unsupported" in f16["detail"]  # the message is shown
    assert "raises 'F16 unsupported' in every call (declared)" in f16["detail"]  # and the declared reason
    assert f16["evidence"]["error"] == {"type": "TypeError", "message": "F16 unsupported"}
    native = results["mask_polarity"]
    assert native["outcome"] == "rejected" and "native masks are not wired" in native["detail"]
    assert "declared_unsupported" not in native["evidence"]  # a refusal, but of nothing the adapter declares
    assert results["causal_alignment"]["outcome"] != "rejected"  # T = 1 raised ValueError: left out of the probes
    assert results["fully_masked_row"]["outcome"] == "zeros"  # what it can do is still measured
    assert "declared_unsupported" not in results["fully_masked_row"]["evidence"]


def test_undeclared_exception_is_crashed_not_rejected() -> None:
    from attnconf.audit.observe import Context, run_scenario

    adapter = audit_faulty.DeclaresLimits()
    scenario = SCENARIOS["causal_alignment"]
    one = {k: v for k, v in common.causal_probes().items() if v.T == 1}
    original = common.causal_probes
    try:
        masks.causal_probes = lambda: one  # type: ignore[assignment]  # only the T = 1 probe: every call raises
        r = run_scenario(scenario, Context(adapter))
    finally:
        masks.causal_probes = original  # type: ignore[assignment]
    assert (r.outcome, r.evidence["error"]["type"]) == ("crashed", "ValueError"), r
    assert "an undocumented failure at T = 1" in r.detail


def test_declared_unsupported_cells_are_not_applicable(declared_report: dict[str, Any], tmp_path: Path) -> None:
    from attnconf.audit import layout

    name = name_of("DeclaresLimits")
    weights = declared_report["scenarios"]["returned_weights"]
    r = weights["results"][name]
    assert r["outcome"] == "none"  # measured, as always
    assert r["evidence"]["declared_unsupported"] == ("capabilities.returns_weights=False: the fused kernel keeps no "
                                                     "weights (declared)")
    assert layout.result_kind(r, weights, layout.reference_outcome(weights)) == "na"
    assert layout.cell_kind(r["outcome"], weights, layout.reference_outcome(weights)) == "diff"  # without it: bold
    write_reports(declared_report, tmp_path)
    md = (tmp_path / "audit.md").read_text()
    cell = f'[_n/a_](#{anchor("returned_weights", name)} "returns\\_weights=False")'  # the capability, in the tooltip
    assert cell in md
    assert f'[**none**](#{anchor("returned_weights", name)})' not in md  # not bold: not a departure
    assert "_n/a_, declared unsupported: capabilities.returns\\_weights=False" in md  # the evidence says why
    page = (tmp_path / "audit.html").read_text()
    assert 'class="k-na" title="not applicable, declared: capabilities.returns_weights=False: the fused kernel' in page
    uniform = declared_report["scenarios"]["returned_weights"]["results"][name_of("UniformTopLeft")]
    assert layout.result_kind(uniform, weights, "per_head") != "na"  # declares nothing: judged as usual


def test_example_heatmap_matches_reference(report: dict[str, Any]) -> None:
    ex = report["example"]["adapters"]["numpy"]
    assert np.max(np.asarray(ex["abs_error"], dtype=float)) < 1e-6
    assert np.shape(ex["weights"]) == np.shape(report["example"]["reference"])


# -- conventions of current models (docs/spec.md section 13) ------------------------------------------

CONVENTION_IDS = [sc.id for sc in CATALOG if sc.group == "conventions"]


@pytest.fixture(scope="module")
def conventions_report() -> dict[str, Any]:
    chosen = handles(*audit_faulty.EXPECTED_CONVENTIONS) + registry.select(["numpy"])[0]
    return run_audit(chosen, isolation="none", jobs=1, scenarios=CONVENTION_IDS)


@pytest.mark.parametrize("cls", sorted(audit_faulty.EXPECTED_CONVENTIONS))
def test_convention_faults_are_reported_exactly(conventions_report: dict[str, Any], cls: str) -> None:
    name = name_of(cls)
    got = {sid: conventions_report["scenarios"][sid]["results"][name]["outcome"] for sid in CONVENTION_IDS}
    assert got == audit_faulty.EXPECTED_CONVENTIONS[cls]


def test_every_convention_outcome_is_measured_by_some_adapter(conventions_report: dict[str, Any]) -> None:
    """Each outcome a convention scenario names is produced by one of the faulty adapters: none is unreachable."""
    assert set(audit_faulty.EXPECTED_CONVENTIONS["SpecConventions"]) == set(CONVENTION_IDS)
    for sid in CONVENTION_IDS:
        sc = conventions_report["scenarios"][sid]
        seen = {sc["results"][name_of(cls)]["outcome"] for cls in audit_faulty.EXPECTED_CONVENTIONS}
        assert set(SCENARIOS[sid].outcomes) <= seen, (sid, set(SCENARIOS[sid].outcomes) - seen)
        spec_adapter = sc["results"][name_of("SpecConventions")]["outcome"]
        if sc["spec"] is not None:
            assert spec_adapter == sc["spec"], sid


def test_convention_scenarios_skip_adapters_without_the_capability(conventions_report: dict[str, Any]) -> None:
    results = {sid: conventions_report["scenarios"][sid]["results"] for sid in CONVENTION_IDS}
    plain = {sid: r[name_of("Conventions")]["detail"] for sid, r in results.items()}
    assert "rotary_layouts does not list 'half'" in plain["rotary_layout.half"]
    assert "kv_cache=False" in plain["decode_alignment"]
    for sid, convention in (("window_bounds", "window"), ("softcap_placement", "softcap"), ("alibi_slopes", "alibi"),
                            ("ragged_padded_rows", "lengths")):
        assert f"does not list {convention!r}" in plain[sid], sid
    partial = results["rotary_layout.interleaved"][name_of("ConventionsPartial")]
    assert "declared: ['half']" in partial["detail"]
    for sid, r in results.items():  # the numpy adapter: the spec where it declares the convention, else skipped
        assert r["numpy"]["outcome"] in (conventions_report["scenarios"][sid]["spec"] or "zeros", "unsupported"), sid


def test_rotary_only_adapter_is_unsupported_in_attention_scenarios() -> None:
    from attnconf.audit.adapter_audit import AdapterAudit

    audit = AdapterAudit(audit_faulty.RotaryOnly())
    masked = audit.scenario("fully_masked_row")["result"]
    assert masked["outcome"] == "unsupported" and "level='rotary'" in masked["detail"]
    assert audit.scenario("rotary_layout.interleaved")["result"]["outcome"] == "interleaved"
    assert audit.scenario("rotary_layout.half")["result"]["outcome"] == "unsupported"
    assert "error" in audit.example()["example"]


def test_convention_candidates_are_far_apart() -> None:
    """On every convention probe the candidates differ by far more than the classification tolerance."""
    far = 100 * common.TOL["float32"]
    x = conventions.rotary_probe()
    pos = np.broadcast_to(np.arange(x.shape[2]), x.shape[:1] + x.shape[2:3])
    assert _pairwise_min(conventions._rotary_candidates(x, pos)) > far
    xs = x[:, :, : conventions.N_DECODE]
    offset = np.asarray(conventions.ROTARY_OFFSETS)[:, None] + np.arange(conventions.N_DECODE)
    zero = np.broadcast_to(np.arange(conventions.N_DECODE), offset.shape)
    four = {f"{k} {n}": v for n, at in (("ok", offset), ("ignored", zero))
            for k, v in conventions._rotary_candidates(xs, at).items()}
    assert _pairwise_min(four) > far
    for T_new in conventions.DECODE_STEPS:
        cands = conventions.decode_candidates(conventions.decode_probe(T_new))
        if T_new == 1:  # one new token sees the whole cache under bottom-right: no causal mask at all
            assert classify.distance(cands["bottom_right"], cands["unmasked"]) == 0.0
            del cands["unmasked"]
        assert _pairwise_min(cands) > far, T_new
    p = conventions.window_probe()
    assert _pairwise_min({n: conventions._reference(p, window=w) for n, w in conventions.WINDOW_CANDIDATES.items()}) > far
    assert _pairwise_min(conventions.softcap_candidates(conventions.softcap_probe())) > far
    for H in conventions.ALIBI_HEADS:
        for alignment in ("top_left", "bottom_right"):
            assert _pairwise_min(conventions.alibi_candidates(conventions.alibi_probe(H), alignment)) > far, H
    assert _pairwise_min(conventions.ragged_candidates(conventions.ragged_probe())) > far


# -- the probes can tell the candidates apart -------------------------------------------------------

def _pairwise_min(cands: dict[str, Any]) -> float:
    names = list(cands)
    return min(classify.distance(cands[a], cands[b]) for i, a in enumerate(names) for b in names[i + 1:])


def test_candidates_are_far_apart() -> None:
    for dtype in ("float64", "float32", "float16", "bfloat16"):
        p = common.masked_row(dtype)
        row = p.reference(mask=None)[0, :, 1, :]
        cands = {"zeros": np.zeros_like(row), "uniform": np.full_like(row, 1 / p.S), "unmasked": row}
        assert _pairwise_min(cands) > 5 * common.ROW_TOL[dtype]
    for label, p in common.causal_probes().items():
        cands = masks._causal_candidates(p)
        for a in ("top_left", "bottom_right"):  # compared on the rows alignment a defines, as the audit does
            ref, rows = cands[a]
            for n, (other, _) in cands.items():
                d = classify.distance(ref[:, :, rows], other[:, :, rows])
                if p.T == 1 and {a, n} == {"bottom_right", "ignored"}:
                    assert d == 0.0  # the one query sees every key under bottom-right: no causal mask at all
                elif n != a:
                    assert d > 100 * common.TOL["float32"], (label, a, n, d)
    p = common.base()
    mask = common.two_sided_mask("polarity", (p.B, p.T, p.S))
    assert _pairwise_min({"m": p.reference(mask=mask), "~m": p.reference(mask=~mask), "none": p.reference(mask=None)}) > 0.01
    g = heads.gqa_probe()
    assert classify.distance(g.reference(), g.reference(kv_heads=[h % 2 for h in range(g.H)])) > 0.01
    assert masks.MASKED_ROW == common.MASKED_ROW


# -- classification on synthetic measurements ------------------------------------------------------

def test_classify_fully_masked_row() -> None:
    unmasked = np.array([[0.1, 0.2, 0.3, 0.4]])
    assert classify.fully_masked_row(np.full((1, 4), np.nan), unmasked, 1e-4)[0] == "nan"
    assert classify.fully_masked_row(np.zeros((1, 4)), unmasked, 1e-4)[0] == "zeros"
    assert classify.fully_masked_row(np.full((1, 4), 0.25), unmasked, 1e-4)[0] == "uniform"
    assert classify.fully_masked_row(unmasked + 1e-6, unmasked, 1e-4)[0] == "unmasked"
    assert classify.fully_masked_row(np.array([[1.0, 0, 0, 0]]), unmasked, 1e-4)[0] == "other"
    assert classify.fully_masked_row(np.array([[np.nan, 0, 0, 0]]), unmasked, 1e-4)[0] == "other"


def test_classify_distance_never_zeroes_nan() -> None:
    assert classify.distance([np.nan, 1.0], [0.0, 1.0]) == np.inf
    assert classify.distance([np.nan, 1.0], [np.nan, 1.0]) == 0.0
    assert classify.distance([np.inf], [np.nan]) == np.inf
    assert classify.distance([1.0, 2.0], [1.0]) == np.inf


def test_classify_spread_and_scale() -> None:
    assert classify.spread(np.array([[True, True], [False, False]]), 0) == "all_rows"
    assert classify.spread(np.array([[True, False], [False, False]]), 0) == "some_rows"
    assert classify.spread(np.array([[False, False], [False, False]]), 0) == "none"
    assert classify.spread(np.array([[True, True], [True, False]]), 0) == "other_batches"
    logits = np.random.default_rng(0).standard_normal((3, 5))
    w = np.exp(0.37 * logits)
    w /= w.sum(axis=-1, keepdims=True)
    s, residual = classify.fit_scale(w, logits)
    assert abs(s - 0.37) < 1e-9 and residual < 1e-9


def test_classify_precision() -> None:
    assert classify.ulp(np.array([1.0]), "float16")[0] == 2.0**-10
    assert classify.ulp(np.array([0.0]), "float16")[0] == 2.0**-24
    assert classify.ulp_error(np.array([1.0 + 2.0**-10]), np.array([1.0]), "float16") == 1.0
    assert classify.softmax_precision(0.5, 3.0, "float16") == "float32"
    assert classify.softmax_precision(1.5, 3.0, "float16") == "float16"
    assert classify.softmax_precision(1.5, 0.5, "float16") == "indistinct"
    assert classify.softmax_precision(40.0, 3.0, "float16") == "other"


def test_majority_needs_a_unique_winner() -> None:
    assert classify.majority(["a", "b", "a"]) == "a"
    assert classify.majority(["a", "b"]) is None
    assert classify.majority([]) is None


# -- the report -----------------------------------------------------------------------------------

def test_catalog_ids_and_specs_are_consistent() -> None:
    assert len(SCENARIOS) == len(CATALOG)
    for sc in CATALOG:
        assert sc.spec is None or sc.spec in sc.outcomes, sc.id
        assert set(sc.outcomes) & set(COMMON_OUTCOMES) <= {sc.on_error}, sc.id  # may describe its own refusal
        assert sc.on_error in sc.all_outcomes(), sc.id
        assert all(n in FLOAT_DTYPES or isinstance(getattr(Capabilities(), n), bool) for n in sc.needs()), sc.id


def test_report_is_valid_and_written(report: dict[str, Any], written: Path) -> None:
    assert schema.problems(report, schema.AUDIT_SCHEMA) == []
    again = schema.read(written / "audit.json")
    assert again == json.loads(json.dumps(report))
    json.loads((written / "audit.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_schema_rejects_an_unknown_outcome(report: dict[str, Any]) -> None:
    bad = copy.deepcopy(report)
    bad["scenarios"]["fully_masked_row"]["results"]["numpy"]["outcome"] = "sometimes"
    assert any("sometimes" in p for p in schema.problems(bad, schema.AUDIT_SCHEMA))
    bad = copy.deepcopy(report)
    del bad["adapters"]["numpy"]["status"]
    assert schema.problems(bad, schema.AUDIT_SCHEMA)


def test_reports_are_deterministic_and_measurements_cross_as_json(report: dict[str, Any]) -> None:
    """Measured again, the way a conformance session measures (`measure_here`, in the adapter's
    process), and passed through JSON as it crosses to `attnconf run`: the same report."""
    chosen = handles(*KNOWN) + registry.select(["numpy"])[0]
    measured = json.loads(json.dumps(measure_here([registry.instantiate(h.obj) for h in chosen], chosen)))
    again = run_audit(chosen, isolation="none", jobs=1, measured=measured)
    assert {e.pop("measured_in") for e in again["adapters"].values()} == {"conformance session"}
    expected = strip_timing(report)
    assert {e.pop("measured_in") for e in expected["adapters"].values()} == {"audit process"}
    assert strip_timing(again) == expected


def test_markdown_tables_link_every_cell(report: dict[str, Any], written: Path) -> None:
    text = (written / "audit.md").read_text()
    for title in report["groups"].values():
        assert f"## Evidence: {title}" in text
    assert "**nan**" in text  # a departure is highlighted
    for sid, sc in report["scenarios"].items():
        for name in sc["results"]:
            link = (f"(#{anchor(sid, name)})", f'(#{anchor(sid, name)} "')  # a not-applicable cell has a title
            assert any(x in text for x in link) and f'<a id="{anchor(sid, name)}"></a>' in text


# -- escaping -------------------------------------------------------------------------------------

def test_html_and_markdown_escape_adapter_text(written: Path) -> None:
    page = (written / "audit.html").read_text()
    for raw in ("<script>", "<img src=x", "<b>evil</b>", "<i>numpy</i>", "<b>not bold</b>"):
        assert raw not in page, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "&lt;script&gt;alert(5)&lt;/script&gt; bank" in page and "<p>trusted fragment</p>" in page
    assert "default-src 'none'" in page
    md = (written / "audit.md").read_text()
    for raw in ("<script>", "<img", "<b>"):
        assert raw not in md, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md


# -- isolation: crashes, hangs, load failures, contract breaches --------------------------------------

def test_crash_hang_and_bad_adapters_cost_only_themselves(worker_path: None, tmp_path: Path) -> None:
    chosen = handles("Aborts", "Hangs", "FailsToLoad", "WrongShape") + registry.select(["numpy"])[0]
    rep = run_audit(chosen, tmp_path, timeout=8.0, isolation="all", jobs=2)
    adapters = rep["adapters"]
    results = {sid: sc["results"] for sid, sc in rep["scenarios"].items()}
    aborts = adapters["faulty.aborts"]
    assert aborts["status"] == "crashed" and "causal_alignment" in aborts["reason"] and "signal" in aborts["reason"]
    assert results["fully_masked_row"]["faulty.aborts"]["outcome"] == "zeros"  # measured before the crash
    assert results["causal_alignment"]["faulty.aborts"]["outcome"] == "crashed"
    assert results["mask_polarity"]["faulty.aborts"]["outcome"] == "not_run"
    hangs = adapters["faulty.hangs"]
    assert hangs["status"] == "crashed" and "timed out" in hangs["reason"]
    assert adapters["faulty.fails_to_load"]["status"] == "crashed"
    assert "libfoo.so" in adapters["faulty.fails_to_load"]["reason"]
    assert results["fully_masked_row"]["faulty.wrong_shape"]["outcome"] == "invalid"
    assert adapters["numpy"]["status"] == "ok"
    assert all(r["numpy"]["outcome"] not in ("crashed", "not_run", "audit_error") for r in results.values())
    assert schema.read(tmp_path / "audit.json")["adapters"]["faulty.aborts"]["status"] == "crashed"
    assert (tmp_path / "audit.html").stat().st_size > 0


# -- the command ----------------------------------------------------------------------------------

def test_cli_audit_writes_the_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    code = cli_main(["audit", "--adapter", "numpy", "-o", str(out), "--scenario", "fully_masked_row",
                     "--scenario", "causal_alignment", "--isolation", "none", "-q"])
    assert code == 0
    assert schema.read(out / "audit.json")["run"]["scenarios"] == ["fully_masked_row", "causal_alignment"]
    assert "fully_masked_row" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--adapter", "nosuchadapter"], "Unknown adapter"),
    (["--scenario", "fully_masked"], "Did you mean"),
    (["--timeout", "0"], "--timeout"),
    (["--jobs", "0"], "--jobs"),
])
def test_cli_audit_usage_errors(argv: list[str], message: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["audit", "-o", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_audit_lists_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["audit", "--list-scenarios"]) == 0
    out = capsys.readouterr().out
    assert all(sc.id in out for sc in CATALOG)


def test_interrupt_leaves_previous_report_intact(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli_main(["audit", "--adapter", "numpy", "-o", str(tmp_path), "--isolation", "none", "-q",
                     "--scenario", "default_scale"]) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def interrupt(line: str) -> None:
        if "faulty.scaled_twice: starting" in line:
            raise KeyboardInterrupt

    with pytest.raises(AuditInterrupted) as info:
        run_audit(registry.select(["numpy"])[0] + handles("ScaledTwice"), tmp_path, interrupt, isolation="none", jobs=1)
    assert info.value.finished == ["numpy"] and info.value.unfinished == ["faulty.scaled_twice"]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_sigterm_stops_the_audit_and_its_workers(worker_path: None, tmp_path: Path,
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """A real SIGTERM while an adapter hangs in its worker: exit 130, the message names what was not
    finished, the previous report is intact, and the worker process is gone."""
    (tmp_path / "audit.json").write_text("previous")
    marker, hang_env = hang_marker(tmp_path_factory.mktemp("hang"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "attnconf.cli", "audit", "--adapter", "audit_faulty:Hangs", "-o", str(tmp_path),
         "--timeout", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **hang_env})
    wait_until(lambda: marker.exists() or proc.poll() is not None, 120, "the hanging call to start in its worker")
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "previous report" in err and "faulty.hangs" in err
    assert (tmp_path / "audit.json").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.json"]
    if Path("/proc/self").exists():  # Linux: the hanging worker was killed (gone, or a zombie awaiting its parent)
        assert workers
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() and _state(pid) != "Z" for pid in workers), 30,
                   f"the worker processes {workers} to end")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


# -- the reports at thirty adapters and more: one section / filter entry per framework family -----------------

CELL_MD = re.compile(r'^\[(?P<label>.*?)\]\(#(?P<anchor>e-[0-9a-f]{8})(?: "(?P<tip>[^"]*)")?\)$')
PIPE = re.compile(r"(?<!\\)\|")


def synthetic_families(big: dict[str, Any]) -> dict[str, list[str]]:
    fams: dict[str, list[str]] = {}
    for name, a in big["adapters"].items():
        fams.setdefault(a["framework"], []).append(name)
    return fams


def departs_from_spec(r: dict[str, Any], sc: dict[str, Any]) -> bool | None:
    """Whether a cell must be highlighted, worked out here from the spec alone (None: no spec, or not judged)."""
    if not sc["spec"] or r["evidence"].get("declared_unsupported"):
        return None
    if r["outcome"] in ("unsupported", "not_run", "crashed", "invalid", "audit_error"):
        return None
    return r["outcome"] != sc["spec"]


@pytest.fixture(scope="module")
def big(report: dict[str, Any]) -> dict[str, Any]:
    doc = audit_synthetic.build(report)
    schema.validate(doc, schema.AUDIT_SCHEMA)
    assert len(doc["adapters"]) >= 30 and len(synthetic_families(doc)) == len(audit_synthetic.FAMILIES)
    return doc


def test_markdown_at_scale_has_a_section_per_family_with_the_measured_cells(big: dict[str, Any]) -> None:
    from attnconf.audit import markdown
    from attnconf.audit.layout import short_label

    text = markdown.render(big)
    lines = text.splitlines()
    fams = synthetic_families(big)
    by_label = {markdown.md(short_label(n)): n for n in big["adapters"]}
    assert len(by_label) == len(big["adapters"]), "the synthetic adapters need distinct labels"
    scenario_of = {anchor(sid): sid for sid in big["scenarios"]}
    sections = [i for i, line in enumerate(lines) if line.startswith("## ")] + [len(lines)]
    seen: dict[str, int] = {}
    counted: dict[str, dict[str, int]] = {}
    anchors: dict[str, str] = {}
    for start, end in zip(sections, sections[1:], strict=False):
        head = re.fullmatch(r'## <a id="(fam-[a-z0-9-]+)"></a>(.*)', lines[start])
        if head is None:
            continue
        family = next(f for f in fams if markdown.md(f) == head.group(2))
        assert family not in anchors, f"two sections for {family}"
        anchors[family] = head.group(1)
        counts = counted[family] = {"diff": 0, "broken": 0, "na": 0}
        cols: list[str] = []
        for line in lines[start:end]:
            if line.startswith("| scenario | spec | "):
                cols = [by_label[c.strip()] for c in PIPE.split(line)[3:-1]]
                assert len(cols) <= markdown.MOST_COLUMNS
                for c in cols:
                    assert big["adapters"][c]["framework"] == family, (c, family)
                    seen[c] = seen.get(c, 0) + 1
            elif line.startswith("| [") and cols:
                cells = [c.strip() for c in PIPE.split(line)[1:-1]]
                sid = scenario_of[re.search(r"\(#(s-[a-z0-9-]+)\)", cells[0]).group(1)]  # type: ignore[union-attr]
                sc = big["scenarios"][sid]
                assert len(cells) == 2 + len(cols), line
                for name, cell in zip(cols, cells[2:], strict=True):
                    r = sc["results"][name]
                    m = CELL_MD.match(cell)
                    assert m is not None and m.group("anchor") == anchor(sid, name), (sid, name, cell)
                    label = m.group("label")
                    if r["evidence"].get("declared_unsupported"):
                        assert label == "_n/a_" and m.group("tip") == "returns\\_weights=False", cell
                    else:
                        bare = label.removesuffix(" (!)").strip("*_")
                        assert bare == markdown.md(r["outcome"]), (sid, name, cell)  # the measured outcome
                    if departs_from_spec(r, sc) is not None:
                        assert label.startswith("**") == departs_from_spec(r, sc), (sid, name, cell)
                    shown = ("broken" if label.endswith("(!)") else "diff" if label.startswith("**")
                             else "na" if label.startswith("_") else None)
                    if shown:
                        counts[shown] += 1
    assert set(anchors) == set(fams) and len(set(anchors.values())) == len(fams)  # tf_keras and tf-keras both
    assert seen == dict.fromkeys(big["adapters"], 1)  # every adapter in exactly one column
    summary = lines[lines.index("## Summary") + 4: lines.index("## Summary") + 4 + len(fams)]
    for family, row in zip(fams, summary, strict=True):
        k = counted[family]
        expected = f"| [{markdown.md(family)}](#{anchors[family]}) | {len(fams[family])} | {k['diff']} | {k['broken']} | {k['na']} |"
        assert row == expected
    assert sum(k["diff"] for k in counted.values()) > 0 and sum(k["broken"] for k in counted.values()) > 0
    widths = sorted(len(line) for line in lines)
    assert widths[-1] <= 300 and sum(w > 200 for w in widths) <= len(widths) // 100, widths[-5:]
    assert "<b>" not in text  # the family "<b>haiku</b>" is escaped


def test_html_at_scale_has_adapter_rows_by_family_and_a_filter_for_every_family(big: dict[str, Any]) -> None:
    import html as html_lib

    from attnconf.audit import html

    page = html.render(big)
    fams = synthetic_families(big)
    boxes = re.findall(r'<label><input type="checkbox" id="show-fam-(\d+)" checked> (.*?) \((\d+)\)</label>', page)
    index = {html_lib.unescape(f): i for i, f, _ in boxes}
    assert set(index) == set(fams) and len(boxes) == len(fams)
    assert all(int(n) == len(fams[html_lib.unescape(f)]) for _, f, n in boxes)
    style = page[page.index("<style>"): page.index("</style>")]
    for i in index.values():
        assert f"body:has(#show-fam-{i}:not(:checked)) .fam-{i} {{ display: none; }}" in style
    assert "<script" not in page.lower() and "default-src 'none'" in page
    groups = re.findall(r'<section id="g-([a-z]+)"><h2>.*?</h2>(.*?)</section>', page)
    assert [g for g, _ in groups] == [g for g in big["groups"] if any(s["group"] == g for s in big["scenarios"].values())]
    for gid, body in groups:
        ids = [sid for sid, sc in big["scenarios"].items() if sc["group"] == gid]
        heads = re.findall(r'<th title="[^"]*"><a href="#(s-[a-z0-9-]+)">', body)
        assert heads == [anchor(sid) for sid in ids]  # the group's scenarios are the columns
        for i in index.values():
            assert f'<tr class="family fam-{i}">' in body
        rows = re.findall(r'<tr class="fam-(\d+)"><th class="adapter" title="([^"]*)">[^<]*</th>(.*?)</tr>', body)
        names = [html_lib.unescape(n) for _, n, _ in rows]
        assert sorted(names) == sorted(big["adapters"])  # every adapter in exactly one row
        for fam_index, name, cells_html in rows:
            name = html_lib.unescape(name)
            assert fam_index == index[big["adapters"][name]["framework"]]
            cells = re.findall(r'<td class="k-(\w+)" title="[^"]*"><a href="#(e-[0-9a-f]{8})">([^<]*)</a></td>',
                               cells_html)
            assert len(cells) == len(ids), (gid, name)
            for sid, (kind, target, label) in zip(ids, cells, strict=True):
                r = big["scenarios"][sid]["results"][name]
                assert target == anchor(sid, name)
                declared = r["evidence"].get("declared_unsupported")
                assert html_lib.unescape(label) == ("n/a" if declared else r["outcome"]), (sid, name)
                if declared:
                    assert kind == "na"
                elif departs_from_spec(r, big["scenarios"][sid]) is not None:
                    assert (kind == "diff") == departs_from_spec(r, big["scenarios"][sid]), (sid, name, kind)
