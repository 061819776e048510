"""PMU configuration description (validation, packing) and fast model behaviour."""

from dataclasses import replace

import numpy as np
import pytest

from cosim.tb import timing_cases
from hw.tile.params import SMALL
from hw.tile.pmu import pmu_config_layout
from sw.model.pmu import PmuModel
from sw.tile.pmu import AddressPattern, PmuConfig, ReadMode

P = SMALL
L = P.lanes


def rows_config(rows=8, **kwargs):
    return PmuConfig(write=AddressPattern.linear(rows, L), read=AddressPattern.linear(rows, L), **kwargs)


def matrix(rows, seed=0):
    return np.random.default_rng(seed).integers(0, 1 << 32, size=(rows, L), dtype=np.uint32)


@pytest.mark.parametrize("config, message", [
    (PmuConfig(write=AddressPattern((4, 0), (L, 0)), read=AddressPattern.linear(4, L)),
     r"write\.bounds\[1\] is 0"),
    (PmuConfig(write=AddressPattern.linear(4, L), read=AddressPattern((1 << 16,), (L,))),
     r"read\.bounds\[0\] is 65536"),
    (PmuConfig(write=AddressPattern((4, 2), (L,)), read=AddressPattern.linear(4, L)),
     r"write\.strides has 1 entries for 2 bounds"),
    (PmuConfig(write=AddressPattern((1,) * 5, (0,) * 5), read=AddressPattern.linear(4, L)),
     r"write\.bounds has 5 levels"),
    (PmuConfig(write=AddressPattern.linear(4, 1 << 9), read=AddressPattern.linear(4, L)),
     r"write\.strides\[0\] is 512"),
    (PmuConfig(write=AddressPattern.linear(4, L, offset=256), read=AddressPattern.linear(4, L)),
     r"write\.offset is 256"),
    (PmuConfig(write=AddressPattern.linear(4, L), read=AddressPattern.linear(4, L, last_level=4)),
     r"read\.last_level is 4"),
    (PmuConfig(write=AddressPattern.linear(65, L), read=AddressPattern.linear(4, L)),
     r"write addresses run from 0 to 259 .* capacity of 256 words"),
    (PmuConfig(write=AddressPattern.linear(4, L), read=AddressPattern.linear(4, -L)),
     r"read addresses run from -12 to 3"),
    (PmuConfig(write=AddressPattern.linear(4, L), read=AddressPattern.linear(4, 1, offset=120),
               read_mode=ReadMode.COLUMN, stripe=True, buffers=2, buffer_words=128),
     r"read pattern covers words 120 to 135 of its buffer, beyond buffer_words 128"),
    (PmuConfig(write=AddressPattern.linear(4, L), read=AddressPattern.linear(1, 1, offset=250),
               read_mode=ReadMode.COLUMN, stripe=True),
     r"read addresses run from 250 to 262 over 1 buffer\(s\), outside the PMU's capacity of 256 words"),
    (PmuConfig(write=AddressPattern.linear(4, L), read=AddressPattern.linear(4, 1), read_mode=ReadMode.COLUMN),
     r"read_mode COLUMN needs stripe=True"),
    (PmuConfig(write=AddressPattern.linear(4, L, offset=2), read=AddressPattern.linear(4, L)),
     r"write\.offset 2 is not a multiple of lanes \(4\)"),
    (PmuConfig(write=AddressPattern.linear(4, 6), read=AddressPattern.linear(4, L)),
     r"write\.strides\[0\] 6 is not a multiple of lanes"),
    (PmuConfig(write=AddressPattern.linear(4, L), read=AddressPattern.linear(4, 1)),
     r"read\.strides\[0\] 1 is not a multiple of lanes \(4\), which ROW reads need"),
    (rows_config(buffers=2, buffer_words=34), r"buffer_words 34 is not a multiple of lanes"),
    (rows_config(buffers=4, buffer_words=128), r"buffers: 4 buffers of buffer_words 128 need 512 words; "
                                               r"the PMU has 256"),
    (rows_config(buffers=5, buffer_words=32), r"buffers is 5"),
    (rows_config(buffers=2, buffer_words=16), r"write pattern covers words 0 to 31 .* buffer_words 16"),
    (rows_config(buffer_words=256), r"buffer_words is 256"),
    (rows_config(reads_per_fill=0), r"reads_per_fill is 0"),
    (rows_config(write_passes=-1), r"write_passes is -1"),
    (rows_config(read_passes=1 << 16), r"read_passes is 65536"),
    (rows_config(read_mode=1), r"read_mode is 1"),
    (rows_config(stripe=1), r"stripe is 1; it must be a bool"),
    (rows_config(stripe="no"), r"stripe is 'no'; it must be a bool"),
])
def test_validation_errors(config, message):
    with pytest.raises(ValueError, match=message):
        config.validate(P)
    with pytest.raises(ValueError, match=message):
        config.pack(P)
    with pytest.raises(ValueError, match=message):
        PmuModel(P, config)


