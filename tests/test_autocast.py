"""bfloat16 autocast on the CPU: every preset and every functional core runs forward and backward under
`torch.autocast("cpu", torch.bfloat16)` and stays close to float32.

"Close" is the relative RMS error `memnb.core.rel_err(x, ref) = ||x - ref|| / ||ref||` of the bf16-autocast
result against the float32 one: of the logits, of the loss, and of all parameter gradients concatenated into one
vector (so that a tiny gradient with a large relative error does not dominate).
"""
import pytest
import torch
import torch.nn.functional as F

from memnb.cdm import dock, dock_readout, final_slots, slot_xattn
from memnb.core import rel_err
from memnb.cumscan import cumsum_scan
from memnb.delta_rule import DeltaNet, delta_rule, hebbian_rule
from memnb.presets import PRESETS, build
from memnb.ramnet import product_topk, ram_memory
from memnb.scan import linear_scan

TOL = 5e-2
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)
# cpuflow-v97's gradient differs from float32 by 3.4-5.4e-2 over seeds 0-2 with its mechanisms in float32 as well:
# its ReLU FFN and the bf16 backward matmuls of a 64-wide model, not a mechanism (the same holds without its memory).
GRAD_TOL = {"cpuflow-v97": 1e-1}


def _train_pass(model, x, autocast: bool):
    model.zero_grad(set_to_none=True)
    with torch.autocast(**BF16, enabled=autocast):
        logits = model(x[:, :-1])
    loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return logits.detach().float(), loss.detach(), grads


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_forward_backward_under_bf16_autocast(name):
    torch.manual_seed(0)
    model = build(name, vocab_size=61, n_layers=2)
    x = torch.randint(0, 61, (2, 49), generator=torch.Generator().manual_seed(1))
    logits32, loss32, grads32 = _train_pass(model, x, autocast=False)
    logits16, loss16, grads16 = _train_pass(model, x, autocast=True)
    assert torch.isfinite(logits16).all() and torch.isfinite(grads16).all()
    assert rel_err(logits16, logits32) <= TOL, rel_err(logits16, logits32)
    assert rel_err(loss16, loss32) <= TOL
    assert rel_err(grads16, grads32) <= GRAD_TOL.get(name, TOL), rel_err(grads16, grads32)


def _leaves(*xs):
    return [x.detach().clone().requires_grad_() for x in xs]


def _compare(fn, inputs, bf16_at, tol=TOL):
    """Run `fn(*inputs)` in float32 and under bf16 autocast with the inputs at positions `bf16_at` in bf16 (what the
    projections feeding a core produce under autocast); outputs and input gradients within `tol`."""
    def run(autocast):
        xs = _leaves(*inputs)
        fed = [x.bfloat16() if autocast and i in bf16_at else x for i, x in enumerate(xs)]
        with torch.autocast(**BF16, enabled=autocast):
            out = fn(*fed)
        w = torch.linspace(-1, 1, out.numel()).view_as(out)
        (out.float() * w).sum().backward()
        return out.detach().float(), [x.grad for x in xs]
    (o32, g32), (o16, g16) = run(False), run(True)
    assert rel_err(o16, o32) <= tol, ("output", rel_err(o16, o32))
    for i, (a, b) in enumerate(zip(g16, g32)):
        if b is None:   # an input the function ignores (the decays of an ungated rule)
            assert a is None
            continue
        assert torch.isfinite(a).all() and rel_err(a, b) <= tol, (i, rel_err(a, b))


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_linear_scan_under_autocast():
    a, b, h0 = torch.sigmoid(_rand(2, 70, 8, seed=1) + 2), _rand(2, 70, 8, seed=2), _rand(2, 8, seed=3)
    _compare(lambda a, b, h0: linear_scan(a, b, h0)[0], (a, b, h0), bf16_at={0, 1, 2})   # accumulated in float32
    with torch.autocast(**BF16):
        h = linear_scan(a.bfloat16(), b.bfloat16(), h0.bfloat16())[0]
    assert h.dtype == torch.bfloat16


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("rule", [delta_rule, hebbian_rule])
@pytest.mark.parametrize("T", [1, 12, 70])   # one step, the recurrent form, the chunked form
def test_delta_rules_under_autocast(rule, gated, T):
    q, v = _rand(2, T, 2, 16, seed=1), _rand(2, T, 2, 16, seed=2)
    k, beta = F.normalize(_rand(2, T, 2, 16, seed=3), dim=-1), torch.sigmoid(_rand(2, T, 2, seed=4))
    g, S0 = -F.softplus(_rand(2, T, 2, seed=5)), _rand(2, 2, 16, 16, seed=6)
    fn = lambda q, k, v, beta, g, S0: rule(q, k, v, beta, g if gated else None, initial_state=S0)[0]
    _compare(fn, (q, k, v, beta, g, S0), bf16_at={0, 1, 2, 3})   # decays stay float32, as a layer passes them
    with torch.autocast(**BF16):
        o, S = rule(q.bfloat16(), k.bfloat16(), v.bfloat16(), beta.bfloat16(), g if gated else None,
                    initial_state=S0, output_final_state=True)
    assert (o.dtype, S.dtype) == (torch.bfloat16, torch.float32)   # the decode state is kept in float32


