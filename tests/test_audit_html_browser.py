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

import pytest

from attnconf.adapters import registry
from attnconf.audit import layout
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
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser")
    chosen = [registry.load(f"audit_faulty:{n}") for n in ("NanBottomRight", "Evil")] + registry.select(["numpy"])[0]
    run_audit(chosen, out, isolation="none", jobs=1,
              extra_sections=[("<script>alert(6)</script>", "<p>an extra section</p>")])
    return out / "audit.html"


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
