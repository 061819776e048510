"""Batched prefill (sw/compiler/prefill.py) on the fast model: same tokens and logits as token by token.

Tiny random checkpoints (written by transformers' ``save_pretrained``) are compiled with prefill for the
co-simulated chip and for the 4x8 array; the prompt's positions before its last token run as prefill chunks
(GEMMs over blocks of positions, the other ops looped over them), then the last prompt token as a decode
step. The greedy tokens equal transformers' ``generate`` and token-by-token decoding, and the logits from
the last prompt token on are bit-identical to token by token's. Prompts that need one chunk, several, and a
padded last chunk; a sliding window shorter than the prompt; biases, grouped KV heads and sizes that pad.
"""

import asyncio
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sw.compiler.compile import compile_model  # noqa: E402
from sw.compiler.prefill import blocks, chunks  # noqa: E402
from sw.compiler.program import load, save  # noqa: E402
from sw.runtime.decode import generate  # noqa: E402
from sw.runtime.device import ModelDevice  # noqa: E402
from sw.target import CHIP, LARGE  # noqa: E402
from tests.llama_checkpoints import make_checkpoint, transformers_greedy  # noqa: E402

NEW_TOKENS = 16
CONTEXT = 64
SHAPE = dict(hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=64, tie_word_embeddings=True, eos_token_id=None, bos_token_id=None, pad_token_id=None)
MODELS = {
    # q/k/v biases, grouped KV heads, an intermediate size the lanes do not divide (padded to 40).
    "qwen2-odd": dict(model_type="qwen2", intermediate_size=37),
    # A sliding window of 8 over prompts of 20 and 45 tokens; separate lm_head.
    "mistral-window": dict(model_type="mistral", sliding_window=8, tie_word_embeddings=False),
    "llama-biases": dict(model_type="llama", attention_bias=True, mlp_bias=True),
}


def prompt(n, vocab=64, seed=1):
    rng = np.random.default_rng(seed)
    return [int(t) for t in rng.integers(0, vocab, n)]


def decode(compiled, ids, **kwargs):
    return asyncio.run(generate(ModelDevice(compiled.target), compiled, ids, max_new_tokens=NEW_TOKENS,
                                stop_at_eos=False, keep_logits=True, **kwargs))


def test_blocks_and_chunks():
    assert blocks(64, 2) == [8, 32] and blocks(256, 4) == [8, 32, 128] and blocks(4, 2) == []
    assert blocks(64, 3) == [9, 33]
    buckets = [4, 8, 16, 32, 64]
    # One chunk that covers the prompt when it wastes less than half of itself, else the largest that fits.
    assert chunks(7, [8, 32], 64, buckets) == [(0, 8, 8)]
    assert chunks(19, [8, 32], 64, buckets) == [(0, 32, 32)]
    assert chunks(44, [8, 32], 64, buckets) == [(0, 32, 32), (32, 8, 64), (40, 8, 64)]
    assert chunks(3, [8, 32], 64, buckets) == [(0, 8, 8)]
    # No block fits before the context ends: the rest is left to decode steps.
    assert chunks(60, [8, 32], 64, buckets) == [(0, 32, 32), (32, 32, 64)]
    assert chunks(60, [32], 64, buckets) == [(0, 32, 32), (32, 32, 64)]
    assert chunks(60, [32], 40, [32, 40]) == [(0, 32, 32)]


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request, tmp_path_factory):
    path = make_checkpoint(tmp_path_factory.mktemp(request.param), **{**SHAPE, **MODELS[request.param]})
    return request.param, path, compile_model(path, CHIP, context=CONTEXT, prefill=True)


@pytest.mark.parametrize("length", [20, 45])
def test_prefill_equals_token_by_token_and_transformers(model, length):
    name, path, compiled = model
    assert not compiled.prefill_note
    ids = prompt(length)
    batched, stepped = decode(compiled, ids, prefill=True), decode(compiled, ids)
    assert batched["tokens"] == stepped["tokens"] == transformers_greedy(path, ids, NEW_TOKENS)
    assert np.array_equal(batched["logits"], stepped["logits"][length - 1:]), "logits differ after prefill"
    pre = batched["report"]["prefill"]
    assert pre["positions"] == length - 1 and pre["chunks"] == len(compiled.prefill_chunks(length - 1))
    assert pre["kernels"] > 0 and pre["kernel_cycles"] > 0 and pre["hbm_read"] > 0
    assert batched["report"]["steps"] == NEW_TOKENS
    assert batched["report"]["prompt_cycles"] == pre["cycles"] + batched["step_cycles"][0]
    assert stepped["report"]["prompt_cycles"] == sum(stepped["step_cycles"][:length])
    assert batched["report"]["prompt_cycles"] < stepped["report"]["prompt_cycles"]


