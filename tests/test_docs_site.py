"""The docs: the maths in every notebook's markdown is written as TeX (always run), and the site rendered to HTML by
tools/render_site.py, opened in headless Chromium (marked `docs`): pages load, maths typesets without errors or raw
TeX, plots are embedded, internal links resolve, nothing of the notebook machinery leaks into the page (front matter,
`In [ ]:` prompts, `#|` directives), slow cells are labelled, the sidebar is styled, and the front page is not blank.
CI sets MEMNB_DOCS_TEST=1 so that a missing site or browser fails instead of skipping."""
import html
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


def _markdown_cells(nbs=ROOT / "nbs"):
    for nb_path in sorted(nbs.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in nb_path.parts: continue
        for i, cell in enumerate(json.loads(nb_path.read_text())["cells"]):
            if cell["cell_type"] == "markdown":
                yield nb_path.relative_to(nbs), i, "".join(cell["source"])


def escaped_tex_in_notebooks(nbs=ROOT / "nbs") -> list[str]:
    return [f"{p} cell {i}: {span}" for p, i, src in _markdown_cells(nbs) for span in escaped_tex(src)]


def test_scan_catches_a_planted_notebook(tmp_path):
    (tmp_path / "tutorials").mkdir()
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["A rate $\\\\eta$ of one.\n", "$\\alpha$ is fine"]}]
    (tmp_path / "tutorials" / "planted.ipynb").write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                                                      "nbformat_minor": 5}))
    assert '"A rate $\\\\\\\\eta$' in (tmp_path / "tutorials" / "planted.ipynb").read_text()  # as a notebook file holds it
    assert escaped_tex_in_notebooks(tmp_path) == ["tutorials/planted.ipynb cell 0: $\\\\eta$"]


def test_no_escaped_tex_in_any_markdown_cell():
    assert len(list(_markdown_cells())) > 100
    found = escaped_tex_in_notebooks()
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
        for err in ('class="MathJax_Error"', 'class="merror"', "katex-error"):
            assert err not in dom, f"{page.name}: the maths shows an error ({err})"
        tex = re.findall(r'<script type="math/tex[^"]*"[^>]*>(.*?)</script>', dom, re.S)
        assert not [t for t in tex if _ESCAPED.search(t)], f"{page.name}: double-escaped TeX was typeset as text"
        raw = re.findall(r"\$[^$<>]*\\[A-Za-z]+[^$<>]*\$", visible_text(dom))
        assert not raw, f"{page.name}: raw TeX left on the page: {raw[:3]}"
        if page.name in WITH_DISPLAY_MATHS:
            assert dom.count('class="MathJax_Display"') >= 1, f"{page.name}: display maths was not typeset"
        if page.name in WITH_INLINE_MATHS:
            assert dom.count('class="MathJax"') >= 1, f"{page.name}: inline maths was not typeset"


def visible_text(page_html: str) -> str:
    "The text a reader sees: no scripts, styles, code blocks or tags, entities decoded."
    text = re.sub(r"<(script|style|pre|code)\b.*?</\1>", " ", page_html, flags=re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", " ", text))


LEAKS = {"YAML front matter": r"(?m)^\s*(title|description|output-file|skip_exec|skip_showdoc):\s",
         "an In/Out prompt": r"\b(In|Out)\s*\[\s*\d*\s*\]:", "Pandoc link attributes": r"\]?\{target="}


def leaks(page_html: str) -> list[str]:
    "What of the notebook machinery shows on a page: in its text, or (`#|` directives) in its code cells."
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", page_html, flags=re.S | re.I)
    found = [name for name, pat in LEAKS.items() if re.search(pat, html.unescape(re.sub(r"<[^>]+>", "\n", text)))]
    code = "\n".join(re.findall(r"<pre\b.*?</pre>", text, re.S | re.I))
    if re.search(r"(?m)^\s*#\|", html.unescape(re.sub(r"<[^>]+>", "", code))): found.append("a #| directive")
    return found


def test_leak_detector():
    assert leaks("<p>---</p><p>title: core</p><p>description: x</p>") == ["YAML front matter"]
    assert leaks('<div class="jp-InputPrompt">In&nbsp;[&nbsp;]:</div>') == ["an In/Out prompt"]
    assert leaks("<pre><span>#| echo: false</span></pre>") == ["a #| directive"]
    assert leaks('<p><a href="x">source</a>{target="_blank" style="float:right"}</p>') == ["Pandoc link attributes"]
    assert leaks("<h1>core</h1><p>In the title: a word; cells flagged <code>#| slow</code> are labelled</p>") == []


@pytest.mark.docs
def test_no_notebook_machinery_leaks(site):
    for page in _pages(site):
        found = leaks(page.read_text())
        assert not found, f"{page.name} shows {', '.join(found)}"
        assert re.search(r"<h1[^>]*>", page.read_text()), f"{page.name} has no title"


def _slow_cells(nb_path: Path) -> int:
    cells = json.loads(nb_path.read_text())["cells"]
    return sum(1 for c in cells if c["cell_type"] == "code" and re.search(r"(?m)^#\|\s*slow\b", "".join(c["source"]))
               and not re.search(r"(?m)^#\|\s*hide\b", "".join(c["source"])))


@pytest.mark.docs
def test_slow_cells_are_labelled(site):
    checked = 0
    for nb_path in sorted((ROOT / "nbs").rglob("*.ipynb")):
        page = site / (re.sub(r"^\d+_", "", nb_path.stem) + ".html")
        if (n := _slow_cells(nb_path)) and page.exists():
            assert page.read_text().count('class="memnb-slow') == n, f"{page.name}: {n} slow cells, not all labelled"
            checked += 1
    assert checked >= 3


@pytest.mark.docs
def test_sidebar_is_styled(site):
    for page in _pages(site):
        text = page.read_text()
        assert '<nav class="memnb-sidebar">' in text and 'id="memnb-preview"' in text, f"{page.name}: no styled sidebar"
        assert re.search(r"\.memnb-sidebar \{[^}]*position: fixed", text)
        nav = text.split('<nav class="memnb-sidebar">', 1)[1]
        if f'<li><a href="{page.name}"' in nav:
            assert f'<li><a href="{page.name}" class=active>' in nav, f"{page.name}: the sidebar does not mark the page"


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
