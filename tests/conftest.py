import os
from pathlib import Path

import pytest
import torch

from memnb.core import triton_runs_on

# One configurable path to the offline data samples (see ../shared/data/README.md); tests never download.
DATA = Path(os.environ.get("MEMNB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def data_dir():
    if not DATA.exists():
        pytest.skip(f"offline data not found at {DATA} (set MEMNB_DATA)")
    return DATA


@pytest.fixture
def triton_device():
    "The device Triton kernels can run on here: CUDA, or the CPU under TRITON_INTERPRET=1; else skip."
    if torch.cuda.is_available() and triton_runs_on("cuda"):
        return "cuda"
    if triton_runs_on("cpu"):
        return "cpu"
    pytest.skip("Triton cannot run here (needs CUDA, or TRITON_INTERPRET=1 set before import, and triton installed)")
