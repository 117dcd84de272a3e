"""Property and fault tests of `memnb.ramkv` (RAM-Net's key-value memory)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from memnb.core import assert_rel_close
from memnb.model import MemLM, MemLMConfig
from memnb.ramkv import RAMKVMemory, _compact, ram_kv, ram_kv_reference, ram_kv_step


def _inputs(B, T, k, N, Dv, seed, collide):
    g = torch.Generator().manual_seed(seed)
    qi, ki = torch.randint(0, N, (B, T, k), generator=g), torch.randint(0, N, (B, T, k), generator=g)
    if collide:   # few slots: many reads hit many writes, several writes per slot
        qi, ki = qi % 3, ki % 3
    f = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)
    return qi, f(B, T, k), ki, f(B, T, k), torch.randn(B, T, Dv, generator=g, dtype=torch.float64)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 12), st.integers(1, 4), st.integers(3, 40), st.integers(1, 5),
       st.integers(0, 10_000), st.booleans(), st.sampled_from(["recurrent", "chunk"]))
def test_every_path_equals_the_dense_reference(B, T, k, N, Dv, seed, collide, impl):
    qi, qw, ki, kw, v = _inputs(B, T, k, N, Dv, seed, collide)
    want, want_M = ram_kv_reference(qi, qw, ki, kw, v, N)
    out, M = ram_kv(qi, qw, ki, kw, v, N, impl=impl, output_final_state=True)
    assert_rel_close(out, want, 1e-11, f"{impl} out"); assert_rel_close(M, want_M, 1e-11, f"{impl} memory")
    assert_rel_close(ram_kv(qi, qw, ki, kw, v, N, impl=impl)[0], want, 1e-11, f"{impl} without state")
    split = T // 2   # any split through the state
    o1, st1 = ram_kv(qi[:, :split], qw[:, :split], ki[:, :split], kw[:, :split], v[:, :split], N, impl=impl, output_final_state=True)
    o2, _ = ram_kv(qi[:, split:], qw[:, split:], ki[:, split:], kw[:, split:], v[:, split:], N, impl=impl, initial_state=st1)
    assert_rel_close(torch.cat([o1, o2], 1), want, 1e-11, f"{impl} split")


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 10), st.integers(1, 4), st.integers(2, 50), st.integers(0, 10_000))
def test_compact_keeps_which_addresses_are_equal(B, T, k, N, seed):
    g = torch.Generator().manual_seed(seed)
    qi, ki = torch.randint(0, N, (B, T, k), generator=g), torch.randint(0, N, (B, T, k), generator=g)
    ql, kl, U = _compact(qi, ki, N)
    assert U <= min(N, 2 * T * k) and int(ql.max()) < U and int(kl.max()) < U and int(min(ql.min(), kl.min())) >= 0
    for b in range(B):   # same slot <=> same local id, within a sequence
        a, l = torch.cat([qi[b].flatten(), ki[b].flatten()]), torch.cat([ql[b].flatten(), kl[b].flatten()])
        assert torch.equal(a[:, None] == a[None, :], l[:, None] == l[None, :])


def test_gradients_of_both_paths_agree():
    qi, qw, ki, kw, v = _inputs(2, 9, 3, 5, 4, 1, collide=True)
    grads = []
    for impl in ("recurrent", "chunk"):
        xs = [x.clone().requires_grad_() for x in (qw, kw, v)]
        out = ram_kv(qi, xs[0], ki, xs[1], xs[2], 5, impl=impl)[0]
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([x.grad for x in xs])
    for a, b in zip(*grads):
        assert_rel_close(a, b, 1e-11, "gradient")


def test_decode_steps_touch_only_k_rows():
    qi, qw, ki, kw, v = _inputs(1, 6, 2, 1000, 3, 2, collide=False)
    M = torch.zeros(1, 1000, 3, dtype=torch.float64)
    for t in range(6):
        before = M.clone()
        ram_kv_step(qi[:, t], qw[:, t], ki[:, t], kw[:, t], v[:, t], M)
        assert int((M != before).any(-1).sum()) <= 2       # k = 2 rows written, nothing else
    assert_rel_close(M, ram_kv_reference(qi, qw, ki, kw, v, 1000)[1], 1e-12, "memory")


def test_bad_inputs_and_bf16_autocast():
    qi, qw, ki, kw, v = _inputs(1, 4, 2, 8, 3, 3, collide=False)
    with pytest.raises(ValueError, match="must lie in"):
        ram_kv(qi - 1, qw, ki, kw, v, 8)
    with pytest.raises(ValueError, match="`v` must have shape"):
        ram_kv(qi, qw, ki, kw, v[:, :3], 8)
    with pytest.raises(ValueError, match="initial_state"):
        ram_kv(qi, qw, ki, kw, v, 8, initial_state=torch.zeros(1, 7, 3, dtype=torch.float64))
    mem = RAMKVMemory(16, n_groups=2, group_size=4, topk=2)
    with torch.autocast("cpu", torch.bfloat16):
        y, _ = mem(torch.randn(2, 5, 16))
    assert y.shape == (2, 5, 16) and torch.isfinite(y.float()).all()


def test_a_memlm_with_a_million_slots_trains_a_step():
    lm = MemLM(MemLMConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, d_ff=64, mixer="ramkv", token_shift=True,
                           mixer_kwargs={"ramkv": {"n_groups": 5, "group_size": 16, "topk": 8}}))
    x = torch.randint(0, 64, (2, 32))
    lm(x).logsumexp(-1).mean().backward()
    assert lm.blocks[0].mixers[0].inner.n_slots == 2**20
    assert all(p.grad is not None for p in lm.parameters() if p.requires_grad)
