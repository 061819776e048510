"""cocotb testbench of ``hw.loopnest.LoopNestCounter`` against ``sw.loopnest.LoopNest``.

Random nests of 1 to 4 levels (bounds from 1, strides of either sign, a
signed base) are loaded and stepped with random idle cycles; at every
iteration ``addr`` must be the enumerator's address, bit k of ``ends`` the
enumerator's mark for ``last_level`` k, and ``final`` the pass's last
iteration. A load in the middle of a pass restarts it.
"""

import os

import cocotb
import numpy as np
from amaranth import signed
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from cosim.tb.units_loopnest import ADDR_BITS, STRIDE_BITS
from facts.loopnest import COUNT_BITS, LEVELS
from sw.layout import pack
from sw.loopnest import LoopNest

SEED = int(os.environ.get("OPENRDU_SEED", "1"))
NESTS = int(os.environ.get("OPENRDU_LOOPNEST_NESTS", "60"))
COUNTS = data.ArrayLayout(COUNT_BITS, LEVELS)
STRIDES = data.ArrayLayout(signed(STRIDE_BITS), LEVELS)


def signed_value(handle, bits):
    v = int(handle.value)
    return v - (1 << bits) if v >> (bits - 1) else v


def random_nest(rng):
    levels = int(rng.integers(1, LEVELS + 1))
    bounds = tuple(int(b) for b in rng.integers(1, 5, size=levels))
    limit = 1 << (STRIDE_BITS - 1)
    strides = tuple(int(s) for s in rng.integers(-limit, limit, size=levels))
    base = int(rng.integers(-(1 << 20), 1 << 20))
    return LoopNest(bounds, strides, offset=base)


async def start(dut, nest):
    """Configure ``nest`` and load its first iteration (on a falling edge)."""
    bounds, strides = nest.padded()
    await FallingEdge(dut.clk)
    dut.counts.value = pack(COUNTS, bounds)
    dut.strides.value = pack(STRIDES, strides)
    dut.base.value = pack(signed(ADDR_BITS), nest.offset)
    dut.load.value = 1
    dut.step.value = 0
    await FallingEdge(dut.clk)
    dut.load.value = 0


async def walk(dut, nest, rng, stop=None):
    """Step through ``nest`` (or its first ``stop`` iterations) with idle cycles, checking every iteration."""
    addresses = nest.addresses()
    ends = np.stack([LoopNest(nest.bounds, nest.strides, last_level=k).ends() for k in range(LEVELS)], axis=1)
    n = addresses.size if stop is None else stop
    for i in range(n):
        while rng.random() < 0.3:
            await ReadOnly()
            assert signed_value(dut.addr, ADDR_BITS) == addresses[i], f"{nest}: addr moved while idle at {i}"
            await FallingEdge(dut.clk)
        await ReadOnly()
        got = signed_value(dut.addr, ADDR_BITS)
        got_ends = [(int(dut.ends.value) >> k) & 1 for k in range(LEVELS)]
        assert got == addresses[i], f"{nest}: iteration {i} has address {got}, want {addresses[i]}"
        assert got_ends == ends[i].astype(int).tolist(), f"{nest}: iteration {i} ends {got_ends}, want {ends[i]}"
        assert int(dut.is_final.value) == int(i == addresses.size - 1), f"{nest}: final at iteration {i}"
        await FallingEdge(dut.clk)
        dut.step.value = 1
        await FallingEdge(dut.clk)
        dut.step.value = 0


@cocotb.test()
async def random_nests(dut):
    """Random nests walked to their end, and passes restarted by a load half way through."""
    rng = np.random.default_rng(SEED)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.load.value = 0
    dut.step.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    for _ in range(NESTS):
        nest = random_nest(rng)
        if nest.count > 2 and rng.random() < 0.3:
            await start(dut, nest)
            await walk(dut, nest, rng, stop=int(rng.integers(1, nest.count)))
        await start(dut, nest)
        await walk(dut, nest, rng)


@cocotb.test()
async def full_count_and_load_priority(dut):
    """A level of 2**16 - 1 iterations carries into the next; load wins over step in the same cycle."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    nest = LoopNest(((1 << COUNT_BITS) - 1, 2), (3, 5), offset=-7, last_level=0)
    await start(dut, nest)
    dut.step.value = 1
    await ClockCycles(dut.clk, nest.bounds[0] - 1)
    await ReadOnly()
    assert signed_value(dut.addr, ADDR_BITS) == -7 + 3 * (nest.bounds[0] - 1)
    assert int(dut.ends.value) & 1 == 1 and int(dut.is_final.value) == 0
    await ClockCycles(dut.clk, 1)
    await ReadOnly()
    assert signed_value(dut.addr, ADDR_BITS) == -7 + 5, "level 1 steps once level 0 wraps"
    await FallingEdge(dut.clk)
    dut.load.value = 1
    dut.base.value = pack(signed(ADDR_BITS), 40)
    await FallingEdge(dut.clk)
    dut.load.value = 0
    dut.step.value = 0
    await ReadOnly()
    assert signed_value(dut.addr, ADDR_BITS) == 40 and int(dut.ends.value) == 0
