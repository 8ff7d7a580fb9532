"""report.html: one self-contained file whose plots a real browser shows.

A real build (the digits MLP: structured prune with a sensitivity analysis, int8, TFLite,
verify, and a local profile of the artifact) writes the report; the checks read it as a user
would: parsed as HTML, decoded image by image, and opened in headless Chromium, which must load
every plot and paint it on screen.

Chromium: Debian's `chromium` package (`apt-get install -y chromium`). Without it the browser test
is skipped with the reason, unless EDGESPARSE_REQUIRE_BROWSER=1 (set by CI once it installs one),
which turns the skip into a failure.
"""
from __future__ import annotations

import base64
import copy
import io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import edgesparse
from edgesparse.report.html import render_html

ROOT = Path(__file__).resolve().parent.parent
MLP = ROOT / "sample_models" / "digits_mlp.keras"
DATA = ROOT / "sample_models" / "digits.npz"
RECIPE = """\
name: html-report-test
passes:
  - pass: prune
    ratio: 0.5
    sensitivity: true
    sensitivity_ratios: [0.5, 0.9]
  - pass: quantize
    precisions: [int8]
  - pass: export
    formats: [tflite]
  - pass: verify
"""
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("html")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(RECIPE)
    result = edgesparse.build(MLP, target="rpi4", data=DATA, recipe=recipe, out=tmp / "out",
                              options={"profile_local": True})
    return result.out, json.loads((result.out / "report.json").read_text())


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Tags:
    p = _Tags()
    p.feed(page)
    return p


def _png_pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _drawn_fraction(pixels: np.ndarray) -> float:
    """Share of pixels that are not (near) white: an empty or failed plot is ~0."""
    return float((pixels.min(axis=2) < 200).mean())


