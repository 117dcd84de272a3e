"""The notebooks keep the project's rhythm: small exported cells (one function or method each, Triton kernels
excepted) and code lines of at most 110 characters, as measured by `tools/notebook_style.py`."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("notebook_style", ROOT / "tools" / "notebook_style.py")
style = importlib.util.module_from_spec(spec)
spec.loader.exec_module(style)


def test_notebooks_meet_the_size_and_width_targets():
    m = style.measure()
    assert m["cells"] > 100, "no exported cells found: is the notebook folder where the tool looks?"
    assert not style.problems(m), "\n".join(style.problems(m))


def test_the_measure_catches_a_large_cell_and_a_long_line(tmp_path, monkeypatch):
    big = "#| export\n" + "\n".join(f"x{i} = {i}" for i in range(45))
    kernel = "#| export\n@triton.jit\n" + "\n".join(f"y{i} = {i}" for i in range(60))
    cells = [{"cell_type": "code", "source": s} for s in (big, kernel, "z = '" + "a" * 120 + "'")]
    nb = tmp_path / "nbs" / "99_planted.ipynb"
    nb.parent.mkdir()
    nb.write_text(json.dumps({"cells": cells}))
    monkeypatch.setattr(style, "ROOT", tmp_path)
    bad = style.problems(style.measure())
    assert any("45 lines" in b for b in bad), bad          # the large cell
    assert not any("60 lines" in b for b in bad), bad      # a Triton kernel is excepted
    assert any("a line of 126 characters" in b for b in bad), bad
    assert any("median exported cell has 45" in b for b in bad), bad
