"""Render the docs as a static HTML preview with nbconvert, where Quarto (which renders the real site) is missing.

Reads the notebooks nbdev prepared for the docs (`_proc/`, from `tools/proc_docs.py`) and writes one page per notebook
to `_site/`, named as nbdev names them (`00_core.ipynb` -> `core.html`). What Quarto would interpret is interpreted
here, so that none of it shows as text: the YAML front matter becomes the page's title and description, the `#| ...`
cell options are removed from the code (`echo: false` hides a cell's code, `output: false` its outputs,
`include: false` the whole cell), and no `In [ ]:` prompts are printed. Every page gets a styled sidebar built from
`nbs/sidebar.yml` and a local copy of MathJax (from `jupyter_server_mathjax`), so the maths renders offline.
This is a readable preview and a check of the content (`tests/test_docs_site.py`), not the published site.
"""
import html
import re
import shutil
import sys
from pathlib import Path

import nbformat
import yaml
from nbconvert import HTMLExporter
from traitlets.config import Config

ROOT = Path(__file__).resolve().parent.parent
PROC, SITE = ROOT / "_proc", ROOT / "_site"
_OPTION = re.compile(r"^\s*#\|\s?(.*)$")

CSS = """
<style id="memnb-preview">
  body { margin: 0 0 0 260px; }
  main, .jp-Notebook { max-width: 1000px; }
  .memnb-sidebar { position: fixed; top: 0; left: 0; bottom: 0; width: 236px; overflow-y: auto; padding: 16px 12px;
    background: #f6f8fa; border-right: 1px solid #d0d7de; font: 14px/1.45 system-ui, sans-serif; box-sizing: border-box; }
  .memnb-sidebar .memnb-home { display: block; font-size: 20px; font-weight: 700; color: #1f2328; margin-bottom: 8px; }
  .memnb-sidebar h4 { margin: 14px 0 4px; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: #57606a; }
  .memnb-sidebar ul { list-style: none; margin: 0; padding: 0; }
  .memnb-sidebar li a { display: block; padding: 2px 8px; border-radius: 4px; color: #0969da; text-decoration: none; }
  .memnb-sidebar li a:hover { background: #eaeef2; }
  .memnb-sidebar li a.active { background: #0969da; color: #fff; }
  .memnb-title { margin: 24px 0 4px; } .memnb-description { color: #57606a; font-size: 1.1em; margin: 0 0 16px; }
  .memnb-slow { border-left: 4px solid #bf8700; background: #fff8c5; padding: 6px 12px; margin: 8px 0; }
  @media (max-width: 800px) { body { margin-left: 0; } .memnb-sidebar { position: static; width: auto; } }
</style>
"""


def page_name(nb: Path) -> str:
    return re.sub(r"^\d+_", "", nb.stem) + ".html"


def _title(p: str) -> str:
    "The sidebar label of a notebook: its title from the front matter of its processed page, else its name."
    proc = PROC / p
    if proc.exists():
        fm = front_matter(nbformat.read(proc, as_version=4))
        if fm.get("title"): return str(fm["title"])
    return Path(p).stem


def sidebar_html(current: str) -> str:
    side = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    parts = ['<nav class="memnb-sidebar"><a class="memnb-home" href="index.html">memnb</a>']
    for sec in side:
        items = "".join(
            f'<li><a href="{page_name(Path(p))}"{" class=active" if page_name(Path(p)) == current else ""}>'
            f"{html.escape(_title(p))}</a></li>" for p in sec["contents"])
        parts.append(f"<h4>{html.escape(sec['section'])}</h4><ul>{items}</ul>")
    return "".join(parts) + "</nav>"


def front_matter(nb) -> dict:
    "The YAML front matter nbdev puts in a raw cell at the top of a processed notebook (`{}` if none)."
    for cell in nb.cells[:2]:
        m = re.match(r"^---\n(.*?)\n---\s*$", cell.source, re.S) if cell.cell_type == "raw" else None
        if m: return yaml.safe_load(m.group(1)) or {}
    return {}


