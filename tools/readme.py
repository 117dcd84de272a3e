"""Write README.md from nbs/index.ipynb, or check that they agree (`--check`).

`nbdev_readme` needs Quarto, which cannot be installed everywhere memnb is built, so this small converter
does the same job: markdown cells as they are, code cells as Python blocks with their stored text outputs,
cells marked `#| hide` left out and `#|` directives stripped. Relative links are written for the notebook's place
(`nbs/`, where the docs site resolves them) and rewritten here for the README's place at the repository root.
"""
import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
HEADER = "<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->\n\n"


def _directives(src):
    return [l.strip() for l in src.splitlines() if l.strip().startswith("#|")]


def _code(src):
    return "\n".join(l for l in src.splitlines() if not l.strip().startswith("#|")).strip("\n")


def _outputs(cell):
    texts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            texts.append(out.text)
        elif out.output_type in ("execute_result", "display_data") and "text/plain" in out.get("data", {}):
            texts.append(out.data["text/plain"])
    return "".join(t if t.endswith("\n") else t + "\n" for t in texts)


_LINK = re.compile(r"(\]\()(?!https?:|#|/|mailto:)([^)\s]+)(\))")


def root_links(md: str) -> str:
    "Markdown links relative to `nbs/` made relative to the repository root: `(11_presets.ipynb)` -> `(nbs/11_presets.ipynb)`."
    def fix(m):
        target = m.group(2)
        target = target[3:] if target.startswith("../") else "nbs/" + target
        return m.group(1) + target + m.group(3)
    return _LINK.sub(fix, md)


def render(nb_path: Path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    parts = []
    for cell in nb.cells:
        if any(d.replace(" ", "") in ("#|hide", "#|exporti") for d in _directives(cell.source)):
            continue
        if cell.cell_type == "markdown":
            parts.append(root_links(cell.source.strip("\n")))
        elif cell.cell_type == "code" and _code(cell.source):
            parts.append(f"```python\n{_code(cell.source)}\n```")
            if out := _outputs(cell):
                parts.append(f"```\n{out}```")
    return HEADER + "\n\n".join(parts) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail if README.md is not what the notebook gives")
    args = p.parse_args(argv)
    want, readme = render(ROOT / "nbs" / "index.ipynb"), ROOT / "README.md"
    if args.check:
        if not readme.exists() or readme.read_text() != want:
            print("README.md is out of step with nbs/index.ipynb: run `python tools/readme.py`", file=sys.stderr)
            return 1
        print("README.md matches nbs/index.ipynb")
        return 0
    readme.write_text(want)
    print(f"wrote {readme.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