def test_column_range_counts_the_rows_below():
    # A column read at address a touches a + (lanes - 1) * lanes.
    fits = PmuConfig(write=AddressPattern.linear(4, L), read=AddressPattern.linear(1, 1, offset=P.pmu_words - 13),
                     read_mode=ReadMode.COLUMN, stripe=True)
    assert fits.validate(P) is fits
    with pytest.raises(ValueError, match=rf"read addresses run from 244 to {P.pmu_words}"):
        replace(fits, read=AddressPattern.linear(1, 1, offset=P.pmu_words - 12)).validate(P)


def test_pack_matches_layout():
    config = PmuConfig(write=AddressPattern((4, 3), (L, 4 * L), offset=8, runtime_base=True),
                       read=AddressPattern((L, 2), (1, -L * L), offset=100, last_level=0),
                       read_mode=ReadMode.COLUMN, stripe=True, buffers=2, buffer_words=128, reads_per_fill=3,
                       write_passes=7, read_passes=21)
    view = pmu_config_layout(P).from_bits(config.pack(P))
    assert view.enable == 1 and view.stripe == 1 and view.read_mode == ReadMode.COLUMN
    assert [view.write.bounds[k] for k in range(4)] == [4, 3, 1, 1]
    assert [view.read.strides[k] for k in range(4)] == [1, -16, 0, 0]
    assert (view.write.offset, view.read.offset, view.write.runtime_base, view.read.runtime_base) == (8, 100, 1, 0)
    assert (view.read.last_level, view.write.last_level) == (0, 3)
    assert (view.buffers, view.buffer_words, view.reads_per_fill) == (2, 128, 3)
    assert (view.write_passes, view.read_passes) == (7, 21)
    never = replace(config, read=replace(config.read, last_level=None))
    assert pmu_config_layout(P).from_bits(never.pack(P)).read.last_level == 4


def test_row_read_order_and_last():
    # Written plainly, read rows 0, 4, 1, 5, ... with last on every second one; cycles as the RTL measured.
    config, [(rows, _, _, cycles)] = timing_cases.PMU["row_read_order"]
    m = matrix(rows)
    run = PmuModel(P, config).run(m)
    assert np.array_equal(run.vo0, m[[0, 4, 1, 5, 2, 6, 3, 7]])
    assert run.last.tolist() == [False, True] * 4
    assert run.errors == 0 and run.cycles == cycles


def test_column_reads_transpose_blocks():
    config = PmuConfig(write=AddressPattern.linear(3 * L, L), read=AddressPattern((L, 3), (1, L * L)),
                       read_mode=ReadMode.COLUMN, stripe=True, write_passes=1, read_passes=1)
    m = matrix(3 * L, seed=1)
    run = PmuModel(P, config).run(m)
    assert np.array_equal(run.vo0, m.reshape(3, L, L).transpose(0, 2, 1).reshape(-1, L))


def test_stripe_layout_is_physical():
    # Rows written plainly and read through the stripe come back rotated by their row index.
    m = matrix(4, seed=2)
    plain = PmuModel(P, rows_config(4, write_passes=1, read_passes=1))
    plain.run(m)
    striped = PmuModel(P, PmuConfig(write=AddressPattern.linear(1, L), read=AddressPattern.linear(4, L),
                                    stripe=True, write_passes=0, read_passes=1), banks=plain.banks)
    # The read waits for a write pass; give it one that lands out of the way.
    run = striped.run(np.zeros((1, L)))
    got = run.vo0[1:]
    want = np.stack([np.roll(m[r], -r) for r in range(1, 4)])
    assert np.array_equal(got, want)


def test_broadcast_and_stride_zero_repeat():
    config = PmuConfig(write=AddressPattern.linear(1, L), read=AddressPattern((3, 2), (0, 1)),
                       read_mode=ReadMode.BROADCAST, write_passes=1, read_passes=1)
    m = matrix(1, seed=3)
    run = PmuModel(P, config).run(m)
    want = np.repeat(m[0, [0, 0, 0, 1, 1, 1]][:, None], L, axis=1)
    assert np.array_equal(run.vo0, want)


def test_double_buffering_overlaps():
    # 8 passes of 16 rows: one buffer takes turns (8 x (16 + 16) + 2 cycles on the RTL), two overlap
    # (16 + 8 x 16 + 2); the model gives the RTL's cycles exactly.
    single_config, [(rows, _, _, single_cycles)] = timing_cases.PMU["single_buffer"]
    double_config, [(_, _, _, double_cycles)] = timing_cases.PMU["double_buffer"]
    m = matrix(rows, seed=4)
    double = PmuModel(P, double_config).run(m)
    single = PmuModel(P, single_config).run(m)
    assert np.array_equal(double.vo0, m) and np.array_equal(single.vo0, m)
    assert single.cycles == single_cycles
    assert double.cycles == double_cycles < single_cycles


