"""Fusion with gated reads (sw/compiler/builder.py): attention stays in the kernel that writes this step's K and V.

A read of an HBM region that an earlier op of the kernel writes waits for that
write (``Stream.after``) instead of cutting the kernel; both backends' models
then produce the logits of the unfused program, bit for bit.
"""

import asyncio
import dataclasses

import pytest

from hw.mem.params import HBM
from sw.compiler.builder import FitError, KernelBuilder
from sw.compiler.compile import compile_model
from sw.compiler.launch import Stream
from sw.compiler.memory_map import MemoryMap
from sw.errors import LaunchError
from sw.loopnest import LoopNest
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice
from sw.target import LARGE
from tests.llama_checkpoints import SHAPES, make_checkpoint

PROMPT = [3, 17, 5, 9]


def builder(region_bytes):
    mmap = MemoryMap(LARGE.memory)
    mmap.add("cache", region_bytes, "kv_cache")
    return KernelBuilder(LARGE, mmap, {}, set())


def test_overlap_follows_the_position():
    b = builder(64 * 1024)
    base = b.mmap["cache"].offset
    row = (base, _nest(2), 32)                      # 2 words (32 bytes) at row ``pos``
    # The same row at every position; the next row never; the whole cache up to a row: from position 0 on.
    assert b._overlap("cache", row, row)
    assert not b._overlap("cache", row, (base + 32, _nest(2), 32))
    assert b._overlap("cache", (base, _nest(2 * 16), 0), row)
    # A second half of the region that the row never reaches while it stays inside the region.
    half = 32 * 1024
    assert not b._overlap("cache", (base, _nest(2), 0), (base + half, _nest(2), 32))
    assert b._overlap("cache", (base + half, _nest(2), 0), (base, _nest(2), 32))


def test_a_read_waits_for_the_one_write_it_may_see():
    b = builder(4096)
    r = b.mmap["cache"]
    b.streams += [Stream(4, "write", "cache", HBM, r.offset, _nest(4), 0),
                  Stream(5, "write", "cache", HBM, r.offset + 2048, _nest(4), 0)]
    assert b._writer("q", "cache", r.offset + 1024, _nest(4), 0, 0) is None
    assert b._writer("q", "cache", r.offset + 2048, _nest(4), 0, 0) == 5
    with pytest.raises(FitError, match="2 writes"):
        b._writer("q", "cache", r.offset, _nest(256), 0, 0)


def _nest(words):
    return LoopNest((words,), (1,))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = make_checkpoint(tmp_path_factory.mktemp("gated") / "ckpt", **SHAPES["tiny-tied"])
    return {mode: compile_model(path, LARGE, mode=mode, context=16) for mode in ("fused", "unfused")}


def test_attention_reads_this_steps_rows_in_the_writing_kernel(compiled):
    launches = compiled["fused"].launches()
    kernel_of = {op.name: i for i, launch in enumerate(launches) for op in launch.ops}
    for layer in range(SHAPES["tiny-tied"]["num_hidden_layers"]):
        rope, scores = kernel_of[f"L{layer}.rope"], kernel_of[f"L{layer}.scores"]
        assert rope == scores, f"layer {layer}: attention cut from the K/V write ({rope} vs {scores})"
        streams = launches[scores].streams
        writes = {s.agcu: s for s in streams if s.direction == "write"}
        gated = [s for s in streams if s.direction == "read" and s.after is not None]
        assert gated and all(writes[s.after].region == s.region for s in gated), f"layer {layer}: {gated}"
    fused = asyncio.run(generate(ModelDevice(LARGE), compiled["fused"], PROMPT, max_new_tokens=3))
    unfused = asyncio.run(generate(ModelDevice(LARGE), compiled["unfused"], PROMPT, max_new_tokens=3))
    assert fused["tokens"] == unfused["tokens"] and fused["logits_sha"] == unfused["logits_sha"]


def test_a_lagged_gate_finds_no_plan_of_an_unlagged_one(compiled):
    # A plan is keyed by the launch's shapes; a read's lag is among them, so a launch that differs from a planned
    # one only in a gate's lag is not replayed by that plan but refused, as the fast model refuses lagged gates.
    launch = next(x for x in compiled["fused"].launches() if any(s.after is not None for s in x.streams))
    reads, writes = launch.patterns(0, 2)
    chip = ModelDevice(LARGE).chip
    chip.load_program(launch.program)
    chip.execute(reads, writes)
    assert chip.launcher(reads, writes) is not None
    lagged = {k: dataclasses.replace(p, lag=1) if p.after is not None else p for k, p in reads.items()}
    assert chip.launcher(lagged, writes) is None
    with pytest.raises(LaunchError, match="lag 1"):
        chip.execute(lagged, writes)
