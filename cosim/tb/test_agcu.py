"""cocotb testbench of the AGCUs and the copy engine on the HBM and DDR controllers.

The design is :class:`cosim.tb.units_agcu.MemoryTestTop`: AGCU 0 with 8-lane
vectors (two TLN words each), AGCU 1 with 2-lane vectors (two per word), the
copy engine and a spare TLN port. Memory is loaded and checked through the
backdoor (:class:`cosim.store.TierStore`); expected data comes from the
functional model ``sw/model/memory_units.py``.
"""

import itertools
import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from cosim.components import Scoreboard, StreamDriver, StreamMonitor, pauses, reset, run, start_clock_and_reset
from cosim.store import TierStore
from cosim.streams import pack_scalars, pack_vectors, unpack_vectors
from cosim.tb.units_agcu import LANES, TAG_BITS
from hw.mem import params as params_module
from hw.mem import tln
from hw.mem.agcu import agcu_config_layout, agcu_status_layout, out_of_range_addr
from hw.mem.controller import stats_layout
from hw.mem.copy import copy_config_layout, copy_status_layout
from hw.mem.params import DDR, HBM
from sw.layout import pack, unpack
from sw.model import memory_units as mu

P = getattr(params_module, os.environ.get("OPENRDU_MEM_PARAMS", "SMALL"))
WB = P.word_bytes
SEED = int(os.environ.get("OPENRDU_SEED", "1"))
REQ = tln.request_layout(word_bytes=WB, addr_bits=P.addr_bits, tag_bits=TAG_BITS)
RESP = tln.response_layout(word_bytes=WB, tag_bits=TAG_BITS)
KiB = 1024


AGCU_CFG = agcu_config_layout(P)
AGCU_STATUS = agcu_status_layout()
COPY_CFG = copy_config_layout(P)
COPY_STATUS = copy_status_layout()
STATS = stats_layout(P.addr_bits)


# Cycles without a handshake before a transfer counts as stalled: a few memory round trips.
STALL_LIMIT = 5000


async def start(dut):
    ports = [f"a{i}_{name}" for i in range(len(LANES)) for name in ("vi__valid", "si__valid", "vo__ready", "cfg")]
    await start_clock_and_reset(dut, zero=ports + ["copy_cfg", "spare__req__valid", "spare__resp__ready"])
    stores = {HBM: TierStore(HBM, P.hbm.capacity), DDR: TierStore(DDR, P.ddr.capacity)}
    return stores


def stats(dut, tier):
    return unpack(STATS, int((dut.hbm_stats if tier == HBM else dut.ddr_stats).value))


class AgcuDriver:
    """Configures one AGCU of the top and waits for its transfers."""

    def __init__(self, dut, index):
        self.dut, self.index = dut, index
        self.lanes = LANES[index]
        self.cfg = {"read": {}, "write": {}}
        self.port = getattr(dut, f"a{index}_cfg")
        self.status_port = getattr(dut, f"a{index}_status")
        self.prefix = f"a{index}"
        self.pulse = set()

    async def begin(self, direction, *, tier, base, counts, strides, runtime_base=False, last_every=0, bf16=False,
                    after=0, lag=0):
        counts, strides = list(counts) + [1] * (4 - len(counts)), list(strides) + [0] * (4 - len(strides))
        self.cfg[direction] = dict(tier=tier, base=base, counts=counts, strides=strides,
                                   runtime_base=int(runtime_base), last_every=last_every, bf16=int(bf16), after=after,
                                   lag=lag)
        # Both directions may start in the same cycle from two coroutines: each
        # write of the port carries every pulse still pending.
        self.pulse.add(direction)
        await FallingEdge(self.dut.clk)
        self._write()
        await FallingEdge(self.dut.clk)
        self.pulse.discard(direction)
        self._write()

    def _write(self):
        self.port.value = pack(AGCU_CFG, {d: dict(c, start=int(d in self.pulse)) for d, c in self.cfg.items()})

    def status(self, direction):
        return unpack(AGCU_STATUS, int(self.status_port.value))[direction]

    def finished(self, direction):
        s = self.status(direction)
        return s["done"] and not s["busy"]

    async def read(self, image, tier, base, counts, strides, *, backpressure=0.0, seed=0, runtime_offset=None,
                   last_every=0, bf16=False):
        """Run a read of ``image`` (the tier's bytes) and return (vectors, last flags, status).

        Every vector is checked against the model as it arrives, until the AGCU reports done and
        for a few cycles after.
        """
        want, want_last, _ = mu.agcu_read(image, P.tiers[tier].capacity, base, counts, strides, lanes=self.lanes,
                                          word_bytes=WB, runtime_offset=runtime_offset or 0, last_every=last_every,
                                          bf16=bf16)
        await self.begin("read", tier=tier, base=base, counts=counts, strides=strides,
                         runtime_base=runtime_offset is not None, last_every=last_every, bf16=bf16)
        board = Scoreboard(pack_vectors(want, want_last, self.lanes), name=f"AGCU {self.index} read",
                           last_bit=32 * self.lanes)
        monitor = StreamMonitor(self.dut, f"{self.prefix}_vo", board, pauses=pauses(backpressure, (seed, 1)))
        parts = [monitor]
        if runtime_offset is not None:
            parts.append(StreamDriver(self.dut, f"{self.prefix}_si", pack_scalars([runtime_offset], [1]),
                                      pauses=pauses(0.5, (seed, 0))))
        await run(self.dut, parts, done=lambda: self.finished("read"), stall_limit=STALL_LIMIT)
        values, last = unpack_vectors(monitor.items, self.lanes)
        return values, last, self.status("read")

    async def checked_read(self, image, tier, base, counts, strides, *, where, seed, last_every=0, bf16=False):
        """A read under 30% back-pressure that must match the model word for word; returns (vectors, status)."""
        want, want_last, report = mu.agcu_read(image, P.tiers[tier].capacity, base, counts, strides,
                                               lanes=self.lanes, word_bytes=WB, last_every=last_every, bf16=bf16)
        got, last, status = await self.read(image, tier, base, counts, strides, backpressure=0.3, seed=seed,
                                            last_every=last_every, bf16=bf16)
        assert np.array_equal(got, want), f"{where}: data differs at vectors " \
                                          f"{np.flatnonzero((got != want).any(axis=1))[:8]}"
        assert np.array_equal(last, want_last), f"{where}: last flags {np.flatnonzero(last)}"
        assert not status["error"] and status["words"] == report.words, f"{where}: status {status}"
        return got, status

    async def write(self, tier, base, counts, strides, vectors, *, idle=0.0, seed=0, runtime_offset=None):
        """Run a write of ``vectors`` ((n, lanes) uint32) and return its status once every vector is taken
        and the AGCU reports done."""
        await self.begin("write", tier=tier, base=base, counts=counts, strides=strides,
                         runtime_base=runtime_offset is not None)
        n = len(vectors)
        parts = [StreamDriver(self.dut, f"{self.prefix}_vi", pack_vectors(vectors, [0] * (n - 1) + [1], self.lanes),
                              pauses=pauses(idle, (seed, 2)))]
        if runtime_offset is not None:
            parts.append(StreamDriver(self.dut, f"{self.prefix}_si", pack_scalars([runtime_offset], [1]),
                                      pauses=pauses(0.5, (seed, 0))))
        await run(self.dut, parts, done=lambda: self.finished("write"), settle=0, stall_limit=STALL_LIMIT)
        return self.status("write")


