"""Integration and property tests of `memnb.delta_rule` (the notebook holds the derivation-level checks)."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from memnb.core import assert_rel_close
from memnb.delta_rule import DeltaNet, delta_rule, delta_rule_step


def inputs(B, T, H, K, V, *, gated, h0, dtype=torch.float64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g, dtype=dtype)
    k = F.normalize(torch.randn(B, T, H, K, generator=g, dtype=dtype), dim=-1)
    v = torch.randn(B, T, H, V, generator=g, dtype=dtype)
    beta = torch.rand(B, T, H, generator=g, dtype=dtype)
    gg = F.logsigmoid(torch.randn(B, T, H, generator=g, dtype=dtype) + 3) if gated else None
    s0 = torch.randn(B, H, K, V, generator=g, dtype=dtype) if h0 else None
    return [None if x is None else x.to(device) for x in (q, k, v, beta, gg, s0)]


def run(impl, q, k, v, beta, g, h0, **kw):
    return delta_rule(q, k, v, beta, g, initial_state=h0, output_final_state=True, impl=impl, **kw)


CASES = list(itertools.product([1, 63, 64, 65, 200], [(16, 16), (32, 64), (64, 32), (100, 100)]))


@pytest.mark.parametrize("T,KV", CASES)
@pytest.mark.parametrize("gated,h0", [(False, False), (True, True), (True, False), (False, True)])
def test_chunk_matches_reference(T, KV, gated, h0):
    K, V = KV
    xs = inputs(2, T, 2, K, V, gated=gated, h0=h0, dtype=torch.float32)
    o_ref, S_ref = run("recurrent", *[None if x is None else x.double() for x in xs])
    o, S = run("chunk", *xs)
    assert o.dtype == torch.float32 and S.dtype == torch.float32
    assert_rel_close(o.double(), o_ref, 1e-5, "o")
    assert_rel_close(S.double(), S_ref, 1e-5, "final state")


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.bfloat16, 2e-2)])
def test_chunk_dtypes(dtype, tol):
    xs = inputs(1, 130, 2, 32, 16, gated=True, h0=True, dtype=torch.float64)
    o_ref, S_ref = run("recurrent", *xs)
    o, S = run("chunk", *[x.to(dtype) for x in xs])
    assert o.dtype == dtype
    assert_rel_close(o.double(), o_ref, tol, "o")
    assert_rel_close(S.double(), S_ref, tol, "S")


def test_gate_zero_is_ungated():
    q, k, v, beta, _, h0 = inputs(2, 90, 3, 16, 8, gated=False, h0=True)
    a = run("chunk", q, k, v, beta, torch.zeros_like(beta), h0)
    b = run("chunk", q, k, v, beta, None, h0)
    for x, y in zip(a, b):
        assert_rel_close(x, y, 1e-12, "g=0")


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 150), st.integers(0, 150), st.sampled_from([8, 16, 64]), st.booleans(), st.integers(0, 999))
def test_split_with_carried_state_equals_one_pass(T, cut, chunk, gated, seed):
    cut = min(cut, T)
    xs = inputs(1, T, 2, 8, 4, gated=gated, h0=True, seed=seed)
    q, k, v, beta, g, h0 = xs
    o, S = run("chunk", *xs, chunk_size=chunk)
    pieces, state = [], h0
    for sl in (slice(0, cut), slice(cut, T)):
        if sl.stop > sl.start:
            o_i, state = run("chunk", q[:, sl], k[:, sl], v[:, sl], beta[:, sl], None if g is None else g[:, sl], state, chunk_size=chunk)
            pieces.append(o_i)
    assert_rel_close(torch.cat(pieces, 1), o, 1e-11, "split o")
    assert_rel_close(state, S, 1e-11, "split state")


def test_step_equals_parallel():
    q, k, v, beta, g, h0 = inputs(2, 20, 3, 8, 5, gated=True, h0=True)
    o, S = run("chunk", q, k, v, beta, g, h0, chunk_size=8)
    state, outs = h0, []
    for t in range(20):
        o_t, state = delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], g[:, t], state)
        outs.append(o_t)
    assert_rel_close(torch.stack(outs, 1), o, 1e-12, "step")
    assert_rel_close(state, S, 1e-12, "step state")


@pytest.mark.parametrize("gated", [False, True])
def test_causal(gated):
    q, k, v, beta, g, h0 = inputs(1, 100, 2, 16, 16, gated=gated, h0=True)
    o, _ = run("chunk", q, k, v, beta, g, h0)
    for x in (q, k, v, beta) + ((g,) if gated else ()):
        x2 = x.clone()
        x2[:, 70] = x2[:, 70] * 0.5 - 0.01
        args = [x2 if y is x else y for y in (q, k, v, beta, g)]
        o2, _ = run("chunk", *args, h0)
        assert torch.equal(o2[:, :70], o[:, :70])


@pytest.mark.parametrize("gated", [False, True])
def test_gradcheck_chunk_float64(gated):
    xs = [x if x is None else x.requires_grad_() for x in inputs(1, 11, 2, 4, 3, gated=gated, h0=True)]
    names = [i for i, x in enumerate(xs) if x is not None]
    def f(*args):
        full = list(xs)
        for i, a in zip(names, args): full[i] = a
        o, S = delta_rule(*full[:5], initial_state=full[5], output_final_state=True, impl="chunk", chunk_size=4)
        return o, S
    assert torch.autograd.gradcheck(f, [xs[i] for i in names])


def test_gradcheck_reference_float64():
    xs = [x.requires_grad_() for x in inputs(1, 5, 1, 3, 2, gated=True, h0=True)]
    assert torch.autograd.gradcheck(lambda *a: run("recurrent", *a), xs)


def test_inputs_are_not_modified():
    xs = inputs(1, 64, 1, 16, 16, gated=True, h0=True, dtype=torch.float32)
    before = [x.clone() for x in xs]
    o, S = run("chunk", *[x.requires_grad_() for x in xs])
    (o.sum() + S.sum()).backward()
    for x, b in zip(xs, before):
        assert torch.equal(x.detach(), b)


def test_qk_l2norm_convenience():
    q, k, v, beta, g, _ = inputs(1, 30, 2, 8, 8, gated=True, h0=False)
    a = delta_rule(q * 3, k * 5, v, beta, g, use_qk_l2norm=True)[0]
    b = delta_rule(F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, beta, g)[0]
    assert_rel_close(a, b, 1e-6, "l2norm")


@pytest.mark.parametrize("bad,match", [
    (lambda q, k, v, b, g: delta_rule(q, k[..., :4], v, b, g), r"`k` must have shape \[B, T, H, K\] like `q`"),
    (lambda q, k, v, b, g: delta_rule(q, k, v[:, :3], b, g), r"`v` must have shape \[B, T, H, V\]"),
    (lambda q, k, v, b, g: delta_rule(q, k, v, b[..., None], g), r"`beta` must have shape \[B, T, H\]"),
    (lambda q, k, v, b, g: delta_rule(q, k, v.float(), b, g), r"`v` must have the dtype of `q`"),
    (lambda q, k, v, b, g: delta_rule(q, k, v, b, -g), r"`g` is a log-decay and must be <= 0"),
    (lambda q, k, v, b, g: delta_rule(q, k, v, b, g, initial_state=torch.zeros(2, 2, 8, 8, dtype=q.dtype)),
     r"`initial_state` must have shape \[B, H, K, V\] = \(2, 2, 8, 6\)"),
    (lambda q, k, v, b, g: delta_rule(q.long(), k, v, b, g), r"`q` must have a floating dtype"),
    (lambda q, k, v, b, g: delta_rule(q, k, v, b, g, impl="cuda"), r"impl must be 'auto' or one of"),
    (lambda q, k, v, b, g: delta_rule(q, k, v, b, g, chunk_size=0), r"chunk_size must be a positive int"),
])
def test_bad_input_raises_clear_errors(bad, match):
    q, k, v, beta, g, _ = inputs(2, 10, 2, 8, 6, gated=True, h0=False)
    with pytest.raises((ValueError, TypeError), match=match):
        bad(q, k, v, beta, g)


@pytest.mark.parametrize("gated,short_conv,rule", [(False, 4, "delta"), (True, 4, "delta"), (True, 0, "delta"),
                                                   (False, 4, "hebbian"), (True, 4, "hebbian")])
def test_layer_parallel_equals_step_and_is_causal(gated, short_conv, rule):
    torch.manual_seed(0)
    layer = DeltaNet(24, 3, 8, gated=gated, short_conv=short_conv, rule=rule, chunk_size=16).double()
    x = torch.randn(2, 80, 24, dtype=torch.float64)
    with torch.no_grad():
        y, _ = layer(x)
        cache, ys = None, []
        for t in range(80):
            y_t, cache = layer.step(x[:, t], cache)
            ys.append(y_t)
        assert_rel_close(torch.stack(ys, 1), y, 1e-10, "step")
        x2 = x.clone()
        x2[:, 40] += 1
        assert torch.allclose(layer(x2)[0][:, :40], y[:, :40], atol=1e-12)


def test_layer_trains():
    torch.manual_seed(0)
    layer = DeltaNet(16, 2, 8, gated=True)
    x = torch.randn(2, 70, 16)
    y, _ = layer(x)
    y.square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.triton
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 5e-3)])
@pytest.mark.parametrize("T,K,V,gated,h0", [(1, 16, 16, False, False), (65, 32, 16, True, True), (200, 100, 40, True, False),
                                           (64, 16, 100, False, True),
                                           (40, 256, 24, True, True),     # four 64-row slabs of the state
                                           (50, 130, 20, False, True)])   # three slabs, the last one ragged
def test_triton_matches_reference(triton_device, dtype, tol, T, K, V, gated, h0):
    xs = inputs(2, T, 2, K, V, gated=gated, h0=h0, dtype=torch.float64)
    dO = torch.randn(2, T, 2, V, dtype=torch.float64)
    dS = torch.randn(2, 2, K, V, dtype=torch.float64)
    def grads(impl, dt, device, **kw):
        ys = [None if x is None else x.detach().to(device, dt).clone().requires_grad_() for x in xs]
        o, S = run(impl, *ys, **kw)
        ((o * dO.to(device, dt)).sum() + (S * dS.to(device, dt)).sum()).backward()
        return [o, S] + [y.grad for y in ys if y is not None]
    want = grads("recurrent", torch.float64, "cpu")
    got = grads("triton", dtype, triton_device, chunk_size=32)
    for name, a, b in zip("o S dq dk dv dbeta dg dh0".split(), got, want):
        assert_rel_close(a.detach().double().cpu(), b.detach(), tol, f"triton {dtype} {name}")
    with torch.no_grad():  # short and gradient-free: the fused recurrent kernel
        short = [None if x is None else x[:, :9] for x in xs[:5]] + [xs[5]]
        o, S = run("triton", *[None if x is None else x.to(triton_device, dtype) for x in short])
        o_r, S_r = run("recurrent", *short)
        assert_rel_close(o.double().cpu(), o_r, tol, "fused o")
        assert_rel_close(S.double().cpu(), S_r, tol, "fused S")


@pytest.mark.triton
def test_triton_decode_state_is_float32(triton_device):
    """The fused recurrent kernel keeps and returns its state in float32 for float16 inputs, and decoding token by
    token through it (the state fed back every step) stays on the float64 reference."""
    import importlib
    dr = importlib.import_module("memnb.delta_rule")
    q, k, v, beta, g, h0 = inputs(1, 24, 2, 32, 16, gated=True, h0=True, dtype=torch.float64)
    o_ref, S_ref = run("recurrent", q, k, v, beta, g, h0)
    S, outs = h0.to(triton_device, torch.float32), []
    for t in range(q.shape[1]):
        x = [y[:, t:t + 1].to(triton_device, torch.float16) for y in (q, k, v, beta, g)]
        o, S = dr._delta_rule_fused_recurrent(*x, S, 32 ** -0.5)
        assert S.dtype == torch.float32 and o.dtype == torch.float16
        outs.append(o)
    assert_rel_close(torch.cat(outs, 1).double().cpu(), o_ref, 5e-3, "o")
    assert_rel_close(S.double().cpu(), S_ref, 2e-3, "S")


@pytest.mark.triton
def test_triton_autotuned_launch(triton_device, monkeypatch):
    """The GPU launch path: `triton.autotune` over the per-width candidates, each benchmarked once (a wall-clock stub
    stands in for the GPU benchmarker), the backward's in-place `DU` restored between candidates, same gradients."""
    import importlib, time
    dr = importlib.import_module("memnb.delta_rule")
    def stub(fn, quantiles):
        t = time.perf_counter(); fn(); d = time.perf_counter() - t
        return [d, d, d]
    make = dr._tuned_state_kernel
    def tuned(*a):
        t = make(*a)
        t.__dict__["do_bench"] = stub   # the autotuner's cached benchmarker
        return t
    monkeypatch.setattr(dr, "triton_interpreting", lambda: False)
    monkeypatch.setattr(dr, "_tuned_state_kernel", tuned)
    monkeypatch.setattr(dr, "_TUNED_STATE", {})
    xs = inputs(1, 40, 2, 80, 40, gated=True, h0=True, dtype=torch.float64)
    dO, dS = torch.randn(1, 40, 2, 40, dtype=torch.float64), torch.randn(1, 2, 80, 40, dtype=torch.float64)
    def grads(impl, dt, device, **kw):
        ys = [x.detach().to(device, dt).clone().requires_grad_() for x in xs]
        o, S = run(impl, *ys, **kw)
        ((o * dO.to(device, dt)).sum() + (S * dS.to(device, dt)).sum()).backward()
        return [o, S] + [y.grad for y in ys]
    got, want = grads("triton", torch.float32, triton_device, chunk_size=16), grads("recurrent", torch.float64, "cpu")
    assert len(dr._TUNED_STATE) == 2 and all(len(t.configs) == 2 for t in dr._TUNED_STATE.values())
    for name, a, b in zip("o S dq dk dv dbeta dg dh0".split(), got, want):
        assert_rel_close(a.detach().double().cpu(), b.detach(), 1e-4, f"autotuned {name}")


