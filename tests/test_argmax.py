"""Greedy decoding's token on chip (the ``argmax`` chip op, sw/compiler/templates.py) against numpy's argmax.

The kernel reads logits from HBM and leaves ``-index`` of the first largest one in the ``token`` region; the
fast model runs it bit for bit as the RTL does (tests/test_decode_rtl.py runs it on the co-simulated chip
inside every fused step). Logits with a NaN or ``+inf`` give NaN, and the runtime then picks on the host.
"""

import asyncio

import numpy as np
import pytest

from hw.mem.params import HBM
from sw.compiler.fuse import build_kernel
from sw.compiler.launch import Launch
from sw.compiler.layout import argmax_tables, fp32_words
from sw.compiler.memory_map import MemoryMap
from sw.compiler.ops import ChipOp
from sw.runtime.device import ModelDevice
from sw.target import CHIP, LARGE


def chip_argmax(target, logits, vocab=None):
    """The token the argmax kernel leaves for ``logits`` (float32, padded to whole vectors): -value as a float."""
    n = logits.size
    vocab = n if vocab is None else vocab
    mmap = MemoryMap(target.memory)
    image = {"logits": fp32_words(logits)}
    for name, which in (("argmax.index", 0), ("argmax.pad", 1)):
        if which == 0 or n > vocab:
            image[name] = fp32_words(argmax_tables(n, vocab)[which])
    for name, words in image.items():
        mmap.add(name, 4 * words.size, "table")
    mmap.add("token", 4 * target.array.lanes, "output")
    op = ChipOp("argmax", "argmax", (), (), dict(logits="logits", n=n, vocab=vocab, index="argmax.index",
                                                  pad="argmax.pad" if n > vocab else None, token="token"))
    program, streams = build_kernel(target, mmap, {}, [op], set())

    async def run():
        device = ModelDevice(target)
        for name, words in image.items():
            await device.write(HBM, mmap[name].offset, words)
        at = mmap.add("program", 4 * len(program.words) + 64, "program").offset
        await device.write(HBM, at, np.asarray(program.words, np.uint32))
        await device.load_program(program, HBM, at)
        await device.execute(*Launch("argmax", [op], program, streams).patterns(0, 0))
        return (await device.read(HBM, mmap["token"].offset, 1)).view(np.float32)[0]
    return -float(asyncio.run(run()))


@pytest.mark.parametrize("target", [CHIP, LARGE], ids=["2-stage", "4-stage"])
def test_the_first_largest_logit(target):
    rng = np.random.default_rng(4)
    L = target.array.lanes
    cases = [rng.normal(0, 3, 16 * L), -np.abs(rng.normal(5, 2, 8 * L)), rng.integers(-2, 3, 8 * L),
             np.full(4 * L, -0.0), np.r_[np.zeros(L), -0.0, np.zeros(L - 1)], rng.normal(0, 1e-30, 4 * L),
             np.r_[3e38, -3e38, np.full(2 * L - 2, -np.inf)], np.r_[np.full(L - 1, -np.inf), 1.0, np.zeros(L)]]
    for logits in cases:
        logits = np.asarray(logits, np.float32)
        assert chip_argmax(target, logits) == np.argmax(logits), logits


def test_padding_never_wins():
    L = CHIP.array.lanes
    logits = np.r_[np.full(L + 1, -4.0, np.float32), np.zeros(L - 1, np.float32)]    # the zeros are padding
    logits[3] = -1.5
    assert chip_argmax(CHIP, logits, vocab=L + 1) == 3


def test_nan_and_plus_inf_leave_no_token():
    L = CHIP.array.lanes
    for bad in (np.nan, np.inf):
        logits = np.zeros(2 * L, np.float32)
        logits[L + 1] = bad
        assert np.isnan(chip_argmax(CHIP, logits))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from sw.compiler.compile import compile_model
    from tests.llama_checkpoints import SHAPES, make_checkpoint

    return compile_model(make_checkpoint(tmp_path_factory.mktemp("argmax") / "ckpt", **SHAPES["tiny-tied"]), CHIP,
                         context=16)


def _decode(compiled, **kwargs):
    from sw.runtime.decode import generate

    return asyncio.run(generate(ModelDevice(CHIP), compiled, [3, 17, 5], max_new_tokens=3, **kwargs))


def test_the_runtime_reads_the_token_or_the_logits(small):
    link, wb, vocab = float(CHIP.memory.host_bytes_per_cycle), CHIP.memory.word_bytes, small.shape.vocab_size
    greedy = _decode(small, keep_logits=True)
    # The chip's token is the host's argmax of the same logits, and only its memory word crosses the link.
    assert greedy["tokens"] == [int(np.argmax(row)) for row in greedy["logits"][2:]]
    assert greedy["report"]["host_io_cycles_per_token"] == wb / link
    sampled = _decode(small, temperature=0.8, seed=3)
    assert sampled["report"]["host_io_cycles_per_token"] == 4 * vocab / link


def test_nan_logits_are_picked_on_the_host(small):
    from dataclasses import replace

    image = dict(small.image)
    image["w.norm"] = np.full_like(image["w.norm"], 0x7FC00000)           # every logit NaN
    broken = replace(small, image=image)
    out = _decode(broken)
    link, wb = float(CHIP.memory.host_bytes_per_cycle), CHIP.memory.word_bytes
    assert out["tokens"] == [0, 0, 0]                                      # numpy's argmax: the first NaN
    assert out["report"]["host_io_cycles_per_token"] == (wb + 4 * small.shape.vocab_size) / link
