"""The compiler's back end: chip ops packed into kernels, run on the fast model, against transformers.

Every shape of ``tests/llama_checkpoints.SHAPES`` (tied and untied embeddings,
grouped-query attention, wide heads) is compiled in both modes for the
co-simulated chip's 2x4 array and, for one shape, for the 4x8 array; the
runtime feeds a prompt one token per step on :class:`ModelDevice` and every
step's logits are compared with transformers' float32 forward over the same
tokens (teacher forcing). Then the fit and split decisions, the errors for
what a target cannot take, ``save`` / ``load`` and the summary.
"""

import asyncio
import dataclasses
import json
import pickle
import re

import numpy as np
import pytest

from sw.compiler.checkpoint import UnsupportedModelError, load_checkpoint
from sw.compiler.compile import compile_model, max_context
from sw.compiler.mapping import CompileError, CompiledModel, load, save
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice
from sw.target import CHIP, LARGE, TARGETS
from tests.llama_checkpoints import SHAPES, make_checkpoint, transformers_logits

# Weights are bf16 values held exactly in fp32 on the chip and in transformers' float32 forward, and both
# compute in fp32; only the summation order (lane-wise partial sums, cross-lane trees) and the chip's
# rsqrt / exp / reciprocal tail units differ from torch's, so the logits differ by ~1e-6 of their largest
# magnitude (measured: 7e-7 to 1e-6). The bound is 1e-4 of the largest |logit|: two orders of margin over
# rounding noise, while any real mapping error (a wrong weight tile, a missed mask, a stale KV row, RoPE
# on the wrong half) moves logits by a sizeable fraction of their range.
RTOL = 1e-4

CONTEXT = 16          # buckets 4, 8 and 16: ten prompt tokens cross two bucket boundaries
PROMPT_LEN = 10


