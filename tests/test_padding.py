"""Any sizes: hidden, intermediate, head_dim and vocab sizes the array cannot take are zero-padded.

The padding must be invisible: the padded graph run on padded weights gives the unpadded graph's
logits and keeps every padded lane exactly 0; compiled for the chip and the 4x8 array and decoded on
the fast model, transformers' own Llama test shape (intermediate size 37, vocab 99) and an odd hidden
size (36 over 6 heads of 6, a qwen2 with q/k/v biases) give ``generate``'s greedy tokens for 16 tokens
and transformers' float32 logits within the Llama tests' tolerance. The summary names each padded
size and its cost.
"""

import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sw.compiler.checkpoint import load_checkpoint  # noqa: E402
from sw.compiler.compile import compile_model  # noqa: E402
from sw.compiler.decode import Padding, decode_graph, head_index, pad_weights  # noqa: E402
from sw.compiler.estimate import padding_cost  # noqa: E402
from sw.model.reference import decode_logits, new_kv_cache, run_graph  # noqa: E402
from sw.runtime.decode import generate  # noqa: E402
from sw.runtime.device import ModelDevice  # noqa: E402
from sw.target import TARGETS  # noqa: E402
from tests.llama_checkpoints import SHAPES, make_checkpoint, transformers_greedy, transformers_logits  # noqa: E402

RTOL = 1e-4                         # as tests/test_decode_model.py: of the largest |logit|
NEW_TOKENS = 16
PROMPT = [5, 17, 42, 8]
CONTEXT = 32
COMMON = dict(eos_token_id=None, bos_token_id=None, pad_token_id=None)
# transformers' LlamaModelTester shape (tests/models/llama), with both kinds of bias.
LLAMA_TEST = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, tie_word_embeddings=False, **COMMON)
CASES = {
    # chip (4 lanes): intermediate 37 -> 40, vocab 99 -> 100; head_dim 8 is already two half-heads of 4.
    "llama-test-chip": ("chip", dict(LLAMA_TEST), ("intermediate 37 -> 40", "vocab 99 -> 100")),
    # 4x8 (8 lanes): head_dim 8 -> 16 as well, so q/k/v/o and every bias move.
    "llama-test-biases-4x8": ("4x8", dict(LLAMA_TEST, attention_bias=True, mlp_bias=True),
                              ("intermediate 37 -> 40", "head_dim 8 -> 16", "vocab 99 -> 104")),
    "odd-hidden-qwen2-4x8": ("4x8", dict(model_type="qwen2", vocab_size=99, hidden_size=36, intermediate_size=37,
                                         num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                                         tie_word_embeddings=True, **COMMON),
                             ("hidden 36 -> 40", "intermediate 37 -> 40", "head_dim 6 -> 16", "vocab 99 -> 104")),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {name: make_checkpoint(tmp_path_factory.mktemp(name), **shape) for name, (_, shape, _) in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_padding_is_invisible_in_the_graph(folders, name):
    """The padded graph's logits equal the unpadded graph's, and padded lanes stay exactly 0 all the way."""
    ckpt = load_checkpoint(folders[name])
    shape = ckpt.shape
    padding = Padding.of(shape, TARGETS[CASES[name][0]].array.lanes)
    padded = decode_graph(shape, context=CONTEXT, padding=padding)
    weights = pad_weights(shape, padding, ckpt.weights)
    tokens = list(np.random.default_rng(2).integers(0, shape.vocab_size, 10))
    ours = decode_logits(padded, weights, tokens)
    plain = decode_logits(decode_graph(shape, context=CONTEXT), ckpt.weights, tokens)
    assert np.abs(ours - plain).max() <= 1e-6 * np.abs(plain).max()
    values = {**weights, **new_kv_cache(padded), "token": np.array([tokens[0]], np.int32),
              "pos": np.array([0], np.int32)}
    run_graph(padded, values)
    hidden = np.setdiff1d(np.arange(padding.hidden), np.arange(shape.hidden_size))
    inter = np.setdiff1d(np.arange(padding.intermediate), np.arange(shape.intermediate_size))
    heads = lambda n: np.setdiff1d(np.arange(n * padding.head_dim), head_index(n, shape.head_dim, padding.head_dim))
    for i in range(shape.num_layers):
        for name_, lanes in (("h", hidden), ("x_out", hidden), ("act", inter), ("q_rot", heads(shape.num_heads)),
                             ("k_rot", heads(shape.num_kv_heads)), ("attn", heads(shape.num_heads))):
            assert not values[f"L{i}.{name_}"][lanes].any(), f"L{i}.{name_}"
    assert not values["x_final"][hidden].any()


@pytest.fixture(scope="module", params=sorted(CASES))
def decoded(request, folders):
    target = TARGETS[CASES[request.param][0]]
    compiled = compile_model(folders[request.param], target, context=CONTEXT)
    result = asyncio.run(generate(ModelDevice(target), compiled, PROMPT, max_new_tokens=NEW_TOKENS,
                                  stop_at_eos=False, keep_logits=True))
    return request.param, folders[request.param], compiled, result


def test_greedy_tokens_equal_generate(decoded):
    name, path, compiled, result = decoded
    assert result["tokens"] == transformers_greedy(path, PROMPT, NEW_TOKENS)


def test_teacher_forced_logits(decoded):
    name, path, compiled, result = decoded
    theirs = transformers_logits(path, PROMPT + result["tokens"][:-1])
    assert result["logits"].shape == theirs.shape            # the true vocabulary only
    scale = float(np.abs(theirs).max())
    err = float(np.abs(result["logits"] - theirs).max())
    assert err <= RTOL * scale, f"{name}: max |error| {err:.3g} > {RTOL:g} x max |logit| {scale:.3g}"


def test_summary_shows_padding_and_its_cost(decoded):
    name, path, compiled, result = decoded
    text = compiled.summary()
    line = next(line for line in text.splitlines() if line.startswith("padding"))
    assert all(size in line for size in CASES[name][2])
    cost = padding_cost(compiled)
    assert cost["memory_bytes"] > 0 and cost["bytes_per_token"] > 0
    assert f"{cost['bytes_per_token']:,} bytes streamed per token" in line
    # The gate's bf16 weights are stored (and streamed) at the padded sizes.
    padding = Padding.of(compiled.shape, compiled.target.array.lanes)
    assert compiled.memory_map.regions["w.L0.gate"].nbytes == 2 * padding.intermediate * padding.hidden


def test_aligned_shapes_are_not_padded(tmp_path):
    shape = load_checkpoint(make_checkpoint(tmp_path / "m", **SHAPES["gqa-untied"])).shape
    for target in TARGETS.values():
        padding = Padding.of(shape, target.array.lanes)
        assert padding.padded(shape) == []
    weights = {"model.norm.weight": np.ones(64, np.float32)}
    assert pad_weights(shape, Padding.of(shape, 8), weights) is weights