class CopyDriver:
    def __init__(self, dut):
        self.dut = dut

    async def run(self, *, src_tier, src_addr, dst_tier, dst_addr, length, limit=200_000):
        cfg = dict(src_tier=src_tier, src_addr=src_addr, dst_tier=dst_tier, dst_addr=dst_addr, length=length)
        await FallingEdge(self.dut.clk)
        self.dut.copy_cfg.value = pack(COPY_CFG, dict(cfg, start=1))
        await FallingEdge(self.dut.clk)
        self.dut.copy_cfg.value = pack(COPY_CFG, cfg)
        for _ in range(limit):
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            s = unpack(COPY_STATUS, int(self.dut.copy_status.value))
            if s["done"] and not s["busy"]:
                return s
        raise AssertionError(f"copy not done after {limit} cycles")


def random_fill(store, rng, offset, size):
    block = rng.integers(0, 256, size, dtype=np.uint8)
    store.write(offset, block)
    return block


def tier_image(store):
    """A numpy copy of a whole tier: the model's memory."""
    return store.read(0, store.capacity)


def read_cases(lanes):
    """(name, counts, strides, last_every) of strided and tiled reads, in words.

    Groups (``last_every``) span whole vectors on the 8-lane AGCU (2 words a vector).
    """
    row = 24  # words in a row of a row-major matrix
    cases = [
        ("contiguous", [40], [1], 0),
        ("strided", [33], [3], 0),
        ("blocks, last per block", [4, 10], [1, 7], 1),
        ("tiled, last per tile", [4, 3, 3, 2], [1, row, 4, 3 * row], 2),     # 3x4-word tiles of a 6x12 block
        ("reversed", [24], [-1], 0),
        ("transposed, last per column", [6, 8], [row, 1], 1),
    ]
    if 4 * lanes > WB:
        cases.append(("short final vector", [7], [2], 0))
    return cases


@cocotb.test()
async def strided_and_tiled_reads(dut):
    """Pattern reads from both tiers on both AGCUs under 30% back-pressure, word for word against the model."""
    stores = await start(dut)
    rng = np.random.default_rng(SEED)
    bases = {HBM: 0x4000, DDR: 0x30000}
    for tier, base in bases.items():
        random_fill(stores[tier], rng, base - 0x2000, 0x6000)
    for index in range(len(LANES)):
        agcu = AgcuDriver(dut, index)
        for tier in (HBM, DDR):
            image = tier_image(stores[tier])
            cap = P.tiers[tier].capacity
            for k, (name, counts, strides, every) in enumerate(read_cases(agcu.lanes)):
                base = bases[tier] + (0x800 if name == "reversed" else 0)
                where = f"AGCU {index} {P.tiers[tier].name} {name}"
                _, status = await agcu.checked_read(image, tier, base, counts, strides, where=where, seed=SEED + k,
                                                    last_every=every)
                if name == "contiguous":
                    assert status["tile_stalls"] > 0, f"{where}: back-pressure not counted as tile stalls"
            # A runtime base from the scalar stream, in words.
            counts, strides = [5, 4], [2, 16]
            offset = 37
            want, _, _ = mu.agcu_read(image, cap, bases[tier], counts, strides, lanes=agcu.lanes, word_bytes=WB,
                                      runtime_offset=offset)
            got, _, status = await agcu.read(image, tier, bases[tier], counts, strides, runtime_offset=offset)
            assert np.array_equal(got, want), f"AGCU {index} {P.tiers[tier].name}: runtime-base read differs"
            assert status["tile_stalls"] > 0, "waiting for the runtime base counts as a tile stall"


