"""report.html in a real browser: headless Chromium loads it from a file URL.

The parser checks in test_report_document.py say the markup is well formed; this says a
browser agrees: the requirement table is there, every image decodes, every in-page anchor has
a target, and the page logs nothing to the console. Skipped where no Chromium is installed
(`apt-get install chromium`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_fixture import write

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser",
                                                        "google-chrome", "chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed")

# Appended to a copy of the page (same folder, so relative images resolve): after load, it
# writes what the browser made of the page into the DOM, which --dump-dom then prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images].map(i => ({src: i.getAttribute("src"),
    ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth}));
  const anchors = [...document.querySelectorAll('a[href^="#"]')].map(a => ({
    href: a.getAttribute("href"),
    ok: document.getElementById(decodeURIComponent(a.getAttribute("href").slice(1))) !== null}));
  const reqs = [...document.querySelectorAll("#requirements tbody tr")].map(tr =>
    [...tr.cells].map(c => c.innerText.trim()));
  const box = document.querySelector("#requirements table").getBoundingClientRect();
  const out = document.createElement("pre");
  out.id = "probe-result";
  out.textContent = JSON.stringify({imgs, anchors, reqs, tableWidth: box.width,
                                    lang: document.documentElement.lang});
  document.body.appendChild(out);
});
</script>"""


def chromium(*args: str, timeout: int = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--enable-logging=stderr", "--v=0", *args],
        capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser")
    write(out)
    return out


def test_page_renders_in_chromium(report_dir):
    page = report_dir / "report.html"
    probe = report_dir / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                     encoding="utf-8")
    res = chromium("--virtual-time-budget=5000", "--window-size=1200,900", "--dump-dom",
                   probe.as_uri())
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', res.stdout, re.S)
    assert found, (res.stdout[-2000:], res.stderr[-2000:])
    data = json.loads(found.group(1).replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&quot;", '"').replace("&amp;", "&"))
    assert data["lang"] == "en"
    assert len(data["imgs"]) == 5 and all(i["ok"] and i["w"] > 300 for i in data["imgs"]), \
        data["imgs"]
    assert data["anchors"] and all(a["ok"] for a in data["anchors"]), \
        [a for a in data["anchors"] if not a["ok"]]
    reqs = data["reqs"]
    assert [r[0] for r in reqs] == ["R1", "R2", "R3", "R4"]
    # the value, then its interval: "47.9%\n45.8–50.0%", "0.0 pts\n−1.4 to 0.7 pts"
    assert all(re.fullmatch(r"\S+( pts|%)\s+\S+(–| to )\S+( pts|%)", r[3]) for r in reqs), reqs
    assert {r[5] for r in reqs} <= {"pass", "FAIL"}
    assert 600 < data["tableWidth"] <= 1100  # fits the page, no horizontal scrolling


def test_page_logs_nothing_and_screenshots(report_dir, tmp_path):
    shot = tmp_path / "shot.png"
    res = chromium("--virtual-time-budget=5000", "--window-size=1200,1600",
                   f"--screenshot={shot}", (report_dir / "report.html").as_uri())
    console = [line for line in res.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 20_000
