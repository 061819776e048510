"""cocotb testbench of one PCU: every kernel in pcu_cases, RTL against the fast model.

Each case runs twice: with random idle input cycles and output back-pressure
(results must match the model bit for bit), and without stalls (the cycle
count must be within 10% of the model's estimate).
"""

import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge
from cocotb.utils import get_sim_time

from cosim.metrics import record
from cosim.streams import collect, drive, pack_vectors, unpack_scalars, unpack_vectors
from cosim.tb.pcu_cases import cases
from hw.tile import params as presets
from hw.tile.pcu import TailOp
from sw.model.pcu import PcuModel

PARAMS = getattr(presets, os.environ.get("OPENRDU_PARAMS", "SMALL"))
TAIL_OPS = tuple(TailOp[name.upper()] for name in os.environ["OPENRDU_PCU_TAIL"].split(","))
BUILT = tuple(op.name.lower() for op in TAIL_OPS)
SEED = int(os.environ.get("OPENRDU_SEED", "1"))
PERIOD_NS = 10



async def run_case(dut, case, *, stalls, seed):
    rng = np.random.default_rng(seed)
    inputs, _ = case.make(PARAMS, rng)
    model = PcuModel(PARAMS, case.config, tail_ops=TAIL_OPS)
    want = model.run(inputs.vi, inputs.si)

    dut.cfg.value = case.config.pack(PARAMS)
    for name in ("vi0", "vi1", "vi2", "si0", "si1"):
        getattr(dut, f"{name}__valid").value = 0
    dut.vo0__ready.value = 0
    dut.so0__ready.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await FallingEdge(dut.clk)

    idle, back = (0.25, 0.3) if stalls else (0.0, 0.0)
    wall = time.perf_counter()
    start = get_sim_time("ns")
    for k, (vec, last) in inputs.vi.items():
        cocotb.start_soon(drive(dut, f"vi{k}", pack_vectors(vec, last, PARAMS.lanes), idle=idle, seed=seed + k))
    for k, values in inputs.si.items():
        cocotb.start_soon(drive(dut, f"si{k}", [int(v) for v in values], idle=idle, seed=seed + 10 + k))
    sinks = []
    if len(want.vo):
        sinks.append(("vo", cocotb.start_soon(collect(dut, "vo0", len(want.vo), backpressure=back, seed=seed + 20))))
    if len(want.so):
        sinks.append(("so", cocotb.start_soon(collect(dut, "so0", len(want.so), backpressure=back, seed=seed + 21))))
    got = {name: await task for name, task in sinks}
    cycles = round((get_sim_time("ns") - start) / PERIOD_NS)
    wall = time.perf_counter() - wall

    if "vo" in got:
        data, last = unpack_vectors(got["vo"], PARAMS.lanes)
        bad = np.flatnonzero((data != want.vo).any(axis=1) | (last != want.vo_last))
        assert not len(bad), (f"{case.name}: {len(bad)} of {len(data)} vo0 vectors differ from the model; first "
                              f"{bad[0]}: got {[hex(v) for v in data[bad[0]]]} last={last[bad[0]]}, want "
                              f"{[hex(v) for v in want.vo[bad[0]]]} last={want.vo_last[bad[0]]}")
    if "so" in got:
        data, last = unpack_scalars(got["so"])
        bad = np.flatnonzero((data != want.so) | (last != want.so_last))
        assert not len(bad), (f"{case.name}: {len(bad)} of {len(data)} so0 scalars differ from the model; first "
                              f"{bad[0]}: got {data[bad[0]]:#x}, want {want.so[bad[0]]:#x}")
    firings = int(dut.firings.value)
    assert firings == want.firings, f"{case.name}: {firings} firings, model {want.firings}"
    if not stalls:
        record(case.name, rtl_cycles=cycles, model_cycles=want.cycles, busy_cycles=int(dut.busy_cycles.value),
               firings=firings, rtl_wall_s=wall)
    return cycles, want.cycles


def _register(case_name):
    async def with_stalls(dut):
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
        case = next(c for c in cases(PARAMS) if c.name == case_name)
        await run_case(dut, case, stalls=True, seed=SEED)
        rtl, model = await run_case(dut, case, stalls=False, seed=SEED + 100)
        ratio = model / rtl
        dut._log.info(f"{case_name}: RTL {rtl} cycles, model {model} ({ratio:.3f})")
        assert 0.9 <= ratio <= 1.1, f"{case_name}: model estimates {model} cycles, RTL took {rtl}"
    with_stalls.__name__ = with_stalls.__qualname__ = case_name
    return cocotb.test()(with_stalls)


for _case in cases(PARAMS):
    if _case.config.tail in BUILT + ("none",):
        globals()[_case.name] = _register(_case.name)
