"""cocotb testbench for one arithmetic unit inside its BIST collar.

The unit is chosen by ``OPENRDU_UNIT`` (a key of ``arith_cases.CASES``).
Sizes: ``OPENRDU_OPS`` random operations through the driver and monitor,
``OPENRDU_BIST_OPS`` free-running operations. ``OPENRDU_METRICS``, when set,
names a JSON file that receives cycle counts and wall-clock times.
"""

import os
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

from cosim import bist
from cosim.metrics import record
from cosim.streams import StreamTester
from cosim.tb.arith_cases import CASES

CASE = CASES[os.environ["OPENRDU_UNIT"]]
OPS = int(os.environ.get("OPENRDU_OPS", "100000"))
BIST_OPS = int(os.environ.get("OPENRDU_BIST_OPS", "200000"))
SEED = int(os.environ.get("OPENRDU_SEED", "1"))



async def reset(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    dut.bist_start.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await FallingEdge(dut.clk)


def scoreboard(columns, got, what):
    """Compare outputs with the golden model; fail naming the first mismatches."""
    expected = CASE.expected(columns)
    assert len(got) == len(expected), f"{what}: {len(got)} outputs for {len(expected)} operations"
    bad = [k for k, (e, g) in enumerate(zip(expected, got)) if e != g]
    if bad:
        lines = []
        for k in bad[:10]:
            operands = ", ".join(f"{name}={int(col[k]):#x}" for (name, _), col in zip(CASE.fields, columns))
            lines.append(f"  op {k}: {operands}: expected {expected[k]:#x}, got {got[k]:#x}")
        raise AssertionError(f"{what}: {len(bad)} of {len(got)} results differ from the golden model "
                             f"({CASE.component.__name__}):\n" + "\n".join(lines))


@cocotb.test()
async def directed_cases(dut):
    """Special values, ties, carries, cancellation, range edges; light stalls."""
    await reset(dut)
    columns = CASE.directed()
    got = await StreamTester(dut, idle=0.1, backpressure=0.1, seed=SEED).run(CASE.pack(columns))
    scoreboard(columns, got, "directed")


@cocotb.test()
async def random_with_stalls(dut):
    """OPS random operations with 20% idle input cycles and 20% output back-pressure."""
    import numpy as np

    await reset(dut)
    columns = CASE.stimulus(np.random.default_rng(SEED), OPS)
    tester = StreamTester(dut, idle=0.2, backpressure=0.2, seed=SEED + 1)
    start = time.perf_counter()
    got = await tester.run(CASE.pack(columns))
    seconds = time.perf_counter() - start
    scoreboard(columns, got, "random")
    dut._log.info(f"{OPS} operations in {tester.cycles} cycles, {tester.cycles / seconds:,.0f} cycles/s "
                  f"with Python driving every cycle")
    record("driven", ops=OPS, cycles=tester.cycles, seconds=seconds)


@cocotb.test()
async def latency_and_throughput(dut):
    """Without stalls, one result per cycle after exactly LATENCY cycles."""
    import numpy as np

    await reset(dut)
    n = 256
    columns = CASE.stimulus(np.random.default_rng(SEED + 2), n)
    tester = StreamTester(dut, seed=SEED)
    got = await tester.run(CASE.pack(columns))
    scoreboard(columns, got, "back-to-back")
    latency = CASE.component.LATENCY
    assert tester.first_output_cycle == latency + 1, (
        f"first result after {tester.first_output_cycle - 1} cycles, documented latency {latency}")
    assert tester.cycles == n + latency, f"{n} operations took {tester.cycles} cycles, expected {n + latency}"


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
