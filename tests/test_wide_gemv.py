"""GEMV inputs wider than one PMU: the input streams from memory through its PMU a chunk a pass, once per tile.

A tiny checkpoint whose intermediate size (1000) and heads x head_dim (20 x 32 = 640) exceed the 256-word
PMUs of a user-defined target (the 4x8 array with 64-word PMU banks): the down and output projections take
their input in chunks, RoPE and the attention's q buffer take a head a pass. Greedy tokens equal
``generate``'s for 16 tokens and every step's logits match transformers' float32 forward within the Llama
tests' tolerance. Each output still sums over all of K in the same order, so the logits are bit for bit a
chip's whose PMUs hold every input whole (fused, unfused, looped); models that fit a PMU compile as before;
the limits name their resource; on the co-simulated chip (RTL) wide inputs give the fast model's logits bit
for bit.
"""

import asyncio
import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hw.tile.pmu import PASS_BITS  # noqa: E402
from sw.compiler.checkpoint import load_checkpoint  # noqa: E402
from sw.compiler.compile import check_fit, compile_model  # noqa: E402
from sw.errors import CompileError  # noqa: E402
from sw.runtime.decode import generate  # noqa: E402
from sw.runtime.device import ModelDevice  # noqa: E402
from sw.target import CHIP_4X8  # noqa: E402
from tests.llama_checkpoints import make_checkpoint, transformers_greedy, transformers_logits  # noqa: E402

RTOL = 1e-4                         # as tests/test_decode_model.py: of the largest |logit|
NEW_TOKENS = 16
CONTEXT = 32
PROMPT = np.random.default_rng(0).integers(0, 64, 12).tolist()
SHAPE = dict(hidden_size=80, intermediate_size=1000, num_hidden_layers=2, num_attention_heads=20,
             num_key_value_heads=4, head_dim=32, vocab_size=64, tie_word_embeddings=True, eos_token_id=None,
             bos_token_id=None, pad_token_id=None)
SMALL = dataclasses.replace(CHIP_4X8, name="4x8-small-pmu",
                            array=dataclasses.replace(CHIP_4X8.array, pmu_bank_words=64))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("wide"), max_position_embeddings=CONTEXT, **SHAPE)


@pytest.fixture(scope="module")
def decoded(folder):
    compiled = compile_model(folder, SMALL, context=CONTEXT)
    result = asyncio.run(generate(ModelDevice(SMALL), compiled, PROMPT, max_new_tokens=NEW_TOKENS,
                                  stop_at_eos=False, keep_logits=True))
    return compiled, result


def gemv_chunks(compiled):
    return {op.name: (op.attrs["k"], op.attrs.get("chunk")) for launch in compiled.buckets[CONTEXT]
            for op in launch.ops if op.kind == "gemv" and op.name.startswith("L0.")}


def test_wide_inputs_are_chunked(decoded):
    compiled, _ = decoded
    words, L = SMALL.array.pmu_words, SMALL.array.lanes
    chunks = gemv_chunks(compiled)
    assert {name: k for name, (k, _) in chunks.items() if k > words} == {"L0.o+add1": 640, "L0.down+add2": 1000}
    # RoPE's input (q and k heads) and the attention's q do not fit either: they take a head a pass.
    assert (SHAPE["num_attention_heads"] + SHAPE["num_key_value_heads"]) * SHAPE["head_dim"] > 640 > words
    for name, (k, chunk) in chunks.items():
        if k <= words:
            assert chunk is None, name
        else:
            # Whole blocks of lanes, a divisor of K, two buffers of it in the PMU.
            assert chunk % L == 0 and k % chunk == 0 and 2 * chunk <= words, (name, chunk)


def test_greedy_tokens_equal_generate(decoded, folder):
    _, result = decoded
    assert result["tokens"] == transformers_greedy(folder, PROMPT, NEW_TOKENS)


def test_teacher_forced_logits(decoded, folder):
    _, result = decoded
    theirs = transformers_logits(folder, PROMPT + result["tokens"][:-1])
    assert result["logits"].shape == theirs.shape
    scale = float(np.abs(theirs).max())
    err = float(np.abs(result["logits"] - theirs).max())
    assert err <= RTOL * scale, f"max |error| {err:.3g} > {RTOL:g} x max |logit| {scale:.3g}"