def test_build_writes_a_self_contained_report_html(built):
    out, report = built
    page = (out / "report.html").read_text(encoding="utf-8")
    parsed = _parse(page)
    tags = [t for t, _ in parsed.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    assert "@import" not in page and "url(" not in page
    imgs = [a for t, a in parsed.tags if t == "img"]
    # channels, sensitivity, trajectory, latency
    assert len(imgs) == 4, [a.get("alt") for a in imgs]
    for t, attrs in parsed.tags:
        for key in ("src", "href"):
            if key in attrs:
                assert attrs[key].startswith("data:image/png;base64,"), (t, attrs[key][:60])
    for a in imgs:
        pixels = _png_pixels(base64.b64decode(a["src"].split(",", 1)[1]))
        assert pixels.shape[0] > 150 and pixels.shape[1] > 400, a["alt"]
        assert 0.01 < _drawn_fraction(pixels) < 0.9, a["alt"]


def test_report_html_holds_the_measured_figures(built):
    out, report = built
    page = (out / "report.html").read_text(encoding="utf-8")
    text = " ".join(" ".join(_parse(page).text).split())
    prune = report["facts"]["prune"]
    # per-layer channels before and after, as the prune pass recorded them
    changed = 0
    for layer, (before, after) in prune["channels"].items():
        assert f"{layer} {before:,} {after:,}" in text
        changed += before != after
    assert changed >= 2        # fc1 and fc2 lost channels; the output layer kept its 10
    for row in prune["sensitivity"]["table"]:
        cells = " ".join(f"{row[k]:.2f}" for k in ("0.5", "0.9"))
        assert f"{row['group']} {row['channels']:,} {cells}" in text
    for a in report["artifacts"]:
        assert f"{a['path']} {a['format']} {a['precision']} {a['io_dtype']} {a['bytes']:,}" in text
    final = report["model"]["final"]
    assert f"final {final['params']:,} {final['macs']:,} {final['accuracy']:.2f}" in text
    measured = report["profile"]["measured"]
    assert measured, "the build was asked to profile locally"
    for name, summary in measured.items():
        for d in summary["devices"]:
            assert d["ok"], d
            assert f"{d['result']['timing']['p50_ms']:.4g}" in text
    assert "percentile plot rather than a histogram" in text
    order = [page.index(f"<h2>{h}</h2>") for h in ("Model", "Pruning", "Trajectory over the passes",
                                                     "Artifacts", "Latency")]
    assert order == sorted(order)


def test_every_string_is_escaped_and_warnings_come_first(built):
    _, report = built
    r = copy.deepcopy(report)
    evil = '<script>alert("x")</script>'
    r["warnings"] = [f"calibration is synthetic {evil}"]
    r["facts"]["prune"]["channels"] = {'<img src=x onerror="alert(1)">': [8, 4],
                                      **r["facts"]["prune"]["channels"]}
    r["artifacts"][0]["note"] = "a & b <i>"
    page = render_html(r)
    tags = _parse(page).tags
    assert not any(t == "script" for t, _ in tags)
    assert not any(t == "img" and a.get("src") == "x" for t, a in tags)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "a &amp; b &lt;i&gt;" in page
    assert page.index('id="warnings"') < page.index("<h2>Model</h2>")


def test_sections_without_facts_are_left_out(built):
    _, report = built
    r = copy.deepcopy(report)
    del r["facts"]["prune"]
    r["profile"] = {"estimates": {}, "measured": {}}
    r["artifacts"] = []
    page = render_html(r)
    assert "<h2>Pruning</h2>" not in page and "<h2>Latency</h2>" not in page
    assert "<h2>Artifacts</h2>" not in page
    assert page.count("<img") == 1          # the trajectory is still there
    # A report from an older build, or one that stopped early, still renders.
    bare = {"model": {"name": "m"}, "target": {"name": "rpi4"}, "warnings": ["no data"]}
    page = render_html(bare)
    assert "<h1>edgesparse report: m for rpi4</h1>" in page and "no data" in page


def _browser() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


# Runs in the page after load: reports every <img> as the browser sees it.
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => {
    const r = i.getBoundingClientRect();
    return {alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
            x: r.left + scrollX, y: r.top + scrollY, cw: r.width, ch: r.height};
  });
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify({imgs, height: document.documentElement.scrollHeight});
  document.body.appendChild(pre);
});
</script>"""


def _chromium(browser: str, url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
            f"--user-data-dir={tmp / 'chrome-profile'}", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=180, cwd=tmp)


def test_report_html_opens_in_a_headless_browser_with_its_plots_visible(built, tmp_path):
    browser = _browser()
    if browser is None:
        if os.environ.get("EDGESPARSE_REQUIRE_BROWSER") == "1":
            pytest.fail("EDGESPARSE_REQUIRE_BROWSER=1 but no chromium on PATH")
        pytest.skip("no headless browser on PATH (install Debian's chromium: apt-get install -y chromium)")
    out, _ = built
    page = (out / "report.html").read_text(encoding="utf-8")
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")

    dom = _chromium(browser, probed.as_uri(), tmp_path, "--virtual-time-budget=10000",
                    "--window-size=1200,3000", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    start = dom.stdout.index('<pre id="probe">') + len('<pre id="probe">')
    import html as html_lib
    probe = json.loads(html_lib.unescape(dom.stdout[start:dom.stdout.index("</pre>", start)]))
    assert len(probe["imgs"]) == 4
    for img in probe["imgs"]:
        assert img["complete"] and img["w"] > 400 and img["h"] > 150, img   # decoded by the browser
        assert img["cw"] > 300 and img["ch"] > 100, img                     # laid out, not hidden

    # Paint the whole page and look at the pixels where the browser put each plot.
    height = min(int(probe["height"]) + 20, 16000)
    shot = tmp_path / "report.png"
    painted = _chromium(browser, (out / "report.html").as_uri(), tmp_path, "--virtual-time-budget=10000",
                        f"--window-size=1200,{height}", f"--screenshot={shot}")
    assert painted.returncode == 0 and shot.exists(), painted.stderr[-2000:]
    pixels = _png_pixels(shot.read_bytes())
    for img in probe["imgs"]:
        assert img["y"] + img["ch"] <= pixels.shape[0], ("plot below the painted area", img)
        region = pixels[int(img["y"]):int(img["y"] + img["ch"]), int(img["x"]):int(img["x"] + img["cw"])]
        assert 0.01 < _drawn_fraction(region) < 0.9, img["alt"]
        assert len(np.unique(region.reshape(-1, 3), axis=0)) > 20, img["alt"]   # a plot, not a flat box
    if os.environ.get("EDGESPARSE_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["EDGESPARSE_KEEP_SCREENSHOT"])


def test_both_reports_show_each_artifacts_gzip_size(built):
    """Unstructured zeros save only under compression: the reports showed the dense-sized file
    and left the gzip size to report.json."""
    out, report = built
    (artifact,) = report["artifacts"]
    for name in ("report.md", "report.html"):
        text = (out / name).read_text()
        n = artifact["gzip_bytes"]
        assert "gzip bytes" in text and (f"{n:,}" in text or str(n) in text), name
