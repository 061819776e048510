"""cocotb testbench of the PMU, every result checked bit for bit against ``PmuModel``.

The parameter set is chosen by ``OPENRDU_PMU_PARAMS`` (a name in
``hw.tile.params``). The testbench drives ``cfg`` directly; every run first
disables the unit for a cycle, which clears its pass and buffer state, and
each test starts by writing zeros over the whole memory so the model's
memory (zeros) matches.
"""

import os
from dataclasses import replace

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from cosim.components import Scoreboard, StreamDriver, StreamMonitor, pauses, run, start_clock_and_reset
from cosim.streams import pack_vectors, unpack_vectors
from cosim.tb import timing_cases
from hw.tile import params as params_module
from sw.model.pmu import PmuModel
from sw.tile.pmu import AddressPattern, PmuConfig, ReadMode

P = getattr(params_module, os.environ.get("OPENRDU_PMU_PARAMS", "SMALL"))
L = P.lanes
SEED = int(os.environ.get("OPENRDU_SEED", "1"))
MASK = (1 << 32) - 1


class PmuRun:
    """One run of a configuration: vi0, si0 and si1 driven, vo0 checked against the model as it arrives.

    Cycle 0 is the cycle the configuration is enabled (the cycle before, the
    unit is disabled, which clears its pass and buffer state). ``cycles``
    counts to the last vo0 transfer, inclusive; ``sent`` and
    ``handshake_cycles`` hold each input's transfers, ``output_cycles`` vo0's.
    """

    def __init__(self, dut, *, idle=0.0, backpressure=0.0, seed=0):
        self.dut = dut
        self.idle, self.backpressure, self.seed = idle, backpressure, seed

    async def run(self, cfg, vi0, si0, si1, want):
        dut = self.dut
        queues = {"vi0": pack_vectors(vi0, np.zeros(len(vi0), bool), L),
                  "si0": [int(x) & MASK for x in si0], "si1": [int(x) & MASK for x in si1]}
        drivers = {name: StreamDriver(dut, name, q, pauses=pauses(self.idle, (self.seed, k)))
                   for k, (name, q) in enumerate(queues.items())}
        board = Scoreboard(pack_vectors(want.vo0, want.last, L), name="vo0 (against PmuModel)", last_bit=32 * L,
                           show=lambda v: f"{unpack_vectors([v], L)[0][0].tolist()} last={v >> 32 * L}")
        monitor = StreamMonitor(dut, "vo0", board, pauses=pauses(self.backpressure, (self.seed, 3)))
        await FallingEdge(dut.clk)
        dut.cfg.value = 0

        def enable():
            dut.cfg.value = cfg
        await run(dut, [*drivers.values(), monitor], start=enable, stall_limit=500)
        self.sent = {name: d.sent for name, d in drivers.items()}
        self.handshake_cycles = {name: d.cycles for name, d in drivers.items()}
        self.output_cycles = monitor.cycles
        self.cycles = monitor.cycles[-1] + 1 if monitor.cycles else 0
        return unpack_vectors(monitor.items, L)


async def start(dut):
    await start_clock_and_reset(dut, zero=("cfg", "vi0__valid", "vi1__valid", "vi2__valid", "si0__valid",
                                           "si1__valid", "vo0__ready", "so0__ready"))
    await clear_memory(dut)


async def clear_memory(dut):
    """Write zeros to every word (one read of a row ends the run)."""
    config = PmuConfig(write=AddressPattern.linear(P.pmu_bank_words, L), read=AddressPattern.linear(1, 0),
                       write_passes=1, read_passes=1)
    vi0 = np.zeros((P.pmu_bank_words, L), dtype=np.uint32)
    await PmuRun(dut).run(config.pack(P), vi0, [], [], PmuModel(P, config).run(vi0, [], []))


def counter(dut, name):
    return int(getattr(dut, name).value)


