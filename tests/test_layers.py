"""Decode-state and causality properties of every stateful layer in `memnb.layers`."""
import pytest
import torch

from memnb.core import assert_rel_close
from memnb.layers import (BitLinear, GatedRecurrence, ParallelGatedRecurrence, ReLU2, ShortConvolution, SwiGLU,
                          TokenShift, ternarize)

STATEFUL = [lambda: ShortConvolution(12, 4), lambda: TokenShift(12), lambda: GatedRecurrence(12, 8),
            lambda: GatedRecurrence(12, 8, linear=BitLinear), lambda: ParallelGatedRecurrence(12, 3, layer=2, n_layers=4)]


@pytest.mark.parametrize("make", STATEFUL)
@pytest.mark.parametrize("cuts", [(1,), (5, 6), (3, 3, 3, 9)])
def test_pieces_equal_one_pass_and_causal(make, cuts):
    torch.manual_seed(0)
    layer = make().double()
    x = torch.randn(2, 27, 12, dtype=torch.float64)
    with torch.no_grad():
        full, _ = layer(x)
        # mixers return a cache only when asked for one (or given one); the building blocks always return their state
        kw = {"use_cache": True} if isinstance(layer, (GatedRecurrence, ParallelGatedRecurrence)) else {}
        outs, state, t = [], None, 0
        for c in list(cuts) + [27]:
            end = min(27, t + c)
            if end > t:
                y, state = layer(x[:, t:end], state, **kw)
                outs.append(y)
            t = end
        assert_rel_close(torch.cat(outs, 1), full, 1e-12, type(layer).__name__)
        x2 = x.clone()
        x2[:, 13] += 1
        assert torch.equal(layer(x2)[0][:, :13], full[:, :13])


def test_ternary_weights_have_three_levels_and_straight_through_gradients():
    w = torch.randn(64, 64)
    levels = torch.unique(ternarize(w) / w.abs().mean())
    assert len(levels) == 3 and set(levels.round().tolist()) == {-1.0, 0.0, 1.0}
    lin = BitLinear(64, 8)
    x = torch.randn(5, 64, requires_grad=True)
    lin(x).square().sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("ffn", [SwiGLU, ReLU2])
def test_ffn_shapes_and_bitlinear(ffn):
    m = ffn(16, 40, linear=BitLinear)
    assert all(isinstance(l, BitLinear) for l in m.children())
    assert m(torch.randn(2, 3, 16)).shape == (2, 3, 16)
