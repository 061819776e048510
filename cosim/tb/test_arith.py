"""cocotb testbench for one arithmetic unit inside its BIST collar.

The unit is chosen by ``OPENRDU_UNIT`` (a key of ``arith_cases.CASES``).
Sizes: ``OPENRDU_OPS`` random operations through the driver and monitor,
``OPENRDU_BIST_OPS`` free-running operations. ``OPENRDU_METRICS``, when set,
names a JSON file that receives cycle counts and wall-clock times.
"""

import os
import time

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, RisingEdge

from cosim import bist
from cosim.components import Scoreboard, StreamDriver, StreamMonitor, pauses, run, start_clock_and_reset
from cosim.metrics import record
from cosim.tb.arith_cases import CASES

CASE = CASES[os.environ["OPENRDU_UNIT"]]
OPS = int(os.environ.get("OPENRDU_OPS", "100000"))
BIST_OPS = int(os.environ.get("OPENRDU_BIST_OPS", "200000"))
SEED = int(os.environ.get("OPENRDU_SEED", "1"))


async def reset(dut):
    await start_clock_and_reset(dut, zero=("i__valid", "o__ready", "bist_start"))


async def drive_and_check(dut, columns, *, idle, backpressure, seed, what):
    """Stream the operations through the unit; every result is compared with the golden model as it
    arrives, and any result beyond the last expected one fails. Returns the monitor."""
    expected = CASE.expected(columns)

    def operands(_, k):
        return ", ".join(f"{name}={int(col[k]):#x}" for (name, _), col in zip(CASE.fields, columns))

    board = Scoreboard(expected, name=f"{what} ({CASE.component.__name__} against the golden model)",
                       describe=operands)
    monitor = StreamMonitor(dut, "o", board, pauses=pauses(backpressure, (seed, 1)))
    await run(dut, [StreamDriver(dut, "i", CASE.pack(columns), pauses=pauses(idle, (seed, 0))), monitor])
    return monitor


@cocotb.test()
async def directed_cases(dut):
    """Special values, ties, carries, cancellation, range edges; light stalls."""
    await reset(dut)
    await drive_and_check(dut, CASE.directed(), idle=0.1, backpressure=0.1, seed=SEED, what="directed")


@cocotb.test()
async def random_with_stalls(dut):
    """OPS random operations with 20% idle input cycles and 20% output back-pressure."""
    await reset(dut)
    columns = CASE.stimulus(np.random.default_rng(SEED), OPS)
    start = time.perf_counter()
    monitor = await drive_and_check(dut, columns, idle=0.2, backpressure=0.2, seed=SEED + 1, what="random")
    seconds = time.perf_counter() - start
    cycles = monitor.cycles[-1] + 1
    dut._log.info(f"{OPS} operations in {cycles} cycles, {cycles / seconds:,.0f} cycles/s "
                  f"with Python driving every cycle")
    record("driven", ops=OPS, cycles=cycles, seconds=seconds)


@cocotb.test()
async def latency_and_throughput(dut):
    """Without stalls, one result per cycle after exactly LATENCY cycles."""
    await reset(dut)
    n = 256
    columns = CASE.stimulus(np.random.default_rng(SEED + 2), n)
    monitor = await drive_and_check(dut, columns, idle=0.0, backpressure=0.0, seed=SEED, what="back-to-back")
    latency = CASE.component.LATENCY
    # Cycle 0 is the first offer: the first result is valid LATENCY cycles later, then one a cycle.
    assert monitor.cycles[0] == latency, (
        f"first result after {monitor.cycles[0]} cycles, documented latency {latency}")
    assert monitor.cycles[-1] + 1 == n + latency, \
        f"{n} operations took {monitor.cycles[-1] + 1} cycles, expected {n + latency}"


@cocotb.test()
async def free_running_bist(dut):
    """BIST_OPS hashed operands at full rate; Python only waits for done."""
    await reset(dut)
    collar_in = sum(width for _, width in CASE.fields)
    dut.bist_count.value = BIST_OPS
    dut.bist_seed.value = SEED
    dut.bist_start.value = 1
    await FallingEdge(dut.clk)
    dut.bist_start.value = 0
    start = time.perf_counter()
    await RisingEdge(dut.bist_done)
    seconds = time.perf_counter() - start
    cycles = int(dut.bist_cycles.value)

    operands = bist.reference_operands(collar_in, BIST_OPS, SEED)
    expected = CASE.expected(CASE.unpack(operands))
    out_width = len(dut.o__payload)
    want = bist.reference_signature(out_width, expected)
    got = int(dut.bist_signature.value)
    assert got == want, f"BIST signature {got:#010x}, golden model gives {want:#010x} over {BIST_OPS} operations"
    assert cycles <= BIST_OPS + CASE.component.LATENCY + 2, f"{BIST_OPS} operations took {cycles} cycles"
    dut._log.info(f"{BIST_OPS} operations in {cycles} cycles, {cycles / seconds:,.0f} cycles/s "
                  f"with Python awaiting only done")
    record("free_running", ops=BIST_OPS, cycles=cycles, seconds=seconds)