def cell_options(src: str) -> tuple[dict, str]:
    "A code cell's `#| key: value` options (Quarto's and nbdev's) and its code without them."
    opts, code = {}, []
    for line in src.splitlines():
        m = _OPTION.match(line)
        if m:
            key, _, val = m.group(1).partition(":")
            opts[key.strip()] = val.strip() or True
        else:
            code.append(line)
    return opts, "\n".join(code).strip("\n")


_ATTR_LINK = re.compile(r'\[([^\]]+)\]\(([^)\s]+)\)\{((?:\s*[\w-]+="[^"]*")+)\s*\}')


def pandoc_links(md: str) -> str:
    "Pandoc's `[text](url){key=\"value\"}` links (nbdev's `source` links) as HTML links nbconvert's markdown understands."
    return _ATTR_LINK.sub(lambda m: f'<a href="{m.group(2)}"{" " + m.group(3).strip()}>{m.group(1)}</a>', md)


def prepare(nb):
    "Turn what Quarto would interpret (front matter, cell options, notebook links) into plain notebook content."
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "raw":
            if re.match(r"^---\n.*?\n---\s*$", cell.source, re.S):
                fm = front_matter(nbformat.v4.new_notebook(cells=[cell]))
                head = f'<h1 class="memnb-title">{html.escape(str(fm.get("title", "")))}</h1>'
                if fm.get("description"):
                    head += f'\n<p class="memnb-description">{html.escape(str(fm["description"]))}</p>'
                cells.append(nbformat.v4.new_markdown_cell(head))
            continue  # other raw cells are for Quarto's formats, not HTML
        if cell.cell_type == "markdown":  # links between notebooks point at their pages
            cell.source = pandoc_links(cell.source)
            cell.source = re.sub(r"\((?:\.\.?/)*(?:tutorials/)?(\d+_)?([\w-]+)\.ipynb", r"(\2.html", cell.source)
        if cell.cell_type == "code":
            opts, cell.source = cell_options(cell.source)
            for out in cell.get("outputs", []):  # show_doc's markdown
                if "text/markdown" in out.get("data", {}):
                    out.data["text/markdown"] = pandoc_links(out.data["text/markdown"])
            if str(opts.get("include", "")).lower() == "false": continue
            tags = set(cell.metadata.get("tags", []))
            if str(opts.get("echo", "")).lower() == "false" or not cell.source: tags.add("remove_input")
            if str(opts.get("output", "")).lower() == "false": tags.add("remove_output")
            cell.metadata["tags"] = sorted(tags)
        cells.append(cell)
    nb.cells = cells
    return nb


def exporter() -> HTMLExporter:
    c = Config()
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    c.TagRemovePreprocessor.remove_all_outputs_tags = {"remove_output"}
    ex = HTMLExporter(config=c, mathjax_url="mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe")
    ex.exclude_input_prompt = ex.exclude_output_prompt = True
    return ex


def main() -> int:
    if not PROC.exists():
        sys.exit("no _proc/: run `python tools/proc_docs.py` first")
    shutil.rmtree(SITE, ignore_errors=True)
    SITE.mkdir()
    import jupyter_server_mathjax
    shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", SITE / "mathjax")
    shutil.copytree(ROOT / "nbs" / "benchmarks", SITE / "benchmarks")   # figures the pages link to
    ex, pages = exporter(), []
    for nb_path in sorted(PROC.rglob("*.ipynb")):  # tutorials/ pages land beside the rest
        if ".ipynb_checkpoints" in nb_path.parts: continue
        nb = nbformat.read(nb_path, as_version=4)
        title = str(front_matter(nb).get("title", nb_path.stem))
        body, _ = ex.from_notebook_node(prepare(nb))
        body = re.sub(r"<title>.*?</title>", f"<title>{html.escape(title)} – memnb</title>", body, count=1, flags=re.S)
        body = body.replace("</head>", CSS + "</head>", 1)
        body = body.replace("</body>", sidebar_html(page_name(nb_path)) + "</body>", 1)
        (SITE / page_name(nb_path)).write_text(body)
        pages.append(page_name(nb_path))
    print(f"rendered {len(pages)} pages into {SITE}: {', '.join(pages)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