def test_short_prompts_run_token_by_token(model):
    name, path, compiled = model
    for ids in ([7], [7, 3, 9, 4]):
        short = decode(compiled, ids, prefill=True)
        assert "prefill" not in short["report"] and short["tokens"] == decode(compiled, ids)["tokens"]
    assert "prefill" in decode(compiled, [7, 3, 9, 4, 5], prefill=True)["report"]


def test_stages_that_do_not_divide_the_context(tmp_path):
    """3-stage PCUs: chunks of 9 and 33 positions, the GEMM mask table padded to whole blocks of 3 rows."""
    path = make_checkpoint(tmp_path / "ckpt", **SHAPE)
    target = replace(CHIP, name="chip-s3", array=replace(CHIP.array, stages=3))
    compiled = compile_model(path, target, context=CONTEXT, prefill=True)
    assert not compiled.prefill_note and sorted({c.block for c in compiled.prefill}) == [9, 33]
    assert "prefill: chunks of 9, 33 positions" in compiled.summary()
    ids = prompt(20)
    batched, stepped = decode(compiled, ids, prefill=True), decode(compiled, ids)
    assert batched["tokens"] == stepped["tokens"]
    assert np.array_equal(batched["logits"], stepped["logits"][19:])


def test_program_file_keeps_prefill(model, tmp_path):
    name, path, compiled = model
    save(compiled, tmp_path / "m.pkl")
    again = load(tmp_path / "m.pkl")
    assert [(c.block, c.tp, len(c.launches)) for c in again.prefill] == \
        [(c.block, c.tp, len(c.launches)) for c in compiled.prefill]
    ids = prompt(12)
    assert decode(again, ids, prefill=True)["logits_sha"] == decode(compiled, ids, prefill=True)["logits_sha"]


def test_gemm_kernels_on_the_large_array(tmp_path):
    """4x8: the projections stream their weights once per 4 x 4 positions and attention is a GEMM per head;
    the 2x4 chip has no room for the GEMM softmax and loops the decode step's attention over the positions."""
    path = make_checkpoint(tmp_path / "ckpt", **SHAPE)
    large = compile_model(path, LARGE, context=32, prefill=True)
    chunk = next(c for c in large.prefill if c.block == 32 and c.tp == 32)
    kinds = [launch.ops[0].kind for launch in chunk.launches]
    assert kinds.count("prefill_scores") == kinds.count("prefill_values") == 2 * 4       # layers x heads
    gemms = [launch.ops[0] for launch in chunk.launches if launch.ops[0].kind == "prefill_gemm"]
    assert gemms and all(op.attrs["ways"] == 4 for op in gemms)
    ids = prompt(17)                         # two chunks of 8, each weight streamed once per 8 positions
    batched, stepped = decode(large, ids, prefill=True), decode(large, ids)
    assert batched["report"]["prefill"]["chunks"] == 2
    assert batched["tokens"] == stepped["tokens"]
    assert np.array_equal(batched["logits"], stepped["logits"][16:])
    assert batched["report"]["prefill"]["hbm_read"] < 0.3 * 16 * stepped["report"]["hbm_read_bytes_per_token"]
    small = compile_model(path, CHIP, context=CONTEXT, prefill=True)
    kinds = {launch.ops[0].kind for c in small.prefill for launch in c.launches}
    assert "attention_scores" in kinds and "prefill_scores" not in kinds and "prefill_values" in kinds


def test_no_prefill_is_said_and_the_prompt_runs_token_by_token(tmp_path):
    path = make_checkpoint(tmp_path / "ckpt", **SHAPE)
    compiled = compile_model(path, CHIP, context=4, prefill=True)
    assert not compiled.prefill and "fits the context of 4" in compiled.prefill_note
    ids = prompt(3)
    run = asyncio.run(generate(ModelDevice(CHIP), compiled, ids, max_new_tokens=1, prefill=True))
    assert "prefill" not in run["report"] and run["report"]["steps"] == 3
    assert "prefill: no prefill chunk" in compiled.summary()
    plain = compile_model(path, CHIP, context=CONTEXT)
    assert not plain.prefill and plain.prefill_note == "" and "\nprefill:" not in plain.summary()
