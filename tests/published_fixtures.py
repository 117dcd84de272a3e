"""Reading the published-model fixtures (`$MEMNB_FIXTURES`, else `shared/fixtures/published` beside the repository):
the published state, its resolved configuration, the token batch and the logits the published code computed."""
import json

import pytest
import torch
from safetensors.torch import load_file

from memnb.published import fixtures_dir

FIXTURES = fixtures_dir()
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(),
                                    reason=f"published fixtures not found at {FIXTURES} (set MEMNB_FIXTURES)")


def fixture(name, perturbed=False):
    "(published state dict, resolved published config, tokens [B, T], expected logits) of one fixture."
    d = FIXTURES / name
    suffix = "_perturbed" if perturbed else ""
    sd = load_file(str(d / f"published_state{suffix}.safetensors"))
    expected = load_file(str(d / f"expected_logits{suffix}.safetensors"))
    tokens = torch.tensor(json.loads((d / "inputs.json").read_text())["tokens"])
    return sd, json.loads((d / "config.json").read_text())["resolved"], tokens, expected
