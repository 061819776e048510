"""Memory-tier measurements for ``make bench`` (bench/memory.py), on the memory system at config M.

Not a test unit: bench/memory.py builds its own unit and reads what this
records with ``cosim.metrics.record``.
"""

import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiMaster

from cosim.metrics import record
from cosim.store import TierStore
from hw.mem import params as mem_params
from hw.mem.agcu import agcu_config_layout, agcu_status_layout
from hw.mem.copy import copy_config_layout, copy_status_layout
from hw.mem.params import DDR, HBM
from sw.layout import pack, unpack
from sw.runtime.chip import Pattern

P = getattr(mem_params, os.environ.get("OPENRDU_MEM_PARAMS", "DEFAULT"))
WB = P.word_bytes
SWITCH_BYTES = int(os.environ.get("OPENRDU_SWITCH_BYTES", str(64 * 1024)))
STREAM_WORDS = {HBM: 16384, DDR: 4096}
BACKDOOR_BYTES = 100 << 20


async def wait_done(dut, read_status, limit):
    for _ in range(limit):
        await RisingEdge(dut.clk)
        await ReadOnly()
        status = read_status()
        if status["done"] and not status["busy"]:
            return status
    raise AssertionError(f"not done after {limit} cycles")


async def agcu_read(dut, pattern):
    """Run one AGCU read with the tile side always ready; returns its status."""
    cfg = agcu_config_layout(P)
    await FallingEdge(dut.clk)
    dut.a0_vo__ready.value = 1
    dut.a0_cfg.value = pack(cfg, {"read": dict(pattern.fields(), start=1)})
    await FallingEdge(dut.clk)
    dut.a0_cfg.value = pack(cfg, {"read": pattern.fields()})
    status_layout = agcu_status_layout()
    return await wait_done(dut, lambda: unpack(status_layout, int(dut.a0_status.value))["read"],
                           limit=40 * pattern.words + 10_000)


async def copy(dut, length):
    cfg = copy_config_layout(P)
    fields = dict(src_tier=DDR, src_addr=0, dst_tier=HBM, dst_addr=0, length=length)
    await FallingEdge(dut.clk)
    dut.copy_cfg.value = pack(cfg, dict(fields, start=1))
    await FallingEdge(dut.clk)
    dut.copy_cfg.value = pack(cfg, fields)
    return await wait_done(dut, lambda: unpack(copy_status_layout(), int(dut.copy_status.value)),
                           limit=20 * length + 10_000)


@cocotb.test()
async def measure(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    axi = AxiMaster(AxiBus.from_prefix(dut, "s_axi"), dut.clk, dut.rst)
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    stores = {t: TierStore(t, P.tiers[t].capacity) for t in (HBM, DDR)}
    rng = np.random.default_rng(1)
    payload = rng.integers(0, 256, SWITCH_BYTES, dtype=np.uint8)
    stores[DDR].write(0, payload)

    # Backdoor load of 100 MiB into DDR (weights already resident), then the
    # chip reads its last words through an AGCU.
    blob = np.random.default_rng(2).integers(0, 256, BACKDOOR_BYTES, dtype=np.uint8)
    at = P.ddr.capacity - BACKDOOR_BYTES
    begin = time.perf_counter()
    stores[DDR].write(at, blob)
    backdoor_s = time.perf_counter() - begin
    await FallingEdge(dut.clk)
    dut.a0_vi__valid.value = 0
    record("backdoor", bytes=BACKDOOR_BYTES, seconds=backdoor_s)
    tail_words = 4
    await agcu_read(dut, Pattern.linear(DDR, P.ddr.capacity - tail_words * WB, tail_words))

    for tier in (HBM, DDR):
        name = P.tiers[tier].name
        single = await agcu_read(dut, Pattern.linear(tier, 0, 1))
        words = STREAM_WORDS[tier]
        stream = await agcu_read(dut, Pattern.linear(tier, 0, words))
        record(f"{name}", words=words, stream_cycles=stream["cycles"], single_word_cycles=single["cycles"])

    status = await copy(dut, SWITCH_BYTES)
    assert np.array_equal(stores[HBM].read(0, SWITCH_BYTES), payload), "copied bytes differ"
    copy_cycles = status["cycles"]

    # The same bytes from the host over the link, into HBM (host address bit addr_bits = 0).
    cycle0 = await cycle_count(dut)
    await axi.write(0x100000, payload.tobytes())
    host_cycles = await cycle_count(dut) - cycle0
    assert np.array_equal(stores[HBM].read(0x100000, SWITCH_BYTES), payload), "host-written bytes differ"
    record("switch", bytes=SWITCH_BYTES, copy_cycles=copy_cycles, host_cycles=host_cycles)


async def cycle_count(dut):
    """The HBM controller's cycle counter (the first field of its stats), read between edges."""
    await FallingEdge(dut.clk)
    return int(dut.hbm_stats.value) & ((1 << 48) - 1)
