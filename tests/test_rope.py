"""RoPE as transformers defines it: default, linear, dynamic NTK, llama3 and yarn, and an explicit head_dim.

The compiler's tables (:mod:`sw.model.rope`) are checked row by row against
transformers' own ``LlamaRotaryEmbedding``, driven as its decode path drives
it (one position per call, so dynamic NTK re-derives its base as the
sequence grows). Then tiny random checkpoints written by ``save_pretrained``
for each type are compiled for the chip and decoded on the fast model:
greedy tokens equal ``generate``'s for 16 tokens and every step's logits
match transformers' float32 forward (its one-token-at-a-time forward with a
KV cache for dynamic NTK past ``max_position_embeddings``, which a
whole-sequence forward does not follow: see :mod:`sw.model.rope`).
"""

import asyncio
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sw.compiler.checkpoint import CheckpointError, UnsupportedModelError, load_checkpoint, read_shape  # noqa: E402
from sw.compiler.compile import check_fit, compile_model, max_context  # noqa: E402
from sw.errors import CompileError  # noqa: E402
from sw.model.rope import attention_factor, inv_freq, rope_table  # noqa: E402
from sw.runtime.decode import generate  # noqa: E402
from sw.runtime.device import ModelDevice  # noqa: E402
from sw.target import CHIP  # noqa: E402
from tests.llama_checkpoints import make_checkpoint, transformers_greedy, transformers_logits  # noqa: E402

RTOL = 1e-4                         # as tests/test_decode_model.py: of the largest |logit|
NEW_TOKENS = 16
PROMPT = [5, 17, 42, 8]
CONTEXT = 32
SHAPE = dict(hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=64, tie_word_embeddings=True, eos_token_id=None, bos_token_id=None, pad_token_id=None)

# Four checkpoints (each compile takes seconds): linear written with the legacy rope_scaling, yarn with an
# explicit head_dim of twice hidden_size / heads (q/k/v/o of 4 x 32 over a hidden size of 64).
ROPES = {
    "linear": dict(rope_scaling={"type": "linear", "factor": 4.0}, rope_theta=10000.0),
    # max_position_embeddings 8: the 20 positions decoded stretch the base from position 8 on.
    "dynamic": dict(rope_parameters={"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0},
                    max_position_embeddings=8),
    "llama3": dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
                                    "rope_theta": 500000.0}),
    "yarn": dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                                  "rope_theta": 10000.0}, head_dim=32),
}


def _config(**rope):
    return transformers.LlamaConfig(**{**SHAPE, "max_position_embeddings": 64, **rope})


TABLE_CASES = {
    **{name: spec for name, spec in ROPES.items() if "rope_parameters" in spec},
    "default-head32": dict(head_dim=32),
    "linear": dict(rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}),
    "yarn-mscale": dict(rope_parameters={"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 8,
                                         "mscale": 0.707, "mscale_all_dim": 1.0, "beta_fast": 16.0,
                                         "truncate": False, "rope_theta": 10000.0}),
    "yarn-attention-factor": dict(rope_parameters={"rope_type": "yarn", "factor": 2.0, "attention_factor": 0.5,
                                                   "original_max_position_embeddings": 32, "rope_theta": 1e6}),
    "llama3-head32": dict(rope_parameters={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 32,
                                           "rope_theta": 500000.0}, head_dim=32),
}


@pytest.mark.parametrize("name", sorted(TABLE_CASES))
def test_tables_match_transformers_rotary_embedding(name):
    """Row p of cos and sin is what LlamaRotaryEmbedding gives a decode step at p (attention factor included)."""
    config = _config(**TABLE_CASES[name])
    shape = read_shape(config.to_dict())
    rotary = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding(config)
    x = torch.zeros(1, dtype=torch.float32)
    cos, sin = rope_table(shape.rope, shape.head_dim, 40)
    for p in range(40):
        theirs = rotary(x, torch.tensor([[p]]))
        # Same float32 formulas; numpy's and torch's float32 pow, cos and sin may differ by an ulp.
        np.testing.assert_allclose(inv_freq(shape.rope, shape.head_dim, p + 1), rotary.inv_freq.numpy(), rtol=1e-6)
        assert rotary.attention_scaling == attention_factor(shape.rope)
        np.testing.assert_allclose(cos[p], theirs[0][0, 0].numpy(), rtol=0, atol=3e-7 * max(1, cos[p].max()))
        np.testing.assert_allclose(sin[p], theirs[1][0, 0].numpy(), rtol=0, atol=3e-7 * max(1, sin[p].max()))


