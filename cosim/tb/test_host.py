"""cocotb testbench of the host interface, driven by cocotbext-axi's masters.

AXI4 transfers into both tiers are checked against a byte model and through
the back door (:class:`~cosim.store.TierStore`); errors against the
controllers' counters, read through the AXI4-Lite registers by name; the
host link's speed against ``host_bytes_per_cycle``.
"""

import logging
import os
import warnings

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, gather
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiMaster, AxiResp
from cocotbext.axi.axi_channels import (AxiARSource, AxiARTransaction, AxiAWSource, AxiAWTransaction, AxiBSink,
                                        AxiRSink, AxiWSource, AxiWTransaction)

from cosim import metrics
from cosim.components import reset, start_clock
from cosim.store import TierStore
from cosim.tb.host_stress import backpressure, random_bursts
from cosim.tb.units_host import LINKS, REGISTERS, SLICED
from hw.mem.csr import RegisterMap
from hw.mem.params import DDR, HBM

P = LINKS[os.environ.get("OPENRDU_HOST_UNIT", "host")]
WB = P.word_bytes
SEED = int(os.environ.get("OPENRDU_SEED", "1"))
PERIOD_NS = 10
REGMAP = RegisterMap(REGISTERS)
# cocotbext-axi 0.1.28 still uses cocotb APIs that 2.x deprecates.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\.axi")


def axi_addr(tier, offset):
    """The AXI address of a byte in a tier: the tier is the bit above the TLN address."""
    return (tier << P.addr_bits) | offset


class Csr:
    """A register driver by name, over the generated map (multi-word registers low word first)."""

    def __init__(self, master, regmap):
        self.master, self.map = master, regmap

    async def read(self, name):
        reg = self.map.registers[name]
        value = 0
        for k in range(reg.words):
            got = await self.master.read(self.map[name] + 4 * k, 4)
            assert got.resp == AxiResp.OKAY, f"reading {name} word {k}: {got.resp!r}"
            value |= int.from_bytes(got.data, "little") << (32 * k)
        return value

    async def write(self, name, value):
        reg = self.map.registers[name]
        for k in range(reg.words):
            word = (value >> (32 * k)) & 0xFFFFFFFF
            got = await self.master.write(self.map[name] + 4 * k, word.to_bytes(4, "little"))
            assert got.resp == AxiResp.OKAY, f"writing {name} word {k}: {got.resp!r}"


async def start(dut, *, axi_master=True):
    """Clock, reset (which clears every counter), and fresh masters on both buses.

    Without ``axi_master`` the AXI4 bus is left for channel-level drivers.
    """
    start_clock(dut, period_ns=PERIOD_NS)
    axi = AxiMaster(AxiBus.from_prefix(dut, "s_axi"), dut.clk, dut.rst) if axi_master else None
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
    for log in (axil.write_if.log, axil.read_if.log) + ((axi.write_if.log, axi.read_if.log) if axi else ()):
        log.setLevel(logging.WARNING)
    await reset(dut, cycles=3)
    await ClockCycles(dut.clk, 2)
    return axi, axil, Csr(axil, REGMAP)


def stores():
    return {t: TierStore(t, P.tiers[t].capacity) for t in (HBM, DDR)}


def cycles_now():
    return get_sim_time(unit="ns") // PERIOD_NS


