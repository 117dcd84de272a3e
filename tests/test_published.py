"""Published checkpoints of the DuoNeural models and CPUFlow v9.7 against the published-code fixtures: logits,
round trips, strict loading errors, refusing pickled payloads, the full-size mappings and `convert`."""
import argparse
import pickle
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from memnb.model import load
from memnb.presets import build
from memnb.published import (add_convert_arguments, convert, from_published, load_mapped, published_model,
                             read_checkpoint, resolve_config, run_convert_cli, to_published)

from published_fixtures import fixture, needs_fixtures

pytestmark = needs_fixtures

MODELS = ["gqa-baseline", "cdm-v2", "cdm-v3", "cpuflow-v97"]


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("perturbed", [False, True], ids=["init", "perturbed"])
@pytest.mark.parametrize("name", MODELS)
def test_float64_logits(name, perturbed):
    sd, cfg, tokens, expected = fixture(name, perturbed)
    for config in (cfg, None):    # the fixture's config, and the one from the shapes + published defaults
        model = from_published(name, sd, config=config).double()
        with torch.no_grad():
            assert rel(model(tokens), expected["logits_float64"]) < 1e-9, (name, config is None)


@pytest.mark.parametrize("name", MODELS)
def test_float32_logits(name):
    sd, cfg, tokens, expected = fixture(name)
    with torch.no_grad():
        assert rel(from_published(name, sd, config=cfg)(tokens), expected["logits"]) < 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_shapes_determine_the_fixture_config(name):
    sd, cfg, _, _ = fixture(name)
    spec = published_model(name)
    inferred = spec.infer_config(sd)
    assert inferred and all(cfg[k] == v for k, v in inferred.items()), inferred
    resolved = resolve_config(spec, sd)
    drop = lambda c: {k: v for k, v in c.items() if k != "dropout"}     # not in the shapes; inference only
    assert drop(resolved) == drop(cfg)


@pytest.mark.parametrize("perturbed", [False, True], ids=["init", "perturbed"])
@pytest.mark.parametrize("name", MODELS)
def test_round_trip_is_the_identity(name, perturbed):
    sd, cfg, _, _ = fixture(name, perturbed)
    back = to_published(from_published(name, sd), name)
    assert back.keys() == sd.keys()
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


@pytest.mark.parametrize("name", MODELS)
def test_memnb_model_handed_back(name):
    "A model built (and trained) in memnb goes to the published names and comes back computing the same."
    small = dict(vocab_size=61, n_layers=2) if name == "cpuflow-v97" else \
        dict(vocab_size=61, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_ff=48)
    model = build(name, **small).eval()
    with torch.no_grad():
        for p in model.parameters(): p.add_(0.05 * torch.randn_like(p))   # move every gain off 1
    sd = to_published(model, name)
    again = from_published(name, sd)
    x = torch.randint(0, 61, (2, 40))
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_dropped_tensors_are_named_with_reasons():
    sd, _, _, _ = fixture("cdm-v3")
    model = from_published("cdm-v3", sd)
    rope = {k for k in sd if k.endswith((".rope.cos", ".rope.sin"))}
    assert set(model.published_dropped) == {"head.weight"} | rope
    assert "tied" in model.published_dropped["head.weight"] and all(model.published_dropped.values())
    sd, _, _, _ = fixture("cpuflow-v97")
    assert from_published("cpuflow-v97", sd).published_dropped == {}


class _Payload:
    def __init__(self, path): self.path = path
    def __reduce__(self): return (exec, (f"open({self.path!r}, 'w').close()",))


