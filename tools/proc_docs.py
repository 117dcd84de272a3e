"""Run nbdev's docs pre-processing (`nbdev_proc_nbs`) without Quarto.

`nbdev_proc_nbs` first tries to download and install Quarto when it is missing, which cannot work on a
machine without internet access. Everything after that step (refreshing nbdev.yml, the module index, the
sidebar and the processed notebooks in `_proc/`) needs no Quarto, so this script skips only the install and
fails if any notebook breaks the processing. `nbdev_docs` renders the site wherever Quarto exists.
"""
import shutil
import sys
from pathlib import Path

import nbdev.quarto as quarto

if __name__ == "__main__":
    if not shutil.which("quarto"):
        quarto._ensure_quarto = lambda: None
    quarto.nbdev_proc_nbs.__wrapped__()
    proc = Path(quarto.get_config().config_path) / "_proc"
    nbs = sorted(p.name for p in proc.glob("*.ipynb"))
    if not nbs:
        sys.exit("docs pre-processing produced no notebooks in _proc/")
    print(f"processed {len(nbs)} notebooks into {proc}: {', '.join(nbs)}")
