"""The hybrid mixers of `memnb.mixers`: gradients (float64 gradcheck through the chunk paths), every impl giving the
same outputs and gradients, and the Triton kernels inside them under the interpreter."""
import pytest
import torch

from memnb.core import assert_rel_close
from memnb.mixers import CortexMixer, CumScanMixer


def small(kind, impl, memory=True):
    torch.manual_seed(0)
    if kind == "cortex":
        return CortexMixer(16, 2, window=4, mem_heads=2, mem_head_dim=4, impl=impl, chunk_size=4).double()
    return CumScanMixer(16, 8, memory=memory, n_groups=2, group_size=3, topk=2, d_mem=4, chunk=3, impl=impl).double()


@pytest.mark.parametrize("kind,memory", [("cortex", True), ("cumscan", True), ("cumscan", False)])
def test_gradcheck(kind, memory):
    mix = small(kind, "chunk", memory)
    x = torch.randn(1, 7, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: mix(x)[0], (x,), eps=1e-6, atol=1e-5)


def _outputs_and_grads(mix, x):
    x = x.clone().requires_grad_(True)
    y = mix(x)[0]
    y.backward(torch.cos(torch.arange(y.numel(), dtype=y.dtype, device=y.device)).view_as(y))   # on y's device
    return [y.detach(), x.grad] + [p.grad for p in mix.parameters()]


@pytest.mark.parametrize("kind", ["cortex", "cumscan"])
def test_chunk_equals_recurrent(kind):
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    ref, fast = _outputs_and_grads(small(kind, "recurrent"), x), _outputs_and_grads(small(kind, "chunk"), x)
    for i, (a, b) in enumerate(zip(fast, ref)):
        assert_rel_close(a, b, 1e-10, f"{kind} chunk vs recurrent, tensor {i}")


@pytest.mark.triton
@pytest.mark.parametrize("kind", ["cortex", "cumscan"])
def test_triton_equals_chunk(kind, triton_device):
    x = torch.randn(2, 21, 16, dtype=torch.float32, device=triton_device)
    ref, tri = small(kind, "chunk").float().to(triton_device), small(kind, "triton").float().to(triton_device)
    if kind == "cortex":
        ref.chunk_size = tri.chunk_size = 16   # the Triton delta-rule kernels take power-of-two chunks >= 16
    ref, tri = _outputs_and_grads(ref, x), _outputs_and_grads(tri, x)
    for i, (a, b) in enumerate(zip(tri, ref)):
        assert_rel_close(a, b, 1e-4, f"{kind} triton vs chunk, tensor {i}")


@pytest.mark.parametrize("memory", [True, False])
def test_cumscan_mixer_is_cpuflows_formula(memory):
    "The stacked matmuls give W_out(W_m s + W_mp W_read r), with each part from its own named projection, and its gradients."
    from memnb.cumscan import cumsum_scan
    from memnb.ramnet import ram_memory
    mix = small("cumscan", "chunk", memory)
    x = torch.randn(2, 11, 16, dtype=torch.float64)

    def formula(x):
        q, k, v = mix.proj(x).chunk(3, -1)
        merged = mix.mix(cumsum_scan(q, torch.sigmoid(k), torch.tanh(v), mix.eps)[0])
        if memory:
            idx, w = mix.address(x)
            gate, val = mix.write(x).chunk(2, -1)
            reads, _ = ram_memory(idx, w, torch.sigmoid(gate) * torch.tanh(val), mix.memory0, chunk=mix.chunk,
                               decay=mix.decay, impl="recurrent")
            merged = merged + mix.mem_proj(mix.read(reads))
        return mix.out(merged)

    results = []
    for f in (lambda x: mix(x)[0], formula):
        mix.zero_grad()
        y = f(x)
        y.square().sum().backward()
        results.append([y] + [p.grad.clone() for p in mix.parameters()])
    for i, (a, b) in enumerate(zip(*results)):
        assert_rel_close(a, b, 1e-12, f"output" if i == 0 else f"gradient {i}")
