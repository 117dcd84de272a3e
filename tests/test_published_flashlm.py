"""The FlashLM models (Nova, Bolt, Thunderbolt, CORTEX-VIII) loaded from the published-code fixtures:
logits of the faithful and default networks, causality, round trips, strict loading errors and the full-size
mappings."""
import warnings

import pytest
import torch

from memnb.checks import causality
from memnb.presets import build
from memnb.published import from_published, published_model, to_published
from memnb.published_flashlm import PUBLISHED_PARAMS, cortex_decay_bias

from published_fixtures import fixture, needs_fixtures

MODELS = ["flashlm-nova", "flashlm-bolt", "flashlm-thunderbolt", "flashlm-cortex8"]
CORRECTED = {"flashlm-thunderbolt", "flashlm-cortex8"}      # memnb's default network fixes a published leak


def load(name, sd, config, faithful):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # faithful=True warns that the model sees the future
        return from_published(name, sd, config=config, faithful=faithful)


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def modes(name):
    "Networks that must give the published logits: the faithful one, and the default where it is the same."
    return [True] if name in CORRECTED else [True, False]


@needs_fixtures
@pytest.mark.parametrize("perturbed", [False, True], ids=["init", "perturbed"])
@pytest.mark.parametrize("name", MODELS)
def test_float64_logits(name, perturbed):
    sd, cfg, tokens, expected = fixture(name, perturbed)
    for faithful in modes(name):
        with torch.no_grad():
            got = load(name, sd, cfg, faithful).double()(tokens)
        assert rel(got, expected["logits_float64"]) < 1e-9, (name, faithful)


@needs_fixtures
@pytest.mark.parametrize("name", MODELS)
def test_float32_logits(name):
    sd, cfg, tokens, expected = fixture(name)
    for faithful in modes(name):
        with torch.no_grad():
            got = load(name, sd, cfg, faithful)(tokens)
        assert got.dtype == torch.float32
        assert rel(got, expected["logits"]) < 1e-5, (name, faithful)


@needs_fixtures
@pytest.mark.parametrize("name", sorted(CORRECTED))
def test_default_network_is_the_corrected_one(name):
    "The default Thunderbolt / CORTEX-VIII differ from the published logits (they do not see the future)."
    sd, cfg, tokens, expected = fixture(name, perturbed=True)
    with torch.no_grad():
        assert rel(load(name, sd, cfg, False).double()(tokens), expected["logits_float64"]) > 1e-4


@needs_fixtures
@pytest.mark.parametrize("name", MODELS)
def test_causality(name):
    sd, cfg, _, _ = fixture(name, perturbed=True)
    assert causality(load(name, sd, cfg, False)) == 0
    leak = causality(load(name, sd, cfg, True))
    assert (leak > 1e-6) if name in CORRECTED else leak == 0, leak


@needs_fixtures
@pytest.mark.parametrize("name", sorted(CORRECTED))
def test_faithful_warns_and_has_no_decode_state(name):
    sd, cfg, tokens, _ = fixture(name)
    with pytest.warns(UserWarning, match="sees the future"):
        model = from_published(name, sd, config=cfg, faithful=True)
    with pytest.raises(ValueError, match="causal=False|groupnorm_seq"):
        model(tokens[:, :4], use_cache=True)
        model(tokens[:, 4:5], model(tokens[:, :4], use_cache=True)[1], use_cache=True)


@needs_fixtures
@pytest.mark.parametrize("perturbed", [False, True], ids=["init", "perturbed"])
@pytest.mark.parametrize("name", MODELS)
def test_round_trip(name, perturbed):
    sd, cfg, _, _ = fixture(name, perturbed)
    for faithful in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("error")        # the filled-in CORTEX decay goes back without a warning
            back = to_published(load(name, sd, cfg, faithful), name)
        assert back.keys() == sd.keys()
        for k in sd:
            assert back[k].shape == sd[k].shape and torch.equal(back[k], sd[k]), (name, k)


