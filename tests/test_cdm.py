"""Integration and property tests of `memnb.cdm`."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from memnb.cdm import (CompetitiveDockingMemory, cdm_write_keep, dock, dock_readout, gate_entropy_loss,
                       load_balancing_loss, routing_stats)
from memnb.core import assert_rel_close


def inputs(B, T, K, D, *, seed=0, dtype=torch.float64, resets=False, shared_init=False):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(B, T, D, generator=g, dtype=dtype)
    p = torch.softmax(2 * torch.randn(B, T, K, generator=g, dtype=dtype), -1)
    write, keep = cdm_write_keep(p, torch.randn(K, generator=g, dtype=dtype), "gated")
    if resets:
        keep = keep * (torch.rand(B, T, K, generator=g) > 0.1)
    s0 = torch.randn(*(() if shared_init else (B,)), K, D, generator=g, dtype=dtype)
    return v, write, keep, p, s0


def reference_readout(v, write, keep, read, s0, exclusive):
    slots, _ = dock(v, write, keep, s0, impl="recurrent")
    B, T, K, D = slots.shape
    prev = torch.cat([s0.expand(B, K, D)[:, None], slots[:, :-1]], 1)
    return torch.einsum("btk,btkd->btd", read, prev if exclusive else slots), slots[:, -1]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 100), st.integers(1, 17), st.integers(1, 9), st.booleans(), st.booleans(),
       st.sampled_from([4, 16, 32]), st.booleans(), st.integers(0, 999))
def test_readout_chunk_matches_reference(B, T, K, D, exclusive, resets, chunk, shared_init, seed):
    v, write, keep, read, s0 = inputs(B, T, K, D, seed=seed, resets=resets, shared_init=shared_init)
    want, S_want = reference_readout(v, write, keep, read, s0, exclusive)
    for impl in ("recurrent", "chunk"):
        out, S = dock_readout(v, write, keep, read, s0, exclusive=exclusive, impl=impl, chunk_size=chunk, output_final_state=True)
        assert_rel_close(out, want, 1e-11, f"{impl} out")
        assert_rel_close(S, S_want, 1e-11, f"{impl} final slots")


@pytest.mark.parametrize("update", ["gated", "ema"])
def test_dock_implements_both_update_rules(update):
    v, _, _, p, s0 = inputs(2, 30, 5, 4)
    alpha = torch.randn(5, dtype=torch.float64)
    write, keep = cdm_write_keep(p, alpha, update)
    slots, _ = dock(v, write, keep, s0)
    a = torch.sigmoid(alpha)
    s = s0
    for t in range(30):
        if update == "gated":
            gamma = a * p[:, t]
            s = (1 - gamma)[..., None] * s + gamma[..., None] * v[:, t, None]
        else:
            s = (1 - a)[:, None] * s + (a * p[:, t])[..., None] * v[:, t, None]
        assert_rel_close(slots[:, t], s, 1e-12, f"{update} t={t}")


def test_split_state_equals_one_pass():
    v, write, keep, read, s0 = inputs(2, 70, 6, 5)
    out, S = dock_readout(v, write, keep, read, s0, exclusive=True, output_final_state=True)
    o1, S1 = dock_readout(v[:, :33], write[:, :33], keep[:, :33], read[:, :33], s0, exclusive=True, output_final_state=True)
    o2, S2 = dock_readout(v[:, 33:], write[:, 33:], keep[:, 33:], read[:, 33:], S1, exclusive=True, output_final_state=True)
    assert_rel_close(torch.cat([o1, o2], 1), out, 1e-12, "split")
    assert_rel_close(S2, S, 1e-12, "split state")


@pytest.mark.parametrize("exclusive", [False, True])
def test_readout_causal(exclusive):
    v, write, keep, read, s0 = inputs(1, 80, 4, 6)
    out, _ = dock_readout(v, write, keep, read, s0, exclusive=exclusive)
    for x in (v, write, keep, read):
        x2 = x.clone()
        x2[:, 50] = x2[:, 50] * 0.3
        args = [x2 if y is x else y for y in (v, write, keep, read)]
        out2, _ = dock_readout(*args, s0, exclusive=exclusive)
        assert torch.equal(out2[:, :50], out[:, :50])


@pytest.mark.parametrize("exclusive", [False, True])
def test_gradcheck(exclusive):
    xs = [x.requires_grad_() for x in inputs(1, 13, 3, 2)]
    for impl in ("recurrent", "chunk"):
        assert torch.autograd.gradcheck(lambda *a: dock_readout(*a, exclusive=exclusive, impl=impl, chunk_size=4)[0], xs)


def test_lbl_and_stats_on_known_distributions():
    K = 16
    uniform = torch.full((4, 32, K), 1 / K)
    assert math.isclose(load_balancing_loss(uniform).item(), 1.0, rel_tol=1e-6)
    previous = 1.0
    for sharpness in (1.0, 4.0, 16.0, 64.0):   # increasingly collapsed onto slot 0
        logits = torch.zeros(4, 32, K)
        logits[..., 0] = sharpness
        lbl = load_balancing_loss(torch.softmax(logits, -1)).item()
        assert lbl >= previous - 1e-6
        previous = lbl
    assert previous > K - 0.01
    st_ = routing_stats(uniform)
    assert math.isclose(st_.entropy_pct, 100.0, rel_tol=1e-5) and st_.active == K
    four = torch.zeros(2, 8, K)
    four[..., :4] = 0.25
    st_ = routing_stats(four)
    assert math.isclose(st_.k_eff, 4.0, rel_tol=1e-5) and st_.active == 4
    assert math.isclose(st_.entropy_pct, 50.0, rel_tol=1e-5)
    assert math.isclose(gate_entropy_loss(four).item(), -math.log(4), rel_tol=1e-5)


@pytest.mark.parametrize("readout,update,decay", [("gate", "gated", "slot+eta"), ("gate", "ema", "slot"), ("xattn", "gated", "eta")])
def test_layer_parallel_equals_step(readout, update, decay):
    torch.manual_seed(0)
    layer = CompetitiveDockingMemory(24, 5, decay=decay, update=update, readout=readout, n_heads=4, n_kv_heads=2).double()
    x = torch.randn(2, 40, 24, dtype=torch.float64)
    with torch.no_grad():
        full, none = layer(x)
        cache, ys = None, []
        for t in range(40):
            y_t, cache = layer.step(x[:, t], cache)
            ys.append(y_t)
    assert none is None
    assert_rel_close(torch.stack(ys, 1), full, 1e-10, "step")


def test_layer_trains_and_aux_losses_have_gradients():
    torch.manual_seed(0)
    layer = CompetitiveDockingMemory(16, 4)
    y, _ = layer(torch.randn(2, 40, 16), return_stats=True)
    (y.square().mean() + 0.01 * layer.aux["lbl"] + 0.01 * layer.aux["entropy"]).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert 0 <= layer.stats.entropy_pct <= 100 and 1 <= layer.stats.k_eff <= 4
    assert layer.gates.shape == (2, 40, 4) and not layer.gates.requires_grad


@pytest.mark.parametrize("bad,match", [
    (lambda v, w, k, r, s0: dock_readout(v, w, k[..., :2], r, s0), r"`keep` must have shape \[B, T, K\] like `write`"),
    (lambda v, w, k, r, s0: dock_readout(v, w[..., :0], k[..., :0], r[..., :0]), r"at least one slot, got K=0"),
    (lambda v, w, k, r, s0: dock_readout(v, w, k, r, s0[:, :2]), r"`initial_state` must have shape \[K, D\] or \[B, K, D\]"),
    (lambda v, w, k, r, s0: dock_readout(v, w * 2, k, r, s0, check_range=True), r"`write` must lie in \[0, 1\]"),
    (lambda v, w, k, r, s0: dock_readout(v, w, k - 1, r, s0, check_range=True), r"`keep` must lie in \[0, 1\]"),
    (lambda v, w, k, r, s0: dock_readout(v.float(), w, k, r, s0), r"`write` must have the dtype of `v`"),
    (lambda v, w, k, r, s0: cdm_write_keep(r, torch.zeros(3, dtype=r.dtype)), r"`alpha` must have shape \[K\]"),
    (lambda v, w, k, r, s0: CompetitiveDockingMemory(8, 0), r"n_slots must be >= 1"),
])
def test_bad_input_raises_clear_errors(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bad(*inputs(2, 6, 4, 3))


@pytest.mark.triton
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 5e-3)])
@pytest.mark.parametrize("T,K,D,exclusive", [(1, 1, 3, True), (33, 16, 40, False), (70, 5, 17, True)])
def test_triton_matches_reference(triton_device, dtype, tol, T, K, D, exclusive):
    xs = inputs(2, T, K, D)
    do, dS = torch.randn(2, T, D, dtype=torch.float64), torch.randn(2, K, D, dtype=torch.float64)
    def grads(impl, dt, device):
        ys = [x.detach().to(device, dt).clone().requires_grad_() for x in xs]
        out, S = dock_readout(*ys, exclusive=exclusive, impl=impl, output_final_state=True)
        ((out * do.to(device, dt)).sum() + (S * dS.to(device, dt)).sum()).backward()
        return [out, S] + [y.grad for y in ys]
    for name, a, b in zip("out S dv dwrite dkeep dread ds0".split(), grads("triton", dtype, triton_device), grads("recurrent", torch.float64, "cpu")):
        assert_rel_close(a.detach().double().cpu(), b.detach(), tol, f"triton {dtype} {name}")
