"""Every preset: published parameter count, and the three checks of memnb.checks at a small size."""
import pytest
import torch

from memnb.checks import causality, decode_consistency, loss_alignment, next_token_loss
from memnb.presets import PRESETS, build


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_checks_pass_on_every_preset(name):
    torch.manual_seed(0)
    model = build(name, vocab_size=61, n_layers=2).eval()
    assert causality(model, seq_len=14) < 1e-5
    assert decode_consistency(model, prompt_len=5, new_tokens=7) == 1.0
    assert loss_alignment(next_token_loss, model, seq_len=10) == {"target_is_next_token": True, "future_leak": 0.0}


@pytest.mark.parametrize("name", ["cdm-v2", "cdm-v3", "cdm-v5", "gqa-baseline", "cpuflow-v97"])
def test_presets_match_published_counts_exactly(name):
    assert build(name).num_params() == PRESETS[name].params


@pytest.mark.parametrize("name", ["cdm-v2", "cdm-v3", "cdm-v5"])
def test_cdm_block_is_parallel(name):
    "The memory reads the block's input (not the stream after attention): its queries norm_sx(x), its slots norm_cdm(x)."
    torch.manual_seed(0)
    model = build(name, vocab_size=61, n_layers=1, d_model=32, n_heads=4, n_kv_heads=2, d_ff=48).eval()
    seen = {}
    model.blocks[0].mixers[1].register_forward_pre_hook(lambda m, args, kwargs: seen.update(q=args[0], **kwargs),
                                                        with_kwargs=True)
    x = torch.randint(0, 61, (2, 12))
    with torch.no_grad():
        model(x)
        h = model.embed(x)
        assert torch.equal(seen["residual"], h) and torch.equal(seen["q"], model.blocks[0].norms[1](h))


def test_overrides_and_ternary_bolt():
    from memnb.layers import BitLinear
    m = build("flashlm-bolt", d_model=32, n_layers=1, vocab_size=50)
    assert m.config.d_model == 32 and any(isinstance(x, BitLinear) for x in m.modules())