async def check(dut, config, vi0, si0=(), si1=(), *, idle=0.0, backpressure=0.0, seed=0, banks=None,
                expect=None):
    """Run one kernel on the RTL and the model; compare data, last, counters and (without stalls) cycles.

    Returns the driver (for its cycle log), the model's run and the model.
    """
    model = PmuModel(P, config, banks=banks)
    want = model.run(vi0, si0, si1)
    before = {name: counter(dut, name) for name in ("reads", "writes", "errors", "busy_cycles", "stall_cycles")}
    driver = PmuRun(dut, idle=idle, backpressure=backpressure, seed=seed)
    data, last = await driver.run(config.pack(P), vi0, si0, si1, want)
    if expect is not None:
        assert np.array_equal(data, expect), "read data differs from the numpy reference"
    after = {name: counter(dut, name) for name in before}
    writes = want.write_passes * config.write.count
    assert after["reads"] - before["reads"] == len(want.vo0), "reads counter"
    assert after["writes"] - before["writes"] == driver.sent["vi0"] >= writes, (
        f"writes counter moved by {after['writes'] - before['writes']}, {driver.sent['vi0']} vectors sent, "
        f"model wrote {writes} in complete passes")
    assert after["errors"] - before["errors"] == want.errors, (
        f"errors counter moved by {after['errors'] - before['errors']}, model counts {want.errors}")
    busy = len(set(driver.handshake_cycles["vi0"]) | set(driver.output_cycles))
    assert after["busy_cycles"] - before["busy_cycles"] == busy, (
        f"busy_cycles moved by {after['busy_cycles'] - before['busy_cycles']}; {busy} cycles had a transfer")
    stalls = after["stall_cycles"] - before["stall_cycles"]
    if idle == 0 and backpressure == 0:
        assert stalls == 0, f"stall_cycles moved by {stalls} in a run without external stalls"
    elif driver.cycles > 2 * busy:
        assert stalls > 0, f"stall_cycles did not move in {driver.cycles} cycles with {busy} busy"
    if idle == 0 and backpressure == 0:
        ratio = driver.cycles / want.cycles
        dut._log.info(f"cycles: RTL {driver.cycles}, model {want.cycles} (ratio {ratio:.3f})")
        assert abs(ratio - 1) <= 0.10, f"model estimates {want.cycles} cycles, RTL took {driver.cycles}"
    return driver, want, model


def matrix(rng, rows):
    return rng.integers(0, 1 << 32, size=(rows, L), dtype=np.uint32)