@cocotb.test()
async def bf16_reads(dut):
    """bf16 reads widen each word to two words of fp32 lanes: every pattern, both AGCUs, against the model.

    The contiguous case is also checked against numpy's own bf16 -> fp32 widening of the stored bytes.
    """
    stores = await start(dut)
    rng = np.random.default_rng(SEED + 1)
    base = 0x4000
    random_fill(stores[HBM], rng, base - 0x2000, 0x6000)
    image = tier_image(stores[HBM])
    for index in range(len(LANES)):
        agcu = AgcuDriver(dut, index)
        for k, (name, counts, strides, every) in enumerate(read_cases(agcu.lanes)):
            at = base + (0x800 if name == "reversed" else 0)
            where = f"AGCU {index} bf16 {name}"
            got, _ = await agcu.checked_read(image, HBM, at, counts, strides, where=where, seed=SEED + k,
                                             last_every=every, bf16=True)
            if name == "contiguous":
                words = int(np.prod(counts))
                halves = np.frombuffer(bytes(image[at:at + words * WB]), dtype="<u2")
                widened = halves.astype(np.uint32) << 16
                assert np.array_equal(got.reshape(-1)[:widened.size], widened), f"{where}: not the bf16 values"


@cocotb.test()
async def pattern_writes(dut):
    """Pattern writes from vi with 30% idle cycles on both AGCUs, checked through the backdoor."""
    stores = await start(dut)
    rng = np.random.default_rng(SEED + 10)
    region = {HBM: 0x10000, DDR: 0x50000}
    for tier, base in region.items():
        random_fill(stores[tier], rng, base - 0x1000, 0x6000)
    cases = [("contiguous", [40], [1]), ("strided", [21], [3]), ("tiled", [4, 3, 2, 2], [1, 16, 4, 48]),
             ("reversed", [16], [-1]), ("odd words", [7], [1])]
    for index in range(len(LANES)):
        agcu = AgcuDriver(dut, index)
        for tier in (HBM, DDR):
            cap = P.tiers[tier].capacity
            for k, (name, counts, strides) in enumerate(cases):
                base = region[tier] + 0x400 * k + index * 0x1800
                words = int(np.prod(counts))
                n = mu.vectors_for_words(words, agcu.lanes, WB)
                vectors = rng.integers(0, 1 << 32, (n, agcu.lanes), dtype=np.uint32)
                image = tier_image(stores[tier])
                mu.agcu_write(image, cap, base, counts, strides, vectors, word_bytes=WB)
                before = stats(dut, tier)
                status = await agcu.write(tier, base, counts, strides, vectors, idle=0.3, seed=SEED + k)
                where = f"AGCU {index} {P.tiers[tier].name} {name}"
                assert not status["error"] and status["words"] == words, f"{where}: status {status}"
                assert stats(dut, tier)["writes"] - before["writes"] == words, f"{where}: controller write count"
                lo, hi = region[tier] - 0x1000, region[tier] + 0x5000
                differs = np.flatnonzero(stores[tier].read(lo, hi - lo) != image[lo:hi])
                assert differs.size == 0, f"{where}: memory differs at {[hex(lo + a) for a in differs[:8]]}"
    # Read and write at once on one AGCU, with a runtime base for the write.
    agcu = AgcuDriver(dut, 0)
    image = {t: tier_image(stores[t]) for t in (HBM, DDR)}
    counts, strides = [64], [1]
    vectors = rng.integers(0, 1 << 32, (32, agcu.lanes), dtype=np.uint32)
    mu.agcu_write(image[DDR], P.ddr.capacity, region[DDR], counts, strides, vectors, word_bytes=WB, runtime_offset=9)
    want, _, _ = mu.agcu_read(image[HBM], P.hbm.capacity, region[HBM], counts, strides, lanes=agcu.lanes,
                              word_bytes=WB)
    writer = cocotb.start_soon(agcu.write(DDR, region[DDR], counts, strides, vectors, idle=0.2, runtime_offset=9))
    got, _, _ = await agcu.read(image[HBM], HBM, region[HBM], counts, strides, backpressure=0.2)
    await writer
    assert np.array_equal(got, want), "read beside a write differs"
    lo = region[DDR] - 0x1000
    assert np.array_equal(stores[DDR].read(lo, 0x6000), image[DDR][lo:lo + 0x6000]), "write beside a read differs"