def assert_logits_close(ours, theirs, what=""):
    assert ours.shape == theirs.shape, what
    scale = float(np.abs(theirs).max())
    err = float(np.abs(ours - theirs).max())
    assert err <= RTOL * scale, f"{what}: max |error| {err:.3g} > {RTOL:g} x max |logit| {scale:.3g}"
    # Same argmax at every position, unless transformers' top two are closer than the tolerance itself.
    top2 = np.sort(theirs, axis=-1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > 2 * RTOL * scale
    assert (ours.argmax(-1) == theirs.argmax(-1))[decided].all(), what
    return err / scale


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One random-weight checkpoint per shape, written once per module (per worker)."""
    root = tmp_path_factory.mktemp("ckpt")
    return {name: make_checkpoint(root / name, **shape) for name, shape in SHAPES.items()}


@pytest.fixture(scope="module")
def compiled(checkpoints):
    """compiled(shape, target, mode) -> CompiledModel, each compiled once per module."""
    cache = {}

    def get(shape, target="chip", mode="fused"):
        key = (shape, target, mode)
        if key not in cache:
            cache[key] = compile_model(load_checkpoint(checkpoints[shape]), TARGETS[target], mode=mode,
                                       context=CONTEXT)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def prompts():
    return {name: [int(t) for t in np.random.default_rng(7).integers(0, shape["vocab_size"], PROMPT_LEN)]
            for name, shape in SHAPES.items()}


@pytest.fixture(scope="module")
def reference(checkpoints, prompts):
    """transformers' float32 logits at every prompt position, once per shape."""
    cache = {}

    def get(shape):
        if shape not in cache:
            cache[shape] = transformers_logits(checkpoints[shape], prompts[shape])
        return cache[shape]

    return get


@pytest.fixture(scope="module")
def run_logits(compiled, prompts):
    """Teacher-forced logits (steps x vocab) of the fast model, once per (shape, target, mode)."""
    cache = {}

    def get(shape, target="chip", mode="fused"):
        key = (shape, target, mode)
        if key not in cache:
            c = compiled(shape, target, mode)
            result = asyncio.run(generate(ModelDevice(c.target), c, prompts[shape], max_new_tokens=0,
                                          keep_logits=True))
            assert result["tokens"] == [] and result["report"]["steps"] == PROMPT_LEN
            cache[key] = result["logits"]
        return cache[key]

    return get


CASES = [(shape, "chip", mode) for shape in sorted(SHAPES) for mode in ("fused", "unfused")]
CASES += [("tiny-tied", "4x8", "fused"), ("tiny-tied", "4x8", "unfused")]


@pytest.mark.parametrize("shape, target, mode", CASES)
def test_teacher_forced_logits_match_transformers(run_logits, reference, shape, target, mode):
    ours = run_logits(shape, target, mode)
    theirs = reference(shape)
    assert ours.dtype == np.float32 and ours.shape == (PROMPT_LEN, SHAPES[shape]["vocab_size"])
    assert_logits_close(ours, theirs, f"{shape} on {target}, {mode}")


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_fused_and_unfused_agree(compiled, run_logits, shape):
    fused, unfused = run_logits(shape, "chip", "fused"), run_logits(shape, "chip", "unfused")
    assert_logits_close(fused, unfused, f"{shape}: fused vs unfused")
    nf, nu = len(compiled(shape, "chip", "fused").launches()), len(compiled(shape, "chip", "unfused").launches())
    assert nf < nu, (nf, nu)
    # Unfused is the op-by-op baseline: one op per kernel.
    assert all(len(launch.ops) == 1 for launch in compiled(shape, "chip", "unfused").launches())
    assert any(len(launch.ops) > 1 for launch in compiled(shape, "chip", "fused").launches())


def test_every_bucket_runs_the_same_ops(compiled):
    c = compiled("tiny-tied")
    assert sorted(c.buckets) == [4, 8, 16] and c.context == CONTEXT
    ops = [[op.name for launch in launches for op in launch.ops] for launches in c.buckets.values()]
    assert all(o == ops[0] for o in ops)
    assert c.launches() is c.buckets[CONTEXT]
    for pos, tp in ((0, 4), (3, 4), (4, 8), (8, 16), (15, 16)):
        assert c.bucket(pos)[0] == tp
    with pytest.raises(CompileError, match="position 16 is past the compiled context of 16"):
        c.bucket(16)


def test_layers_split_to_fit_the_chip_and_fewer_kernels_on_4x8(compiled):
    pcus = CHIP.array.rows * CHIP.array.cols // 2
    assert pcus == 4
    chip = compiled("tiny-tied", "chip", "fused")
    for launch in chip.launches():
        used_pcus, used_pmus = launch.units()
        assert 1 <= used_pcus <= pcus and used_pmus <= pcus
    # A decoder layer needs far more than 4 PCUs, so each layer is spread over several kernels.
    for layer in range(SHAPES["tiny-tied"]["num_hidden_layers"]):
        kernels = [launch for launch in chip.launches() if any(op.name.startswith(f"L{layer}.") for op in launch.ops)]
        assert len(kernels) >= 3, [[op.name for op in k.ops] for k in kernels]
    # Every op of the step is in exactly one kernel, in order.
    names = [op.name for launch in chip.launches() for op in launch.ops]
    assert names == [op.name for launch in compiled("tiny-tied", "chip", "unfused").launches()
                     for op in launch.ops]
    large = compiled("tiny-tied", "4x8", "fused")
    assert len(large.launches()) < len(chip.launches()), (len(large.launches()), len(chip.launches()))
    assert max(len(launch.ops) for launch in large.launches()) > max(len(launch.ops) for launch in chip.launches())


def test_max_context_is_what_a_pmu_holds(checkpoints, tmp_path):
    long = make_checkpoint(tmp_path / "long", max_position_embeddings=1024, **SHAPES["wide-heads"])
    shape = load_checkpoint(long).shape
    # K of one head, context x head_dim words, must fit one PMU of lanes x pmu_bank_words words.
    assert max_context(shape, CHIP) == CHIP.array.pmu_words // shape.head_dim == 128
    # And never beyond the model's positions.
    assert max_context(load_checkpoint(checkpoints["gqa-untied"]).shape, CHIP) == 64
    c = compile_model(checkpoints["gqa-untied"], CHIP)  # context defaults to max_context
    assert c.context == 64 and max(c.buckets) == 64


def test_context_beyond_the_pmus_is_refused(tmp_path):
    long = make_checkpoint(tmp_path / "long", max_position_embeddings=1024, **SHAPES["wide-heads"])
    with pytest.raises(CompileError) as e:
        compile_model(long, CHIP, context=256)
    message = str(e.value)
    assert "PMU" in message and "256" in message and "16384" in message and str(CHIP.array.pmu_words) in message
    assert "longest context" in message and "128" in message


def test_bad_contexts_and_mode(checkpoints):
    with pytest.raises(CompileError, match="context 6 must be a positive multiple of the array's 4 lanes"):
        compile_model(checkpoints["tiny-tied"], CHIP, context=6)
    with pytest.raises(CompileError, match="context 128 exceeds the model's max_position_embeddings 64"):
        compile_model(checkpoints["tiny-tied"], CHIP, context=128)
    with pytest.raises(CompileError, match="mode must be 'fused' or 'unfused'"):
        compile_model(checkpoints["tiny-tied"], CHIP, mode="bogus", context=8)


@pytest.mark.parametrize("hidden, heads, message", [
    # 30 / 3 heads = head_dim 10: a valid Llama, but 30 is not a multiple of the chip's 4 lanes.
    (30, 3, "hidden size 30 is not a multiple of the array's 4 lanes"),
    # 36 / 3 heads = head_dim 12: a multiple of 4 lanes, but RoPE's half-heads of 6 values are not.
    (36, 3, "head_dim 12: RoPE rotates half-heads of 6 values, not a multiple of the array's 4 lanes"),
])
def test_shapes_the_lanes_cannot_take(tmp_path, hidden, heads, message):
    path = make_checkpoint(tmp_path / "odd", hidden_size=hidden, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=heads, num_key_value_heads=heads, vocab_size=32)
    with pytest.raises(CompileError, match=message):
        compile_model(path, CHIP, context=8)


def test_input_too_large_for_a_pmu(checkpoints):
    tiny_pmus = dataclasses.replace(CHIP, name="tiny-pmus",
                                    array=dataclasses.replace(CHIP.array, pmu_bank_words=16))
    assert tiny_pmus.array.pmu_words == 64
    with pytest.raises(CompileError) as e:
        compile_model(checkpoints["tiny-tied"], tiny_pmus, context=4)
    message = str(e.value)
    # The down projection's input, intermediate_size = 128 words, against 64 words per PMU.
    assert "PMU" in message and "128 words" in message and "64 words" in message, message


def test_op_larger_than_the_array(checkpoints):
    one_pcu = dataclasses.replace(CHIP, name="1x2", array=dataclasses.replace(CHIP.array, rows=1, cols=2))
    with pytest.raises(CompileError, match=r"op L0\.norm1 \(rmsnorm\) does not fit the 1x2 array on its own"):
        compile_model(checkpoints["tiny-tied"], one_pcu, context=4)


def test_unsupported_model_type(tmp_path):
    path = make_checkpoint(tmp_path / "m", **SHAPES["tiny-tied"])
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "mistral"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="model_type = 'mistral' is not supported"):
        compile_model(path, CHIP, context=8)


