"""Integration and property tests of `memnb.ramnet` and `memnb.cumscan`."""
from unittest.mock import patch

import pytest
import torch
from hypothesis import given, settings, strategies as st

import memnb.ramnet as ramnet
from memnb.core import assert_rel_close
from memnb.cumscan import RAMScanBlock, cumsum_scan, cumsum_scan_step
from memnb.ramnet import (RAMNetMemory, addressing_stats, pkm_topk, product_topk, product_topk_dense, ram_memory,
                          ram_memory_reference)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(2, 9), st.integers(1, 40), st.booleans(), st.integers(0, 10_000))
def test_product_topk_exact_against_dense(G, S, k, quantised, seed):
    k = min(k, S ** G)
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, G, S, generator=g)
    if quantised:  # many exact ties
        logits = logits.round()
    i1, w1 = product_topk(logits, k)
    i2, w2 = product_topk_dense(logits, k)
    assert torch.equal(i1, i2)
    assert_rel_close(w1, w2, 1e-6, "weights")
    assert torch.allclose(w1.sum(-1), torch.ones(3, 5))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(2, 6), st.integers(1, 30), st.sampled_from([0.3, 1.0, 4.0, "ties"]), st.integers(0, 10_000))
def test_both_searches_exact_on_their_own(G, S, k, scale, seed):
    "The rank-tuple search (where it applies, ties left unsettled) and the beam each agree with the dense product."
    from memnb.ramnet import _beam, _rank_tuples, _ranked
    k = min(k, S ** G)
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 6, G, S, generator=g) * (1.0 if scale == "ties" else scale)
    if scale == "ties":
        logits = (2 * logits).round() / 2
    probs = torch.softmax(logits, -1)
    want, _ = product_topk_dense(logits, k)
    assert torch.equal(_beam(probs, k), want)
    ranks = _rank_tuples(S, G, k)
    if ranks is not None:
        digits, settled = _ranked(probs, ranks[0], ranks[1], k)
        idx = (digits * S ** torch.arange(G - 1, -1, -1)).sum(-1)
        assert torch.equal(idx[settled], want[settled])
        if scale != "ties":
            assert bool(settled.all())


def test_product_topk_gradients_reach_the_logits():
    logits = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    idx, _ = product_topk(logits, 6)
    assert torch.autograd.gradcheck(lambda l: product_topk(l, 6)[1], (logits,))


def test_product_topk_memory_is_independent_of_n():
    from memnb.core import peak_memory
    small = peak_memory(lambda: product_topk(torch.randn(32, 3, 16), 8))      # N = 4096
    large = peak_memory(lambda: product_topk(torch.randn(32, 6, 16), 8))      # N = 16.7M
    assert large < 3 * small


def test_pkm_topk_matches_dense_multihead():
    g = torch.Generator().manual_seed(0)
    q, sk = torch.randn(4, 6, 3, 12, generator=g), torch.randn(3, 2, 9, 6, generator=g)
    for norm in (False, True):
        idx, w = pkm_topk(q, sk, 5, query_norm=norm)
        qq = torch.nn.functional.layer_norm(q, (12,)) if norm else q
        full = (torch.einsum("bthd,hnd->bthn", qq[..., :6], sk[:, 0])[..., :, None]
                + torch.einsum("bthd,hnd->bthn", qq[..., 6:], sk[:, 1])[..., None, :]).flatten(-2)
        best, best_idx = full.topk(5, -1)
        assert torch.equal(idx, best_idx)
        assert_rel_close(w, torch.softmax(best, -1), 1e-6, "pkm weights")


def _ram_inputs(B, T, k, N, Dm, seed, shared=True):
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(N, generator=g)[:k] for _ in range(B * T)]).view(B, T, k)
    w = torch.rand(B, T, k, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, Dm, generator=g, dtype=torch.float64)
    m0 = torch.randn(*(() if shared else (B,)), N, Dm, generator=g, dtype=torch.float64)
    return idx, w, v, m0