@cocotb.test()
async def gated_read_after_write(dut):
    """A read gated on another AGCU's write (``after``) issues nothing until that write is acknowledged,
    then reads exactly what it wrote: both started in one cycle, the write's data held back a while."""
    stores = await start(dut)
    rng = np.random.default_rng(SEED + 15)
    writer, reader = AgcuDriver(dut, 0), AgcuDriver(dut, 1)
    for tier, base in ((HBM, 0x12000), (DDR, 0x52000)):
        random_fill(stores[tier], rng, base - 0x800, 0x2000)
        image = tier_image(stores[tier])
        cap = P.tiers[tier].capacity
        counts, strides = [8, 6], [1, 10]           # 48 words in 8-word rows 10 words apart
        vectors = rng.integers(0, 1 << 32, (mu.vectors_for_words(48, writer.lanes, WB), writer.lanes),
                               dtype=np.uint32)
        stale, _, _ = mu.agcu_read(image, cap, base, counts, strides, lanes=reader.lanes, word_bytes=WB)
        mu.agcu_write(image, cap, base, counts, strides, vectors, word_bytes=WB)
        want, want_last, _ = mu.agcu_read(image, cap, base, counts, strides, lanes=reader.lanes, word_bytes=WB)
        assert not np.array_equal(want, stale), "the write must change what the read sees"
        seen = {}

        async def watch():
            cycle = 0
            while "valid" not in seen:
                await RisingEdge(dut.clk)
                await ReadOnly()
                cycle += 1
                if "done" not in seen and writer.finished("write"):
                    seen["done"] = cycle
                if dut.a1_vo__valid.value:
                    seen["valid"] = cycle
                    seen["stalls"] = reader.status("read")["mem_stalls"]

        cocotb.start_soon(writer.begin("write", tier=tier, base=base, counts=counts, strides=strides))
        watcher = cocotb.start_soon(watch())
        await reader.begin("read", tier=tier, base=base, counts=counts, strides=strides, after=1)
        hold = 80                                   # the write's data arrives this many cycles late
        held = itertools.chain([True] * hold, pauses(0.3, (SEED, 3)))
        board = Scoreboard(pack_vectors(want, want_last, reader.lanes), name="gated read", last_bit=32 * reader.lanes)
        await run(dut, [StreamDriver(dut, "a0_vi", pack_vectors(vectors, [0] * (len(vectors) - 1) + [1],
                                                                writer.lanes), pauses=held),
                        StreamMonitor(dut, "a1_vo", board, pauses=pauses(0.2, (SEED, 4)))],
                  done=lambda: writer.finished("write") and reader.finished("read"), stall_limit=STALL_LIMIT)
        await watcher
        where = P.tiers[tier].name
        # The read's first word is requested after the write is done, so it arrives a round trip later.
        assert seen["valid"] > seen["done"] + P.tiers[tier].latency, f"{where}: read before the write: {seen}"
        assert seen["stalls"] > hold, f"{where}: waiting for the write is not counted as memory stalls: {seen}"
        status = reader.status("read")
        assert not status["error"] and status["words"] == 48, f"{where}: read status {status}"
        assert np.array_equal(tier_image(stores[tier]), image), f"{where}: memory differs from the model"


class PulseCounter:
    """Counts the pulses of a one-bit output of the top, sampled once a cycle, and the most cycles one stayed high,
    from its creation until :meth:`stop`."""

    def __init__(self, dut, name):
        self.dut, self.signal = dut, getattr(dut, name)
        self.pulses, self.longest, self.running = 0, 0, True
        self.task = cocotb.start_soon(self._watch())

    async def _watch(self):
        high = 0
        while self.running:
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            high = high + 1 if self.signal.value else 0
            self.pulses += high == 1
            self.longest = max(self.longest, high)

    async def stop(self):
        self.running = False
        await self.task


class LoopKernel:
    """The tile side of a looped kernel, a part of :func:`run`: hands the write its vectors iteration by iteration
    from what the read delivered.

    Write iteration ``i``'s words, ``produce(i, delivered)`` (flat uint32; ``delivered``: the read's vectors so
    far), go to ``driver`` once the read has delivered ``needs(i)`` vectors, and not before cycle ``hold``.
    """

    def __init__(self, monitor, driver, *, iterations, read_lanes, write_lanes, produce, needs, hold=0):
        self.monitor, self.driver, self.iterations = monitor, driver, iterations
        self.read_lanes, self.write_lanes = read_lanes, write_lanes
        self.produce, self.needs, self.hold = produce, needs, hold
        self.released = 0

    @property
    def done(self):
        return self.released == self.iterations

    def drive(self):
        pass

    def sample(self, cycle):
        i = self.released
        if i == self.iterations or cycle < self.hold or len(self.monitor.items) < self.needs(i):
            return False
        words = self.produce(i, unpack_vectors(self.monitor.items, self.read_lanes)[0])
        vectors = words.reshape(-1, self.write_lanes)
        self.driver.queue += pack_vectors(vectors, [i == self.iterations - 1] * len(vectors), self.write_lanes)
        self.released += 1
        return True

    def stop(self):
        pass

    def status(self):
        return f"looped kernel: {self.released}/{self.iterations} write iterations released"