@cocotb.test()
async def random_writes_and_reads_both_tiers(dut):
    """Random-size word bursts into both tiers, read back whole and at byte offsets, checked against a model
    and through the back door."""
    axi, _, _ = await start(dut)
    store = stores()
    rng = np.random.default_rng(SEED)
    models = {t: {} for t in (HBM, DDR)}     # byte address -> value, for what was written here
    transfers = []
    for i in range(int(os.environ.get("OPENRDU_HOST_OPS", "10"))):
        tier = int(rng.integers(2))
        cap = P.tiers[tier].capacity
        words = int(rng.integers(1, 48))
        region = [0, 4096 - WB * int(rng.integers(1, words + 1)), cap - 16384][i % 3]
        offset = region + WB * int(rng.integers(256))
        offset = min(offset, cap - words * WB)
        payload = rng.bytes(words * WB)
        resp = await axi.write(axi_addr(tier, offset), payload)
        assert resp.resp == AxiResp.OKAY, f"write {i}: {words} words at {tier}:{offset:#x} gave {resp.resp!r}"
        for k, byte in enumerate(payload):
            models[tier][offset + k] = byte
        transfers.append((tier, offset, len(payload)))
    for tier, offset, size in reversed(transfers):
        want = bytes(models[tier][offset + k] for k in range(size))
        got = await axi.read(axi_addr(tier, offset), size)
        assert got.resp == AxiResp.OKAY and got.data == want, f"read back {size} bytes at {tier}:{offset:#x}"
        assert store[tier].read(offset, size).tobytes() == want, f"back door differs at {tier}:{offset:#x}"
        # A byte-granular read: the master reads whole words and cuts them.
        lo = int(rng.integers(size))
        hi = int(rng.integers(lo, size)) + 1
        got = await axi.read(axi_addr(tier, offset + lo), hi - lo)
        assert got.data == want[lo:hi], f"bytes [{lo}, {hi}) of the transfer at {tier}:{offset:#x}"
    dut._log.info("%d transfers, %d bytes each way, checked", len(transfers), sum(t[2] for t in transfers))


@cocotb.test()
async def random_concurrent_bursts_with_backpressure(dut):
    """``OPENRDU_HOST_STRESS`` random bursts (default 160, 12 on the slow link) from four concurrent workers,
    with idle cycles on AW, W and AR and back-pressure on B and R: word writes of 1 to 96 words, reads at
    any byte offset and length, across 4 KiB boundaries, into both tiers. Every read is checked against a
    byte model as it returns, both tiers through the back door at the end, and the host's byte counter."""
    axi, _, csr = await start(dut)
    backpressure(axi, 0.3, SEED)
    store = stores()
    default = "12" if P.host_bytes_per_cycle < WB else "160"
    total, workers, span = int(os.environ.get("OPENRDU_HOST_STRESS", default)), 4, 3 * 4096
    # Worker w owns [base, base + span) of each tier, just below a 4 KiB boundary and away from the ends.
    bases = {(w, t): (w + 1) * 4 * 4096 - 40 * WB + (t * 2 * 4096) for w in range(workers) for t in (HBM, DDR)}
    models = {key: store[key[1]].read(base, span).copy() for key, base in bases.items()}
    windows = [{t: (bases[(w, t)], models[(w, t)]) for t in (HBM, DDR)} for w in range(workers)]
    written = await random_bursts(axi, windows, total, SEED, word_bytes=WB, addr_bits=P.addr_bits)
    for (w, tier), base in bases.items():
        assert np.array_equal(store[tier].read(base, span), models[(w, tier)]), \
            f"worker {w}, tier {tier}: the back door differs from the model"
    backpressure(axi, 0, SEED)
    assert await csr.read("host_bytes_written") == sum(written)
    dut._log.info("%d random bursts from %d workers under back-pressure, %d bytes written, checked", total,
                  workers, sum(written))
    metrics.record("host_stress", bursts=total, bytes_written=sum(written))


