"""Chip orchestration on the fast model: launch lists, the sequencer's contract and its errors.

The co-simulated sequencer runs the same lists in ``cosim/tb`` (the ``chip``
unit); here the fast model's side: a compiled model's lists decode to its
launches, a step walked by the sequencer gives the host-orchestrated step's
logits and kernel cycles bit for bit with one host round trip instead of one
per kernel, and a malformed list or a bad pattern is refused naming the entry.
"""

import asyncio
import dataclasses

import numpy as np
import pytest

from hw.mem.launch_list import direction_record_layout, header_layout, program_record_layout, record_words
from hw.mem.params import DDR, HBM
from sw.compiler.compile import compile_model, launch_entries
from sw.errors import ChipError, DecodeError
from sw.loopnest import LoopNest
from sw.runtime import launch_list
from sw.runtime.chip import Pattern
from sw.runtime.decode import Session, generate
from sw.runtime.device import ModelDevice
from sw.target import CHIP, LARGE
from tests.llama_checkpoints import SHAPES, make_checkpoint

N_AGCUS = len(CHIP.agcus)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("orchestration"), **SHAPES["tiny-tied"])


@pytest.fixture(scope="module", params=["fused", "unfused"])
def compiled(request, checkpoint):
    return compile_model(checkpoint, CHIP, mode=request.param, context=32)


def run(compiled, orchestration, target=CHIP, **kwargs):
    return asyncio.run(generate(ModelDevice(target), compiled, [0, 5, 9, 17], max_new_tokens=4,
                                orchestration=orchestration, **kwargs))


