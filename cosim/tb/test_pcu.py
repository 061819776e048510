"""cocotb testbench of one PCU: every kernel in pcu_cases, RTL against the fast model.

Each case runs twice: with random idle input cycles and output back-pressure
(results must match the model bit for bit), and without stalls (the cycle
count must be within 10% of the model's estimate).
"""

import os
import time

import cocotb
import numpy as np

from cosim.components import Scoreboard, StreamDriver, StreamMonitor, pauses, reset, run, start_clock
from cosim.metrics import record
from cosim.streams import pack_scalars, pack_vectors, unpack_scalars, unpack_vectors
from cosim.tb.pcu_cases import cases
from hw.tile import params as presets
from hw.tile.pcu import TailOp
from sw.model.pcu import PcuModel

PARAMS = getattr(presets, os.environ.get("OPENRDU_PARAMS", "SMALL"))
TAIL_OPS = tuple(TailOp[name.upper()] for name in os.environ["OPENRDU_PCU_TAIL"].split(","))
BUILT = tuple(op.name.lower() for op in TAIL_OPS)
SEED = int(os.environ.get("OPENRDU_SEED", "1"))


def show_vector(payload):
    data, last = unpack_vectors([payload], PARAMS.lanes)
    return f"{[hex(v) for v in data[0]]} last={last[0]}"


def show_scalar(payload):
    data, last = unpack_scalars([payload])
    return f"{data[0]:#x} last={last[0]}"


async def run_case(dut, case, *, stalls, seed):
    rng = np.random.default_rng(seed)
    inputs, _ = case.make(PARAMS, rng)
    model = PcuModel(PARAMS, case.config, tail_ops=TAIL_OPS)
    want = model.run(inputs.vi, inputs.si)

    dut.cfg.value = case.config.pack(PARAMS)
    await reset(dut, zero=("vi0__valid", "vi1__valid", "vi2__valid", "si0__valid", "si1__valid", "vo0__ready",
                           "so0__ready"))

    idle, back = (0.25, 0.3) if stalls else (0.0, 0.0)
    wall = time.perf_counter()
    drivers = [StreamDriver(dut, f"vi{k}", pack_vectors(vec, last, PARAMS.lanes), pauses=pauses(idle, (seed, k)))
               for k, (vec, last) in inputs.vi.items()]
    drivers += [StreamDriver(dut, f"si{k}", [int(v) for v in values], pauses=pauses(idle, (seed, 10 + k)))
                for k, values in inputs.si.items()]
    # Both outputs are watched, also one the kernel does not use: any output beyond the model's fails.
    vo = Scoreboard(pack_vectors(want.vo, want.vo_last, PARAMS.lanes), name=f"{case.name} vo0",
                    last_bit=32 * PARAMS.lanes, show=show_vector)
    so = Scoreboard(pack_scalars(want.so, want.so_last), name=f"{case.name} so0", last_bit=32, show=show_scalar)
    monitors = [StreamMonitor(dut, "vo0", vo, pauses=pauses(back, (seed, 20))),
                StreamMonitor(dut, "so0", so, pauses=pauses(back, (seed, 21)))]
    # Watched for a whole pipeline's depth after the last output: a late extra result fails too.
    await run(dut, drivers + monitors, settle=model.latency + model.post_latency + 16)
    wall = time.perf_counter() - wall
    # From the falling edge before cycle 0 to the one after the last output's cycle, as measured before
    # the monitors watched past the last output.
    cycles = max(m.cycles[-1] for m in monitors if m.cycles) + 2

    firings = int(dut.firings.value)
    assert firings == want.firings, f"{case.name}: {firings} firings, model {want.firings}"
    if not stalls:
        record(case.name, rtl_cycles=cycles, model_cycles=want.cycles, busy_cycles=int(dut.busy_cycles.value),
               firings=firings, rtl_wall_s=wall)
    return cycles, want.cycles


def _register(case_name):
    async def with_stalls(dut):
        start_clock(dut)
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
