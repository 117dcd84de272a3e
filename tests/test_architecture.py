"""The architecture page stays true: its layer table (nbs/architecture.ipynb) is checked against the real imports of
every module in memnb/, and memnb imports without Triton."""
import ast
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "nbs" / "architecture.ipynb"


def layer_table(markdown: str) -> dict[str, int]:
    "`{module: layer number}` from the page's table rows `| N. name | `mod`, `mod` | ... |`."
    layers = {}
    for n, mods in re.findall(r"^\|\s*(\d+)\.[^|]*\|([^|]*)\|", markdown, re.M):
        for mod in re.findall(r"`(\w+)`", mods):
            assert mod not in layers, f"{mod} is in two layers of the architecture table"
            layers[mod] = int(n)
    return layers


def page_layers() -> dict[str, int]:
    nb = nbformat.read(PAGE, as_version=4)
    return layer_table("\n".join(c.source for c in nb.cells if c.cell_type == "markdown"))


def memnb_imports(source: str) -> set[str]:
    "The memnb modules a module's source imports, anywhere in it; `(package)` for names taken from the package root."
    deps = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                deps.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
            elif node.module == "memnb":
                deps.update("(package)" if a.name != "__version__" else "(version)" for a in node.names)
            elif node.module and node.module.startswith("memnb."):
                deps.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "memnb": deps.add("(package)")
                elif a.name.startswith("memnb."): deps.add(a.name.split(".")[1])
    return deps


def modules() -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted((ROOT / "memnb").glob("*.py")) if not p.stem.startswith("_")}


def violations(layers: dict[str, int], graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in graph.items():
        for dep in sorted(deps - {"(version)"}):
            if dep == "(package)":
                if layers[mod] != max(layers.values()):
                    bad.append(f"{mod} imports from the package root (only `from memnb import __version__` is allowed)")
            elif dep not in layers:
                bad.append(f"{mod} imports {dep}, which is not in the architecture table")
            elif layers[dep] > layers[mod]:
                bad.append(f"{mod} (layer {layers[mod]}) imports {dep} (layer {layers[dep]}, above it)")
    return bad


def test_table_parses():
    layers = page_layers()
    assert layers["core"] == 1 and layers["cli"] == max(layers.values())
    assert {"scan", "delta_rule", "cdm", "ramnet", "cumscan", "mixers", "model", "presets", "compare", "bench"} <= set(layers)


def test_every_module_is_in_exactly_one_layer():
    layers, mods = page_layers(), set(modules())
    assert not mods - set(layers), f"modules missing from the architecture table in {PAGE.name}: {sorted(mods - set(layers))}"
    assert not set(layers) - mods, f"the architecture table names modules that do not exist: {sorted(set(layers) - mods)}"


def test_imports_follow_the_layers():
    graph = {m: memnb_imports(src) for m, src in modules().items()}
    assert violations(page_layers(), graph) == []


def test_the_check_catches_an_upward_import():
    "A planted import of the model from a mechanism, and a planted use of the package root, are both caught."
    layers = page_layers()
    planted = {"delta_rule": memnb_imports("from .model import MemLM\ndef f():\n    from memnb import build"),
               "train": memnb_imports("from memnb import __version__")}
    assert planted["delta_rule"] == {"model", "(package)"}
    assert violations(layers, planted) == [
        "delta_rule imports from the package root (only `from memnb import __version__` is allowed)",
        f"delta_rule (layer {layers['delta_rule']}) imports model (layer {layers['model']}, above it)"]


def test_triton_is_never_imported_unconditionally():
    for mod, src in modules().items():
        for node in ast.parse(src).body:  # statements at the top of the module, outside any `if`/`try`/function
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "triton" for n in names), f"memnb.{mod} imports triton unconditionally"


def test_contributing_shows_the_cores_signatures_as_they_are():
    import subprocess, sys
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "signatures.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_contributing_points_at_pages_that_exist():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    assert "DESIGN.md" not in text and "nbs/architecture.ipynb" in text
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"): assert (ROOT / target).exists(), f"CONTRIBUTING.md links to missing {target}"