def test_lists_hold_every_bucket_launches(compiled):
    mm, wb = compiled.memory_map, CHIP.memory.word_bytes
    assert set(compiled.launch_lists) == set(compiled.buckets)
    for tp, region in compiled.launch_lists.items():
        words = compiled.image[region]
        assert words.size * 4 == mm[region].nbytes and words.size % (wb // 4) == 0
        decoded = launch_list.decode(words, CHIP.memory, N_AGCUS)
        launches = compiled.buckets[tp]
        assert len(decoded) == len(launches)
        for entry, launch in zip(decoded, launches):
            r = mm[launch.program_region]
            assert (entry.program.tier, entry.program.base) == (r.tier, r.offset)
            for token, pos in ((0, 0), (7, tp - 1)):
                reads, writes = entry.patterns(token, pos)
                want_reads, want_writes = launch.patterns(token, pos)
                for got, want in ((reads, want_reads), (writes, want_writes)):
                    assert {k: p.fields(wb) for k, p in got.items()} == {k: p.fields(wb) for k, p in want.items()}


def test_chip_orchestration_is_bit_identical_and_cheaper(compiled):
    host, chip = run(compiled, "host"), run(compiled, "chip")
    assert chip["tokens"] == host["tokens"] and chip["logits_sha"] == host["logits_sha"]
    assert chip["step_kernel_cycles"] == host["step_kernel_cycles"]
    h, c = host["report"], chip["report"]
    assert h["orchestration"] == "host" and c["orchestration"] == "chip"
    assert c["kernels_per_token"] == h["kernels_per_token"]
    # One assumed host round trip per step instead of one per kernel; the sequencer's own cycles are counted.
    assert h["host_launch_cycles_per_token"] == CHIP.host_launch_cycles * h["kernels_per_token"]
    assert c["host_launch_cycles_per_token"] == CHIP.host_launch_cycles
    assert 0 < c["sequencer_cycles_per_token"] < CHIP.host_launch_cycles * (c["kernels_per_token"] - 1)
    assert c["cycles_per_token"] < h["cycles_per_token"]
    assert c["roofline_fraction"] > h["roofline_fraction"]
    # The list's fetch is HBM traffic the controllers count.
    assert c["hbm_read_bytes_per_token"] > h["hbm_read_bytes_per_token"]
    assert c["provenance"]["host_launch_cycles_per_token"] == "assumed"
    assert c["provenance"]["sequencer_cycles_per_token"] == "modelled"


def test_chip_orchestration_on_the_large_target(checkpoint):
    compiled = compile_model(checkpoint, LARGE, mode="fused", context=32)
    host, chip = run(compiled, "host", LARGE), run(compiled, "chip", LARGE)
    assert chip["logits_sha"] == host["logits_sha"] and chip["step_kernel_cycles"] == host["step_kernel_cycles"]
    assert chip["report"]["cycles_per_token"] < host["report"]["cycles_per_token"]


def list_runner(checkpoint):
    """The smallest bucket's launch-list entries of a fused model loaded on a fresh fast model, and a function
    that writes a list of entries over that bucket's list and runs it (returns ``run_list``'s dict)."""
    compiled = compile_model(checkpoint, CHIP, mode="fused", context=32)
    tp = min(compiled.buckets)
    entries = launch_entries(compiled.buckets[tp], compiled.memory_map, CHIP)
    device = ModelDevice(CHIP)
    session = Session(device, compiled, orchestration="chip")
    asyncio.run(session.load())
    region = compiled.memory_map[compiled.launch_lists[tp]]

    def run_list(listed):
        words = launch_list.encode(listed, CHIP.memory, N_AGCUS)
        asyncio.run(device.write(region.tier, region.offset, words))
        return asyncio.run(device.run_list(region.tier, region.offset, words.size, token=0, pos=0,
                                           programs=session.programs))
    return entries, run_list


def test_resident_program_is_not_loaded_again(checkpoint):
    """Program Load is skipped exactly when the entry's program is the one last loaded, within a list and
    across lists."""
    entries, run_list = list_runner(checkpoint)
    assert entries[0].program != entries[1].program
    loads = lambda listed: run_list(listed)["program_loads"]

    assert loads([entries[0], entries[0], entries[1], entries[1], entries[0]]) == 3
    assert loads([entries[0]]) == 0                      # still resident from the list before
    assert loads([entries[1], entries[0]]) == 2


def test_list_round_trip_and_refusals():
    m = CHIP.memory
    p = Pattern(HBM, 4096, LoopNest((4, 3), (1, -16), last_level=0), bf16=True)
    entries = [launch_list.ListEntry(launch_list.program_pattern(HBM, 1024, 37, m.word_bytes),
                                     {0: launch_list.ListDirection(p, 64, -32)},
                                     {3: launch_list.ListDirection(Pattern.linear(DDR, 0, 5), 0, 16)}),
               launch_list.ListEntry(None, {}, {1: launch_list.ListDirection(Pattern.linear(HBM, 32, 2))})]
    words = launch_list.encode(entries, m, N_AGCUS)
    assert words.size % (m.word_bytes // 4) == 0
    back = launch_list.decode(words, m, N_AGCUS)
    assert [e.enable for e in back] == [e.enable for e in entries] == [0b10000001, 0b1000]
    assert back[0].program.fields(m.word_bytes) == entries[0].program.fields(m.word_bytes) and back[1].program is None
    assert back[0].reads[0].at(3, 5).fields(m.word_bytes) == p.fields(m.word_bytes) | {"base": 4096 + 3 * 64 - 5 * 32}
    assert back[0].writes[3].pos_stride == 16 and back[1].writes[1].pattern.tier == HBM
    with pytest.raises(ValueError, match="entry 0: AGCU 8 does not exist"):
        launch_list.encode([launch_list.ListEntry(None, {8: launch_list.ListDirection(p)})], m, N_AGCUS)
    with pytest.raises(ValueError, match="at least one entry"):
        launch_list.encode([], m, N_AGCUS)
    first = (record_words(header_layout()) + record_words(program_record_layout(m))
             + 2 * record_words(direction_record_layout(m)))
    with pytest.raises(ChipError, match="entry 1: the list ends inside its header"):
        launch_list.decode(words[:first], m, N_AGCUS)
    with pytest.raises(ChipError, match="entry 0: the list ends inside its AGCU 3 record"):
        launch_list.decode(words[:first - 1], m, N_AGCUS)
    bad = words.copy()
    bad[0] |= 1 << (2 * N_AGCUS)
    with pytest.raises(ChipError, match="entry 0: enable .* beyond the chip's 8"):
        launch_list.decode(bad, m, N_AGCUS)


def test_sequencer_errors_name_the_entry(checkpoint):
    entries, run_list = list_runner(checkpoint)
    assert run_list(entries)["entries"] == len(entries)
    # The second entry's first read starts at HBM's end.
    k, d = next(iter(entries[1].reads.items()))
    far = dataclasses.replace(entries[1], reads={**entries[1].reads, k: dataclasses.replace(
        d, pattern=dataclasses.replace(d.pattern, base=CHIP.memory.hbm.capacity))})
    with pytest.raises(ChipError, match="launch list entry 1: .*outside hbm"):
        run_list([entries[0], far, *entries[2:]])
    # A program record that names no program.
    nowhere = dataclasses.replace(entries[0], program=launch_list.program_pattern(HBM, 0, 64, CHIP.memory.word_bytes))
    with pytest.raises(ChipError, match="launch list entry 0: "):
        run_list([nowhere, *entries[1:]])


def test_session_refuses_unknown_orchestration(compiled):
    with pytest.raises(DecodeError, match="orchestration must be one of host, chip"):
        Session(ModelDevice(CHIP), compiled, orchestration="gpu")
    bare = dataclasses.replace(compiled, launch_lists={})
    with pytest.raises(DecodeError, match="no launch lists"):
        Session(ModelDevice(CHIP), bare, orchestration="chip")
