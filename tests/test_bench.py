"""The benchmarks share one result schema {setting, seconds, peak_mib, baseline, ratio}; the preset benchmarks measure
what they say (tokens checked, the baseline's ratio is 1, compile time counted apart)."""
import math

import pytest
import torch

from memnb.bench import (_interleaved, _result, bench_generate, bench_train, bench_train_step, markdown_table, run_all,
                         summary_rows)
from memnb.model import MemLM, MemLMConfig

SCHEMA = {"setting", "seconds", "peak_mib", "baseline", "ratio"}


def tiny(mixer="cortex"):
    torch.manual_seed(0)
    return MemLM(MemLMConfig(vocab_size=40, d_model=32, n_layers=1, n_heads=4, d_ff=32, mixer=mixer,
                             mixer_kwargs={"cortex": dict(window=4, mem_heads=2, mem_head_dim=8)}))


def check_schema(r):
    assert SCHEMA <= set(r), set(r)
    assert set(r["seconds"]) == set(r["ratio"]) == set(r["peak_mib"])
    assert r["baseline"] in r["seconds"] and r["ratio"][r["baseline"]] == 1.0
    for n, s in r["seconds"].items():
        assert s > 0 and math.isclose(r["ratio"][n], r["seconds"][r["baseline"]] / s)


def test_result_and_interleaving():
    order = []
    first, med = _interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=2)
    assert order == ["a", "b", "a", "b", "a", "b"] and set(first) == set(med) == {"a", "b"}
    r = _result({}, {"x": 2.0, "y": 1.0}, {"x": 1.0, "y": 2.0}, "x", extra=1)
    check_schema(r)
    assert r["ratio"]["y"] == 2.0 and r["extra"] == 1


def test_every_mechanism_benchmark_has_the_schema():
    res = run_all(quick=True, threads=None)
    for r in res.values():
        check_schema(r)
    rows = summary_rows({**res, "machine": {"cpu": "x"}})
    assert len(rows) == sum(len(r["seconds"]) for r in res.values())
    assert all("the speed of" in note for *_, note in rows)
    assert markdown_table(res).count("\n") == len(rows) + 1


@pytest.mark.parametrize("mixer", ["cortex", "attention"])
def test_bench_generate_eager_and_full(mixer):
    r = bench_generate("tiny", new_tokens=5, compile=(False,), repeats=1, prompt_len=3, full_recompute=True,
                       threads=None, model=tiny(mixer).eval())
    check_schema(r)
    assert set(r["seconds"]) == {"eager", "full recompute"} and r["baseline"] == "eager"
    assert r["identical"] and all(v > 0 for v in r["peak_mib"].values())
    assert r["tokens_per_s"]["eager"] == pytest.approx(5 / r["seconds"]["eager"])


def test_bench_generate_compiled():
    r = bench_generate("tiny", new_tokens=4, compile=(False, True), repeats=1, prompt_len=3, threads=None,
                       model=tiny(), memory=False)
    assert set(r["seconds"]) == {"eager", "compiled"} and r["identical"]
    assert r["first_seconds"]["compiled"] >= r["compile_seconds"]["compiled"] >= 0
    assert r["compile_seconds"]["eager"] is None   # only a compiled mode has a compile time


def test_bench_train_precisions():
    r = bench_train("tiny", compile=(False,), B=2, T=8, steps=2, repeats=1, threads=None, model=tiny())
    check_schema(r)
    assert set(r["seconds"]) == {"fp32 eager", "bf16 eager"} and r["baseline"] == "fp32 eager"
    assert r["tokens_per_s"]["bf16 eager"] == pytest.approx(16 / r["seconds"]["bf16 eager"])
    assert r["setting"]["steps"] == 2 and "cores" in r["setting"]["cpu"]
    assert r["compile_seconds"] == {"fp32 eager": None, "bf16 eager": None}


def test_bench_train_step_models():
    r = bench_train_step({"a": tiny("attention"), "b": tiny("cortex")}, B=1, T=8, repeats=1, threads=None)
    check_schema(r)
    assert r["baseline"] == "a"


@pytest.mark.slow
def test_bench_train_compiled():
    r = bench_train("tiny", precisions=("fp32",), compile=(False, True), B=2, T=16, steps=1, repeats=1, threads=None,
                    model=tiny(), memory=False)
    assert set(r["seconds"]) == {"fp32 eager", "fp32 compiled"} and r["compile_seconds"]["fp32 compiled"] > 0