@pytest.mark.parametrize("chunk", [1, 3, 32])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("impl", ["recurrent", "chunk"])
def test_ram_memory_matches_per_token_reference(chunk, shared, impl):
    idx, w, v, m0 = _ram_inputs(2, 37, 4, 13, 5, chunk, shared)
    want, want_final = ram_memory_reference(idx, w, v, m0, chunk=chunk, decay=0.95)
    got, state = ram_memory(idx, w, v, m0, chunk=chunk, decay=0.95, impl=impl, output_final_state=True)
    assert_rel_close(got, want, 1e-12, "reads")
    assert_rel_close(state.final_memory(0.95), want_final, 1e-12, "final memory")   # 37 tokens: a partial last chunk unless chunk=1


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.lists(st.integers(1, 15), min_size=1, max_size=5), st.integers(1, 8), st.integers(0, 999))
def test_ram_memory_pieces_equal_one_pass(T, cuts, chunk, seed):
    idx, w, v, m0 = _ram_inputs(2, T, 3, 9, 4, seed)
    full, S = ram_memory(idx, w, v, m0, chunk=chunk, decay=0.9, output_final_state=True)
    bounds, t = [0], 0
    for c in cuts:
        t = min(T, t + c)
        bounds.append(t)
    bounds.append(T)
    parts, state = [], None
    for a, b in zip(bounds, bounds[1:]):
        if b > a:
            o, state = ram_memory(idx[:, a:b], w[:, a:b], v[:, a:b], m0 if state is None else state, chunk=chunk, decay=0.9, output_final_state=True)
            parts.append(o)
    assert_rel_close(torch.cat(parts, 1), full, 1e-12, "pieces")
    assert_rel_close(state.memory, S.memory, 1e-12, "memory")
    assert state.pos == S.pos


def test_ram_memory_causal_by_chunk():
    idx, w, v, m0 = _ram_inputs(1, 40, 3, 9, 4, 0)
    out, _ = ram_memory(idx, w, v, m0, chunk=8)
    v2 = v.clone()
    v2[:, 13] += 5.0                          # written in chunk 1 (tokens 8..15): visible from token 16
    out2, _ = ram_memory(idx, w, v2, m0, chunk=8)
    assert torch.equal(out2[:, :16], out[:, :16]) and not torch.equal(out2[:, 16:], out[:, 16:])


@pytest.mark.parametrize("impl", ["recurrent", "chunk"])
def test_ram_memory_gradcheck(impl):
    idx, w, v, m0 = _ram_inputs(2, 11, 3, 7, 3, 1)
    xs = [x.requires_grad_() for x in (w, v, m0)]
    assert torch.autograd.gradcheck(lambda w, v, m: ram_memory(idx, w, v, m, chunk=4, decay=0.8, impl=impl)[0], xs)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 40), st.integers(1, 8), st.integers(1, 4), st.booleans(), st.integers(0, 999))
def test_chunk_blocks_match_the_loop(T, chunk, chunks_per_block, shared, seed):
    "Any split of the chunks into blocks gives the loop's reads, final memory and gradients."
    idx, w, v, m0 = _ram_inputs(2, T, 3, 9, 4, seed, shared)
    grads_out = torch.randn(2, T, 4, dtype=torch.float64), torch.randn(2, 9, 4, dtype=torch.float64)
    results = []
    with patch.object(ramnet, "_STATE_BUDGET", (chunks_per_block + 1) * 2 * 9 * 4):
        for impl in ("recurrent", "chunk"):
            xs = [x.clone().requires_grad_() for x in (w, v, m0)]
            reads, M = ramnet._ram_chunk(idx, *xs, chunk, 0.9) if impl == "chunk" else \
                ramnet._ram_loop(xs[2].expand(2, 9, 4), torch.zeros(2, 9, 4, dtype=torch.float64), 0, idx, *xs[:2], chunk, 0.9, ramnet._weighted_gather_torch)[:2]
            torch.autograd.backward((reads, M), grads_out)
            results.append([reads, M] + [torch.zeros_like(x) if x.grad is None else x.grad for x in xs])
    for a, b, name in zip(*results, ("reads", "memory", "dw", "dv", "dm0")):
        assert_rel_close(b, a, 1e-12, name)


