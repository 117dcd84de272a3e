"""Generation: compiled decoding (one graph, no recompilation per position) gives the tokens of eager decoding and of
full recomputation; the length check; an interrupted generation returns what it made."""
import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from memnb.model import MemLM, MemLMConfig, generate, position_limit

CDM = {"n_slots": 4, "readout": "xattn", "decay": "slot+eta", "exclusive": True}
CORTEX = dict(window=6, mem_heads=2, mem_head_dim=8)


def tiny(mixer, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=50, d_model=32, n_layers=len(mixer) if isinstance(mixer, list) else 1, n_heads=4,
               n_kv_heads=2, d_ff=64, mixer=mixer, mixer_kwargs={"cdm": CDM, "cortex": CORTEX, "swa": {"window": 5}})
    return MemLM(MemLMConfig(**{**cfg, **kw})).eval()


def compiled_graphs(fn):
    "Run `fn` on a fresh dynamo state: (its result, graphs compiled, graph breaks)."
    torch._dynamo.reset()
    counters.clear()
    out = fn()
    return out, counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def check_one_graph(model, prompt_len=5, new=12):
    idx = torch.randint(0, model.config.vocab_size, (2, prompt_len), generator=torch.Generator().manual_seed(1))
    fast, graphs, breaks = compiled_graphs(lambda: generate(model, idx, new, compile=True))
    assert graphs == 1 and breaks == 0, (graphs, breaks)     # one graph for all 11 decode steps: no recompilation
    assert torch.equal(fast, generate(model, idx, new))
    assert torch.equal(fast, generate(model, idx, new, use_cache=False))
    # another prompt length with the same total: the same shapes, so the same graph
    other = torch.randint(0, model.config.vocab_size, (2, prompt_len + 3), generator=torch.Generator().manual_seed(2))
    again = generate(model, other, new - 3, compile=True)
    assert counters["stats"]["unique_graphs"] == 1
    assert torch.equal(again, generate(model, other, new - 3, use_cache=False))


def test_compiled_decoding_is_one_graph_and_exact():
    check_one_graph(tiny(["cortex", "attention+cdm"]))


def test_compiled_cpuflow_decoding_is_one_graph_across_chunks():
    "CPUFlow's block: the position code, the product-key top-k and the RAM-Net chunk closing all inside one graph."
    ram = {"d_scan": 16, "n_groups": 3, "group_size": 4, "topk": 4, "d_mem": 8, "chunk": 4}
    check_one_graph(tiny("ramscan", pos="cumstep", max_len=32, mixer_kwargs={"ramscan": ram}))   # 3 chunk ends


@pytest.mark.slow
@pytest.mark.parametrize("mixer", ["attention", "swa", "gated_deltanet", "pgr", "gated_recurrence", "cdm"])
def test_compiled_decoding_every_mixer(mixer):
    check_one_graph(tiny(mixer))


def test_position_limit_checked_before_decoding():
    model = tiny("cumscan", pos="cumstep", max_len=10)
    assert position_limit(model) == 10 and position_limit(tiny("attention")) is None
    with pytest.raises(ValueError, match="4 tokens \\+ 7 new tokens = 11 exceed the model's position limit of 10"):
        generate(model, torch.zeros(1, 4, dtype=torch.long), 7)
    assert generate(model, torch.zeros(1, 4, dtype=torch.long), 6).shape == (1, 10)


@pytest.mark.parametrize("use_cache", [True, False])
def test_interrupted_generation_returns_what_it_made(use_cache):
    model = tiny("attention")
    idx = torch.randint(0, 50, (2, 3))
    full = generate(model, idx, 10, use_cache=use_cache)
    def interrupt_at(n):
        def process(logits, tokens):
            if tokens.shape[1] >= n:
                raise KeyboardInterrupt
            return logits
        return process
    part = generate(model, idx, 10, use_cache=use_cache, processors=[interrupt_at(7)])
    assert torch.equal(part, full[:, :7])
