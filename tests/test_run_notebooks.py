"""tools/run_notebooks.py runs a notebook as a reader would: in a Jupyter kernel, with no memnb or Triton environment
variables, Triton cells in the interpreter on a CPU (memnb turns it on), GPU cells as a printed note, slow cells
skipped; and it fails on an error."""
import sys
from pathlib import Path

import nbformat
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import run_notebooks as rn  # noqa: E402


def _nb(tmp_path, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    path = tmp_path / "planted.ipynb"
    nbformat.write(nb, path)
    return path


def test_directives_and_cell_selection():
    code = nbformat.v4.new_code_cell
    assert rn.directives("#| slow\n#|hide\n#| eval: false\nx = 1\n#| not a directive") == \
        {"slow": "", "hide": "", "eval:": "false"}
    assert [rn.runs(code(s), {"slow"}) for s in ("x = 1", "#| slow\nx", "#| triton\nx", "#| eval: false\nx",
                                               "import nbdev; nbdev.nbdev_export()")] == [True, False, True, False, False]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_a_reader_on_a_cpu_runs_triton_cells_and_gets_notes(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    path = _nb(tmp_path,
               "import os, torch\nfrom memnb.core import triton_available\nfrom memnb.scan import linear_scan",
               "#| triton\na = torch.rand(1, 5, 3)\nprint('triton', linear_scan(a, a, impl='triton')[0].shape, os.environ['TRITON_INTERPRET'])",
               "#| gpu\nprint('gpu ran')",
               "#| slow\nraise RuntimeError('slow cells are skipped')",
               "print('MEMNB_DATA' in os.environ)")
    monkeypatch.setenv("MEMNB_DATA", "/nonexistent")  # removed for the kernel
    _, _, err, nb = rn.run_one(path, {"slow"}, timeout=300)
    assert err is None, err
    out = ["".join(o.get("text", "") for o in c.outputs) for c in nb.cells]
    from memnb.core import triton_available
    if triton_available(): assert out[1] == "triton torch.Size([1, 5, 3]) 1\n"
    else: assert out[1].startswith("Skipped: this cell needs Triton")
    assert out[2] == "Skipped: this cell needs a CUDA GPU.\n" and out[3] == "False\n"


def test_an_error_fails_the_run(tmp_path):
    path = _nb(tmp_path, "x = 1", "raise ValueError('planted')")
    assert rn.main([str(path), "--workers", "1"]) == 1