def test_chunking_changes_no_bit(folder):
    """Each tile's walk is all of K in order: the 4x8 array's 8192-word PMUs, which hold every input whole,
    give the same logits bit for bit, in every mode (looped falls back to fused: a wide input starts a kernel)."""
    whole = compile_model(folder, CHIP_4X8, context=CONTEXT)
    assert all(chunk is None for _, chunk in gemv_chunks(whole).values())
    prompt = PROMPT[:10]
    theirs = asyncio.run(generate(ModelDevice(CHIP_4X8), whole, prompt, max_new_tokens=3, keep_logits=True))
    for mode in ("fused", "unfused", "looped"):
        compiled = compile_model(folder, SMALL, context=CONTEXT, mode=mode)
        ours = asyncio.run(generate(ModelDevice(SMALL), compiled, prompt, max_new_tokens=3, keep_logits=True))
        assert ours["logits"].tobytes() == theirs["logits"].tobytes(), mode


def test_limits_name_their_resource(folder):
    shape = load_checkpoint(folder).shape
    words = SMALL.array.pmu_words
    check_fit(shape, SMALL, CONTEXT)
    with pytest.raises(CompileError) as e:
        check_fit(dataclasses.replace(shape, hidden_size=words + SMALL.array.lanes), SMALL, CONTEXT)
    assert "hidden size" in str(e.value) and f"{words + SMALL.array.lanes} words" in str(e.value) and \
        f"one PMU of {words} words" in str(e.value)
    # Chunks of at most half a PMU for each of hidden / lanes tiles of outputs: past the PMU's pass counter.
    limit = (1 << PASS_BITS) - 1
    wide = words // 2 * (limit // (shape.hidden_size // SMALL.array.lanes) + 1)
    with pytest.raises(CompileError) as e:
        check_fit(dataclasses.replace(shape, intermediate_size=wide), SMALL, CONTEXT)
    assert "down projection's input" in str(e.value) and f"{wide} words" in str(e.value) and \
        f"counts to {limit}" in str(e.value)


def test_wide_inputs_on_the_rtl(tmp_path):
    """On the co-simulated chip (8192-word PMUs): intermediate 8320 and 9 heads of 1024 (o-proj input 9216,
    RoPE input 10240) run chunked and a head a pass, with the fast model's logits bit for bit."""
    from cosim.decode import run_rtl
    from sw.compiler.program import save
    from sw.target import CHIP

    shape = dict(SHAPE, hidden_size=36, intermediate_size=8320, num_hidden_layers=1, num_attention_heads=9,
                 num_key_value_heads=1, head_dim=1024, vocab_size=32)
    path = make_checkpoint(tmp_path / "ckpt", max_position_embeddings=8, **shape)
    compiled = compile_model(path, CHIP, context=8)
    chunked = {op.name: op.attrs.get("chunk") for launch in compiled.buckets[8] for op in launch.ops
               if op.kind == "gemv" and op.attrs["k"] > CHIP.array.pmu_words}
    assert chunked == {"L0.o+add1": 3072, "L0.down+add2": 2080}
    save(compiled, tmp_path / "wide.rdu")
    prompt, new = [3, 17], 1
    got = run_rtl(tmp_path / "wide.rdu", {"prompt_ids": prompt, "max_new_tokens": new, "temperature": 0.0,
                                          "top_k": 0, "seed": 0})
    want = asyncio.run(generate(ModelDevice(CHIP), compiled, prompt, max_new_tokens=new))
    assert got["report"]["backend"] == "rtl"
    assert got["logits_sha"] == want["logits_sha"], "RTL logits differ from the fast model's"
    assert got["tokens"] == want["tokens"]
    ratio = np.array(want["step_kernel_cycles"]) / np.array(got["step_kernel_cycles"])
    assert np.all(np.abs(ratio - 1) <= 0.10), f"model/RTL kernel cycles per step {ratio}"