@cocotb.test()
async def backdoor_write_frontdoor_read(dut):
    """Blocks loaded through the back door read back through AXI, at both ends of both tiers."""
    axi, _, _ = await start(dut)
    store = stores()
    rng = np.random.default_rng(SEED + 1)
    for tier in (HBM, DDR):
        cap = P.tiers[tier].capacity
        for offset, size in ((0, 256), (cap // 2 + 3 * WB, 96), (cap - 160, 160)):
            block = rng.integers(0, 256, size, dtype=np.uint8)
            store[tier].write(offset, block)
            got = await axi.read(axi_addr(tier, offset), size)
            assert got.resp == AxiResp.OKAY and got.data == block.tobytes(), \
                f"{size} bytes at {tier}:{offset:#x} read back wrong"


@cocotb.test()
async def errors_are_flagged_and_nothing_wraps(dut):
    """Bursts past a tier's end give SLVERR, count in the controller and write nothing beyond it; partial
    strobes and narrow bursts are refused."""
    axi, _, csr = await start(dut)
    store = stores()
    rng = np.random.default_rng(SEED + 2)
    low = {t: rng.integers(0, 256, 512, dtype=np.uint8) for t in (HBM, DDR)}
    for t in (HBM, DDR):
        store[t].write(0, low[t])
    assert await csr.read("hbm_errors") == 0 and await csr.read("ddr_errors") == 0

    hbm_cap, ddr_cap = P.tiers[HBM].capacity, P.tiers[DDR].capacity
    # 64 bytes from 32 below the HBM end: the master splits it at the 4 KiB
    # boundary (the tier end); the in-range half lands, the rest is refused.
    payload = rng.bytes(64)
    resp = await axi.write(axi_addr(HBM, hbm_cap - 32), payload)
    assert resp.resp == AxiResp.SLVERR, f"write across the HBM end gave {resp.resp!r}"
    assert store[HBM].read(hbm_cap - 32, 32).tobytes() == payload[:32], "the in-range half was not written"
    assert await csr.read("hbm_errors") == 2
    assert await csr.read("hbm_first_error_addr") == hbm_cap
    got = await axi.read(axi_addr(HBM, hbm_cap - 32), 64)
    assert got.resp == AxiResp.SLVERR and got.data[:32] == payload[:32] and got.data[32:] == bytes(32)
    assert await csr.read("hbm_errors") == 4

    # One burst wholly beyond HBM, at the very top of the TLN address space.
    resp = await axi.write(axi_addr(HBM, (1 << P.addr_bits) - 64), rng.bytes(64))
    assert resp.resp == AxiResp.SLVERR
    assert await csr.read("hbm_errors") == 8

    # One burst that runs past the DDR end without crossing 4 KiB.
    payload = rng.bytes(48)
    resp = await axi.write(axi_addr(DDR, ddr_cap - 16), payload)
    assert resp.resp == AxiResp.SLVERR, f"write across the DDR end gave {resp.resp!r}"
    assert store[DDR].read(ddr_cap - 16, 16).tobytes() == payload[:16]
    assert await csr.read("ddr_errors") == 2
    assert await csr.read("ddr_first_error_addr") == ddr_cap

    for t in (HBM, DDR):
        assert np.array_equal(store[t].read(0, 512), low[t]), f"tier {t}: an error wrapped around to address 0"

    # A partial strobe (a 5-byte write at a byte offset) is refused, not merged.
    before = store[HBM].read(0x100, WB)
    resp = await axi.write(axi_addr(HBM, 0x103), b"\xaa" * 5)
    assert resp.resp == AxiResp.SLVERR, f"a partial-strobe write gave {resp.resp!r}"
    assert np.array_equal(store[HBM].read(0x100, WB), before), "a partial-strobe beat was written"
    # A narrow burst (4-byte beats on the 16-byte bus) is refused whole.
    resp = await axi.write(axi_addr(DDR, 0x200), rng.bytes(32), size=2)
    assert resp.resp == AxiResp.SLVERR
    assert np.array_equal(store[DDR].read(0, 512), low[DDR]), "a narrow burst was written"
    got = await axi.read(axi_addr(DDR, 0x200), 32, size=2)
    assert got.resp == AxiResp.SLVERR
    # None of those reached a controller.
    assert await csr.read("hbm_errors") == 8 and await csr.read("ddr_errors") == 2
    # And a good transfer still works after the errors.
    payload = rng.bytes(64)
    assert (await axi.write(axi_addr(HBM, 0x400), payload)).resp == AxiResp.OKAY
    assert (await axi.read(axi_addr(HBM, 0x400), 64)).data == payload


@cocotb.test()
async def illegal_burst_across_the_address_space_does_not_wrap(dut):
    """A burst that breaks AXI's 4 KiB rule and runs past the top of a tier's TLN address space: its beats
    beyond the top go nowhere (controller errors), never to address 0."""
    _, _, csr = await start(dut, axi_master=False)
    write_bus, read_bus = AxiBus.from_prefix(dut, "s_axi").write, AxiBus.from_prefix(dut, "s_axi").read
    aw, w, b = (AxiAWSource(write_bus.aw, dut.clk, dut.rst), AxiWSource(write_bus.w, dut.clk, dut.rst),
                AxiBSink(write_bus.b, dut.clk, dut.rst))
    ar, r = AxiARSource(read_bus.ar, dut.clk, dut.rst), AxiRSink(read_bus.r, dut.clk, dut.rst)
    store = stores()
    rng = np.random.default_rng(SEED + 4)
    low = {t: rng.integers(0, 256, 256, dtype=np.uint8) for t in (HBM, DDR)}
    for t in (HBM, DDR):
        store[t].write(0, low[t])
    beats = 4
    top = (1 << P.addr_bits) - 2 * WB
    for n, tier in enumerate((HBM, DDR)):
        await aw.send(AxiAWTransaction(awid=n, awaddr=axi_addr(tier, top), awlen=beats - 1,
                                       awsize=WB.bit_length() - 1, awburst=1))
        for k in range(beats):
            await w.send(AxiWTransaction(wdata=int.from_bytes(rng.bytes(WB), "little"), wstrb=(1 << WB) - 1,
                                         wlast=int(k == beats - 1)))
        resp = await b.recv()
        assert int(resp.bid) == n and int(resp.bresp) == AxiResp.SLVERR, f"tier {tier}: B {resp}"
        await ar.send(AxiARTransaction(arid=n, araddr=axi_addr(tier, top), arlen=beats - 1,
                                       arsize=WB.bit_length() - 1, arburst=1))
        for k in range(beats):
            beat = await r.recv()
            assert int(beat.rid) == n and int(beat.rresp) == AxiResp.SLVERR and int(beat.rlast) == (k == beats - 1)
            assert int(beat.rdata) == 0
    for t in (HBM, DDR):
        assert np.array_equal(store[t].read(0, 256), low[t]), f"tier {t}: the burst wrapped around to address 0"
    # Every beat reached its controller and was refused there.
    assert await csr.read("hbm_errors") == 2 * beats and await csr.read("ddr_errors") == 2 * beats
    assert await csr.read("hbm_first_error_addr") == top


@cocotb.test()
async def host_link_bandwidth(dut):
    """N bytes host->HBM take N / host_bytes_per_cycle cycles; reads the same; both at once the same again
    (full duplex) while the link is below half a TLN word per cycle, which the two directions share."""
    axi, _, csr = await start(dut)
    rng = np.random.default_rng(SEED + 3)
    size = int(os.environ.get("OPENRDU_HOST_BYTES", "2048"))
    ideal = float(size / P.host_bytes_per_cycle)
    # Both directions share one TLN port (a word per cycle) and the tier.
    ideal_duplex = max(ideal, 2 * size / min(WB, P.tiers[HBM].bytes_per_cycle))
    payload = rng.bytes(size)

    t0 = cycles_now()
    assert (await axi.write(axi_addr(HBM, 0x8000), payload)).resp == AxiResp.OKAY
    write_cycles = cycles_now() - t0
    t0 = cycles_now()
    got = await axi.read(axi_addr(HBM, 0x8000), size)
    read_cycles = cycles_now() - t0
    assert got.data == payload
    t0 = cycles_now()
    await gather(axi.write(axi_addr(HBM, 0x10000), payload), axi.read(axi_addr(HBM, 0x8000), size))
    duplex_cycles = cycles_now() - t0
    runs = (("write", write_cycles, ideal), ("read", read_cycles, ideal), ("duplex", duplex_cycles, ideal_duplex))
    ratios = {name: round(want / cycles, 4) for name, cycles, want in runs}
    dut._log.info("host link %s B/cycle, %d bytes: ideal %.0f cycles (%.0f both ways at once); write %d, "
                  "read %d, both at once %d; ideal/measured %s", P.host_bytes_per_cycle, size, ideal,
                  ideal_duplex, write_cycles, read_cycles, duplex_cycles, ratios)
    # The ideal, give or take the first beat (the bucket starts full) and,
    # per burst, the tier's round trip and the AXI handshakes.
    bursts = -(-size // 4096)
    slack = bursts * (P.tiers[HBM].latency + 16)
    for name, cycles, want in runs:
        assert want - WB / P.host_bytes_per_cycle <= cycles <= want + slack, \
            f"{name}: {cycles} cycles for {size} bytes, ideal {want:.0f} (+{slack} allowed)"
    metrics.record(f"host_link_{os.environ.get('OPENRDU_HOST_UNIT', 'host')}", bytes=size,
                   bytes_per_cycle=float(P.host_bytes_per_cycle), ideal_cycles=ideal, write_cycles=write_cycles,
                   read_cycles=read_cycles, duplex_cycles=duplex_cycles, ratios=ratios)

    assert await csr.read("host_bytes_written") == 2 * size
    assert await csr.read("host_bytes_read") == 2 * size
    # Busy counts cycles with a burst open in either direction: about the three spans, which do not overlap.
    busy = await csr.read("host_busy")
    spans = write_cycles + read_cycles + duplex_cycles
    # Register slices add a cycle on the way in and one on the way out of each span, outside the port's busy.
    sliced = 2 * len(runs) if os.environ.get("OPENRDU_HOST_UNIT", "host") in SLICED else 0
    assert spans - sliced - 8 * bursts <= busy <= spans, f"host_busy {busy}, transfers took {spans} cycles"


@cocotb.test()
async def csr_registers(dut):
    """rw registers hold what is written (byte strobes too), ro refuse writes, w1p pulse once, unmapped
    addresses give DECERR, and the host counters read through the map."""
    axi, axil, csr = await start(dut)
    assert await csr.read("scratch") == 0x5EED, "scratch's reset value"
    await csr.write("scratch", 0xDEADBEEF)
    assert await csr.read("scratch") == 0xDEADBEEF
    resp = await axil.write(REGMAP["scratch"] + 1, b"\x12")    # byte 1 only
    assert resp.resp == AxiResp.OKAY
    assert await csr.read("scratch") == 0xDEAD12EF
    await csr.write("scratch_wide", 0xFF_1234_5678_9ABC)         # bits above 40 are not kept
    assert await csr.read("scratch_wide") == 0x34_5678_9ABC

    assert await csr.read("doorbell_count") == 0
    resp = await axil.write(REGMAP["doorbell_count"], (7).to_bytes(4, "little"))
    assert resp.resp == AxiResp.SLVERR, f"a write to an ro register gave {resp.resp!r}"
    assert await csr.read("doorbell_count") == 0
    await csr.write("doorbell", 0x05)
    await csr.write("doorbell", 0x00)                            # no bit set: no pulse
    await csr.write("doorbell", 0x80)
    assert await csr.read("doorbell_count") == 2 and await csr.read("doorbell_last") == 0x80
    assert await csr.read("doorbell") == 0, "a pulse register reads as zero"

    for addr in (REGMAP.size, (1 << 8) - 4):
        got = await axil.read(addr, 4)
        assert got.resp == AxiResp.DECERR, f"read of unmapped {addr:#x} gave {got.resp!r}"
        resp = await axil.write(addr, b"\x01\x00\x00\x00")
        assert resp.resp == AxiResp.DECERR, f"write to unmapped {addr:#x} gave {resp.resp!r}"
    assert await csr.read("scratch") == 0xDEAD12EF, "an unmapped write landed on a register"

    assert await csr.read("host_bytes_written") == 0
    payload = bytes(range(64))
    assert (await axi.write(axi_addr(DDR, 0x40), payload)).resp == AxiResp.OKAY
    assert (await axi.read(axi_addr(DDR, 0x40), 64)).data == payload
    assert await csr.read("host_bytes_written") == 64 and await csr.read("host_bytes_read") == 64
    dut._log.info("register map: %s", REGMAP.offsets)
