"""Render the docs as a static HTML site with nbconvert, for a browser test where Quarto is not available.

Reads the notebooks nbdev prepared for the docs (`_proc/`, from `tools/proc_docs.py`), writes one page per notebook
to `_site/` named as nbdev names them (`00_core.ipynb` -> `core.html`), with a sidebar of links built from
`nbs/sidebar.yml`, and a local copy of MathJax (from `jupyter_server_mathjax`) so the maths renders offline.
This is a check of the content, not the published site: `nbdev_docs` (Quarto) builds that.
"""
import re
import shutil
import sys
from pathlib import Path

import nbformat
import yaml
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
PROC, SITE = ROOT / "_proc", ROOT / "_site"


def page_name(nb: Path) -> str:
    return re.sub(r"^\d+_", "", nb.stem) + ".html"


def sidebar_html() -> str:
    side = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    parts = ['<nav class="memnb-sidebar"><a href="index.html"><b>memnb</b></a>']
    for sec in side:
        items = "".join(f'<li><a href="{page_name(Path(p))}">{Path(p).stem}</a></li>' for p in sec["contents"])
        parts.append(f"<h4>{sec['section']}</h4><ul>{items}</ul>")
    return "".join(parts) + "</nav>"


def main() -> int:
    if not PROC.exists():
        sys.exit("no _proc/: run `python tools/proc_docs.py` first")
    shutil.rmtree(SITE, ignore_errors=True)
    SITE.mkdir()
    import jupyter_server_mathjax
    shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", SITE / "mathjax")
    exporter = HTMLExporter(mathjax_url="mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe")
    nav = sidebar_html()
    pages = []
    for nb_path in sorted(PROC.rglob("*.ipynb")):  # tutorials/ pages land beside the rest
        nb = nbformat.read(nb_path, as_version=4)
        for cell in nb.cells:  # links between notebooks point at their pages
            if cell.cell_type == "markdown":
                cell.source = re.sub(r"\((?:\.\.?/)*(?:tutorials/)?(\d+_)?([\w-]+)\.ipynb", r"(\2.html", cell.source)
        body, _ = exporter.from_notebook_node(nb)
        body = body.replace("</body>", nav + "</body>", 1)
        (SITE / page_name(nb_path)).write_text(body)
        pages.append(page_name(nb_path))
    print(f"rendered {len(pages)} pages into {SITE}: {', '.join(pages)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