@needs_fixtures
@pytest.mark.parametrize("name", ["flashlm-nova", "flashlm-bolt", "flashlm-cortex8"])
def test_shapes_determine_the_config(name):
    sd, cfg, tokens, _ = fixture(name)
    spec = published_model(name)
    inferred = spec.infer_config(sd)
    assert all(cfg[k] == v for k, v in inferred.items()) and len(inferred) >= 4
    given = {k: cfg[k] for k in cfg if k not in inferred and k != "dropout"}   # seq_len sets the filled decay
    with torch.no_grad():
        assert torch.equal(load(name, sd, given, False)(tokens), load(name, sd, cfg, False)(tokens))


@needs_fixtures
def test_thunderbolt_heads_must_be_given():
    sd, cfg, _, _ = fixture("flashlm-thunderbolt")
    with pytest.raises(ValueError, match="n_heads"):
        from_published("flashlm-thunderbolt", sd)          # the published 8 x 48 do not make this width of 64
    with pytest.raises(ValueError, match="contradicts the tensor shapes"):
        from_published("flashlm-thunderbolt", sd, config={**cfg, "d_ffn": 100})


@needs_fixtures
def test_strict_loading_names_the_tensor():
    sd, cfg, _, _ = fixture("flashlm-cortex8")
    missing = {k: v for k, v in sd.items() if k != "blocks.1.delta.beta_proj.weight"}
    with pytest.raises(ValueError, match="blocks.1.delta.beta_proj.weight"):
        load("flashlm-cortex8", missing, cfg, False)
    with pytest.raises(ValueError, match="blocks.0.delta.extra"):
        load("flashlm-cortex8", {**sd, "blocks.0.delta.extra": torch.zeros(3)}, cfg, False)
    bad = {**sd, "blocks.0.swa.out.weight": torch.zeros(64, 60)}
    with pytest.raises(ValueError, match="swa.out.weight"):
        load("flashlm-cortex8", bad, cfg, False)
    sd_nova, cfg_nova, _, _ = fixture("flashlm-nova")
    untied = {**sd_nova, "head.weight": torch.randn_like(sd_nova["head.weight"])}
    with pytest.raises(ValueError, match="head.weight"):
        load("flashlm-nova", untied, cfg_nova, False)


@needs_fixtures
def test_cortex_decay_filled_and_reported_on_export():
    sd, cfg, _, _ = fixture("flashlm-cortex8")
    model = load("flashlm-cortex8", sd, cfg, False)
    mix = model.blocks[0].mixers[0].inner
    H = cfg["n_heads"]
    assert torch.equal(mix.mem_in.weight[-H:], torch.zeros_like(mix.mem_in.weight[-H:]))
    torch.testing.assert_close(mix.decay_bias, torch.full((H,), cortex_decay_bias(cfg["seq_len"])))
    alpha = torch.sigmoid(mix.decay_bias.double())
    kept = torch.full((H,), 0.99, dtype=torch.float64)
    torch.testing.assert_close(alpha ** cfg["seq_len"], kept, atol=1e-4, rtol=0)
    with torch.no_grad():
        mix.decay_bias.fill_(4.6)                      # as a model trained in memnb would have it
    with pytest.warns(UserWarning, match="decay"):
        back = to_published(model, "flashlm-cortex8")
    assert back.keys() == sd.keys()


