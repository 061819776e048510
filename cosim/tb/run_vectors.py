"""cocotb test that streams payloads from a file through a unit and saves the results.

``OPENRDU_VECTORS`` names a JSON file ``{"payloads": [int, ...]}``; the
results go to the same file with ``"outputs"`` and ``"cycles"`` added. Lets
host code run data through any one-in, one-out stream unit without writing a
testbench.
"""

import json
import os

import cocotb

from cosim.components import Scoreboard, StreamDriver, StreamMonitor, run, start_clock_and_reset


@cocotb.test()
async def run_vectors(dut):
    path = os.environ["OPENRDU_VECTORS"]
    job = json.loads(open(path).read())
    await start_clock_and_reset(dut)
    # One result per payload, of any value; one more fails.
    monitor = StreamMonitor(dut, "o", Scoreboard([None] * len(job["payloads"]), name="o"))
    await run(dut, [StreamDriver(dut, "i", job["payloads"]), monitor])
    job["outputs"] = monitor.items
    job["cycles"] = monitor.cycles[-1] + 1 if monitor.cycles else 0
    with open(path, "w") as f:
        json.dump(job, f)