def test_reads_per_fill_and_blocking():
    m = matrix(8 * 5, seed=5)
    config = rows_config(8, buffers=2, buffer_words=32, reads_per_fill=2, read_passes=3)
    run = PmuModel(P, config).run(m)
    # Fill 0 is read twice and released, fill 1 once; fill 2 reuses buffer 0,
    # fill 3 would need buffer 1, which is still waiting for its second read.
    assert np.array_equal(run.vo0, np.concatenate([m[:8], m[:8], m[8:16]]))
    assert (run.write_passes, run.read_passes) == (3, 3)


def test_runtime_bases_and_errors():
    config = PmuConfig(write=AddressPattern.linear(1, L, runtime_base=True),
                       read=AddressPattern.linear(2, L, runtime_base=True), write_passes=3, read_passes=3)
    m = matrix(3, seed=6)
    words = P.pmu_words
    run = PmuModel(P, config).run(m, si0=[8, words, 4 * L], si1=[8 - L, words - L, 4 * L + 2])
    assert np.array_equal(run.vo0[1], m[0])
    assert not run.vo0[0].any() and not run.vo0[3:].any()
    # Write to `words`; read row `words`; both rows of the misaligned read.
    assert run.errors == 1 + 1 + 2
    # Bases past 32 bits wrap as the scalar port does.
    again = PmuModel(P, config).run(m, si0=[8 + (1 << 32)], si1=[8])
    assert np.array_equal(again.vo0[0], m[0])


def test_model_refuses_other_objects():
    with pytest.raises(ValueError, match="config must be a PmuConfig"):
        PmuModel(P, {"write": None})
    with pytest.raises(ValueError, match=r"banks has shape \(2, 2\)"):
        PmuModel(P, rows_config(), banks=np.zeros((2, 2)))


def _divided_read(model, addresses):
    """PmuModel._read as written with // and % by lanes (before the eleventh pass took shifts and masks)."""
    lanes, words, c = model.params.lanes, model.params.pmu_words, model.config
    bank = lambda row, column: (column + row * int(c.stripe)) % lanes
    ok = (addresses >= 0) & (addresses + c.read_extent(model.params) < words)
    if c.read_mode == ReadMode.ROW:
        ok &= addresses % lanes == 0
    safe = np.where(ok, addresses, 0)[:, None]
    row, column = safe // lanes, safe % lanes
    lane = np.arange(lanes)[None, :]
    if c.read_mode == ReadMode.ROW:
        index = row * lanes + bank(row, lane)
    elif c.read_mode == ReadMode.COLUMN:
        index = (row + lane) * lanes + (bank(row, column) + lane) % lanes
    else:
        index = np.repeat(row * lanes + bank(row, column), lanes, axis=1)
    bad = int((~ok).sum())
    return index, ok[:, None] if bad else None, bad


@pytest.mark.parametrize("mode, stripe", [(ReadMode.ROW, False), (ReadMode.ROW, True), (ReadMode.COLUMN, True),
                                          (ReadMode.BROADCAST, False), (ReadMode.BROADCAST, True)])
def test_bank_indices_by_shifts_are_the_divisions(mode, stripe):
    # lanes is a power of two: the read and write passes' bank indices by shifts and masks are those of // and %,
    # for addresses in range, outside it (negative ones included) and misaligned, for lanes 2 to 32.
    from hw.tile.params import ArrayParams

    rng = np.random.default_rng(len(mode.name) + stripe)
    for params in (SMALL, ArrayParams(lanes=2, pmu_bank_words=16), ArrayParams(lanes=8, pmu_bank_words=64),
                   ArrayParams(lanes=16, pmu_bank_words=128), ArrayParams(lanes=32, pmu_bank_words=64)):
        lanes = params.lanes
        config = PmuConfig(write=AddressPattern.linear(4, lanes), read=AddressPattern.linear(4, lanes),
                           read_mode=mode, stripe=stripe)
        model = PmuModel(params, config)
        for _ in range(20):
            addresses = rng.integers(-3 * params.pmu_words, 3 * params.pmu_words, int(rng.integers(1, 50)))
            if rng.random() < 0.5:
                addresses = addresses - addresses % lanes
            got, want = model._read(addresses), _divided_read(model, addresses)
            assert np.array_equal(got[0], want[0]) and got[0].dtype == want[0].dtype and got[2] == want[2]
            assert (got[1] is None) == (want[1] is None) and (got[1] is None or np.array_equal(got[1], want[1]))
            rows, index, bad = model._write(addresses)
            ok = (addresses >= 0) & (addresses < params.pmu_words) & (addresses % lanes == 0)
            row = (addresses[ok] // lanes)[:, None]
            _, last = np.unique(row[::-1, 0], return_index=True)
            keep = ok.sum() - 1 - last
            want_index = row * lanes + (np.arange(lanes)[None, :] + row * int(stripe)) % lanes
            assert np.array_equal(rows, np.flatnonzero(ok)[keep]) and np.array_equal(index, want_index[keep])
            assert bad == int((~ok).sum())
