from fractions import Fraction

import numpy as np
import pytest

from cosim.tb import timing_cases
from hw.mem import params
from hw.mem.controller import QUEUE_CYCLES
from sw.model import memory_units as mu
from sw.model.memory import FlatMemory, MemoryRangeError, SparseMemory, TierModel


def test_sparse_memory_round_trip_across_pages_and_range_error():
    mem = SparseMemory("ddr", 1 << 30)
    data = np.arange(10000, dtype=np.uint32)
    mem.write(4090, data)
    assert np.array_equal(mem.read(4090, data.nbytes).view(np.uint32), data)
    assert not mem.read(1 << 29, 64).any()
    assert len(mem.pages) == 11
    with pytest.raises(MemoryRangeError, match=r"ddr: bytes \[0x3ffffff0, 0x40000010\)"):
        mem.write((1 << 30) - 16, bytes(32))


def test_view_is_in_place_for_a_flat_memory_and_range_checked_for_both():
    flat, sparse = FlatMemory("hbm", 1 << 12), SparseMemory("hbm", 1 << 12)
    view = flat.view(100, 8)
    flat.write(100, b"\x01\x02")
    assert view[:2].tolist() == [1, 2] and view.size == 8
    assert flat.holds(100, b"\x01\x02") and not flat.holds(100, b"\x01\x03")
    assert sparse.view(100, 8) is None
    for memory in (flat, sparse):
        with pytest.raises(MemoryRangeError):
            memory.view((1 << 12) - 4, 8)
        with pytest.raises(MemoryRangeError):
            memory.view(-1, 2)


@pytest.mark.parametrize("tier", params.SMALL.tiers, ids=lambda t: t.name)
def test_stream_time_is_latency_plus_words_at_peak(tier):
    # The cycles are the RTL controller's (cosim/tb/timing_cases.py, checked by `cosim run hbm` / `ddr`).
    words, rtl_cycles = timing_cases.TIER_STREAM[tier.name]
    model = TierModel(tier, word_bytes=params.SMALL.word_bytes)
    assert model.stream_cycles(words) == rtl_cycles
    assert rtl_cycles == 1 + QUEUE_CYCLES + tier.latency + (words - 1) * params.SMALL.word_bytes / tier.bytes_per_cycle


def test_fractional_rate_keeps_long_run_average():
    tier = params.TierParams("ddr", capacity=1 << 20, channels=1, channel_bytes_per_cycle=Fraction(3, 2), latency=10)
    model = TierModel(tier, word_bytes=16)
    times = model.service([0] * 301)
    assert times[-1] - times[0] == pytest.approx(300 * 16 / 1.5, abs=1)


def test_queue_bounds_acceptance():
    tier = params.SMALL.ddr
    model = TierModel(tier, word_bytes=16)
    times = model.service([0] * 40)
    assert times == sorted(times) and len(set(times)) == 40


def test_chip_model_refuses_kernels_it_cannot_run():
    from sw.tile.kernels import TEST_POST, TEST_TAIL, gemv_bias_act
    from hw.chip import all_io_positions
    from hw.tile.params import SMALL
    from sw.model.chip import ChipModel

    chip = ChipModel(SMALL, params.SMALL, all_io_positions(SMALL))
    with pytest.raises(RuntimeError, match="execute before load_program"):
        chip.execute({}, {})
    case = gemv_bias_act(SMALL, TEST_TAIL, TEST_POST, np.random.default_rng(0))
    chip.load_program(case.program)
    with pytest.raises(ValueError, match=r"host input '\w+' at t\d \(AGCU \d\) has no read pattern"):
        chip.execute({}, {})