async def looped_gate(dut, stores, rng, *, tier, writer, reader, lag, after, region, window, seed):
    """A looped write of ``writer`` and a looped read of ``reader`` (``after``, ``lag``) over ``ITERATIONS``
    top-level iterations, fed by a :class:`LoopKernel`, beside random spare-port traffic on both tiers whose
    responses the testbench back-pressures (so the write's acknowledgements come late, at random).

    Lag 0 (a KV cache): write iteration i stores block i, fresh random words released once the read has
    delivered iteration i - 1; read iteration i reads block i transposed. Lag 1 (a loop-carried value): read
    iteration i reads slot i, and write iteration i stores slot i + 1 = what the read delivered, plus one.

    Returns ``(got, want, memory_ok)``: the read's vectors, those the gate guarantees, and whether the
    region ends as the model's.
    """
    n, cap = ITERATIONS, P.tiers[tier].capacity
    random_fill(stores[tier], rng, region - 0x400, 0x2000)
    image = tier_image(stores[tier])
    block = [4, 4, 1, n]                                # 4 rows of 4 words, 6 words apart; 32 words per iteration
    rows, cols = ([1, 6, 0, 32], [6, 1, 0, 32]) if lag == 0 else ([1, 6, 0, 32], [1, 6, 0, 32])
    words = 16 * WB // 4                                # uint32 per iteration
    rv = words // reader.lanes                          # read vectors per iteration
    if lag == 0:
        data = rng.integers(0, 1 << 32, (n, words), dtype=np.uint32)
        mu.agcu_write(image, cap, region, block, rows, data.reshape(-1, writer.lanes), word_bytes=WB)
        want, want_last, _ = mu.agcu_read(image, cap, region, block, cols, lanes=reader.lanes, word_bytes=WB)
        write_base, produce, needs = region, lambda i, got: data[i], lambda i: i * rv
    else:
        parts = []
        for i in range(n):
            got, _, _ = mu.agcu_read(image, cap, region + 32 * WB * i, block[:2], rows[:2], lanes=reader.lanes,
                                     word_bytes=WB)
            parts.append(got)
            mu.agcu_write(image, cap, region + 32 * WB * (i + 1), block[:2], rows[:2],
                          (got.reshape(-1) + np.uint32(1)).reshape(-1, writer.lanes), word_bytes=WB)
        want = np.concatenate(parts)
        want_last = np.arange(len(want)) == len(want) - 1
        write_base = region + 32 * WB
        produce, needs = lambda i, got: got[i * rv:(i + 1) * rv].reshape(-1) + np.uint32(1), lambda i: (i + 1) * rv

    windows = {HBM: (window[HBM], 0x1000), DDR: (window[DDR], 0x1000)}
    for t, (base, size) in windows.items():
        random_fill(stores[t], rng, base, size)
    requests = spare_traffic(rng, 200, windows)
    expected = spare_expected({t: tier_image(stores[t]) for t in (HBM, DDR)}, requests)
    spare = StreamMonitor(dut, "spare__resp", Scoreboard(
        {t: [pack(RESP, r) for r in expected[t]] for t in (HBM, DDR)}, name="spare responses",
        key=lambda value: unpack(RESP, value)["tag"] & 1), pauses=pauses(0.4, (seed, 5)))

    cocotb.start_soon(writer.begin("write", tier=tier, base=write_base, counts=block, strides=rows))
    await reader.begin("read", tier=tier, base=region, counts=block, strides=cols, after=after, lag=lag)
    gated = after != 0
    board = Scoreboard(pack_vectors(want, want_last, reader.lanes) if gated else [None] * len(want),
                       name=f"looped read, lag {lag}", last_bit=32 * reader.lanes)
    monitor = StreamMonitor(dut, f"a{reader.index}_vo", board, pauses=pauses(0.3, (seed, 4)))
    driver = StreamDriver(dut, f"a{writer.index}_vi", pauses=pauses(0.3, (seed, 3)))
    kernel = LoopKernel(monitor, driver, iterations=n, read_lanes=reader.lanes, write_lanes=writer.lanes,
                        produce=produce, needs=needs, hold=60)
    await run(dut, [monitor, kernel, driver, StreamDriver(dut, "spare__req", [pack(REQ, r) for r in requests],
                                                          pauses=pauses(0.3, (seed, 6))), spare],
              done=lambda: writer.finished("write") and reader.finished("read"), stall_limit=STALL_LIMIT)
    got, _ = unpack_vectors(monitor.items, reader.lanes)
    status = reader.status("read")
    assert not status["error"] and status["words"] == 16 * n, f"looped read status {status}"
    lo, size = region - 0x400, 0x2000
    return got, want, np.array_equal(stores[tier].read(lo, size), image[lo:lo + size])


ITERATIONS = 5


@cocotb.test()
async def looped_gated_reads(dut):
    """A looped read gated per top-level iteration on a looped write of the other AGCU (``after``, ``lag``):
    iteration i of the read waits only for iterations 0..i - lag of the write, under back-pressure, idle
    write data and late acknowledgements, on both tiers and both vector widths.

    The tile side feeds the write from the read (:class:`LoopKernel`), so a gate that waited for the whole
    write would never finish (lag 0: the write's next iteration waits for the read's previous one) and a read
    that ran early would see stale words; without a gate (``after`` 0) the same read does see stale words.
    Each write's ``write_iteration`` is one one-cycle pulse per top-level iteration, the last one included.
    """
    stores = await start(dut)
    rng = np.random.default_rng(SEED + 17)
    pulses = [PulseCounter(dut, f"a{i}_write_iteration") for i in range(len(LANES))]
    window = {HBM: 0x90000, DDR: 0x380000}
    for k, (tier, w, r) in enumerate(((HBM, 0, 1), (DDR, 1, 0))):
        writer, reader = AgcuDriver(dut, w), AgcuDriver(dut, r)
        for lag in (0, 1):
            where = f"{P.tiers[tier].name}, AGCU {r} after AGCU {w}, lag {lag}"
            region = (0x14000 if tier == HBM else 0x54000) + 0x2000 * lag
            got, want, memory_ok = await looped_gate(dut, stores, rng, tier=tier, writer=writer, reader=reader,
                                                     lag=lag, after=w + 1, region=region, window=window,
                                                     seed=SEED + 4 * k + lag)
            assert memory_ok, f"{where}: memory differs from the model"
            # The same loop without the gate: the read runs ahead of the write and sees what was there before.
            got, want, _ = await looped_gate(dut, stores, rng, tier=tier, writer=writer, reader=reader, lag=lag,
                                             after=0, region=region + 0x4000, window=window, seed=SEED + 4 * k + lag)
            stale = np.flatnonzero((got != want).any(axis=1))
            assert stale.size, f"{where}: an ungated read saw the write's words: the case does not test the gate"
            dut._log.info(f"{where}: gated read exact; ungated, {stale.size} of {len(want)} vectors stale")
    # The final iteration's pulse rises as the write finishes, its AGCU otherwise idle: it must still fall a
    # cycle later (the clock gate's ``write_iteration`` term).
    await ClockCycles(dut.clk, 2)
    for i, counter in enumerate(pulses):
        await counter.stop()
        assert (counter.pulses, counter.longest) == (4 * ITERATIONS, 1), \
            f"AGCU {i}: {counter.pulses} write_iteration pulses, the longest {counter.longest} cycles high; " \
            f"want {4 * ITERATIONS} (two lags, gated and not, of {ITERATIONS} iterations) of one cycle"


