"""Traces of a counter under the clock of :mod:`cosim.sim_clock`, for ``tests/test_sim_clock.py``.

Each test starts the clock, resets the counter and records, at every rising
edge, the time, the clock and the count as a ``RisingEdge`` waiter sees them
(before the edge's update) and as ``ReadOnly`` sees them after it, while a
task flips ``en`` from timers that fall on rising edges, on falling edges and
between edges, and the edge waiter flips it too. The second test starts 3 ns
off the first one's grid, after the first clock stopped with its test. The
rows go to ``$OPENRDU_CLOCK_TRACE`` (one JSON line per test), to be compared
between ``OPENRDU_SIM_CLOCK=cocotb`` and the simulator loop's clock.
"""

import json
import os

import cocotb
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_time

from cosim import sim_clock

EDGES = 40


async def _trace(dut, name):
    rows = [["start", get_sim_time("ps"), int(dut.clk.value)]]
    sim_clock.start_clock(dut.clk, 10, "ns")
    dut.rst.value = 1
    dut.en.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    flips = []

    async def flip():
        for delay in (30, 25, 40, 5, 10, 13, 20, 7, 50):
            await Timer(delay, "ns")
            flips.append(get_sim_time("ps"))
            dut.en.value = len(flips) % 2

    cocotb.start_soon(flip())
    for k in range(EDGES):
        await RisingEdge(dut.clk)
        rows.append(["edge", get_sim_time("ps"), int(dut.clk.value), int(dut.count.value), int(dut.en.value)])
        if k % 7 == 3:
            dut.en.value = 1 - int(dut.en.value)
        await ReadOnly()
        rows.append(["after", get_sim_time("ps"), int(dut.count.value)])
    rows.append(["flips", *flips])
    with open(os.environ["OPENRDU_CLOCK_TRACE"], "a") as out:
        out.write(json.dumps({"test": name, "mode": sim_clock.mode(), "rows": rows}) + "\n")
    # The next test starts off this one's grid.
    await Timer(3, "ns")


@cocotb.test()
async def first(dut):
    await _trace(dut, "first")


@cocotb.test()
async def restarted(dut):
    # The first test's clock stopped with it: the port holds still until this test starts its own.
    held = [int(dut.clk.value)]
    for _ in range(4):
        await Timer(4, "ns")
        held.append(int(dut.clk.value))
    assert len(set(held)) == 1, f"the clock kept running after its test ended: {held}"
    await _trace(dut, "restarted")
