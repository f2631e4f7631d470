"""audit.html in a real browser: headless Chromium (Debian's `chromium`, installed by .ci/run) renders
the report; the tables and images must show, and no request may leave the page and no script run
(Chromium logs every Content-Security-Policy violation and script error to the console). Skipped with
the reason where no Chromium is installed; never faked."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import audit_synthetic
import pytest

from attnconf.adapters import registry
from attnconf.audit import html, layout
from attnconf.audit.runner import run_audit
from attnconf.audit.scenarios import CATALOG

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian package `chromium`; .ci/run installs it)")

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000")
PROBE_NONCE = "attnconf-browser-test"
PROBE = """<script nonce="NONCE">
(() => {
  const violations = [], errors = [];
  document.addEventListener("securitypolicyviolation", e => violations.push(e.violatedDirective + " " + e.blockedURI));
  window.addEventListener("error", e => errors.push(String(e.message || e.type)), true);
  window.alert = () => errors.push("alert called");
  window.addEventListener("load", () => {
    const images = [...document.images];
    const tables = [...document.querySelectorAll("table")];
    const out = {
      images: images.length,
      decoded: images.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length,
      tables: tables.length,
      visible_tables: tables.filter(t => t.getBoundingClientRect().height > 0).length,
      scripts: document.scripts.length, violations, errors,
    };
    const pre = document.createElement("pre");
    pre.id = "attnconf-browser-result";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  });
})();
</script>""".replace("NONCE", PROBE_NONCE)


def chromium(page: Path, profile: Path) -> tuple[str, list[str]]:
    """(the DOM after load, the console messages) of `page` in headless Chromium."""
    assert CHROMIUM is not None
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("browser")
    chosen = [registry.load(f"audit_faulty:{n}") for n in ("NanBottomRight", "Evil")] + registry.select(["numpy"])[0]
    report = run_audit(chosen, out, isolation="none", jobs=1,
                       extra_sections=[("<script>alert(6)</script>", "<p>an extra section</p>")])
    return out / "audit.html", report


@pytest.fixture(scope="module")
def page(audited: tuple[Path, dict[str, Any]]) -> Path:
    return audited[0]


def test_the_console_check_can_fail(tmp_path: Path) -> None:
    """A page that tries an external image and an inline script is caught by the same check."""
    control = tmp_path / "control.html"
    html = (page_head() + '<img src="http://192.0.2.1/x.png"><script>alert(1)</script></body></html>')
    control.write_text(html)
    _, console = chromium(control, tmp_path / "profile")
    assert any("192.0.2.1" in line for line in console)
    assert any("inline script" in line for line in console)


def page_head() -> str:
    from attnconf.audit.html import CSP

    return f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}"></head><body>'


def test_report_renders_without_requests_or_scripts(page: Path, tmp_path: Path) -> None:
    dom, console = chromium(page, tmp_path / "profile")
    assert console == []
    assert "<script" not in dom.lower()
    # the family summary, one table per scenario group, the adapters, one evidence table per scenario: none lost
    assert dom.count("<table") == 2 + len({sc.group for sc in CATALOG}) + len(CATALOG)
    assert dom.count("<img") >= 3
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "an extra section" in dom
    assert f'id="{layout.anchor("fully_masked_row", "numpy")}"' in dom


def test_tables_show_and_images_decode(page: Path, tmp_path: Path) -> None:
    text = page.read_text()
    csp = re.search(r'content="(default-src[^"]*)"', text)
    assert csp is not None
    probed = text.replace(csp.group(1), csp.group(1) + f"; script-src 'nonce-{PROBE_NONCE}'", 1)
    probed = probed.replace("</title>", "</title>" + PROBE, 1)
    instrumented = tmp_path / "probed.html"
    instrumented.write_text(probed)
    dom, console = chromium(instrumented, tmp_path / "profile")
    found = re.search(r'<pre id="attnconf-browser-result">(.*?)</pre>', dom, re.S)
    assert found is not None, "the probe script did not report (the page did not load?)"
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert result["images"] >= 3 and result["decoded"] == result["images"], result
    assert result["tables"] >= 8 and result["visible_tables"] == result["tables"], result
    assert result["scripts"] == 1, result  # only the probe: no adapter text became a script
    assert result["violations"] == [] and result["errors"] == [], result
    assert console == []


FILTER_PROBE = """<script nonce="NONCE">
window.addEventListener("load", () => {
  const shown = () => [...document.querySelectorAll(".grid tbody tr")].filter(r => r.getBoundingClientRect().height > 0)
    .map(r => r.className);
  const count = (rows, cls) => rows.filter(c => c.split(" ").includes(cls)).length;
  const before = shown();
  document.getElementById("show-fam-0").checked = false;
  const filtered = shown();
  document.getElementById("filter").reset();
  const reset = shown();
  const wrap = document.querySelector(".grid-wrap"), corner = wrap.querySelector("thead th");
  wrap.scrollTop = 200;
  const out = {
    before: before.length, filtered: filtered.length, reset: reset.length,
    fam0_before: count(before, "fam-0"), fam0_filtered: count(filtered, "fam-0"), fam1_filtered: count(filtered, "fam-1"),
    fam1_before: count(before, "fam-1"), scrolled: wrap.scrollTop,
    header_offset: Math.round(corner.getBoundingClientRect().top - wrap.getBoundingClientRect().top - wrap.clientTop),
  };
  const pre = document.createElement("pre");
  pre.id = "attnconf-browser-result";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>""".replace("NONCE", PROBE_NONCE)


def test_family_filter_hides_a_family_in_a_32_adapter_report(audited: tuple[Path, dict[str, Any]],
                                                             tmp_path: Path) -> None:
    """Clearing the first family's checkbox hides its rows (and only its rows) in every group table, the form's
    reset shows them again, and the header row stays at the top of its table while the table scrolls."""
    big = audit_synthetic.build(audited[1])
    text = html.render(big)
    probed = text.replace("default-src 'none';", f"default-src 'none'; script-src 'nonce-{PROBE_NONCE}';", 1)
    probed = probed.replace("</title>", "</title>" + FILTER_PROBE, 1)
    page = tmp_path / "big.html"
    page.write_text(probed)
    dom, console = chromium(page, tmp_path / "profile")
    found = re.search(r'<pre id="attnconf-browser-result">(.*?)</pre>', dom, re.S)
    assert found is not None, "the probe script did not report (the page did not load?)"
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    groups = len({sc["group"] for sc in big["scenarios"].values()})
    first = big["adapters"][next(iter(big["adapters"]))]["framework"]
    in_first = sum(a["framework"] == first for a in big["adapters"].values())
    rows = (len(big["adapters"]) + len(audit_synthetic.FAMILIES)) * groups  # adapter rows and family rows
    assert result["before"] == result["reset"] == rows, result
    assert result["fam0_before"] == (in_first + 1) * groups and result["fam0_filtered"] == 0, result
    assert result["filtered"] == rows - result["fam0_before"], result
    assert result["fam1_filtered"] == result["fam1_before"] > 0, result
    assert result["scrolled"] > 0 and result["header_offset"] == 0, result  # sticky header
    assert console == []
