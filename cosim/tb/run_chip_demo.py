"""cocotb job behind ``openrdu demo``: one GEMV + bias + SiLU layer on the co-simulated chip.

Writes what happened to the JSON file named by ``OPENRDU_DEMO_REPORT``.
"""

import json
import os

import cocotb
import numpy as np

from sw.tile.kernels import gemv_bias_act
from cosim.tb.pcu_cases import floats
from cosim.tb.chip_launch import launch, start
from cosim.tb.units_chip import ARRAY, MEMORY, POST_OPS, TAIL_OPS
from sw.runtime.alloc import TierAllocator


@cocotb.test()
async def demo(dut):
    k, tiles = int(os.environ.get("OPENRDU_DEMO_K", "64")), int(os.environ.get("OPENRDU_DEMO_TILES", "8"))
    driver, _, stores = await start(dut)
    before = await driver.tier_stats("hbm")
    case = gemv_bias_act(ARRAY, TAIL_OPS, POST_OPS, np.random.default_rng(0), k=k, tiles=tiles)
    alloc = TierAllocator("hbm", MEMORY.hbm.capacity)
    outputs, model, cycles, load_cycles, _ = await launch(driver, stores, alloc, case)
    after = await driver.tier_stats("hbm")
    y = outputs["y"]
    report = {
        "kernel": case.name, "k": k, "outputs": int(y.size),
        "kernel_cycles_rtl": cycles, "kernel_cycles_model": model.chip_cycles,
        "program_words": len(case.program.words), "program_load_cycles": load_cycles,
        "hbm_words_read": after["reads"] - before["reads"], "hbm_words_written": after["writes"] - before["writes"],
        "bit_exact_vs_model": bool(np.array_equal(y, model.outputs["y"][0])),
        "max_rel_error_vs_float64": case.error({"y": (y, None)}),
        "sample": floats(y.reshape(-1)[:6]).tolist(),
    }
    with open(os.environ["OPENRDU_DEMO_REPORT"], "w") as out:
        json.dump(report, out)
