"""Measure the notebooks against the project's rhythm: the size of exported cells and the width of code lines.

An exported cell's size is its number of non-blank lines, nbdev directives (`#| ...`) left out. Cells that define a
Triton kernel (`@triton.jit`) are excepted from the size targets, as a kernel is one indivisible function. Widths are
counted on every code cell of every notebook, tutorials included.

    python tools/notebook_style.py            # the figures, the largest cells and every long line
    python tools/notebook_style.py --check    # exit 1 unless the targets below are met
"""
import argparse
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEDIAN_MAX, CELL_MAX, WIDTH_MAX = 12, 40, 110   # exported cells: median and largest size; characters per code line


def notebooks() -> list[Path]:
    return sorted((ROOT / "nbs").glob("*.ipynb")) + sorted((ROOT / "nbs" / "tutorials").glob("*.ipynb"))


def code_cells(path: Path):
    "`(index, source)` of every code cell of a notebook."
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] == "code":
            yield i, "".join(cell["source"])


def is_exported(source: str) -> bool:
    return any(re.match(r"#\|\s*export", line) for line in source.splitlines())


def cell_size(source: str) -> int:
    return sum(1 for line in source.splitlines() if line.strip() and not line.startswith("#|"))


def measure() -> dict:
    "Sizes of the exported cells (Triton kernels excepted) and the code lines over the width limit."
    sizes, long_lines = [], []
    for path in notebooks():
        name = str(path.relative_to(ROOT))
        for i, src in code_cells(path):
            long_lines += [(name, i, len(line)) for line in src.splitlines() if len(line) > WIDTH_MAX]
            if is_exported(src) and "@triton.jit" not in src:
                sizes.append((cell_size(src), name, i))
    n = [s for s, _, _ in sizes]
    return dict(cells=len(n), median=statistics.median(n), largest=sorted(sizes, reverse=True),
                long_lines=long_lines)


def problems(m: dict) -> list[str]:
    out = []
    if m["median"] > MEDIAN_MAX:
        out.append(f"the median exported cell has {m['median']} lines (at most {MEDIAN_MAX})")
    out += [f"{nb} cell {i}: {s} lines (at most {CELL_MAX})" for s, nb, i in m["largest"] if s > CELL_MAX]
    out += [f"{nb} cell {i}: a line of {w} characters (at most {WIDTH_MAX})" for nb, i, w in m["long_lines"]]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 unless every target is met")
    p.add_argument("--top", type=int, default=15, help="how many of the largest cells to list (default: 15)")
    args = p.parse_args(argv)
    m = measure()
    print(f"{m['cells']} exported cells: median {m['median']} lines, largest {m['largest'][0][0]}; "
          f"{len(m['long_lines'])} code lines over {WIDTH_MAX} characters")
    for s, nb, i in m["largest"][:args.top]:
        print(f"  {s:4d}  {nb} cell {i}")
    bad = problems(m)
    if args.check and bad:
        print("\n".join(bad), file=sys.stderr)
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())