@pytest.mark.parametrize("gated", [False, True])
def test_deltanet_layer_under_autocast(gated):
    torch.manual_seed(0)
    layer = DeltaNet(32, 2, 16, gated=gated)
    x = _rand(2, 70, 32)
    _compare(lambda x: layer(x)[0], (x,), bf16_at=())


@pytest.mark.parametrize("exclusive", [False, True])
def test_dock_readout_under_autocast(exclusive):
    v, p = _rand(2, 70, 16, seed=1), torch.softmax(_rand(2, 70, 5, seed=2), -1)
    write = 0.5 * p
    s0 = _rand(5, 16, seed=3)
    fn = lambda v, write, keep, read, s0: dock_readout(v, write, keep, read, s0, exclusive=exclusive)[0]
    _compare(fn, (v, write, 1 - write, p, s0), bf16_at={0, 1, 2, 3})   # the slots may stay float32
    _compare(lambda v, w, k, s0: dock(v, w, k, s0)[0], (v, write, 1 - write, s0), bf16_at={0, 1, 2, 3})


@pytest.mark.parametrize("exclusive", [False, True])
def test_slot_cross_attention_under_autocast(exclusive):
    g = torch.Generator().manual_seed(7)
    q, vk, vv = (torch.randn(2, 70, 2, 2, 4, generator=g), torch.randn(2, 70, 2, 4, generator=g),
                 torch.randn(2, 70, 2, 4, generator=g))
    p = torch.softmax(torch.randn(2, 70, 5, generator=g), -1)
    s0k, s0v = torch.randn(2, 5, 2, 4, generator=g), torch.randn(2, 5, 2, 4, generator=g)
    fn = lambda q, vk, vv, w, k, s0k, s0v: slot_xattn(q, vk, vv, w, k, s0k, s0v, exclusive=exclusive, scale=0.5)
    _compare(fn, (q, vk, vv, 0.5 * p, 1 - 0.5 * p, s0k, s0v), bf16_at=set(range(7)))
    v, s0 = torch.randn(2, 70, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    _compare(lambda v, w, k, s0: final_slots(v, w, k, s0), (v, 0.5 * p, 1 - 0.5 * p, s0), bf16_at=set(range(4)))


def test_cumsum_scan_under_autocast():
    q, k, v = _rand(2, 70, 16, seed=1), torch.sigmoid(_rand(2, 70, 16, seed=2)), torch.tanh(_rand(2, 70, 16, seed=3))
    _compare(lambda q, k, v: cumsum_scan(q, k, v)[0], (q, k, v), bf16_at={0, 1, 2})


def test_ram_memory_and_addressing_under_autocast():
    logits = _rand(2, 70, 3, 8, seed=1)
    with torch.autocast(**BF16):
        idx16, w16 = product_topk(logits.bfloat16(), 8)
    idx, w = product_topk(logits.bfloat16().float(), 8)   # the same scores: the same slots, the same weights
    assert torch.equal(idx16, idx) and rel_err(w16.float(), w) <= TOL
    vals, m0 = torch.tanh(_rand(2, 70, 16, seed=2)), 0.01 * _rand(512, 16, seed=3)
    _compare(lambda w, vals, m0: ram_memory(idx, w, vals, m0, chunk=8)[0], (w, vals, m0), bf16_at={0, 1})
