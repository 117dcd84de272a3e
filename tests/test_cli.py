import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "memnb"  # the console script pip installed beside this Python


@pytest.mark.skipif(not SCRIPT.exists(), reason="memnb is not pip-installed in this environment")
def test_console_script_runs(tmp_path):
    assert subprocess.run([str(SCRIPT), "--help"], capture_output=True).returncode == 0
    out = tmp_path / "scan.json"
    run = subprocess.run([str(SCRIPT), "bench", "scan", "--B", "1", "--T", "64", "--D", "8",
                          "--repeats", "1", "--json", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    res = json.loads(out.read_text())
    assert res["setting"]["T"] == 64 and res["ratio"]["loop (unbind)"] == 1.0 and res["baseline"] == "loop (unbind)"
    assert res["machine"]["torch"]