def test_chip_model_runs_then_reports_a_pattern_outside_its_tier():
    from sw.tile.kernels import TEST_POST, TEST_TAIL, gemv_bias_act
    from hw.chip import all_io_positions
    from hw.tile.params import SMALL
    from sw.model.chip import ChipModel
    from sw.runtime.chip import Pattern, stream_pattern

    chip = ChipModel(SMALL, params.SMALL, all_io_positions(SMALL))
    wb, hbm = params.SMALL.word_bytes, params.HBM
    case = gemv_bias_act(SMALL, TEST_TAIL, TEST_POST, np.random.default_rng(0))
    chip.load_program(case.program)
    reads, at = {}, 0
    for name, (data, last) in case.inputs.items():
        port = case.program.host_inputs[name]
        # x's last two words lie past the end of HBM, as in the chip testbench.
        base = params.SMALL.hbm.capacity - 2 * wb if name == "x" else at
        if name != "x":
            chip.memory[hbm].write(at, data)
            at += 0x1000
        reads[chip.agcu_at(port.side, port.col)] = stream_pattern(hbm, base, last, lanes=SMALL.lanes, word_bytes=wb)
    port = case.program.host_outputs["y"]
    out = 0x8000
    words = 3 * SMALL.lanes * 4 // wb  # the default 3 tiles of lanes fp32 outputs
    writes = {chip.agcu_at(port.side, port.col): Pattern.linear(hbm, out, words)}
    x_agcu = chip.agcu_at(case.program.host_inputs["x"].side, case.program.host_inputs["x"].col)
    with pytest.raises(MemoryRangeError, match=rf"AGCU {x_agcu} \(t1\) read: word 2 of its pattern"):
        chip.execute(reads, writes)
    assert chip.memory[hbm].read(out, words * wb).any(), "the kernel ran and wrote its output before the report"


def test_agcu_bf16_read_widens_each_value_exactly():
    """A bf16 read gives every stored 16-bit value as the fp32 lane with it in the top half, low half first."""
    rng = np.random.default_rng(3)
    values = rng.standard_normal(64).astype(np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2")
    memory = SparseMemory("hbm", 1 << 16)
    memory.write(0x100, bf16.view(np.uint8))
    for lanes in (2, 4, 8):
        vectors, last, report = mu.agcu_read(memory, 1 << 16, 0x100, [8], [1], lanes=lanes, word_bytes=16,
                                             bf16=True)
        assert np.array_equal(vectors.reshape(-1), bf16.astype(np.uint32) << 16)
        assert last.sum() == 1 and last[-1] and report.words == 8
    _, last, _ = mu.agcu_read(memory, 1 << 16, 0x100, [2, 4], [1, 2], lanes=4, word_bytes=16, last_every=1,
                              bf16=True)
    assert np.flatnonzero(last).tolist() == [3, 7, 11, 15]


def test_transfer_layout_from_the_nest_is_the_addresses_own():
    # _layout takes in-tier transfers from the nest's extent (nest_rows): the same report and rows as the addresses
    # give word by word, for nests consecutive, strided, repeating and negative, at bases in, across and outside the
    # tier, misaligned ones included.
    from sw.loopnest import LoopNest

    wb, capacity = 16, 16 * 64
    nests = [LoopNest((8,), (1,)), LoopNest((4, 3), (1, 8)), LoopNest((4, 4), (1, 0)), LoopNest((5,), (-2,), offset=9),
             LoopNest((2, 3, 2), (3, 1, 20))]
    for nest in nests:
        for base in (0, 16, 5 * 16, 7, 56 * 16, 60 * 16, -16, 64 * 16, -200 * 16):
            for offset in (0, 3):
                report, rows = mu._layout.__wrapped__(base, nest, capacity, wb, offset)
                addresses = mu.transfer_addresses(base, nest, word_bytes=wb, runtime_offset=offset)
                want = mu._report(addresses, capacity, wb)
                assert (report.error, report.error_word, report.words) == (want.error, want.error_word, want.words)
                assert np.array_equal(report.addresses, addresses)
                index = addresses // wb
                n = index.size
                if want.error:
                    expected = None
                elif np.array_equal(index, index[0] + np.arange(n)):
                    expected = slice(int(index[0]), int(index[0]) + n)
                else:
                    expected = index if np.unique(index).size == n else None
                if isinstance(expected, slice) or expected is None:
                    assert rows == expected, (nest, base, offset)
                else:
                    assert np.array_equal(rows, expected), (nest, base, offset)
