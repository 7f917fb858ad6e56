import math

import pytest

from gptspec.errors import SpecError
from gptspec.spec import PRESETS, GPTSpec, preset, resolve_spec


def test_gpt2_param_count_matches_the_published_figure():
    # GPT-2 small with its real 50257-token vocabulary has 124,439,808 parameters
    # (wte tied with lm_head), the number Hugging Face reports for "gpt2".
    spec = preset("gpt2-124m").replace(vocab_size=50257)
    assert spec.n_params() == 124_439_808
    # nanoGPT prints 123.65M: the count without position embeddings
    assert round(spec.n_params(non_embedding=True) / 1e6, 2) == 123.65


def test_presets_have_their_documented_sizes():
    assert preset("proust").n_params() == pytest.approx(0.42e6, rel=0.05)
    sc = preset("shakespeare-char")
    assert (sc.n_layer, sc.n_head, sc.n_embd, sc.block_size) == (6, 6, 384, 256)
    # nanoGPT prints 10.65M for this config, trained with bias=False; the spec keeps biases:
    # 11·C per layer (c_attn 3C, c_proj C, c_fc 4C, mlp c_proj C, two LayerNorms 2C) + ln_f C
    biases = 6 * 11 * 384 + 384
    assert round((sc.n_params(non_embedding=True) - biases) / 1e6, 2) == 10.65
    for name, spec in PRESETS.items():
        assert spec.name == name and spec.n_embd % spec.n_head == 0


def test_flops_per_token_is_6n_plus_attention_term():
    s = preset("shakespeare-char")
    n = s.n_params() - s.block_size * s.n_embd
    assert s.flops_per_token() == 6 * n + 12 * 6 * 256 * 384
    assert s.flops_per_token(seq_len=64) == 6 * n + 12 * 6 * 64 * 384


def test_memory_estimate_counts_weights_grads_and_moments_exactly():
    s = preset("tiny")
    est = s.memory_estimate(batch_size=4, dtype="float64")
    assert est["weights"] == est["grads"] == s.n_params() * 8
    # the moments have the parameters' precision: float64 here, float32 under bf16 autocast
    assert est["adam_moments"] == 2 * s.n_params() * 8
    assert s.memory_estimate(4, dtype="float32")["adam_moments"] == 2 * s.n_params() * 4
    # bfloat16 is autocast: float32 weights, grads and moments, one bfloat16 copy of the weights
    bf16 = s.memory_estimate(4, dtype="bfloat16")
    assert bf16["weights"] == bf16["grads"] == s.n_params() * 4 and bf16["adam_moments"] == 2 * s.n_params() * 4
    assert bf16["weights_cast"] == s.n_params() * 2 and "weights_cast" not in est
    assert bf16["activations"] == s.memory_estimate(4, dtype="float32")["activations"] // 2
    assert est["total"] == sum(v for k, v in est.items() if k != "total")
    # activations grow linearly with batch
    assert s.memory_estimate(8)["activations"] == 2 * s.memory_estimate(4)["activations"]
    gen = s.memory_estimate(1, mode="generate")
    assert gen["kv_cache"] == 2 * s.n_layer * s.block_size * s.n_embd * 4


@pytest.mark.parametrize("fields, needle", [
    (dict(n_embd=30, n_head=4), "divisible by n_head"),
    (dict(n_layer=0), "'n_layer' must be a positive integer"),
    (dict(vocab_size=-3), "'vocab_size'"),
    (dict(block_size=2.5), "'block_size'"),
    (dict(gelu="relu"), "'gelu' must be one of 'tanh', 'erf'"),
])
def test_bad_spec_fields_are_named(fields, needle):
    base = dict(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=8)
    with pytest.raises(SpecError, match=needle):
        GPTSpec(**{**base, **fields})


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(SpecError) as e:
        preset("gpt5")
    for name in PRESETS:
        assert name in str(e.value)


def test_resolve_spec_from_json(tmp_path):
    spec = resolve_spec('{"vocab_size": 8, "block_size": 4, "n_layer": 1, "n_head": 1, "n_embd": 4}')
    assert spec.head_size == 4 and spec.name == "custom"
    f = tmp_path / "s.json"
    f.write_text(spec.to_json())
    assert resolve_spec(str(f)) == spec
    with pytest.raises(SpecError, match="unknown field"):
        resolve_spec('{"vocab_size": 8, "block_size": 4, "n_layer": 1, "n_head": 1, "n_embd": 4, "bias": 0}')
    with pytest.raises(SpecError, match="not valid JSON"):
        resolve_spec("{oops")
    # gelu is optional (specs and records from before it had it are tanh) and part of the spec
    assert spec.gelu == "tanh" and GPTSpec.from_dict({**spec.to_dict(), "gelu": "erf"}) != spec
    assert math.isclose(spec.head_size, 4)