def kernel_rows():
    rows = min(32, P.pmu_bank_words)
    config = PmuConfig(write=AddressPattern.linear(rows, L),
                       read=AddressPattern(bounds=(8, rows // 8), strides=(-L, 8 * L), offset=7 * L,
                                           last_level=0),
                       write_passes=1, read_passes=1)
    return config, rows


def kernel_transpose():
    rows = 4 * L
    config = PmuConfig(write=AddressPattern.linear(rows, L),
                       read=AddressPattern(bounds=(L, rows // L), strides=(1, L * L)),
                       read_mode=ReadMode.COLUMN, stripe=True, write_passes=1, read_passes=1)
    return config, rows


def kernel_broadcast():
    rows = 4
    config = PmuConfig(write=AddressPattern.linear(rows, L), read=AddressPattern.linear(rows * L, 1),
                       read_mode=ReadMode.BROADCAST, stripe=True, write_passes=1, read_passes=1)
    return config, rows


def kernel_buffered(buffers, *, passes=8, rows=16, reads_per_fill=1):
    config = PmuConfig(write=AddressPattern.linear(rows, L), read=AddressPattern.linear(rows, L),
                       buffers=buffers, buffer_words=rows * L if buffers > 1 else 0,
                       reads_per_fill=reads_per_fill, write_passes=passes,
                       read_passes=passes * reads_per_fill)
    return config, rows * passes


@cocotb.test()
async def row_reads(dut):
    """ROW reads (reversed within groups of 8, last per group) in the plain and the striped layout."""
    await start(dut)
    rng = np.random.default_rng(SEED)
    for stripe in (False, True):
        config, rows = kernel_rows()
        config = replace(config, stripe=stripe)
        m = matrix(rng, rows)
        expect = m.reshape(-1, 8, L)[:, ::-1].reshape(-1, L)
        driver, want, _ = await check(dut, config, m, expect=expect)
        # Back to back: every write and every read in one cycle each.
        assert driver.cycles == rows + rows + 2, f"{rows} writes and reads took {driver.cycles} cycles"


@cocotb.test()
async def column_transpose(dut):
    """COLUMN reads through the stripe layout transpose each lanes x lanes block at full rate."""
    await start(dut)
    rng = np.random.default_rng(SEED + 1)
    config, rows = kernel_transpose()
    m = matrix(rng, rows)
    expect = m.reshape(-1, L, L).transpose(0, 2, 1).reshape(-1, L)
    driver, _, _ = await check(dut, config, m, expect=expect)
    assert driver.cycles == 2 * rows + 2, f"transpose of {rows} rows took {driver.cycles} cycles"


@cocotb.test()
async def broadcast_reads(dut):
    """BROADCAST puts each word on every lane."""
    await start(dut)
    rng = np.random.default_rng(SEED + 2)
    config, rows = kernel_broadcast()
    m = matrix(rng, rows)
    await check(dut, config, m, expect=np.repeat(m.reshape(-1, 1), L, axis=1))


@cocotb.test()
async def latencies(dut):
    """A row is readable two cycles after it is written; a runtime read base gives data two cycles later."""
    await start(dut)
    rng = np.random.default_rng(SEED + 3)
    config = PmuConfig(write=AddressPattern.linear(1, L), read=AddressPattern.linear(1, L),
                       write_passes=1, read_passes=1)
    driver, _, _ = await check(dut, config, matrix(rng, 1))
    written, out = driver.handshake_cycles["vi0"][-1], driver.output_cycles[0]
    assert out - written == 2, f"vi0 transfer in cycle {written}, vo0 data in cycle {out}"

    config = PmuConfig(write=AddressPattern.linear(1, L), read=AddressPattern.linear(1, L, runtime_base=True),
                       write_passes=1, read_passes=1)
    driver, _, _ = await check(dut, config, matrix(rng, 1), [], [0])
    base_cycle, out = driver.handshake_cycles["si1"][0], driver.output_cycles[0]
    assert out - base_cycle == 2, f"si1 transfer in cycle {base_cycle}, vo0 data in cycle {out}"


@cocotb.test(skip=P is not params_module.SMALL)
async def timing_table(dut):
    """The PMU runs of ``cosim/tb/timing_cases.py`` take exactly the cycles listed there, which the model tests
    hold the fast model to; vo0 is checked against the model as it arrives. Some runs end short of their
    passes (inputs run out), so the stall counter is not checked here."""
    await start(dut)
    rng = np.random.default_rng(SEED + 9)
    for name, (config, runs) in timing_cases.PMU.items():
        await clear_memory(dut)
        banks = None
        for k, (rows, si0, si1, cycles) in enumerate(runs):
            model = PmuModel(P, config, banks=banks)
            vi0 = matrix(rng, rows)
            driver = PmuRun(dut)
            await driver.run(config.pack(P), vi0, si0, si1, model.run(vi0, si0, si1))
            banks = model.banks
            dut._log.info(f"{name} run {k}: RTL {driver.cycles} cycles")
            assert driver.cycles == cycles, f"{name} run {k}: RTL took {driver.cycles} cycles, the table lists {cycles}"


@cocotb.test()
async def double_buffer_overlap(dut):
    """With two buffers the writer fills one while the reader drains the other."""
    await start(dut)
    rng = np.random.default_rng(SEED + 4)
    config, rows = kernel_buffered(2)
    m = matrix(rng, rows)
    driver, want, _ = await check(dut, config, m, expect=m)
    serial = 2 * rows
    assert driver.cycles < 0.6 * serial, f"double-buffered run took {driver.cycles} cycles, serial sum {serial}"
    single, rows = kernel_buffered(1)
    driver1, _, _ = await check(dut, single, m, expect=m)
    assert driver1.cycles >= serial, f"single buffer took {driver1.cycles} cycles, below the serial {serial}"
    dut._log.info(f"{rows} rows through: 2 buffers {driver.cycles} cycles, 1 buffer {driver1.cycles}")


@cocotb.test()
async def runtime_bases(dut):
    """Write bases from si0 and read bases from si1, one per pass (a KV cache: append a row, read a window)."""
    await start(dut)
    rng = np.random.default_rng(SEED + 5)
    passes = 12
    config = PmuConfig(write=AddressPattern.linear(1, L, runtime_base=True),
                       read=AddressPattern.linear(3, L, runtime_base=True),
                       write_passes=passes, read_passes=passes)
    positions = rng.permutation(P.pmu_bank_words - 3)[:passes]
    si0 = positions * L
    si1 = np.maximum(positions - 1, 0) * L
    _, want, _ = await check(dut, config, matrix(rng, passes), si0, si1)
    assert want.errors == 0


@cocotb.test()
async def out_of_range_counts_errors(dut):
    """Runtime bases past the end (and a misaligned one) are dropped and counted; reads return zeros."""
    await start(dut)
    rng = np.random.default_rng(SEED + 6)
    words = P.pmu_words
    config = PmuConfig(write=AddressPattern.linear(1, L, runtime_base=True),
                       read=AddressPattern.linear(2, L, runtime_base=True), write_passes=5, read_passes=5)
    si0 = [0, words, L, (1 << 32) - L, 2 * L]
    si1 = [0, words - L, words, 1, MASK]
    _, want, _ = await check(dut, config, matrix(rng, 5), si0, si1)
    # Writes: bases words and 2**32 - lanes. Reads: the second row of the
    # base words - lanes, both rows of words, 1 (misaligned) and 2**32 - 1.
    assert want.errors == 2 + 7, f"model counted {want.errors} errors"
    assert not want.vo0[4:].any(), "reads past the end returned data"

    config = PmuConfig(write=AddressPattern.linear(L, L), read=AddressPattern.linear(L, 1, runtime_base=True),
                       read_mode=ReadMode.COLUMN, stripe=True, write_passes=1, read_passes=3, reads_per_fill=3)
    # A column from the last rows would run past the last bank word. Three reads of the one fill, so
    # every base is used (with one read per fill the last two passes never start).
    await check(dut, config, matrix(rng, L), [], [0, words - L * L + 1, words - L])


@cocotb.test()
async def random_stalls(dut):
    """Three buffers, two reads per fill, stride-0 re-reads, runtime read bases, 30% idle and back-pressure."""
    await start(dut)
    rng = np.random.default_rng(SEED + 7)
    rows, fills = 6, 40
    config = PmuConfig(write=AddressPattern.linear(rows, L),
                       read=AddressPattern(bounds=(2, 2, 2), strides=(L, 0, L), runtime_base=True, last_level=1),
                       buffers=3, buffer_words=rows * L, reads_per_fill=2, write_passes=fills,
                       read_passes=2 * fills)
    si1 = rng.integers(0, 3, size=2 * fills) * L
    await check(dut, config, matrix(rng, rows * fills), [], si1, idle=0.3, backpressure=0.3, seed=SEED)
    await check(dut, config, matrix(rng, rows * fills), [], si1, idle=0.5, backpressure=0.1, seed=SEED + 1)


@cocotb.test()
async def cycle_agreement(dut):
    """The model's cycle estimate against the RTL on every kernel, run without external stalls."""
    await start(dut)
    rng = np.random.default_rng(SEED + 8)
    kernels = {
        "rows": kernel_rows(), "transpose": kernel_transpose(), "broadcast": kernel_broadcast(),
        "1 buffer": kernel_buffered(1), "2 buffers": kernel_buffered(2),
        "3 buffers, 3 reads/fill": kernel_buffered(3, rows=8, reads_per_fill=3),
        "4 buffers, short passes": kernel_buffered(4, passes=16, rows=2),
    }
    lines = []
    for name, (config, rows) in kernels.items():
        driver, want, _ = await check(dut, config, matrix(rng, rows))
        lines.append(f"{name:26s} RTL {driver.cycles:5d}  model {want.cycles:5d}  "
                     f"{100 * (want.cycles - driver.cycles) / driver.cycles:+.1f}%")
    dut._log.info("model vs RTL cycles:\n" + "\n".join(lines))


def random_pattern(rng, region, align, extent):
    levels = int(rng.integers(1, 4))
    bounds = tuple(int(b) for b in rng.integers(1, 5, size=levels))
    strides = tuple(int(s) * align for s in rng.integers(-3, 4, size=levels))
    pattern = AddressPattern(bounds, strides, last_level=int(rng.integers(0, levels)))
    lo, hi = pattern.span()
    room = region - extent - (hi - lo)
    if room <= 0:
        return None
    offset = (int(rng.integers(0, room)) - lo) // align * align
    return replace(pattern, offset=max(offset, 0))


def random_config(rng):
    """A random valid configuration with finite pass counts."""
    while True:
        mode = ReadMode(int(rng.integers(0, 3)))
        buffers = int(rng.integers(1, 5))
        buffer_words = P.pmu_words // buffers // L * L if buffers > 1 else 0
        region = buffer_words or P.pmu_words
        extent = {ReadMode.ROW: L - 1, ReadMode.COLUMN: (L - 1) * L, ReadMode.BROADCAST: 0}[mode]
        write = random_pattern(rng, region, L, L - 1)
        read = random_pattern(rng, region, L if mode == ReadMode.ROW else 1, extent)
        if write is None or read is None:
            continue
        passes, reads_per_fill = int(rng.integers(1, 7)), int(rng.integers(1, 4))
        config = PmuConfig(write=write, read=read, read_mode=mode,
                           stripe=mode == ReadMode.COLUMN or bool(rng.integers(0, 2)),
                           buffers=buffers, buffer_words=buffer_words, reads_per_fill=reads_per_fill,
                           write_passes=passes, read_passes=passes * reads_per_fill)
        try:
            return config.validate(P)
        except ValueError:
            continue


@cocotb.test()
async def random_configurations(dut):
    """Random patterns, read modes, layouts and buffer counts, with random stalls; memory carried over."""
    await start(dut)
    rng = np.random.default_rng(SEED + 9)
    banks = None
    ratios = []
    for k in range(200):
        config = random_config(rng)
        stalls = dict(idle=0.3, backpressure=0.3) if k % 2 else {}
        rows = config.write_passes * config.write.count
        driver, want, model = await check(dut, config, matrix(rng, rows), banks=banks, seed=k, **stalls)
        banks = model.banks
        if not stalls:
            ratios.append(want.cycles / driver.cycles)
    dut._log.info(f"model/RTL cycles over {len(ratios)} unstalled random configurations: "
                  f"{min(ratios):.3f} to {max(ratios):.3f}")
