"""The README is a contract: every Python block runs as pasted (in a fresh interpreter, from an empty folder, with no
memnb environment variables) and prints what the README shows; every shell line names commands, options, extras and
files that exist; every relative link resolves, from the repository root (GitHub) and from `nbs/` (the docs site);
and `import memnb` gives the small top-level API the front page documents."""
import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT / "tools"))
import readme as readme_tool  # noqa: E402


def blocks(text: str):
    "The fenced blocks of a markdown text as (language, body, output): `output` is the plain block right after, if any."
    found = [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S)]
    out = []
    for i, (lang, body) in enumerate(found):
        if lang:
            nxt = found[i + 1] if i + 1 < len(found) else None
            out.append((lang, body, nxt[1] if nxt and not nxt[0] else None))
    return out


def python_blocks(): return [(b, o) for lang, b, o in blocks(README.read_text()) if lang == "python"]
def shell_lines():
    lines = []
    for lang, body, _ in blocks(README.read_text()):
        if lang in ("sh", "bash", "shell"):
            for line in body.splitlines():
                line = line.split(" #")[0].strip()
                if line: lines.append(line)
    return lines


def clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMNB_", "TRITON_"))}
    env["PYTHONPATH"] = ""  # memnb as installed, not from the current folder
    return env


def masked(text: str) -> str:
    "Output with its floating-point figures hidden (random inputs: the digits differ, the shapes and counts do not)."
    return re.sub(r"\d+\.\d+(?:e[-+]?\d+)?|\d+e[-+]?\d+", "<float>", text).strip()


def test_readme_is_generated_from_the_index_notebook():
    assert readme_tool.render(ROOT / "nbs" / "index.ipynb") == README.read_text(), \
        "README.md is out of step with nbs/index.ipynb: run `python tools/readme.py`"


def test_readme_has_python_and_shell_examples():
    assert len(python_blocks()) >= 3 and all(o is not None for _, o in python_blocks())
    assert any(l.startswith("pip install torch") and "download.pytorch.org/whl/cpu" in l for l in shell_lines())
    assert "pip install memnb" in shell_lines()


@pytest.mark.parametrize("i", range(len(python_blocks())))
def test_python_block_runs_as_pasted(i, tmp_path):
    code, want = python_blocks()[i]
    assert re.search(r"^(import|from) ", code, re.M), "a README block must carry its own imports"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"README block {i} failed as pasted:\n{code}\n--- stderr ---\n{r.stderr[-3000:]}"
    assert masked(r.stdout) == masked(want), f"README block {i} printed\n{r.stdout}\nbut the README shows\n{want}"


def test_the_planted_failure_is_caught(tmp_path):
    "The block runner fails a block that needs a name it does not import (as the old README's first example did)."
    r = subprocess.run([sys.executable, "-c", "a = torch.rand(3)"], cwd=tmp_path, env=clean_env(),
                       capture_output=True, text=True)
    assert r.returncode != 0 and "NameError" in r.stderr


def _settings():
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(ROOT / "settings.ini")
    return cfg["DEFAULT"]


def _memnb_help(sub):
    exe = shutil.which("memnb") or pytest.skip("the memnb command is not installed here")
    r = subprocess.run([exe, sub, "--help"], capture_output=True, text=True, timeout=120, env=clean_env())
    assert r.returncode == 0, f"`memnb {sub} --help` failed: {r.stderr[-2000:]}"
    return r.stdout


def test_shell_lines_name_real_commands_options_and_extras():
    "Cheap checks of every shell line: `memnb SUB --opt` options exist in `--help`, pip extras exist, tools are on PATH."
    cfg, seen = _settings(), set()
    ci_torch = re.search(r"torch==([\d.]+)", (ROOT / ".ci" / "run").read_text()).group(1)
    for line in shell_lines():
        for cmd in re.split(r"\s*&&\s*", line):
            argv = shlex.split(cmd)
            seen.add(argv[0])
            if argv[:2] == ["pip", "install"]:
                for arg in argv[2:]:
                    if m := re.match(r"torch==([\d.]+)$", arg):
                        assert m.group(1) == ci_torch, f"README pins torch {m.group(1)}, CI installs {ci_torch}"
                    for extras in re.findall(r"\[([\w,]+)\]", arg):
                        for extra in extras.split(","):
                            assert f"{extra}_requirements" in cfg, f"README installs extra [{extra}], settings.ini lacks it"
                    if arg.startswith("--index-url"): continue
                if "-e" in argv: assert (ROOT / "setup.py").exists()
            elif argv[0] == "memnb":
                helptext = _memnb_help(argv[1])
                for opt in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
                    assert opt in helptext, f"README runs `memnb {argv[1]} {opt}`, which `memnb {argv[1]} --help` lacks"
            elif argv[0] == "git":
                assert argv[1] == "clone" and argv[2].removesuffix(".git") == cfg["git_url"]
            elif argv[0] == "cd":
                assert argv[1] == cfg["repo"]
            else:
                assert shutil.which(argv[0]), f"README runs `{argv[0]}`, which is not installed with the dev extras"
    assert {"pip", "memnb", "nbdev_test", "pytest"} <= seen


def _links(md: str):
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", md) if not re.match(r"https?:|#|mailto:", t)]


def test_links_resolve_on_github_and_on_the_docs_site():
    readme = README.read_text()
    for target in _links(readme):
        assert (ROOT / target.split("#")[0]).exists(), f"README.md links to {target}, missing from the repository root"
    cells = readme_tool.nbformat.read(ROOT / "nbs" / "index.ipynb", as_version=4).cells
    index = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    for target in _links(index):
        assert (ROOT / "nbs" / target.split("#")[0]).exists(), f"index.ipynb links to {target}, missing beside it"
    assert _links(readme), "the README has no relative links to check"


API = ["delta_rule", "linear_scan", "dock_readout", "cumsum_scan", "ram_memory", "build", "PRESETS", "MemLM",
       "MemLMConfig", "DeltaNet", "TrainConfig", "seed_everything"]


def _py(code):
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT.parent, env=clean_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_import_memnb_is_cheap_and_needs_no_triton():
    out = _py("import sys, memnb; print(sorted(m for m in ('torch', 'triton', 'numpy') if m in sys.modules))")
    assert out.strip() == "[]", f"`import memnb` imported {out.strip()}"


def test_top_level_api():
    out = _py(f"""
import importlib, types, memnb
import memnb.model  # imports the submodule memnb.delta_rule: the function memnb.delta_rule must stay
for name in {API!r}:
    obj = getattr(memnb, name)
    assert not isinstance(obj, types.ModuleType), (name, obj)
    assert obj is getattr(importlib.import_module("memnb." + memnb._API[name]), name), name
from memnb import delta_rule
from memnb.delta_rule import DeltaNet
assert callable(delta_rule) and memnb.DeltaNet is DeltaNet and set({API!r}) <= set(dir(memnb))
try: memnb.no_such_name
except AttributeError as e: print("ok", e)
""")
    assert "ok module 'memnb' has no attribute 'no_such_name'" in out


def test_from_published_is_reachable_once_its_module_exists():
    code = "import memnb\ntry: print(callable(memnb.from_published))\nexcept AttributeError as e: print(e)"
    out = _py(code).strip()
    if (ROOT / "memnb" / "published.py").exists():
        assert out == "True", out
    else:
        assert out == "memnb.from_published comes from memnb.published, which this version of memnb does not have"