def test_pickled_payload_is_refused_without_running(tmp_path):
    marker, pt = tmp_path / "created_by_unpickling", tmp_path / "evil.pt"
    pickle.loads(pickle.dumps(_Payload(str(tmp_path / "control"))))   # a plain unpickler runs it
    assert (tmp_path / "control").exists()
    sd, _, _, _ = fixture("cpuflow-v97")
    torch.save({"model": sd, "step": 1, "hook": _Payload(str(marker))}, pt)
    with pytest.raises(ValueError, match="refuses to unpickle"):
        from_published("cpuflow-v97", pt)
    with pytest.raises(ValueError, match="refuses to unpickle"):
        convert("cpuflow-v97", pt, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_published_save_formats(tmp_path):
    sd, cfg, tokens, expected = fixture("cdm-v2")
    stored = {**cfg, "model_type": "cdm", "n_params": 1}      # DuoNeural's config carries extra keys
    torch.save({"step": 3, "model_state": sd, "val_loss": 1.5, "config": stored}, tmp_path / "duo.pt")
    model = from_published("cdm-v2", tmp_path / "duo.pt")
    assert model.published_config["entropy_reg"] == cfg["entropy_reg"]
    with torch.no_grad():
        assert rel(model.double()(tokens), expected["logits_float64"]) < 1e-9
    sd, _, tokens, expected = fixture("cpuflow-v97")
    torch.save({"model": sd, "step": 10, "val_ppl": 9.9, "n_params": 5}, tmp_path / "cpuflow_v97_best.pt")
    with torch.no_grad():
        assert rel(from_published("cpuflow-v97", tmp_path / "cpuflow_v97_best.pt").double()(tokens),
                   expected["logits_float64"]) < 1e-9
    with pytest.raises(ValueError, match="no state dict"):
        read_checkpoint({"step": 1, "val": 2.0})
    with pytest.raises(ValueError, match="expected .safetensors"):
        (tmp_path / "w.npz").write_bytes(b"x"); read_checkpoint(tmp_path / "w.npz")


def test_bf16_and_wrapped_checkpoints_load():
    "A checkpoint saved in bfloat16 (its RoPE tables rounded) or from a compiled/DDP model loads."
    sd, cfg, tokens, expected = fixture("cdm-v3")
    half = {f"_orig_mod.{k}": v.bfloat16() for k, v in sd.items()}
    model = from_published("cdm-v3", {"model_state": half, "config": cfg})
    ref = from_published("cdm-v3", {k: v.bfloat16() for k, v in sd.items()})
    with torch.no_grad():
        assert torch.equal(model(tokens), ref(tokens))
        assert 1e-5 < rel(model(tokens), expected["logits"]) < 1e-2     # bfloat16 weights: close, not equal


def test_stored_config_contradicting_shapes_is_an_error(tmp_path):
    sd, cfg, _, _ = fixture("cdm-v3")
    with pytest.raises(ValueError, match="d_model=96 but the tensors say 64"):
        from_published("cdm-v3", {"model_state": sd, "config": {**cfg, "d_model": 96}})
    with pytest.raises(ValueError, match="not published config fields"):
        from_published("cdm-v3", sd, config={"d_modle": 64})


def test_undeterminable_config_is_named():
    sd, _, _, _ = fixture("gqa-baseline")
    bare = {k: v for k, v in sd.items() if ".rope." not in k}    # without the RoPE buffers: no n_heads
    spec = published_model("gqa-baseline")
    spec = replace(spec, defaults={**spec.defaults, "n_heads": None, "n_kv_heads": None})
    with pytest.raises(ValueError, match=r"cannot determine \['n_heads', 'n_kv_heads'\]"):
        resolve_config(spec, bare)
    # with the published defaults (8 heads) the 64-wide fixture's 4 heads are not what its q/k shapes need:
    with pytest.raises(ValueError, match=r"qkv_proj.weight .*has shape"):
        from_published("gqa-baseline", bare, config={"n_heads": 4, "n_kv_heads": 4})


@pytest.mark.parametrize("name", ["gqa-baseline", "cdm-v3"])
def test_missing_extra_and_misshapen_tensors_are_named(name):
    sd, cfg, _, _ = fixture(name)
    attn = "attn" if name == "gqa-baseline" else "self_attn"
    missing = {k: v for k, v in sd.items() if k != f"blocks.1.{attn}.v_proj.weight"}
    with pytest.raises(ValueError, match=f"blocks.1.{attn}.v_proj.weight"):
        from_published(name, missing, config=cfg)
    with pytest.raises(ValueError, match="blocks.0.norm_extra.weight"):
        from_published(name, {**sd, "blocks.0.norm_extra.weight": torch.ones(64)}, config=cfg)
    with pytest.raises(ValueError, match="blocks.1.norm_ff.weight"):
        from_published(name, {**sd, "blocks.1.norm_ff.weight": torch.ones(65)}, config=cfg)
    cos = f"blocks.0.{attn}.rope.cos"
    with pytest.raises(ValueError, match=cos):
        from_published(name, {**sd, cos: sd[cos] + 0.1}, config=cfg)
    with pytest.raises(ValueError, match="head.weight is not what memnb recomputes"):
        from_published(name, {**sd, "head.weight": sd["head.weight"] + 1}, config=cfg)
    with pytest.raises(ValueError, match="unknown published model"):
        from_published("cdm-v4", sd)


def test_missing_extra_misshapen_cpuflow():
    sd, _, _, _ = fixture("cpuflow-v97")
    with pytest.raises(ValueError, match="blocks.0.W_val.weight"):
        from_published("cpuflow-v97", {k: v for k, v in sd.items() if k != "blocks.0.W_val.weight"})
    with pytest.raises(ValueError, match="head.weight"):
        from_published("cpuflow-v97", {**sd, "head.weight": sd["embed.weight"]})
    bad = {**sd, "blocks.1.W_read.weight": torch.zeros(64, 63)}
    with pytest.raises(ValueError, match="blocks.1.W_read.weight"):
        from_published("cpuflow-v97", bad)


def published_shapes(name, r):
    "The published model's tensor shapes at its configuration, as its code creates them (head: tied copy)."
    if name == "cpuflow-v97":
        d, k, V, dv = r["d"], r["k"], r["vocab"], r["d_val"]
        s = {"embed.weight": (V, d), "pos.steps": (r["seq_len"], d), "ln_f.weight": (d,), "ln_f.bias": (d,),
             "fsp_proj.weight": (d, d)}
        for i in range(r["n_layers"]):
            p = f"blocks.{i}."
            s.update({p + "norm.weight": (d,), p + "norm.bias": (d,), p + "W_proj.weight": (3 * k, d),
                      p + "W_m.weight": (k, k), p + "W_addr.weight": (r["n_sub"] * r["d_sub"], d),
                      p + "W_val.weight": (dv, d), p + "W_write_gate.weight": (dv, d),
                      p + "W_read.weight": (dv, dv), p + "mem_init": (r["m_slots"], dv),
                      p + "W_mem_proj.weight": (k, dv), p + "W_out.weight": (d, k),
                      p + "norm_ff.weight": (d,), p + "norm_ff.bias": (d,), p + "ff_up.weight": (r["d_ff"], d),
                      p + "ff_down.weight": (d, r["d_ff"])})
        return s, set()
    d, V, H, G, f = r["d_model"], r["vocab_size"], r["n_heads"], r["n_kv_heads"], r["d_ff"]
    dh = d // H
    s = {"embed.weight": (V, d), "head.weight": (V, d), "norm.weight": (d,)}
    buffers = set()
    for i in range(r["n_layers"]):
        p = f"blocks.{i}."
        attns = ["attn."] if name == "gqa-baseline" else ["self_attn.", "slot_xattn."]
        for a in attns:
            s.update({p + a + "q_proj.weight": (H * dh, d), p + a + "k_proj.weight": (G * dh, d),
                      p + a + "v_proj.weight": (G * dh, d), p + a + "o_proj.weight": (d, H * dh)})
        for fn in ("cos", "sin"):
            s[p + attns[0] + "rope." + fn] = (1, 1, r["max_len"], dh // 2)
            buffers.add(p + attns[0] + "rope." + fn)
        s.update({p + "norm_sa.weight": (d,), p + "norm_ff.weight": (d,), p + "ffn.gate.weight": (f, d),
                  p + "ffn.up.weight": (f, d), p + "ffn.down.weight": (d, f)})
        if name != "gqa-baseline":
            K = r["K"]
            s.update({p + "norm_sx.weight": (d,), p + "norm_cdm.weight": (d,), p + "cdm.route.weight": (K, d),
                      p + "cdm.route.bias": (K,), p + "cdm.eta.weight": (1, d), p + "cdm.eta.bias": (1,),
                      p + "cdm.write_proj.weight": (d, d), p + "cdm.slot_init": (K, d)})
            if name != "cdm-v2":
                s[p + "cdm.log_alpha"] = (K,)
    return s, buffers | {"head.weight"}


FULL_SIZE = {"gqa-baseline": 72_930_304, "cdm-v2": 37_107_592, "cdm-v3": 37_107_720, "cdm-v5": 85_728_652,
             "cpuflow-v97": 2_476_544}


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_full_size_maps_every_published_tensor(name):
    "At the published size (shapes only, on the meta device) every published tensor has a home in the preset."
    spec = published_model(name)
    shapes, not_params = published_shapes(name, spec.defaults)
    assert sum(torch.Size(s).numel() for k, s in shapes.items() if k not in not_params) == FULL_SIZE[name]
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    if "head.weight" in sd: sd["head.weight"] = sd["embed.weight"]
    resolved = resolve_config(spec, sd)
    with torch.device("meta"):
        model = build(spec.preset, **spec.config_from(resolved))
    assert model.num_params() == FULL_SIZE[name]
    msd, dropped = spec.to_memnb(sd, resolved, False)
    load_mapped(model, msd, where=name)
    assert set(dropped) == not_params & set(sd)


def test_convert_writes_a_loadable_folder(tmp_path, capsys):
    sd, cfg, tokens, expected = fixture("cdm-v3")
    src = tmp_path / "cdm.safetensors"
    save_file(sd, str(src))
    r = convert("cdm-v3", src, tmp_path / "out")
    spec = published_model("cdm-v3")
    assert r["out"] == str(tmp_path / "out")
    assert r["params"] == build("cdm-v3", **spec.config_from(resolve_config(spec, sd))).num_params()
    assert "head.weight" in r["dropped"] and (tmp_path / "out" / "published.json").exists()
    loaded = load(tmp_path / "out").eval()
    with torch.no_grad():
        assert torch.equal(loaded(tokens), from_published("cdm-v3", sd)(tokens))
        assert rel(loaded.double()(tokens), expected["logits_float64"]) < 1e-9
    args = add_convert_arguments(argparse.ArgumentParser()).parse_args(
        [str(src), "--preset", "cdm-v3", "--out", str(tmp_path / "cli")])
    assert run_convert_cli(args) == 0
    out = capsys.readouterr().out
    assert f"{r['params']:,} parameters" in out and "dropped blocks.0.self_attn.rope.cos" in out
    assert (tmp_path / "cli" / "model.safetensors").exists() and not (tmp_path / "cli" / "tokenizer.json").exists()


def test_convert_writes_the_tokenizer_generate_needs(tmp_path):
    from memnb.data import load_tokenizer
    sd, _, _, _ = fixture("cpuflow-v97")                         # a 512-token vocabulary
    (tmp_path / "bytes.json").write_text('{"memnb": "bytes"}')   # memnb's byte tokenizer: 257 tokens
    convert("cpuflow-v97", sd, tmp_path / "out", tokenizer=str(tmp_path / "bytes.json"))
    assert load_tokenizer(str(tmp_path / "out" / "tokenizer.json")).vocab_size == 257
    from memnb.data import data_path
    try: gpt2 = data_path("gpt2", "tokenizer.json")            # the local GPT-2 tokenizer (never downloaded here)
    except FileNotFoundError: pytest.skip("no local GPT-2 tokenizer (MEMNB_DATA)")
    with pytest.raises(ValueError, match="the tokenizer has 50257 tokens, the model 512"):
        convert("cpuflow-v97", sd, tmp_path / "gpt2", tokenizer=str(gpt2))
