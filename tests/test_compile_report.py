"""Every memnb Triton kernel compiles for an H100/H200 (sm_90) at the configurations its dispatcher launches.

No GPU is needed: Triton compiles for a target that is not there and the ptxas in its wheel reports registers,
spills and shared memory. Slow (a few minutes of compiling): `pytest -m slow tests/test_compile_report.py`.
"""
import pytest
import torch

from memnb.core import triton_available, triton_interpreting

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not triton_available(), reason="triton is not installed"),
              pytest.mark.skipif(triton_interpreting(), reason="TRITON_INTERPRET=1 swaps in the interpreter's kernels")]

HEAD_DIMS = (64, 128, 256)
KERNELS = {"scan fwd", "scan bwd", "delta_rule state fwd", "delta_rule state bwd", "delta_rule fused recurrent",
           "cdm dock fwd", "cdm dock bwd", "ramnet gather fwd", "ramnet gather bwd"}


@pytest.fixture(scope="module")
def report():
    from memnb.bench import compile_report
    return compile_report("sm_90", head_dims=HEAD_DIMS, dtypes=(torch.float32, torch.bfloat16))


def test_every_kernel_at_every_head_dim_and_dtype(report):
    seen = {(r["kernel"], r["dtype"], r["head_dim"]) for r in report}
    assert seen == {(k, dt, d) for k in KERNELS for dt in ("float32", "bfloat16") for d in HEAD_DIMS}


def test_every_kernel_compiles(report):
    bad = [r for r in report if not r["ok"]]
    assert not bad, "\n".join(f"{r['kernel']} {r['dtype']} D={r['head_dim']} {r.get('block')}: {r['error']}"
                              for r in bad)
    assert all(0 < r["regs"] <= 255 and r["shared_bytes"] <= 227 * 1024 for r in report)


def test_spills_at_most_1kib_up_to_head_dim_128(report):
    bad = [r for r in report if r["head_dim"] <= 128 and r["spill_bytes"] > 1024]
    assert not bad, "\n".join(f"{r['kernel']} {r['dtype']} D={r['head_dim']} {r.get('block')}: "
                              f"{r['spill_bytes']} B spilled" for r in bad)


def test_too_much_shared_memory_is_a_row_not_an_exception():
    "The report's judge: fla's backward state kernel at BV=64 and 3 stages needs 241 KiB of shared memory (float32)."
    pytest.importorskip("fla")
    from memnb.bench import _fla_specs, compile_kernel, kernel_signature
    spec = [s for s in _fla_specs(torch.float32, 64) if s[0].endswith("bwd_dhu") and s[4]["BV"] == 64][0]
    name, fn, scalars, pointers, consts, warps, stages = spec
    row = compile_kernel(fn, kernel_signature(fn, torch.float32, scalars, pointers, consts), consts,
                         num_warps=warps, num_stages=stages)
    assert not row["ok"] and "shared memory" in row["error"] and row["shared_bytes"] > 227 * 1024, row