def test_save_load_round_trip(compiled, prompts, tmp_path):
    c = compiled("gqa-untied")
    save(c, tmp_path / "model.rdu")
    back = load(tmp_path / "model.rdu")
    assert isinstance(back, CompiledModel)
    assert back.summary() == c.summary()
    assert {tp: len(ls) for tp, ls in back.buckets.items()} == {tp: len(ls) for tp, ls in c.buckets.items()}
    assert (back.mode, back.context, back.target, back.shape) == (c.mode, c.context, c.target, c.shape)
    assert back.image.keys() == c.image.keys()
    assert all(np.array_equal(back.image[k], c.image[k]) for k in c.image)
    # The loaded model runs and computes the same logits bit for bit.
    run = lambda m: asyncio.run(generate(ModelDevice(m.target), m, prompts["gqa-untied"][:3], max_new_tokens=0))
    assert run(back)["logits_sha"] == run(c)["logits_sha"]


def test_load_refuses_other_pickles(tmp_path):
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"format": "openrdu-compiled-1", "buckets": {}}))
    with pytest.raises(CompileError, match="not a compiled OpenRDU model"):
        load(other)


@pytest.mark.parametrize("target", ["chip", "4x8"])
def test_summary(compiled, target):
    c = compiled("tiny-tied", target)
    text = c.summary()
    for word in ("kernels", "PCUs", "PMUs", "bytes", "cycles"):
        assert word in text, word
    assert f"{len(c.launches())} kernels per decode step" in text
    assert TARGETS[target].describe() in text
    # One row per kernel.
    assert sum(1 for line in text.splitlines() if re.match(r"k\d+ ", line)) == len(c.launches())


def test_large_target_is_the_4x8_array():
    assert (LARGE.array.rows, LARGE.array.cols, LARGE.array.lanes) == (4, 8, 8)
    assert (CHIP.array.rows, CHIP.array.cols, CHIP.array.lanes) == (2, 4, 4)
