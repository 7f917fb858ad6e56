import numpy as np
import pytest

from gptspec.errors import WeightsError
from gptspec.spec import preset
from gptspec.weights import (
    check_params,
    from_nanogpt_state_dict,
    init_params,
    load_safetensors,
    read_safetensors,
    save_safetensors,
    to_nanogpt_state_dict,
)

SPEC = preset("tiny")


def test_init_is_deterministic_and_follows_nanogpt_statistics():
    a, b, c = init_params(SPEC, 7), init_params(SPEC, 7), init_params(SPEC, 8)
    assert list(a) == list(SPEC.param_shapes())
    for n in a:
        assert a[n].dtype == np.float32 and a[n].shape == SPEC.param_shapes()[n]
        np.testing.assert_array_equal(a[n], b[n])
    assert not np.array_equal(a["wte.weight"], c["wte.weight"])
    big = preset("shakespeare-char")
    p = init_params(big, 0)
    assert p["h.0.mlp.c_fc.weight"].std() == pytest.approx(0.02, rel=0.01)
    assert p["h.3.attn.c_proj.weight"].std() == pytest.approx(0.02 / np.sqrt(2 * 6), rel=0.01)
    assert np.all(p["h.0.ln_1.weight"] == 1) and np.all(p["h.0.attn.c_attn.bias"] == 0)


def test_a_tensor_depends_only_on_seed_name_and_shape():
    deeper = SPEC.replace(n_layer=3)
    np.testing.assert_array_equal(init_params(SPEC, 1)["h.1.mlp.c_fc.weight"],
                                  init_params(deeper, 1)["h.1.mlp.c_fc.weight"])


def test_safetensors_round_trip_keeps_values_and_spec(tmp_path):
    params = init_params(SPEC, 3)
    path = save_safetensors(tmp_path / "w.safetensors", params, SPEC, {"tokenizer": {"kind": "byte"}})
    spec, loaded = load_safetensors(path)
    assert spec == SPEC
    for n in params:
        np.testing.assert_array_equal(loaded[n], params[n])
    assert read_safetensors(path)[1]["tokenizer"] == '{"kind": "byte"}'


def test_weights_for_another_spec_are_rejected_with_names(tmp_path):
    path = save_safetensors(tmp_path / "w.safetensors", init_params(SPEC, 0), SPEC)
    other = SPEC.replace(n_embd=48, n_layer=3)
    with pytest.raises(WeightsError) as e:
        load_safetensors(path, other)
    msg = str(e.value)
    assert "missing" in msg and "h.2." in msg and "wrong shape" in msg and "wte.weight" in msg


def test_non_finite_and_unreadable_weights_are_rejected(tmp_path):
    params = init_params(SPEC, 0)
    params["ln_f.bias"][0] = np.nan
    with pytest.raises(WeightsError, match="non-finite.*ln_f.bias"):
        check_params(params, SPEC)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_safetensors(bad, SPEC)
    with pytest.raises(WeightsError, match="does not exist"):
        load_safetensors(tmp_path / "nope.safetensors", SPEC)


def test_nanogpt_state_dict_round_trip():
    params = init_params(SPEC, 5)
    sd = to_nanogpt_state_dict(params)
    assert "transformer.h.1.mlp.c_fc.weight" in sd and sd["lm_head.weight"] is params["wte.weight"]
    # what a compiled nanoGPT model saves: _orig_mod. prefixes and causal-mask buffers
    compiled = {"_orig_mod." + k: v for k, v in sd.items()}
    compiled["_orig_mod.transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 16, 16)))
    back = from_nanogpt_state_dict(compiled, SPEC)
    assert list(sorted(back)) == sorted(params)
    for n in params:
        np.testing.assert_array_equal(back[n], params[n])


def test_nanogpt_without_biases_gets_zero_biases_and_untied_head_is_refused():
    sd = {k: v for k, v in to_nanogpt_state_dict(init_params(SPEC, 5)).items() if not k.endswith(".bias")}
    params = from_nanogpt_state_dict(sd, SPEC)
    assert np.all(params["h.0.attn.c_attn.bias"] == 0) and params["ln_f.bias"].shape == (32,)
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1
    with pytest.raises(WeightsError, match="tie"):
        from_nanogpt_state_dict(sd, SPEC)


def test_nanogpt_ckpt_file_round_trip(tmp_path):
    torch = pytest.importorskip("torch")  # reading ckpt.pt needs torch (the [torch] extra)
    from gptspec.data import CharTokenizer
    from gptspec.nanogpt import load_checkpoint, save_checkpoint

    params, tok = init_params(SPEC, 9), CharTokenizer("abcdefgh")
    path = save_checkpoint(tmp_path / "ckpt.pt", params, SPEC, tok)
    raw = torch.load(path, weights_only=True)
    assert raw["model_args"]["n_embd"] == 32 and raw["model"]["lm_head.weight"].shape == (32, 32)
    back = load_checkpoint(path)
    assert back.spec == SPEC.replace(name=tmp_path.name, gelu="erf")  # nanoGPT's MLP is exact: an erf model
    assert back.tokenizer.chars == "abcdefgh"
    for n in params:
        np.testing.assert_array_equal(back.params[n], params[n])


def test_optimizer_state_round_trip(tmp_path):
    from gptspec.optim import AdamWConfig
    from gptspec.weights import load_optimizer_state, save_optimizer_state

    rng = np.random.default_rng(0)
    moments = {"step": 7, **{k: {n: rng.standard_normal(s).astype(np.float32) for n, s in SPEC.param_shapes().items()}
                             for k in ("exp_avg", "exp_avg_sq")}}
    save_optimizer_state(tmp_path / "o.safetensors", moments, SPEC, AdamWConfig(beta2=0.99))
    back, optim = load_optimizer_state(tmp_path / "o.safetensors", SPEC)
    assert back["step"] == 7 and optim == AdamWConfig(beta2=0.99)
    for k in ("exp_avg", "exp_avg_sq"):
        assert list(back[k]) == list(SPEC.param_shapes())
        for n in moments[k]:
            np.testing.assert_array_equal(back[k][n], moments[k][n])
    with pytest.raises(WeightsError, match="not a gptbench AdamW state"):
        load_optimizer_state(save_safetensors(tmp_path / "w.safetensors", init_params(SPEC), SPEC), SPEC)
