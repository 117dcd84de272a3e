"""The layer contract `memnb.model` relies on: every registered mixer's `forward(x, cache=None, *, use_cache=False)`
returns `(y, cache)`; a mixer names the extra inputs it takes in `reads` and leaves auxiliary losses in `aux`; the
model passes exactly those through, with no knowledge of the mechanism, also under `torch.compile`."""
import pytest
import torch
import torch.nn as nn
from torch._dynamo.utils import counters

from memnb.core import assert_rel_close
from memnb.model import MIXERS, BlockCache, MemLM, MemLMConfig, ModelCache

KW = {"cdm": {"n_slots": 4, "slot_input": "residual"}, "cortex": dict(window=4, mem_heads=2, mem_head_dim=4),
      "cumscan": dict(d_scan=8, chunk=4), "swa": {"window": 4},
      "ramscan": dict(d_scan=8, n_groups=2, group_size=4, topk=2, d_mem=8, chunk=4)}
CFG = dict(vocab_size=40, d_model=16, n_heads=2, d_ff=32, value_embeds=True)


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_every_mixer_returns_y_and_cache(name):
    torch.manual_seed(0)
    mixer = MIXERS[name](MemLMConfig(**CFG, n_layers=2, mixer=name), 1, dict(KW.get(name, {}))).double()
    x, res = torch.randn(2, 11, 16, dtype=torch.float64), torch.randn(2, 11, 16, dtype=torch.float64)
    ids = torch.randint(0, 40, (2, 11))
    inputs = {"residual": res, "ids": ids}
    extra = lambda t: {k: inputs[k][:, t] for k in getattr(mixer, "reads", ())}
    assert set(getattr(mixer, "reads", ())) <= set(inputs), mixer.reads
    with torch.no_grad():
        y, none = mixer(x, **extra(slice(None)))
        assert none is None and y.shape == x.shape                  # no cache unless asked for
        a, cache = mixer(x[:, :6], use_cache=True, **extra(slice(0, 6)))
        assert cache is not None
        b, cache = mixer(x[:, 6:], cache, **extra(slice(6, None)))  # a cache passed in: one comes back
        assert cache is not None
    assert_rel_close(torch.cat([a, b], 1), y, 1e-9, name)


class _Reader(nn.Module):
    "A mixer of no memnb mechanism: it reads the ids and reports an auxiliary loss."
    reads = ("ids",)

    def __init__(self, d):
        super().__init__()
        self.emb = nn.Embedding(40, d)

    def forward(self, x, cache=None, *, use_cache=False, ids=None):
        y = self.emb(ids)
        self.aux = {"ids_mean": ids.float().mean()}
        return y, ((cache or 0) + x.shape[1] if use_cache or cache is not None else None)


def test_model_passes_what_a_mixer_reads_and_collects_its_aux():
    MIXERS["_reader"] = lambda c, l, kw: _Reader(c.d_model)
    try:
        model = MemLM(MemLMConfig(**{**CFG, "value_embeds": False}, n_layers=2, mixer=["_reader", "cdm+_reader"],
                                  mixer_kwargs=KW))
        ids = torch.randint(0, 40, (3, 9))
        model(ids)
        # two _Reader layers summed, CDM's two losses beside them
        assert sorted(model.aux) == ["entropy", "ids_mean", "lbl"]
        torch.testing.assert_close(model.aux["ids_mean"], 2 * ids.float().mean())
        _, cache = model(ids, use_cache=True)
        assert isinstance(cache, ModelCache) and int(cache.pos) == 9
        assert isinstance(cache.layers[1], BlockCache) and cache.layers[0].mixers == [9]
    finally:
        del MIXERS["_reader"]


@pytest.mark.slow
def test_compiled_training_step_collects_aux():
    "torch.compile(model) (fullgraph=False): one graph, the aux losses of eager mode, gradients through them."
    torch.manual_seed(0)
    model = MemLM(MemLMConfig(**CFG, n_layers=2, mixer=["attention+cdm", "cortex"], mixer_kwargs=KW)).train()
    idx = torch.randint(0, 40, (2, 16))
    eager = model(idx)
    want = {k: v.detach() for k, v in model.aux.items()}
    torch._dynamo.reset()
    counters.clear()
    logits = torch.compile(model)(idx)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    torch.testing.assert_close(logits, eager)
    assert sorted(model.aux) == ["entropy", "lbl"]
    for k in want:
        torch.testing.assert_close(model.aux[k].detach(), want[k])
    model.zero_grad()
    model.aux["lbl"].backward()
    assert model.blocks[0].mixers[1].inner.router.weight.grad.abs().sum() > 0


def test_block_compiled_training_matches_eager_and_compiles_each_kind_once():
    "compile_blocks: alike blocks share one compiled graph; logits, aux and gradients as eager; undone after."
    from memnb.train import compile_blocks, eager_blocks
    torch.manual_seed(0)
    mixers = ["cortex"] * 5 + ["attention+cdm"]
    model = MemLM(MemLMConfig(**CFG, n_layers=6, mixer=mixers, mixer_kwargs=KW)).train()
    idx = torch.randint(0, 40, (2, 16))
    eager = model(idx)
    want = {k: v.detach() for k, v in model.aux.items()}
    eager.square().mean().backward()
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    torch._dynamo.reset()
    counters.clear()
    logits = compile_blocks(model)(idx)
    # six blocks of two kinds: a graph per kind (and one recompile at most), the five CORTEX blocks share theirs
    assert counters["frames"]["ok"] <= 3 and not counters["graph_break"], dict(counters["frames"])
    torch.testing.assert_close(logits, eager)
    for k in want:
        torch.testing.assert_close(model.aux[k].detach(), want[k])
    logits.square().mean().backward()
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None) == (g is None)
        if g is not None: torch.testing.assert_close(p.grad, g)
    eager_blocks(model)
    torch._dynamo.reset()                          # a block still compiled would be traced afresh now
    counters.clear()
    model(idx)
    assert counters["frames"]["total"] == 0        # eager again: nothing is traced


def test_compiled_training_returns_an_eager_model():
    "train(compile=\"blocks\") compiles the blocks for the run only; its losses follow the eager run's."
    from memnb.tasks import TaskData
    from memnb.train import TrainConfig, train
    data = TaskData.make("mqar", 32, 8, seq_len=16, n_kv=2, vocab_size=40)
    losses = {}
    for compiled in (False, "blocks"):
        torch.manual_seed(0)
        model = MemLM(MemLMConfig(**CFG, n_layers=2, mixer="cortex", mixer_kwargs=KW))
        cfg = TrainConfig(max_steps=3, eval_every=3, progress=False, precision="fp32", compile=compiled)
        losses[compiled] = [h["loss"] for h in train(model, data, cfg).history if "loss" in h]
        assert len(losses[compiled]) == 3                 # a loss per step, so the comparison compares something
        assert all(b._compiled_call_impl is None for b in model.blocks)
    torch.testing.assert_close(losses["blocks"], losses[False], rtol=1e-4, atol=1e-4)