@pytest.mark.parametrize("theta", [10000.0, 500000.0])
@pytest.mark.parametrize("head_dim", [16, 32, 64, 128])
def test_default_frequencies_equal_torch_for_usual_settings(theta, head_dim):
    """For the usual theta and head sizes the float32 powers are torch's bit for bit (numpy's own float32 power is
    off by ulps on CPUs with AVX-512)."""
    theirs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    np.testing.assert_array_equal(inv_freq(theta, head_dim), theirs.numpy())


def test_float32_powers_are_correctly_rounded():
    """The tables' powers against a 200-bit power rounded once to float32 (mpmath), on every CPU."""
    mpmath = pytest.importorskip("mpmath")
    from sw.model.rope import _pow32

    for theta in (10000.0, 50000.0, 500000.0, 1e6, 1.5, 1.25):
        for dim in (16, 32, 64, 96, 128, 256):
            exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
            ours = _pow32(np.float32(theta), exponents)
            for e, got in zip(exponents, ours):
                with mpmath.workprec(200):
                    exact = mpmath.mpf(float(np.float32(theta))) ** mpmath.mpf(float(e))
                with mpmath.workprec(24):
                    want = np.float32(float(+exact))
                assert got == want, (theta, dim, float(e))


def _stepwise_logits(path, tokens):
    """transformers fed one token at a time with its KV cache: the decode path (dynamic NTK's semantics)."""
    model = transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    cache, out = transformers.DynamicCache(config=model.config), []
    with torch.no_grad():
        for p, token in enumerate(tokens):
            step = model(torch.tensor([[token]]), cache=cache, position_ids=torch.tensor([[p]]),
                         use_cache=True)
            out.append(step.logits[0, -1].numpy())
    return np.stack(out)


@pytest.fixture(scope="module", params=sorted(ROPES))
def decoded(request, tmp_path_factory):
    path = make_checkpoint(tmp_path_factory.mktemp(request.param), **{**SHAPE, "max_position_embeddings": 64,
                                                                        **ROPES[request.param]})
    compiled = compile_model(path, CHIP, context=CONTEXT)
    result = asyncio.run(generate(ModelDevice(CHIP), compiled, PROMPT, max_new_tokens=NEW_TOKENS,
                                  stop_at_eos=False, keep_logits=True))
    return request.param, path, compiled, result


def test_greedy_tokens_equal_generate(decoded):
    name, path, compiled, result = decoded
    assert result["tokens"] == transformers_greedy(path, PROMPT, NEW_TOKENS)
    assert len(result["tokens"]) == NEW_TOKENS


def test_teacher_forced_logits(decoded):
    name, path, compiled, result = decoded
    fed = PROMPT + result["tokens"][:-1]
    ours = result["logits"]
    if name == "dynamic":
        assert len(fed) > compiled.shape.max_positions       # the base does stretch
        theirs = _stepwise_logits(path, fed)
        # Up to max_position_embeddings the whole-sequence forward agrees too (no stretch yet).
        head = transformers_logits(path, fed[:compiled.shape.max_positions])
        assert np.abs(ours[:len(head)] - head).max() <= RTOL * np.abs(head).max()
    else:
        theirs = transformers_logits(path, fed)
    scale = float(np.abs(theirs).max())
    err = float(np.abs(ours - theirs).max())
    assert err <= RTOL * scale, f"{name}: max |error| {err:.3g} > {RTOL:g} x max |logit| {scale:.3g}"


