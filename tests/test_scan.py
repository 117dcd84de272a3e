"""Property-based and integration tests of `memnb.scan` beyond the notebook's inline examples."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from memnb.core import assert_rel_close
from memnb.scan import linear_scan, linear_scan_step

shapes = st.tuples(st.integers(1, 3),                               # B
                   st.integers(1, 150),                             # T (1, ragged, several chunks)
                   st.lists(st.integers(1, 4), min_size=0, max_size=2))  # trailing dims


def _inputs(B, T, rest, seed, dtype=torch.float64, gate="uniform"):
    g = torch.Generator().manual_seed(seed)
    shape = (B, T, *rest)
    a = {"uniform": lambda: torch.rand(shape, generator=g, dtype=dtype),
         "signed": lambda: 2 * torch.rand(shape, generator=g, dtype=dtype) - 1,
         "sparse-resets": lambda: torch.rand(shape, generator=g, dtype=dtype) * (torch.rand(shape, generator=g) > 0.2)}[gate]()
    b = torch.randn(shape, generator=g, dtype=dtype)
    h0 = torch.randn((B, *rest), generator=g, dtype=dtype)
    return a, b, h0


@settings(max_examples=60, deadline=None)
@given(shapes, st.sampled_from([2, 3, 8, 64]), st.sampled_from(["uniform", "signed", "sparse-resets"]),
       st.booleans(), st.integers(0, 2**16))
def test_chunk_matches_reference(shape, chunk, gate, with_h0, seed):
    B, T, rest = shape
    a, b, h0 = _inputs(B, T, rest, seed, gate=gate)
    h0 = h0 if with_h0 else None
    ref = linear_scan(a, b, h0, impl="recurrent")[0]
    assert_rel_close(linear_scan(a, b, h0, impl="chunk", chunk_size=chunk)[0], ref, 1e-12, "chunk")


@settings(max_examples=30, deadline=None)
@given(shapes, st.integers(0, 2**16), st.data())
def test_split_and_step_equal_one_pass(shape, seed, data):
    B, T, rest = shape
    a, b, h0 = _inputs(B, T, rest, seed)
    full = linear_scan(a, b, h0, chunk_size=4)[0]
    cut = data.draw(st.integers(1, T))
    first = linear_scan(a[:, :cut], b[:, :cut], h0, chunk_size=4)[0]
    parts = [first] + ([linear_scan(a[:, cut:], b[:, cut:], first[:, -1], chunk_size=4)[0]] if cut < T else [])
    assert_rel_close(torch.cat(parts, 1), full, 1e-12, "split")
    state = h0
    for t in range(T):
        state = linear_scan_step(a[:, t], b[:, t], state)
    assert_rel_close(state, full[:, -1], 1e-12, "step")


@settings(max_examples=30, deadline=None)
@given(shapes, st.integers(0, 2**16), st.data())
def test_causal(shape, seed, data):
    B, T, rest = shape
    a, b, h0 = _inputs(B, T, rest, seed)
    t = data.draw(st.integers(0, T - 1))
    a2, b2 = a.clone(), b.clone()
    a2[:, t:] = torch.rand_like(a2[:, t:]); b2[:, t:] += 1.0
    h, h2 = linear_scan(a, b, h0, chunk_size=4)[0], linear_scan(a2, b2, h0, chunk_size=4)[0]
    assert torch.equal(h[:, :t], h2[:, :t])


@pytest.mark.parametrize("T,chunk", [(1, 2), (5, 2), (33, 4), (70, 8)])
def test_gradcheck_chunk(T, chunk):
    a, b, h0 = (x.requires_grad_() for x in _inputs(2, T, [3], T))
    f = lambda a, b, h0: linear_scan(a, b, h0, impl="chunk", chunk_size=chunk)[0]
    assert torch.autograd.gradcheck(f, (a, b, h0))
    assert torch.autograd.gradcheck(lambda a, b: linear_scan(a, b, impl="chunk", chunk_size=chunk)[0], (a, b))


def test_gradcheck_reference():
    a, b, h0 = (x.requires_grad_() for x in _inputs(2, 9, [2], 0))
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0, impl="recurrent")[0], (a, b, h0))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_chunk_low_precision_and_grads(dtype, tol):
    a, b, h0 = _inputs(2, 200, [16], 3)
    dh = torch.randn_like(b)
    def run(impl, dt):
        x = [t.to(dt).requires_grad_() for t in (a, b, h0)]
        (linear_scan(*x, impl=impl)[0] * dh.to(dt)).sum().backward()
        return [linear_scan(*x, impl=impl)[0].detach()] + [t.grad for t in x]
    for got, ref, what in zip(run("chunk", dtype), run("recurrent", torch.float64), ["h", "da", "db", "dh0"]):
        assert got.dtype == dtype
        assert_rel_close(got.double(), ref, tol, f"{dtype} {what}")


def test_only_some_inputs_require_grad():
    a, b, h0 = _inputs(2, 40, [3], 1)
    b.requires_grad_()
    linear_scan(a, b, h0, chunk_size=4)[0].sum().backward()
    b_ref = b.detach().clone().requires_grad_()
    linear_scan(a, b_ref, h0, impl="recurrent")[0].sum().backward()
    assert_rel_close(b.grad, b_ref.grad, 1e-12, "db")


def test_non_contiguous_and_expanded_inputs():
    a, b, h0 = _inputs(2, 50, [4, 3], 4)
    at, bt = a.transpose(2, 3), b.transpose(2, 3)  # non-contiguous views
    assert_rel_close(linear_scan(at, bt, h0.transpose(1, 2))[0], linear_scan(at.contiguous(), bt.contiguous(), h0.transpose(1, 2).contiguous(), impl="recurrent")[0], 1e-12, "views")
    shared = a[..., :1].expand_as(b)  # one gate per row, expanded explicitly by the caller
    assert_rel_close(linear_scan(shared, b)[0], linear_scan(shared.contiguous(), b, impl="recurrent")[0], 1e-12, "expanded")


@pytest.mark.parametrize("bad,match", [
    (lambda a, b, h0: linear_scan(a[:, :-1], b)[0], r"`a` must have shape \[B, T, \.\.\.\] like `b`"),
    (lambda a, b, h0: linear_scan(a[..., :1], b)[0], r"`a` must have shape"),          # no silent broadcast
    (lambda a, b, h0: linear_scan(a.float(), b)[0], r"`a` must have the dtype of `b`"),
    (lambda a, b, h0: linear_scan(a.long(), b.long())[0], r"`b` must have a floating dtype"),
    (lambda a, b, h0: linear_scan(a[0, 0], b[0, 0])[0], r"at least 2 dimensions"),
    (lambda a, b, h0: linear_scan(a, b, h0[:1])[0], r"`initial_state` must have shape \[B, \.\.\.\] = \(2, 3\)"),
    (lambda a, b, h0: linear_scan(a, b, h0.float())[0], r"`initial_state` must have the dtype of `b`"),
    (lambda a, b, h0: linear_scan(a, b.numpy())[0], r"`b` must be a torch.Tensor"),
    (lambda a, b, h0: linear_scan(a, b, impl="cuda")[0], r"impl must be 'auto' or one of"),
])
def test_bad_input_raises_clear_errors(bad, match):
    a, b, h0 = _inputs(2, 6, [3], 0)
    with pytest.raises((ValueError, TypeError), match=match):
        bad(a, b, h0)


@pytest.mark.triton
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 5e-3)])
@pytest.mark.parametrize("T,rest", [(1, [5]), (17, [2, 3]), (40, [70])])
def test_triton_matches_reference(triton_device, dtype, tol, T, rest):
    a, b, h0 = (x.to(triton_device) for x in _inputs(2, T, rest, T, dtype=torch.float64))
    dh = torch.randn_like(b)
    def run(impl, dt):
        x = [t.to(dt).requires_grad_() for t in (a, b, h0)]
        h = linear_scan(*x, impl=impl)[0]
        (h * dh.to(dt)).sum().backward()
        return [h.detach()] + [t.grad for t in x]
    for got, ref, what in zip(run("triton", dtype), run("recurrent", torch.float64), ["h", "da", "db", "dh0"]):
        assert got.dtype == dtype
        assert_rel_close(got.double(), ref, tol, f"triton {dtype} {what}")


@pytest.mark.triton
def test_triton_without_initial_state_and_resets(triton_device):
    a, b, _ = (x.to(triton_device) for x in _inputs(3, 37, [9], 5, dtype=torch.float32, gate="sparse-resets"))
    assert_rel_close(linear_scan(a, b, impl="triton")[0], linear_scan(a, b, impl="recurrent")[0], 1e-5, "triton")
