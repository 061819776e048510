"""cocotb test that streams payloads from a file through a unit and saves the results.

``OPENRDU_VECTORS`` names a JSON file ``{"payloads": [int, ...]}``; the
results go to the same file with ``"outputs"`` and ``"cycles"`` added. Lets
host code run data through any one-in, one-out stream unit without writing a
testbench.
"""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from cosim.streams import StreamTester


@cocotb.test()
async def run_vectors(dut):
    path = os.environ["OPENRDU_VECTORS"]
    job = json.loads(open(path).read())
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await FallingEdge(dut.clk)
    tester = StreamTester(dut)
    job["outputs"] = await tester.run(job["payloads"])
    job["cycles"] = tester.cycles
    with open(path, "w") as f:
        json.dump(job, f)