@pytest.mark.parametrize("bad,match", [
    (lambda i, w, v, m: product_topk(torch.randn(2, 3, 4), 65), r"k must be an int in \[1, S\*\*G = 64\]"),
    (lambda i, w, v, m: ram_memory(i.float(), w, v, m), r"`idx` must be an int64 or int32 tensor"),
    (lambda i, w, v, m: ram_memory(i, w, v, m[:, :2]), r"`initial_state` must have shape \[N, Dm\] or \[B, N, Dm\]"),
    (lambda i, w, v, m: ram_memory(i + 100, w, v, m), r"`idx` must lie in \[0, N = 13\)"),
    (lambda i, w, v, m: ram_memory(i, w[..., :2], v, m), r"`weights` must have shape \[B, T, k\] like `idx`"),
    (lambda i, w, v, m: ram_memory(i, w, v, m, chunk=0), r"chunk must be a positive int"),
    (lambda i, w, v, m: ram_memory(i, w, v, m, decay=1.5), r"decay must lie in \[0, 1\]"),
])
def test_bad_input_raises_clear_errors(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bad(*_ram_inputs(2, 6, 3, 13, 5, 0))


def test_addressing_stats_of_a_trained_looking_router():
    idx = torch.randint(0, 4, (100, 8))      # uses 4 of 64 slots
    st_ = addressing_stats(idx, torch.ones(100, 8), 64)
    assert st_.used == 4 / 64 and st_.gini > 0.9 and st_.kl_uniform > 2.5


def test_ramnet_layer_decodes_like_the_parallel_pass():
    torch.manual_seed(0)
    layer = RAMNetMemory(16, n_groups=2, group_size=4, topk=3, d_mem=6, chunk=4).double()
    x = torch.randn(2, 15, 16, dtype=torch.float64)
    with torch.no_grad():
        y, _ = layer(x)
        state, ys = None, []
        for t in range(15):
            y_t, state = layer(x[:, t:t + 1], state, use_cache=True)
            ys.append(y_t)
    assert_rel_close(torch.cat(ys, 1), y, 1e-12, "decode")


def test_cumsum_scan_step_and_split():
    g = torch.Generator().manual_seed(0)
    q, v = torch.randn(2, 30, 5, generator=g), torch.randn(2, 30, 5, generator=g)
    k = torch.rand(2, 30, 5, generator=g)
    out, _ = cumsum_scan(q, k, v)
    state, outs = None, []
    for t in range(30):
        o, state = cumsum_scan_step(q[:, t], k[:, t], v[:, t], state)
        outs.append(o)
    assert_rel_close(torch.stack(outs, 1), out, 1e-6, "step")
    q2 = q.clone()
    q2[:, 20:] = 0
    k2 = k.clone()
    k2[:, 20:] += 1
    assert torch.equal(cumsum_scan(q2, k2, v)[0][:, :20], out[:, :20])


def test_ramscan_block_trains_and_decodes():
    torch.manual_seed(0)
    block = RAMScanBlock(16, 32, n_groups=2, group_size=4, topk=2, d_mem=4, chunk=3)
    x = torch.randn(2, 10, 16)
    y, _ = block(x)
    y.square().mean().backward()
    assert all(p.grad is not None for p in block.parameters())


@pytest.mark.triton
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 5e-3)])
def test_ram_memory_triton_gather(triton_device, dtype, tol):
    idx, w, v, m0 = _ram_inputs(2, 21, 5, 17, 20, 3)
    def grads(impl, dt, device):
        xs = [x.detach().to(device, dt).clone().requires_grad_() for x in (w, v, m0)]
        out, _ = ram_memory(idx.to(device), *xs, chunk=4, decay=0.9, impl=impl)
        (out * torch.linspace(-1, 1, out.numel(), device=device, dtype=dt).view_as(out)).sum().backward()
        return [out] + [x.grad for x in xs]
    for name, a, b in zip(["reads", "dw", "dv", "dm0"], grads("triton", dtype, triton_device), grads("recurrent", torch.float64, "cpu")):
        assert_rel_close(a.detach().double().cpu(), b, tol, f"triton {dtype} {name}")


@pytest.mark.slow
def test_ram_memory_inside_a_compiled_model():
    "torch.compile runs the hand-written chunk loop eagerly (a graph break) and matches eager outputs and gradients."
    from memnb.presets import build
    torch.manual_seed(0)
    model = build("cpuflow-v97", n_layers=1, vocab_size=64)
    idx = torch.randint(0, 64, (2, 64))
    model(idx).square().mean().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    out = torch.compile(model)(idx)
    out.square().mean().backward()
    assert_rel_close(out, model(idx), 1e-5, "logits")
    for n, g in want.items():
        assert_rel_close(dict(model.named_parameters())[n].grad, g, 1e-4, n)