@pytest.mark.triton
def test_triton_key_width_above_256_is_a_clear_error(triton_device):
    xs = [None if x is None else x.to(triton_device) for x in inputs(1, 20, 1, 300, 8, gated=True, h0=False)]
    with pytest.raises(ValueError, match="K <= 256"):
        run("triton", *xs, chunk_size=16)


@pytest.mark.parametrize("gated", [False, True])
def test_same_semantics_as_flash_linear_attention(gated):
    "memnb's delta_rule is a drop-in for fla's fused_recurrent_(gated_)delta_rule: compare with fla's own reference."
    naive = pytest.importorskip("fla.ops.gated_delta_rule.naive")
    q, k, v, beta, g, h0 = inputs(2, 50, 3, 16, 8, gated=True, h0=True, dtype=torch.float32)
    g = g if gated else torch.zeros_like(beta)
    o_fla, S_fla = naive.naive_recurrent_gated_delta_rule(q, k, v, beta, g, scale=0.3, initial_state=h0, output_final_state=True)
    o, S = delta_rule(q, k, v, beta, g if gated else None, scale=0.3, initial_state=h0, output_final_state=True)
    assert_rel_close(o, o_fla, 1e-5, "o")
    assert_rel_close(S, S_fla, 1e-5, "S")


@pytest.mark.parametrize("gated", [False, True])
def test_deltanet_layer_gradcheck_float64(gated):
    "The layer keeps float64 end to end (its norms and decay once dropped to float32, which gradcheck caught)."
    torch.manual_seed(0)
    layer = DeltaNet(16, 2, 8, gated=gated, impl="chunk", chunk_size=4).double()
    x = torch.randn(1, 7, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: layer(x)[0], (x,), eps=1e-6, atol=1e-5)
