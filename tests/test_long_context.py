"""Attention contexts longer than one PMU holds K for: K goes through the transposing PMU in chunks.

A tiny checkpoint with head_dim 128 (K of one head is ``context x 128`` words, so a PMU of 8192 words
holds 64 positions of it whole) compiled for 128 positions on the chip and the 4x8 array, a prompt of
70 tokens (past the unchunked limit, longer than two chunks of 32): greedy tokens equal ``generate``'s
for 16 tokens and every step's logits match transformers' float32 forward within the Llama tests'
tolerance. Chunking changes no bit (the same logits as a chip whose PMUs hold K whole; looped layers
as fused ones), contexts that fit one PMU compile to the very programs they did, the limits name their
resource, and on the co-simulated chip (RTL) a chunked bucket gives the fast model's logits bit for bit.
"""

import asyncio
import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from facts.loopnest import MAX_COUNT  # noqa: E402
from sw.compiler.checkpoint import load_checkpoint  # noqa: E402
from sw.compiler.compile import check_fit, compile_model, default_context, max_context  # noqa: E402
from sw.errors import CompileError  # noqa: E402
from sw.loopnest import LoopNest  # noqa: E402
from sw.runtime.decode import generate  # noqa: E402
from sw.runtime.device import ModelDevice  # noqa: E402
from sw.target import CHIP, CHIP_4X8, TARGETS  # noqa: E402
from tests.llama_checkpoints import make_checkpoint, transformers_greedy, transformers_logits  # noqa: E402

RTOL = 1e-4                         # as tests/test_decode_model.py: of the largest |logit|
NEW_TOKENS = 16
CONTEXT = 128
PROMPT = np.random.default_rng(0).integers(0, 64, 70).tolist()
COMMON = dict(eos_token_id=None, bos_token_id=None, pad_token_id=None)
SHAPE = dict(hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
             head_dim=128, vocab_size=64, tie_word_embeddings=True, **COMMON)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("long"), max_position_embeddings=CONTEXT, **SHAPE)


@pytest.fixture(scope="module", params=["chip", "4x8"])
def decoded(request, folder):
    target = TARGETS[request.param]
    compiled = compile_model(folder, target, context=CONTEXT)
    result = asyncio.run(generate(ModelDevice(target), compiled, PROMPT, max_new_tokens=NEW_TOKENS,
                                  stop_at_eos=False, keep_logits=True))
    return target, compiled, result


def chunks(compiled, tp):
    return {op.attrs.get("chunk") for launch in compiled.buckets[tp] for op in launch.ops
            if op.kind == "attention_scores"}