def test_shape_and_summary(decoded):
    name, path, compiled, result = decoded
    rope = compiled.shape.rope
    assert rope.rope_type == name and str(rope) in compiled.summary()
    if name == "yarn":
        assert compiled.shape.head_dim * compiled.shape.num_heads == 2 * compiled.shape.hidden_size
        assert rope.attention_factor == pytest.approx(0.1 * np.log(4.0) + 1)


def _write_config(path, config):
    (path / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("base"), **{**SHAPE, "max_position_embeddings": 16})


def test_legacy_rope_scaling_reads_like_rope_parameters(base_folder):
    config = json.loads((base_folder / "config.json").read_text())
    config.pop("rope_parameters", None)
    legacy = read_shape({**config, "rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0}})
    assert (legacy.rope.rope_type, legacy.rope.theta, legacy.rope.factor) == ("linear", 5e5, 2.0)
    current = read_shape({**config, "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}})
    assert current.rope == legacy.rope
    # transformers takes a non-empty rope_scaling over rope_parameters.
    both = read_shape({**config, "rope_scaling": {"rope_type": "dynamic", "factor": 3.0},
                       "rope_parameters": {"rope_type": "linear", "factor": 2.0}})
    assert (both.rope.rope_type, both.rope.factor) == ("dynamic", 3.0)
    assert transformers.LlamaConfig(**{**config, "rope_scaling": {"rope_type": "dynamic", "factor": 3.0},
                                       "rope_parameters": {"rope_type": "linear", "factor": 2.0}}
                                    ).rope_parameters["rope_type"] == "dynamic"


@pytest.mark.parametrize("rope, error, message", [
    ({"rope_type": "longrope", "factor": 2.0}, UnsupportedModelError,
     "rope_parameters.rope_type = 'longrope' is not supported (supported: 'default', 'linear', 'dynamic', "
     "'llama3', 'yarn')"),
    ({"type": "su"}, UnsupportedModelError, "rope_parameters.type = 'su' is not supported"),
    ({"rope_type": "linear"}, CheckpointError, "rope_parameters.factor is missing; rope type 'linear' needs it"),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0}, CheckpointError,
     "rope_parameters.high_freq_factor = 4.0 must exceed low_freq_factor = 4.0"),
    ({"rope_type": "yarn", "factor": "4"}, CheckpointError, "rope_parameters.factor = '4': expected a finite number"),
    ({"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5}, UnsupportedModelError,
     "rope_parameters.partial_rotary_factor = 0.5 is not supported"),
])
def test_rope_refusals_name_the_setting(base_folder, tmp_path, rope, error, message):
    import shutil

    path = shutil.copytree(base_folder, tmp_path / "c")
    config = json.loads((path / "config.json").read_text())
    _write_config(path, {**config, "rope_parameters": rope})
    with pytest.raises(error) as info:
        load_checkpoint(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_dynamic_context_limit(base_folder, tmp_path):
    import shutil

    path = shutil.copytree(base_folder, tmp_path / "c")
    config = json.loads((path / "config.json").read_text())
    _write_config(path, {**config, "rope_parameters": {"rope_type": "dynamic", "factor": 2.0}})
    shape = load_checkpoint(path).shape
    assert shape.context_limit == 32 and max_context(shape, CHIP) == 32    # the default context: all of it
    check_fit(shape, CHIP, 32)
    with pytest.raises(CompileError, match="exceeds the model's max_position_embeddings 16 x dynamic RoPE factor 2"):
        check_fit(shape, CHIP, 36)
    _write_config(path, {**config, "rope_parameters": {"rope_type": "linear", "factor": 2.0}})
    shape = load_checkpoint(path).shape
    assert shape.context_limit == max_context(shape, CHIP) == 16
    with pytest.raises(CompileError, match="context 20 exceeds the model's max_position_embeddings 16$"):
        check_fit(shape, CHIP, 20)
