"""Run nbdev's docs pre-processing (`nbdev_proc_nbs`) without Quarto, or the whole site build (`--render`) with it.

`nbdev_proc_nbs` first tries to download and install Quarto when it is missing, which cannot work on a machine without
internet access (or without sudo). Everything after that step (refreshing nbdev.yml, the module index, the sidebar
and the processed notebooks in `_proc/`) needs no Quarto, so this script skips only the install and fails if any
notebook breaks the processing. It also adds memnb's one docs processor: a visible note above every cell flagged
`slow`, which readers should expect to run for minutes (`nbdev_test` skips those cells). `--render` then renders the
site with Quarto (what `nbdev_docs` does), and says in one line where to get Quarto when it is missing.
"""
import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import nbdev.quarto as quarto
import nbdev.serve
from nbdev.process import Processor
from execnb.nbio import mk_cell
from nbdev.processors import FilterDefaults

QUARTO_URL = "https://quarto.org/docs/get-started/"
SLOW_NOTE = ('<div class="memnb-slow callout callout-note"><strong>Slow cell.</strong> The next cell trains or measures '
             'for minutes, so <code>nbdev_test</code> and CI skip it (it is flagged <code>slow</code>); what it prints '
             'below was stored when it was last run.</div>')


class SlowNote(Processor):
    "Put a visible note above every shown code cell flagged `slow`."
    def end(self):
        cells = []
        for cell in self.nb.cells:
            if cell.cell_type == "code" and "slow" in (getattr(cell, "directives_", None) or {}):
                cells.append(mk_cell(SLOW_NOTE, cell_type="markdown"))
            cells.append(cell)
        self.nb.cells = cells


class MemnbFilter(FilterDefaults):
    "nbdev's processors for the docs, and SlowNote."
    def xtra_procs(self): return super().xtra_procs() + [SlowNote]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--render", action="store_true", help="render the site with Quarto (nbdev_docs) after processing")
    args = p.parse_args(argv)
    nbdev.serve.FilterDefaults = MemnbFilter  # what nbdev's (spawned) workers process each notebook with
    if args.render:
        if not shutil.which("quarto"):
            print(f"The docs site needs Quarto, which is not installed: get it from {QUARTO_URL} "
                  "(or run `make docs` for the nbconvert preview).", file=sys.stderr)
            return 2
    else:
        quarto._ensure_quarto = lambda: None
    shutil.rmtree(Path(quarto.get_config().config_path) / "_proc", ignore_errors=True)  # no stale pages from a cache
    proc, cfg, _ = quarto._pre_docs()
    if args.render:  # as nbdev_docs does, without regenerating README.md (tools/readme.py writes it)
        subprocess.run(["quarto", "render", "--no-cache"], cwd=proc, check=True)
        shutil.rmtree(cfg.doc_path, ignore_errors=True)
        shutil.move(str(proc / cfg.doc_path.name), str(cfg.config_path))
        return 0
    nbs = sorted(str(p.relative_to(proc)) for p in proc.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not nbs:
        sys.exit("docs pre-processing produced no notebooks in _proc/")
    print(f"processed {len(nbs)} notebooks into {proc}: {', '.join(nbs)}")
    return 0


if __name__ == "__main__":
    # run through the module's own name, so that nbdev's spawned workers can unpickle MemnbFilter (a class of
    # `__main__` is not importable in a worker)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import proc_docs
    sys.exit(proc_docs.main())