@cocotb.test()
async def streaming_read_bandwidth(dut):
    """A long contiguous read reaches at least 90% of each tier's peak, first request to last data."""
    stores = await start(dut)
    rng = np.random.default_rng(SEED + 20)
    agcu = AgcuDriver(dut, 0)
    for tier, words in ((HBM, 4096), (DDR, 1024)):
        t = P.tiers[tier]
        base = 0x20000
        random_fill(stores[tier], rng, base, words * WB)
        image = tier_image(stores[tier])
        want, _, _ = mu.agcu_read(image, t.capacity, base, [words], [1], lanes=agcu.lanes, word_bytes=WB)
        got, _, status = await agcu.read(image, tier, base, [words], [1])
        assert np.array_equal(got, want), f"{t.name}: streamed data differs"
        ideal = words * WB / float(t.bytes_per_cycle)
        fraction = ideal / status["cycles"]
        dut._log.info(f"{t.name}: {words} words in {status['cycles']} cycles, {fraction:.1%} of the peak "
                      f"{float(t.bytes_per_cycle)} B/cycle (model {mu.stream_cycles(words, t, word_bytes=WB):.0f} "
                      f"cycles); mem stalls {status['mem_stalls']}, tile stalls {status['tile_stalls']}")
        assert fraction >= 0.9, f"{t.name}: {fraction:.1%} of peak"
        assert status["words"] == words and status["tile_stalls"] == 0


