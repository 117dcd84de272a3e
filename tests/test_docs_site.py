"""The docs: the maths in every notebook's markdown is written as TeX (always run), and the site rendered to HTML by
tools/render_site.py, opened in headless Chromium (marked `docs`): pages load, maths typesets without errors or raw
TeX, plots are embedded, internal links resolve, nothing of the notebook machinery leaks into the page (front matter,
`In [ ]:` prompts, `#|` directives), slow cells are labelled, the sidebar is styled, and the front page is not blank.
CI sets MEMNB_DOCS_TEST=1 so that a missing site or browser fails instead of skipping."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_site"
WITH_DISPLAY_MATHS = {"scan.html", "delta_rule.html", "cdm.html", "cumscan.html"}
WITH_INLINE_MATHS = WITH_DISPLAY_MATHS | {"core.html", "ramnet.html", "layers.html", "index.html"}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# A TeX command inside $...$ written with a doubled backslash (`$\\eta$` in the cell's text, `$\\\\eta$` in the .ipynb's
# JSON): TeX reads `\\` as a line break and the rest as italic letters, so the page shows "eta" instead of an eta.
_MATH = re.compile(r"\$\$.+?\$\$|\$[^$\n]+?\$", re.S)
_ESCAPED = re.compile(r"(?<!\\)\\\\(?=[A-Za-z,;:!])")


def escaped_tex(markdown: str) -> list[str]:
    "The `$...$` / `$$...$$` spans of `markdown` that hold a backslash-escaped TeX command."
    return [m.group() for m in _MATH.finditer(markdown) if _ESCAPED.search(m.group())]


def test_escaped_tex_detector():
    planted = "The step size $\\\\eta$ and $x \\\\leftarrow x + 1$ render as words."
    assert json.loads(json.dumps(planted)) == planted and "\\\\eta" in planted  # two backslashes in the text itself
    assert escaped_tex(planted) == ["$\\\\eta$", "$x \\\\leftarrow x + 1$"]
    assert escaped_tex("$\\\\,\\\\theta_i$") == ["$\\\\,\\\\theta_i$"]
    good = "$\\eta$, $\\begin{aligned} a &= b \\\\ c &= d \\end{aligned}$, $$\\sum_t x_t$$, costs $3 or $4, `\\\\n`"
    assert escaped_tex(good) == []


def _markdown_cells():
    for nb_path in sorted((ROOT / "nbs").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in nb_path.parts: continue
        for i, cell in enumerate(json.loads(nb_path.read_text())["cells"]):
            if cell["cell_type"] == "markdown":
                yield nb_path.relative_to(ROOT), i, "".join(cell["source"])


def test_no_escaped_tex_in_any_markdown_cell():
    found = [f"{p} cell {i}: {span}" for p, i, src in _markdown_cells() for span in escaped_tex(src)]
    assert len(list(_markdown_cells())) > 100
    assert not found, "double-escaped TeX (write \\eta, not \\\\eta):\n" + "\n".join(found)


def _browser():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def site():
    if not (SITE / "index.html").exists() or not _browser():
        if os.environ.get("MEMNB_DOCS_TEST") == "1":
            pytest.fail("MEMNB_DOCS_TEST=1 but _site/ (python tools/render_site.py) or chromium is missing")
        pytest.skip("no rendered site or no chromium here")
    return SITE


def _chrome(tmp_path, *args):
    cmd = [_browser(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _pages(site):
    return sorted(p for p in site.glob("*.html"))


@pytest.mark.docs
def test_every_page_opens_and_its_maths_typesets(site, tmp_path):
    pages = _pages(site)
    assert {"index.html", "scan.html", "delta_rule.html", "cdm.html"} <= {p.name for p in pages}
    for page in pages:
        dom = _chrome(tmp_path, "--virtual-time-budget=20000", "--dump-dom", page.as_uri()).stdout
        assert "<body" in dom and len(dom) > 1000, f"{page.name} did not load"
        assert 'class="MathJax_Error"' not in dom, f"{page.name}: a MathJax error"
        if page.name in WITH_DISPLAY_MATHS:
            assert dom.count('class="MathJax_Display"') >= 1, f"{page.name}: display maths was not typeset"
        if page.name in WITH_INLINE_MATHS:
            assert dom.count('class="MathJax"') >= 1, f"{page.name}: inline maths was not typeset"


@pytest.mark.docs
def test_plots_are_embedded(site):
    for name in ("scan.html", "delta_rule.html", "cdm.html", "bench.html"):
        assert "data:image/png;base64," in (site / name).read_text(), f"{name} lost its figures"


@pytest.mark.docs
def test_internal_links_resolve(site):
    for page in _pages(site):
        for href in re.findall(r'href="([^"#:]+\.html)(?:#[^"]*)?"', page.read_text()):
            assert (site / href).exists(), f"{page.name} links to missing {href}"


@pytest.mark.docs
def test_front_page_screenshot_is_not_blank(site, tmp_path):
    from PIL import Image
    shot = tmp_path / "index.png"
    _chrome(tmp_path, "--window-size=1200,1400", "--virtual-time-budget=20000", f"--screenshot={shot}", (site / "index.html").as_uri())
    img = Image.open(shot).convert("L")
    assert img.size == (1200, 1400)
    hist = img.histogram()
    white = sum(hist[245:]) / (img.size[0] * img.size[1])
    dark = sum(hist[:100]) / (img.size[0] * img.size[1])
    assert white < 0.99 and dark > 0.001, f"front page looks blank (white {white:.3f}, dark {dark:.4f})"
