"""tools/gpu_check.sh in its CPU smoke mode (GPU_CHECK_SMOKE=1: every step on the CPU, Triton under the interpreter,
tiny shapes): the script runs end to end, writes its one JSON, and the float32 results it records are right.

Slow (minutes under the interpreter): `pytest -m slow tests/test_gpu_check.py`.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memnb.core import triton_available

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not triton_available(), reason="triton is not installed")]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "MEMNB_BACKEND")}
    env.update(GPU_CHECK_SMOKE="1", OUT_DIR=str(out), PYTHON=sys.executable, BUDGET_S="600")
    run = subprocess.run(["bash", "tools/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert (out / "gpu_check.json").exists(), run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text()), run


def test_every_step_ran(result):
    res, run = result
    assert run.returncode == 0, run.stderr[-2000:]
    steps = res["steps"]
    want = {"env", "install", "pytest_scan", "bench_scan", "bench_delta64", "bench_cdm", "bench_ram", "bench_probe",
            "nb_triton_cells"}
    assert want <= set(steps), sorted(steps)
    assert all(s["rc"] == "0" for s in steps.values()), steps


def test_triton_tests_passed(result):
    p = result[0]["pytest_triton"]
    assert p["tests"] > 0 and p["failures"] == 0 and p["errors"] == 0, p["failed"]


def test_every_family_checked_in_float32(result):
    bench = result[0]["bench"]
    assert set(bench) == {"scan", "delta64", "cdm", "ram", "probe"}, sorted(bench)
    for fam, r in bench.items():
        for case in r["cases"]:
            assert "skipped" not in case, (fam, case["case"])
            for impl in ("triton float32", "torch chunk float32"):
                assert case["ok"].get(impl) is True, (fam, case["case"], impl, case["errors"].get(impl), case["failures"])
                assert case["ms"][impl]["median_ms"] > 0


def test_probes_ran(result):
    probes = result[0]["bench"]["probe"]["probes"]
    assert probes and all(v == "ran" for v in probes.values()), probes
