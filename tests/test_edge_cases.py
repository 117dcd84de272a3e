"""Edge cases of every public functional core: no batch (B=0) and no tokens (T=0) give empty outputs and a final
state of the right shape; non-contiguous inputs give the same result as contiguous ones; NaN decays and non-finite
addressing scores are refused with a clear error; and configurations that could only do nothing are rejected."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from memnb.attention import Attention
from memnb.cdm import dock, dock_readout, final_slots, slot_xattn
from memnb.core import NonFiniteError
from memnb.cumscan import CumScanState, cumsum_scan
from memnb.delta_rule import delta_rule, hebbian_rule
from memnb.model import MemLM, MemLMConfig
from memnb.ramnet import RAMState, pkm_topk, product_topk, ram_memory
from memnb.scan import linear_scan

IMPLS = ["recurrent", "chunk"]
EMPTY = [(0, 5), (3, 0), (0, 0)]   # (B, T)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _delta_inputs(B, T, H=2, K=4, V=3, seed=0):
    g = _gen(seed)
    return (torch.randn(B, T, H, K, generator=g), F.normalize(torch.randn(B, T, H, K, generator=g), dim=-1),
            torch.randn(B, T, H, V, generator=g), torch.rand(B, T, H, generator=g),
            -torch.rand(B, T, H, generator=g), torch.randn(B, H, K, V, generator=g))


# -- B=0 and T=0 ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B,T", EMPTY)
def test_linear_scan_without_tokens(B, T, impl):
    a = torch.rand(B, T, 3, 2, requires_grad=True)
    h = linear_scan(a, torch.randn(B, T, 3, 2), torch.randn(B, 3, 2), impl=impl)[0]
    assert h.shape == (B, T, 3, 2)
    h.sum().backward()                      # differentiable, with a zero gradient
    assert a.grad.shape == a.shape


@pytest.mark.parametrize("rule", [delta_rule, hebbian_rule])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B,T", EMPTY)
def test_delta_rules_without_tokens(rule, B, T, impl):
    q, k, v, beta, g, S0 = _delta_inputs(B, T)
    o, S = rule(q, k, v, beta, g, initial_state=S0, output_final_state=True, impl=impl)
    assert o.shape == (B, T, 2, 3) and S.shape == (B, 2, 4, 3)
    assert torch.equal(S, S0)               # nothing was written: the state passes through
    o, S = rule(q, k, v, beta, None, output_final_state=True, impl=impl)
    assert S.shape == (B, 2, 4, 3) and not S.any()
    assert rule(q, k, v, beta, g, impl=impl)[1] is None


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B,T", EMPTY)
def test_cdm_cores_without_tokens(B, T, impl):
    g = _gen(1)
    v, w, kp, r = torch.randn(B, T, 4, generator=g), torch.rand(B, T, 3, generator=g), torch.rand(B, T, 3, generator=g), torch.rand(B, T, 3, generator=g)
    s0 = torch.randn(3, 4, generator=g)
    for exclusive in (False, True):
        out, S = dock_readout(v, w, kp, r, s0, exclusive=exclusive, impl=impl, output_final_state=True)
        assert out.shape == (B, T, 4) and S.shape == (B, 3, 4) and torch.equal(S, s0.expand(B, 3, 4))
    slots, S = dock(v, w, kp, s0, impl=impl, output_final_state=True)
    assert slots.shape == (B, T, 3, 4) and S.shape == (B, 3, 4)
    q, vk = torch.randn(B, T, 2, 2, 4), torch.randn(B, T, 2, 4)
    s0k = torch.randn(B, 3, 2, 4)
    assert slot_xattn(q, vk, vk, w, kp, s0k, s0k, exclusive=True).shape == (B, T, 2, 2, 4)
    assert final_slots(v, w, kp, s0.expand(B, 3, 4)).shape == (B, 3, 4)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B,T", EMPTY)
def test_cumsum_scan_without_tokens(B, T, impl):
    q, k, v = torch.randn(B, T, 4), torch.rand(B, T, 4), torch.randn(B, T, 4)
    out, S = cumsum_scan(q, k, v, impl=impl, output_final_state=True)
    assert out.shape == (B, T, 4) and S.num.shape == S.den.shape == (B, 4)
    S0 = CumScanState(torch.randn(B, 4), torch.rand(B, 4))
    assert cumsum_scan(q, k, v, initial_state=S0, impl=impl, output_final_state=True)[1] is S0


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B,T", EMPTY)
def test_ram_memory_and_addressing_without_tokens(B, T, impl):
    idx, w, vals = torch.randint(0, 9, (B, T, 2)), torch.rand(B, T, 2), torch.randn(B, T, 4)
    reads, S = ram_memory(idx, w, vals, torch.randn(9, 4), impl=impl, output_final_state=True)
    assert reads.shape == (B, T, 4) and isinstance(S, RAMState) and S.memory.shape == (B, 9, 4) and S.pos == 0
    state = RAMState(torch.randn(B, 9, 4), torch.randn(B, 9, 4), 3)     # a decode state passes through
    S = ram_memory(idx, w, vals, state, impl=impl, output_final_state=True)[1]
    assert torch.equal(S.memory, state.memory) and torch.equal(S.pending, state.pending) and S.pos == 3
    i, p = product_topk(torch.randn(B, T, 3, 4), 5)
    assert i.shape == p.shape == (B, T, 5)
    i, p = pkm_topk(torch.randn(B, T, 2, 8), torch.randn(2, 2, 6, 4), 3)
    assert i.shape == p.shape == (B, T, 2, 3)


# -- non-contiguous inputs -------------------------------------------------------------------------------------------

def _strided(x):
    "The same values as `x` in a non-contiguous layout (the batch and time axes transposed in memory)."
    y = x.transpose(0, 1).contiguous().transpose(0, 1)
    assert not y.is_contiguous() and torch.equal(y, x)
    return y


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(1, 40), st.integers(1, 9), st.sampled_from(IMPLS), st.integers(0, 99))
def test_non_contiguous_inputs_give_the_same_results(B, T, chunk, impl, seed):
    B = max(B, 2)   # a transposed layout is only non-contiguous with B, T > 1
    T = max(T, 2)
    g = _gen(seed)
    idx, w, vals = torch.randint(0, 9, (B, T, 2), generator=g), torch.rand(B, T, 2, generator=g), torch.randn(B, T, 4, generator=g)
    m0 = torch.randn(9, 4, generator=g)
    want = ram_memory(idx, w, vals, m0, chunk=chunk, impl=impl)[0]
    got = ram_memory(_strided(idx), _strided(w), _strided(vals), m0, chunk=chunk, impl=impl)[0]
    assert torch.allclose(got, want, atol=1e-6)
    q, k, v, beta, gg, S0 = _delta_inputs(B, T, seed=seed)
    want = delta_rule(q, k, v, beta, gg, initial_state=S0, impl=impl)[0]
    got = delta_rule(*map(_strided, (q, k, v, beta, gg)), initial_state=S0, impl=impl)[0]
    assert torch.allclose(got, want, atol=1e-5)
    a, b = torch.rand(B, T, 3, generator=g), torch.randn(B, T, 3, generator=g)
    assert torch.allclose(linear_scan(_strided(a), _strided(b), impl=impl)[0], linear_scan(a, b, impl=impl)[0], atol=1e-6)
    kk = torch.rand(B, T, 3, generator=g)
    assert torch.allclose(cumsum_scan(_strided(b), _strided(kk), _strided(a), impl=impl)[0],
                          cumsum_scan(b, kk, a, impl=impl)[0], atol=1e-6)
    wr, kp = 0.5 * torch.rand(B, T, 3, generator=g), torch.rand(B, T, 3, generator=g)
    assert torch.allclose(dock_readout(*map(_strided, (vals, wr, kp, kp)), m0[:3], impl=impl)[0],
                          dock_readout(vals, wr, kp, kp, m0[:3], impl=impl)[0], atol=1e-6)


# -- bad values ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", [delta_rule, hebbian_rule])
@pytest.mark.parametrize("bad", [float("nan"), 0.5, float("inf")])
def test_bad_decays_are_refused(rule, bad):
    q, k, v, beta, g, _ = _delta_inputs(2, 7)
    g = g.clone()
    g[1, 3, 0] = bad
    with pytest.raises(ValueError, match=r"`g` is a log-decay and must be <= 0 \(got (NaN|max)"):
        rule(q, k, v, beta, g)


def test_minus_infinity_decay_is_a_full_reset():
    q, k, v, beta, g, S0 = _delta_inputs(1, 1)
    o, S = delta_rule(q, k, v, beta, torch.full_like(g, -float("inf")), initial_state=S0, output_final_state=True)
    o0, S_fresh = delta_rule(q, k, v, beta, None, output_final_state=True)
    assert torch.allclose(S, S_fresh) and torch.allclose(o, o0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_product_topk_refuses_non_finite_scores(bad):
    logits = torch.randn(2, 5, 3, 8)
    logits[1, 2, 0, 4] = bad
    with pytest.raises(NonFiniteError, match="`logits` holds non-finite values"):
        product_topk(logits, 8)
    with pytest.raises(FloatingPointError):    # what a NaN guard catches
        product_topk(logits, 8)


@pytest.mark.parametrize("window", [0, -3, 2.5])
def test_attention_window_must_be_positive(window):
    with pytest.raises(ValueError, match="Attention: window must be None or an int >= 1"):
        Attention(32, 4, window=window)


@pytest.mark.parametrize("n_passes", [0, -1])
def test_config_needs_at_least_one_pass(n_passes):
    with pytest.raises(ValueError, match="n_passes must be an int >= 1"):
        MemLM(MemLMConfig(vocab_size=50, d_model=32, n_layers=1, n_heads=4, n_passes=n_passes))
