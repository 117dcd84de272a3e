"""Execute every notebook headless in a Jupyter kernel, as a reader would, and fail on the first error in any of them.

A reader runs the notebooks in Jupyter with no environment variables; `nbdev_test` runs them in-process with execnb.
This runs each notebook (tutorials included, the notebooks `nbdev_test` would pick) top to bottom in a fresh
`python3` kernel from its own folder, with every `MEMNB_*` and `TRITON_*` variable removed, so that what a reader
meets is what CI checks: on a machine without a GPU memnb turns Triton's interpreter on by itself, the cells flagged
`triton` run under it, and cells flagged `gpu` print a note. Skipped, as `nbdev_test` skips them: cells flagged
`slow` (minutes of training or measuring; `--slow` runs them too), cells with `#| eval: false`, and the
`nbdev_export()` cells. Notebooks run `--workers` at a time (default 2). Exit status 1 names each notebook, cell and
error that failed.
"""
import argparse
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
_DIRECTIVE = re.compile(r"^\s*#\|\s*(.*)$")


def directives(src: str) -> dict[str, str]:
    "The leading `#| ...` lines of a cell: `{'slow': '', 'eval:': 'false', ...}` as nbdev reads them."
    out = {}
    for line in src.splitlines():
        m = _DIRECTIVE.match(line)
        if not m:
            if line.strip(): break
            continue
        key, _, val = m.group(1).strip().partition(" ")
        out[key] = val.strip()
    return out


def runs(cell, skip_flags: set[str]) -> bool:
    "Whether a reader's default run executes `cell` here."
    if cell.cell_type != "code" or "nbdev_export(" in cell.source: return False
    d = directives(cell.source)
    if d.get("eval:", "").lower() == "false": return False
    return not (skip_flags & set(d))


def notebooks(paths) -> list[Path]:
    found = []
    for p in paths or [ROOT / "nbs"]:
        p = Path(p).resolve()
        found += [p] if p.is_file() else sorted(p.rglob("*.ipynb"))
    return [p for p in found if not p.name.startswith("_") and ".ipynb_checkpoints" not in p.parts
            and not any(part.startswith(("_", ".")) for part in _rel(p).parts[:-1])]


def _rel(p: Path):
    return p.relative_to(ROOT) if p.is_relative_to(ROOT) else p


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MEMNB_", "TRITON_"))}


def run_one(path: Path, skip_flags: set[str], timeout: int) -> tuple[Path, float, str | None, nbformat.NotebookNode]:
    "Execute `path`'s cells that a reader's default run executes; (path, seconds, error or None, executed notebook)."
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type != "code" or runs(c, skip_flags)]
    t0 = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute(env=clean_env(), cwd=str(path.parent))
        return path, time.perf_counter() - t0, None, nb
    except CellExecutionError as e:
        return path, time.perf_counter() - t0, str(e)[-4000:], nb
    except Exception as e:  # a dead kernel, a timeout
        return path, time.perf_counter() - t0, f"{type(e).__name__}: {e}"[-4000:], nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", help="notebooks or folders (default: nbs/)")
    p.add_argument("--slow", action="store_true", help="run the cells flagged slow too")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=int, default=1800, help="seconds allowed for one cell")
    args = p.parse_args(argv)
    skip = set() if args.slow else {"slow"}
    nbs, failed, t0 = notebooks(args.paths), [], time.perf_counter()
    with ThreadPoolExecutor(max(1, args.workers)) as pool:
        for path, secs, err, _ in pool.map(lambda nb: run_one(nb, skip, args.timeout), nbs):
            print(f"{'FAIL' if err else 'ok  '} {secs:6.1f}s  {_rel(path)}", flush=True)
            if err: failed.append((path, err))
    for path, err in failed:
        print(f"\n=== {_rel(path)} ===\n{err}", file=sys.stderr)
    print(f"{len(nbs) - len(failed)} of {len(nbs)} notebooks ran headless in {time.perf_counter() - t0:.0f}s "
          f"(skipped: {', '.join(sorted(skip)) or 'nothing'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
