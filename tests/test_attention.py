"""Attention: decode caches equal the parallel pass for any window and split; causality; GQA."""
import torch
from hypothesis import given, settings, strategies as st

from memnb.attention import Attention, attend
from memnb.core import assert_rel_close


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 30), st.sampled_from([None, 1, 2, 5, 64]), st.lists(st.integers(1, 9), min_size=1, max_size=4),
       st.sampled_from([(4, 4), (4, 2), (4, 1)]), st.integers(0, 999))
def test_cache_pieces_equal_parallel(T, window, cuts, heads, seed):
    torch.manual_seed(seed)
    att = Attention(16, *heads, window=window).double()
    x = torch.randn(2, T, 16, dtype=torch.float64)
    with torch.no_grad():
        full, _ = att(x)
        outs, cache, t = [], None, 0
        for c in cuts + [T]:
            end = min(T, t + c)
            if end > t:
                y, cache = att(x[:, t:end], cache, use_cache=True)
                outs.append(y)
            t = end
    assert_rel_close(torch.cat(outs, 1), full, 1e-12, "pieces")
    if window is not None:
        assert cache.k.shape[1] == window


def test_gqa_equals_repeated_heads_and_reference():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(1, 12, 6, 8, generator=g), torch.randn(1, 12, 2, 8, generator=g), torch.randn(1, 12, 2, 8, generator=g)
    p = torch.arange(12)
    out = attend(q, k, v, p, p, window=5)
    rep = attend(q, k.repeat_interleave(3, 2), v.repeat_interleave(3, 2), p, p, window=5, reference=True)
    assert_rel_close(out, rep, 1e-5, "gqa")


def test_window_limits_what_is_seen():
    torch.manual_seed(0)
    att = Attention(16, 2, window=3)
    x = torch.randn(1, 20, 16)
    y = att(x)[0]
    x2 = x.clone()
    x2[:, 5] += 3.0
    y2 = att(x2)[0]
    changed = (y2 - y).abs().amax(-1)[0] > 1e-6
    assert changed[5:8].all() and not changed[:5].any() and not changed[8:].any()


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.sampled_from([None, 1, 3, 64]), st.integers(0, 999))
def test_preallocated_cache_decodes_like_parallel(prompt, new, window, seed):
    "A prompt's cache preallocated to the whole length, then one token at a time: the shapes never change, outputs equal."
    torch.manual_seed(seed)
    att = Attention(16, 4, 2, window=window).double()
    x = torch.randn(2, prompt + new, 16, dtype=torch.float64)
    with torch.no_grad():
        full, _ = att(x)
        y0, cache = att(x[:, :prompt], use_cache=True)
        cache = cache.preallocate(prompt + new)
        shape, outs = cache.k.shape, [y0]
        for t in range(prompt, prompt + new):
            y, cache = att(x[:, t:t + 1], cache)
            assert cache.k.shape == shape and cache.fixed and cache.next_pos.ndim == 0
            outs.append(y)
    assert_rel_close(torch.cat(outs, 1), full, 1e-12, "preallocated decode")
    assert int(cache.next_pos) == prompt + new
    assert shape[1] == (prompt + new if window is None else window)