def spare_traffic(rng, count, windows):
    """Random reads and writes on the spare port in ``windows`` {tier: (base, size)}; tag = tier | sequence << 1."""
    requests = []
    for i in range(count):
        tier = int(rng.integers(2))
        base, size = windows[tier]
        addr = base + WB * int(rng.integers(size // WB))
        write = bool(rng.random() < 0.5)
        value = int.from_bytes(rng.bytes(WB), "little") if write else 0
        requests.append(dict(tier=tier, write=int(write), addr=addr, data=value, tag=tier | (i % 8) << 1))
    return requests


def spare_expected(images, requests):
    """Per tier, the responses in order, from a sequential model of each tier."""
    out = {HBM: [], DDR: []}
    for r in requests:
        image = images[r["tier"]]
        a = r["addr"]
        if r["write"]:
            image[a:a + WB] = np.frombuffer(r["data"].to_bytes(WB, "little"), dtype=np.uint8)
            value = 0
        else:
            value = int.from_bytes(image[a:a + WB].tobytes(), "little")
        out[r["tier"]].append(dict(data=value, tag=r["tag"], write=r["write"], error=0))
    return out


@cocotb.test()
async def copy_engine_alone_and_under_traffic(dut):
    """DDR -> HBM copies: alone (timing against the model), then beside AGCU traffic and random spare-port traffic."""
    stores = await start(dut)
    rng = np.random.default_rng(SEED + 30)
    copier = CopyDriver(dut)
    length = 4 * KiB
    src, dst = 0x100000, 0x40000
    block = random_fill(stores[DDR], rng, src, length)
    status = await copier.run(src_tier=DDR, src_addr=src, dst_tier=HBM, dst_addr=dst, length=length)
    assert not status["error"] and status["bytes"] == length, f"copy status {status}"
    assert np.array_equal(stores[HBM].read(dst, length), block), "copied data differs"
    model = mu.copy_cycles(length, P.ddr, P.hbm, word_bytes=WB)
    dut._log.info(f"copy {length} B DDR->HBM alone: {status['cycles']} cycles, model {model:.0f} "
                  f"({status['cycles'] / model:.3f} of it); {length / status['cycles']:.3f} B/cycle of "
                  f"{float(P.ddr.bytes_per_cycle)}")
    assert abs(status["cycles"] - model) <= 0.02 * model + 16, f"copy took {status['cycles']}, model {model:.0f}"

    # Everything at once, in disjoint regions.
    src2, dst2 = 0x200000, 0x60000
    block2 = random_fill(stores[DDR], rng, src2, length)
    read_base, write_base = 0x70000, 0x300000
    random_fill(stores[HBM], rng, read_base, 0x1000)
    windows = {HBM: (0x90000, 0x1000), DDR: (0x380000, 0x1000)}
    for tier, (base, size) in windows.items():
        random_fill(stores[tier], rng, base, size)
    images = {t: tier_image(stores[t]) for t in (HBM, DDR)}
    requests = spare_traffic(rng, 600, windows)
    expected = spare_expected(images, requests)
    reader, writer = AgcuDriver(dut, 0), AgcuDriver(dut, 1)
    read_counts, read_strides = [16, 16], [1, 16]   # 256 words
    want_read, _, _ = mu.agcu_read(images[HBM], P.hbm.capacity, read_base, read_counts, read_strides,
                                   lanes=reader.lanes, word_bytes=WB)
    write_counts, write_strides = [8, 16], [1, 8]    # 128 words
    vectors = rng.integers(0, 1 << 32, (mu.vectors_for_words(128, writer.lanes, WB), writer.lanes), dtype=np.uint32)
    mu.agcu_write(images[DDR], P.ddr.capacity, write_base, write_counts, write_strides, vectors, word_bytes=WB)
    errors = {t: stats(dut, t)["errors"] for t in (HBM, DDR)}

    copying = cocotb.start_soon(copier.run(src_tier=DDR, src_addr=src2, dst_tier=HBM, dst_addr=dst2, length=length))
    reading = cocotb.start_soon(reader.read(images[HBM].copy(), HBM, read_base, read_counts, read_strides,
                                              backpressure=0.3, seed=3))
    writing = cocotb.start_soon(writer.write(DDR, write_base, write_counts, write_strides, vectors, idle=0.3, seed=4))
    # Back-pressure on the spare port's responses holds up its controllers (the
    # crossbar's contract) but must not change or lose a held response. Responses
    # keep their order within a tier (tag bit 0).
    spare = StreamMonitor(dut, "spare__resp", Scoreboard(
        {t: [pack(RESP, r) for r in expected[t]] for t in (HBM, DDR)}, name="spare responses",
        key=lambda value: unpack(RESP, value)["tag"] & 1, show=lambda value: str(unpack(RESP, value))),
        pauses=pauses(0.2, (6, 1)))
    await run(dut, [StreamDriver(dut, "spare__req", [pack(REQ, r) for r in requests], pauses=pauses(0.3, (5, 0))),
                    spare], stall_limit=STALL_LIMIT)
    responses = spare.items
    copy_status = await copying
    got_read, _, read_status = await reading
    write_status = await writing

    by_tier = {HBM: [], DDR: []}
    for value in responses:
        r = unpack(RESP, value)
        by_tier[r["tag"] & 1].append(r)
    for tier in (HBM, DDR):
        assert len(by_tier[tier]) == len(expected[tier]), f"{P.tiers[tier].name}: {len(by_tier[tier])} spare " \
                                                          f"responses, want {len(expected[tier])}"
        for i, (have, want) in enumerate(zip(by_tier[tier], expected[tier])):
            assert have == want, f"{P.tiers[tier].name} spare response {i}: got {have}, want {want}"
    assert not copy_status["error"] and copy_status["bytes"] == length, f"copy status {copy_status}"
    assert np.array_equal(stores[HBM].read(dst2, length), block2), "copy under traffic: data differs"
    assert np.array_equal(got_read, want_read), "AGCU read under traffic differs"
    assert not read_status["error"] and not write_status["error"]
    images[HBM][dst2:dst2 + length] = block2
    for tier in (HBM, DDR):
        assert np.array_equal(tier_image(stores[tier]), images[tier]), f"{P.tiers[tier].name}: memory differs " \
                                                                       f"from the model after concurrent traffic"
        assert stats(dut, tier)["errors"] == errors[tier], "no access may fail"
    dut._log.info(f"copy {length} B under traffic: {copy_status['cycles']} cycles; AGCU read "
                  f"{read_status['cycles']}, AGCU write {write_status['cycles']} cycles")


@cocotb.test()
async def out_of_range_accesses(dut):
    """Accesses beyond a tier raise the error status and the controller's counter and never wrap around."""
    stores = await start(dut)
    rng = np.random.default_rng(SEED + 40)
    hcap, dcap = P.hbm.capacity, P.ddr.capacity
    # The addresses a wrap-around would hit: the bottom of each tier.
    guard = {t: random_fill(stores[t], rng, 0, 0x1000) for t in (HBM, DDR)}

    a0, a1 = AgcuDriver(dut, 0), AgcuDriver(dut, 1)
    # Read across the end of HBM: good words, then zeros, error at word 8.
    random_fill(stores[HBM], rng, hcap - 0x100, 0x100)
    image = tier_image(stores[HBM])
    before = stats(dut, HBM)["errors"]
    want, _, report = mu.agcu_read(image, hcap, hcap - 8 * WB, [16], [1], lanes=a0.lanes, word_bytes=WB)
    got, _, status = await a0.read(image, HBM, hcap - 8 * WB, [16], [1])
    assert np.array_equal(got, want), "read across the end of HBM differs from the model (zeros past the end)"
    assert (status["error"], status["error_word"], status["words"]) == (1, 8, 8), f"status {status}"
    assert stats(dut, HBM)["errors"] - before == 8

    # Below address 0 with a negative stride: the address saturates, never wraps to the top.
    before = stats(dut, HBM)["errors"]
    _, _, status = await a1.read(tier_image(stores[HBM]), HBM, 2 * WB, [4], [-1])
    assert (status["error"], status["error_word"], status["words"]) == (1, 3, 3), f"status {status}"
    assert stats(dut, HBM)["errors"] - before == 1

    # Write across the end of HBM: four words written, eight refused, nothing at the wrapped addresses.
    before = stats(dut, HBM)
    vectors = rng.integers(0, 1 << 32, (mu.vectors_for_words(12, a1.lanes, WB), a1.lanes), dtype=np.uint32)
    image = tier_image(stores[HBM])
    mu.agcu_write(image, hcap, hcap - 4 * WB, [12], [1], vectors, word_bytes=WB)
    status = await a1.write(HBM, hcap - 4 * WB, [12], [1], vectors, idle=0.2)
    assert (status["error"], status["error_word"], status["words"]) == (1, 4, 4), f"status {status}"
    after = stats(dut, HBM)
    assert (after["errors"] - before["errors"], after["writes"] - before["writes"]) == (8, 4)
    assert np.array_equal(tier_image(stores[HBM]), image), "HBM differs from the model: a refused write landed"

    # A pattern that leaves the TLN address range (2**addr_bits) is flagged, not wrapped into DDR.
    before = stats(dut, DDR)
    stride = (1 << (P.addr_bits - 4)) - 1                  # just under the address space, in words
    wrapped = (0x1000 + stride * WB) % (1 << P.addr_bits) % dcap
    vectors = rng.integers(0, 1 << 32, (mu.vectors_for_words(2, a0.lanes, WB), a0.lanes), dtype=np.uint32)
    status = await a0.write(DDR, 0x1000, [2], [stride], vectors)
    assert (status["error"], status["error_word"], status["words"]) == (1, 1, 1), f"status {status}"
    after = stats(dut, DDR)
    assert after["errors"] - before["errors"] == 1
    if before["errors"] == 0:
        assert after["first_error_addr"] == out_of_range_addr(P)
    assert np.array_equal(stores[DDR].read(wrapped, WB), guard[DDR][wrapped:wrapped + WB]), "wrapped write landed"

    # Copy engine: destination past the end of HBM stops at its first word beyond.
    copier = CopyDriver(dut)
    src = 0x10000
    block = random_fill(stores[DDR], rng, src, 4 * KiB)
    before = stats(dut, HBM)["errors"]
    image = tier_image(stores[HBM])
    result = mu.copy(tier_image(stores[DDR]), dcap, src, image, hcap, hcap - 2 * KiB, 4 * KiB, word_bytes=WB)
    status = await copier.run(src_tier=DDR, src_addr=src, dst_tier=HBM, dst_addr=hcap - 2 * KiB, length=4 * KiB)
    assert (status["error"], status["error_addr"], status["bytes"]) == (1, hcap, 2 * KiB), f"copy status {status}"
    assert (result.error, result.error_addr, result.bytes) == (True, hcap, 2 * KiB)
    assert stats(dut, HBM)["errors"] > before
    assert np.array_equal(tier_image(stores[HBM]), image), "HBM differs: a refused copy write landed or wrapped"
    assert np.array_equal(stores[HBM].read(hcap - 2 * KiB, 2 * KiB), block[:2 * KiB])

    # Copy engine: source past the end of DDR; what was copied is a prefix, nothing else moves.
    src = dcap - 1 * KiB
    random_fill(stores[DDR], rng, src, 1 * KiB)
    dst = 0x50000
    image = tier_image(stores[HBM])
    before = stats(dut, DDR)["errors"]
    status = await copier.run(src_tier=DDR, src_addr=src, dst_tier=HBM, dst_addr=dst, length=2 * KiB)
    assert (status["error"], status["error_addr"]) == (1, dcap), f"copy status {status}"
    assert status["bytes"] <= 1 * KiB and status["bytes"] % WB == 0
    assert stats(dut, DDR)["errors"] > before
    n = status["bytes"]
    image[dst:dst + n] = stores[DDR].read(src, n)
    assert np.array_equal(tier_image(stores[HBM]), image), "HBM holds more than the copied prefix"

    # A length that is not a whole number of words is refused at once.
    status = await copier.run(src_tier=DDR, src_addr=src, dst_tier=HBM, dst_addr=dst, length=100)
    assert (status["error"], status["error_addr"], status["bytes"]) == (1, src, 0), f"copy status {status}"
    assert np.array_equal(stores[DDR].read(0, 0x1000), guard[DDR]) and \
        np.array_equal(stores[HBM].read(0, 0x1000), guard[HBM]), "the bottom of a tier changed: an access wrapped"


def all_status(dut):
    return {(i, d): unpack(AGCU_STATUS, int(getattr(dut, f"a{i}_status").value))[d]
            for i in range(len(LANES)) for d in ("read", "write")}


async def assert_reset_state(dut, where):
    """Every AGCU's status is all zeros and nothing is offered, now and after idle cycles past a round trip."""
    for _ in range(2):
        await ReadOnly()
        for key, status in all_status(dut).items():
            assert not any(status.values()), f"{where}: AGCU {key[0]} {key[1]} status {status}"
        for i in range(len(LANES)):
            assert getattr(dut, f"a{i}_vo__valid").value == 0, f"{where}: AGCU {i} offers a vector"
        await ClockCycles(dut.clk, 4 * max(P.hbm.latency, P.ddr.latency), rising=False)


@cocotb.test()
async def reset_clears_state(dut):
    """A reset with both AGCUs idle after finished transfers (their gated clocks stopped), and one in the middle
    of a read with its data buffered and a write waiting for vectors, leave the AGCUs as the first reset did,
    and the transfers after each are exact."""
    stores = await start(dut)
    rng = np.random.default_rng(SEED + 50)
    base = 0x6000
    random_fill(stores[HBM], rng, base, 0x4000)
    a0, a1 = AgcuDriver(dut, 0), AgcuDriver(dut, 1)
    zero = [f"a{i}_{name}" for i in range(len(LANES)) for name in ("vi__valid", "si__valid", "vo__ready", "cfg")]
    for mid_transfer in (False, True):
        image = tier_image(stores[HBM])
        await a0.checked_read(image, HBM, base, [24], [1], where="before the reset", seed=SEED)
        vectors = rng.integers(0, 1 << 32, (mu.vectors_for_words(6, a1.lanes, WB), a1.lanes), dtype=np.uint32)
        status = await a1.write(HBM, base + 0x2000, [6], [1], vectors)
        assert status["done"] and status["words"] == 6 and status["cycles"], f"write status {status}"
        if mid_transfer:
            dut.a0_vo__ready.value = 0
            await a0.begin("read", tier=HBM, base=base, counts=[64], strides=[1])
            await a1.begin("write", tier=HBM, base=base + 0x2000, counts=[8], strides=[1])
            await ClockCycles(dut.clk, 4 * P.hbm.latency, rising=False)
            await ReadOnly()
            assert dut.a0_vo__valid.value == 1, "the read has no data buffered"
            assert a0.status("read")["busy"] and a1.status("write")["busy"], "the transfers are not under way"
            await FallingEdge(dut.clk)
        a0.cfg, a1.cfg = {"read": {}, "write": {}}, {"read": {}, "write": {}}
        await reset(dut, zero=zero)
        await assert_reset_state(dut, f"after a reset {'in the middle of' if mid_transfer else 'between'} transfers")
    image = tier_image(stores[HBM])
    await a0.checked_read(image, HBM, base, [40], [1], where="after the resets", seed=SEED + 1)
    await a1.checked_read(image, HBM, base + 0x100, [9], [2], where="after the resets", seed=SEED + 2)