# The published classes' state-dict layout, transcribed from the published code (independent of the mapping).
def published_shapes(name, r):
    L = r.get("n_layers", r.get("n_blocks"))
    out = {}
    if name == "flashlm-nova":
        d, f, dh, H, V = r["d_model"], r["d_ffn"], r["d_head"], r["n_heads"], r["vocab"]
        out |= {"embed.weight": (V, d), "head.weight": (V, d), "ln_out.weight": (d,), "ln_out.bias": (d,)}
        for i in range(L):
            p = f"blocks.{i}."
            out |= {p + n: (d,) for n in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias")}
            out |= {p + "attn.qkv.weight": (3 * H * dh, d), p + "attn.out.weight": (d, H * dh),
                    p + "attn.rotary.inv_freq": (dh // 2,), p + "ffn.up.weight": (2 * f, d),
                    p + "ffn.down.weight": (d, f)}
    elif name == "flashlm-bolt":
        d, f, k, V = r["dim"], r["glu_hidden"], r["kernel_size"], r["vocab_size"]
        out |= {"embedding.weight": (V, d), "head.weight": (V, d), "final_norm.scale": (d,)}
        for i in range(L):
            p = f"blocks.{i}."
            out |= {p + "norm1.scale": (d,), p + "norm2.scale": (d,), p + "mixer.up.weight": (2 * d, d),
                    p + "mixer.conv.weight": (d, 1, k), p + "mixer.down.weight": (d, d),
                    p + "ffn.W_gate.weight": (f, d),
                    p + "ffn.W_up.weight": (f, d), p + "ffn.W_down.weight": (d, f)}
    elif name == "flashlm-thunderbolt":
        d, f, V, D = r["d_model"], r["d_ffn"], r["vocab"], r["n_heads"] * r["d_head"]
        out |= {"embed.weight": (V, d), "head.weight": (V, d), "ln_out.weight": (d,), "ln_out.bias": (d,)}
        for i in range(L):
            p = f"blocks.{i}."
            out |= {p + n: (d,) for n in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "mix1", "mix2")}
            out |= {p + "rec.W_f.weight": (D, d), p + "rec.W_v.weight": (D, d), p + "rec.W_o.weight": (D, d),
                    p + "rec.W_proj.weight": (d, D), p + "rec.f_bias": (D,), p + "rec.gn.weight": (D,),
                    p + "rec.gn.bias": (D,), p + "ffn_up.weight": (f, d), p + "ffn_down.weight": (d, f)}
    else:
        d, f, V, H, dh, m = r["d_model"], r["d_ff"], r["vocab"], r["n_heads"], r["d_head"], r["d_mem"]
        out |= {"embed.weight": (V, d), "head.weight": (V, d), "ln_in.weight": (d,), "ln_out.weight": (d,)}
        for i in range(L):
            p = f"blocks.{i}."
            out |= {p + n: (d,) for n in ("ln1.weight", "ln_delta.weight", "ln2.weight")}
            out |= {p + "swa.qkv.weight": (3 * H * dh, d), p + "swa.out.weight": (d, H * dh),
                    p + "delta.k_proj.weight": (H * m, d), p + "delta.v_proj.weight": (H * m, d),
                    p + "delta.q_proj.weight": (H * m, d), p + "delta.beta_proj.weight": (H, d),
                    p + "delta.mem_out.weight": (d, H * m), p + "combine_gate.weight": (d, d),
                    p + "combine_out.weight": (d, d), p + "Wg.weight": (f, d), p + "Wu.weight": (f, d),
                    p + "Wo.weight": (d, f)}
    return out


def published_state(name, r):
    "A published-layout state dict (zeros; the tied head and the RoPE buffer as the published code has them)."
    sd = {k: torch.zeros(s) for k, s in published_shapes(name, r).items()}
    embed = "embedding.weight" if name == "flashlm-bolt" else "embed.weight"
    sd[embed].normal_()
    sd["head.weight"] = sd[embed].clone()
    for k in sd:
        if k.endswith("inv_freq"):
            sd[k] = 1.0 / (10_000 ** (torch.arange(0, r["d_head"], 2).float() / r["d_head"]))
    return sd


@needs_fixtures
@pytest.mark.parametrize("name", MODELS)
def test_published_layout_matches_the_fixture(name):
    sd, cfg, _, _ = fixture(name)
    assert {k: tuple(v.shape) for k, v in sd.items()} == published_shapes(name, cfg)


@pytest.mark.parametrize("name", MODELS)
def test_full_size_maps_every_published_tensor(name):
    spec = published_model(name)
    r = spec.defaults
    sd = published_state(name, r)
    count = sum(t.numel() for k, t in sd.items() if k != "head.weight" and not k.endswith("inv_freq"))
    assert count == PUBLISHED_PARAMS[name]
    model = from_published(name, sd)                       # the published defaults, nothing else
    extra = r["n_layers"] * (r["d_model"] * r["n_heads"] + r["n_heads"]) if name == "flashlm-cortex8" else 0
    assert model.num_params() == count + extra
    derived = sorted(k for k in sd if k == "head.weight" or k.endswith("inv_freq"))
    assert sorted(model.published_dropped) == derived
    assert to_published(model, name).keys() == sd.keys()
    built = build(name)
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}   # noqa: E731
    assert shapes(built) == shapes(model)