def test_only_the_long_bucket_chunks(decoded):
    target, compiled, result = decoded
    words, hd = target.array.pmu_words, SHAPE["head_dim"]
    assert CONTEXT * hd > words >= CONTEXT // 2 * hd        # K at the context does not fit a PMU; half of it does
    for tp in compiled.buckets:
        if tp * hd <= words:
            assert chunks(compiled, tp) == {None}, tp
    chunk, = chunks(compiled, CONTEXT)
    # Whole blocks of keys, a divisor of the context, two buffers of them in the PMU, shorter than the prompt.
    assert chunk % target.array.lanes == 0 and CONTEXT % chunk == 0 and 2 * chunk * hd <= words
    assert len(PROMPT) > max(2 * chunk, CONTEXT // 2)     # the prompt itself runs chunked steps


def test_greedy_tokens_equal_generate(decoded, folder):
    target, compiled, result = decoded
    assert result["tokens"] == transformers_greedy(folder, PROMPT, NEW_TOKENS)


def test_teacher_forced_logits(decoded, folder):
    target, compiled, result = decoded
    fed = PROMPT + result["tokens"][:-1]
    theirs = transformers_logits(folder, fed)
    assert result["logits"].shape == theirs.shape
    scale = float(np.abs(theirs).max())
    err = float(np.abs(result["logits"] - theirs).max())
    assert err <= RTOL * scale, f"{target.name}: max |error| {err:.3g} > {RTOL:g} x max |logit| {scale:.3g}"


def test_chunking_changes_no_bit(folder):
    """The chunks of a head reach the q.K^T PCU in key order: a chip whose PMUs hold K whole gives the same bits."""
    compiled = compile_model(folder, CHIP, context=CONTEXT)
    big = dataclasses.replace(CHIP, array=dataclasses.replace(CHIP.array,
                                                              pmu_bank_words=2 * CHIP.array.pmu_bank_words))
    whole = compile_model(folder, big, context=CONTEXT)
    assert chunks(whole, CONTEXT) == {None}
    prompt = PROMPT[:66]                                    # positions 64 to 67 in the chunked bucket
    ours, theirs = (asyncio.run(generate(ModelDevice(t), c, prompt, max_new_tokens=3, keep_logits=True))
                    for t, c in ((CHIP, compiled), (big, whole)))
    assert ours["logits_sha"] == theirs["logits_sha"]
    assert ours["logits"].tobytes() == theirs["logits"].tobytes()


def test_looped_layers_chunk_too(folder):
    """On chip-4x8 (a layer fits one kernel) the layers loop over the chunked bucket with the fused logits."""
    prompt = PROMPT[:66]
    shas = []
    for mode in ("looped", "fused"):
        compiled = compile_model(folder, CHIP_4X8, context=CONTEXT, mode=mode)
        assert chunks(compiled, CONTEXT) != {None} and not compiled.loop_note
        shas.append(asyncio.run(generate(ModelDevice(CHIP_4X8), compiled, prompt, max_new_tokens=3))["logits_sha"])
    assert shas[0] == shas[1]


def test_contexts_that_fit_one_pmu_compile_as_before(folder):
    """The default context is still the longest unchunked one, and its buckets' programs are the very ones a
    longer context's short buckets run: nothing below the chunked bucket depends on chunking."""
    short = compile_model(folder, CHIP)
    assert short.context == default_context(short.shape, CHIP) == CHIP.array.pmu_words // SHAPE["head_dim"]
    assert all(chunks(short, tp) == {None} for tp in short.buckets)
    long = compile_model(folder, CHIP, context=CONTEXT)
    assert sorted(long.buckets) == sorted(short.buckets) + [CONTEXT]
    for tp, launches in short.buckets.items():
        assert [launch.program.words for launch in launches] == \
            [launch.program.words for launch in long.buckets[tp]], tp


def test_limits_name_their_resource(tmp_path):
    path = make_checkpoint(tmp_path / "m", max_position_embeddings=16384, **SHAPE)
    shape = load_checkpoint(path).shape
    L = CHIP.array.lanes
    # On the chip the HBM bounds it (a context x context mask table), far past one PMU's 64 positions of K.
    top = max_context(shape, CHIP)
    assert default_context(shape, CHIP) == 64 < top < shape.max_positions and top % L == 0
    check_fit(shape, CHIP, top)
    with pytest.raises(CompileError) as e:
        check_fit(shape, CHIP, top + L)
    message = str(e.value)
    assert f"attention over {top + L} positions" in message and "bytes of HBM" in message
    assert f"holds {CHIP.memory.hbm.capacity}" in message and f"attention takes at most {top} positions" in message
    # With HBM to spare, a head's scores row in one PMU is the limit.
    roomy = dataclasses.replace(CHIP, memory=dataclasses.replace(
        CHIP.memory, hbm=dataclasses.replace(CHIP.memory.hbm, capacity=1 << 30)))
    words = CHIP.array.pmu_words
    assert max_context(shape, roomy) == words
    check_fit(shape, roomy, words)
    with pytest.raises(CompileError, match=f"attention over {words + L} positions: a head's scores row is "
                                           f"{words + L} words .* a PMU holds {words}; the target's attention "
                                           f"takes at most {words} positions for this model"):
        check_fit(shape, roomy, words + L)


def test_k_past_one_agcu_level_streams_a_level_per_chunk(tmp_path):
    """head_dim 1024: from 256 positions a head's K is more memory words than one AGCU loop level counts; the
    read then takes a level per chunk and visits the same addresses in the same order."""
    shape = dict(SHAPE, hidden_size=32, intermediate_size=32, num_hidden_layers=1, head_dim=1024, vocab_size=32)
    compiled = compile_model(make_checkpoint(tmp_path / "m", max_position_embeddings=512, **shape), CHIP,
                             context=512)
    row = 4 * shape["head_dim"] // CHIP.memory.word_bytes
    split = 0
    for tp, launches in compiled.buckets.items():
        op, launch = next((op, launch) for launch in launches for op in launch.ops if op.kind == "attention_scores")
        k, = [s for s in launch.streams if s.direction == "read" and s.region == op.attrs["slots"] and not s.pos_stride]
        one = LoopNest((tp * row, 2, 1), (1, 0, 512 * row))
        assert k.nest.bounds[0] <= MAX_COUNT and np.array_equal(k.nest.addresses(), one.addresses()), tp
        split += len(k.nest.bounds) > 3
        assert (len(k.nest.bounds) > 3) == (tp * row > MAX_COUNT), tp
    assert split == 2                                       # the buckets of 256 and 512 positions


def test_chunked_attention_on_the_rtl(tmp_path):
    """head_dim 1024: K of one head fits a PMU for 8 positions; steps 8 to 10 run the 16-position bucket in
    chunks of 4 on the co-simulated chip, with the fast model's logits bit for bit."""
    from cosim.decode import run_rtl
    from sw.compiler.program import save

    shape = dict(SHAPE, hidden_size=32, intermediate_size=32, num_hidden_layers=1, head_dim=1024, vocab_size=32)
    path = make_checkpoint(tmp_path / "ckpt", max_position_embeddings=16, **shape)
    compiled = compile_model(path, CHIP, context=16)
    assert chunks(compiled, 8) == {None} and chunks(compiled, 16) == {4}
    save(compiled, tmp_path / "chunked.rdu")
    prompt, new = [3, 17, 5, 9, 1, 2, 30, 11, 7], 3
    got = run_rtl(tmp_path / "chunked.rdu", {"prompt_ids": prompt, "max_new_tokens": new, "temperature": 0.0,
                                              "top_k": 0, "seed": 0})
    want = asyncio.run(generate(ModelDevice(CHIP), compiled, prompt, max_new_tokens=new))
    assert got["report"]["backend"] == "rtl"
    assert got["logits_sha"] == want["logits_sha"], "RTL logits differ from the fast model's"
    assert got["tokens"] == want["tokens"]
    ratio = np.array(want["step_kernel_cycles"]) / np.array(got["step_kernel_cycles"])
    assert np.all(np.abs(ratio - 1) <= 0.10), f"model/RTL kernel cycles per step {ratio}"
