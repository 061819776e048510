"""cocotb testbench of one PCU: every kernel in pcu_cases, RTL against the fast model.

Each case runs twice: with random idle input cycles and output back-pressure
(results must match the model bit for bit), and without stalls (the cycle
count must be within 10% of the model's estimate).

``random_kernels`` runs the constrained-random kernels of
:mod:`sw.tile.random_kernels` (seeds ``OPENRDU_RANDOM_SEEDS``, ``first:count``),
each with stalls drawn from its seed: the model must equal the independent
reference and the RTL the model, bit for bit. A failure names its seed and
the command that runs it alone.
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
from sw.tile import random_kernels

PARAMS = getattr(presets, os.environ.get("OPENRDU_PARAMS", "SMALL"))
TAIL_OPS = tuple(TailOp[name.upper()] for name in os.environ["OPENRDU_PCU_TAIL"].split(","))
BUILT = tuple(op.name.lower() for op in TAIL_OPS)
SEED = int(os.environ.get("OPENRDU_SEED", "1"))
RANDOM_SEEDS = os.environ.get("OPENRDU_RANDOM_SEEDS", "0:16")


def show_vector(payload):
    data, last = unpack_vectors([payload], PARAMS.lanes)
    return f"{[hex(v) for v in data[0]]} last={last[0]}"


def show_scalar(payload):
    data, last = unpack_scalars([payload])
    return f"{data[0]:#x} last={last[0]}"


class HoldCountingMonitor(StreamMonitor):
    """A monitor that also counts the cycles an output was offered and held back by back-pressure."""

    held_cycles = 0

    def sample(self, cycle):
        if self.valid.value and not self.take:
            self.held_cycles += 1
        return super().sample(cycle)


async def run_config(dut, name, config, vi, si, *, idle, back, seed):
    """Run one configuration on ``vi``/``si`` with the given stall probabilities, every output checked
    against the model as it arrives; returns (RTL cycles, model result, monitors)."""
    model = PcuModel(PARAMS, config, tail_ops=TAIL_OPS)
    want = model.run(vi, si)

    dut.cfg.value = config.pack(PARAMS)
    await reset(dut, zero=("vi0__valid", "vi1__valid", "vi2__valid", "si0__valid", "si1__valid", "vo0__ready",
                           "so0__ready"))

    drivers = [StreamDriver(dut, f"vi{k}", pack_vectors(vec, last, PARAMS.lanes), pauses=pauses(idle, (seed, k)))
               for k, (vec, last) in vi.items()]
    drivers += [StreamDriver(dut, f"si{k}", [int(v) for v in values], pauses=pauses(idle, (seed, 10 + k)))
                for k, values in si.items()]
    # Both outputs are watched, also one the kernel does not use: any output beyond the model's fails.
    vo = Scoreboard(pack_vectors(want.vo, want.vo_last, PARAMS.lanes), name=f"{name} vo0",
                    last_bit=32 * PARAMS.lanes, show=show_vector)
    so = Scoreboard(pack_scalars(want.so, want.so_last), name=f"{name} so0", last_bit=32, show=show_scalar)
    monitors = [HoldCountingMonitor(dut, "vo0", vo, pauses=pauses(back, (seed, 20))),
                HoldCountingMonitor(dut, "so0", so, pauses=pauses(back, (seed, 21)))]
    # Watched for a whole pipeline's depth after the last output: a late extra result fails too.
    await run(dut, drivers + monitors, settle=model.latency + model.post_latency + 16)
    # From the falling edge before cycle 0 to the one after the last output's cycle, as measured before
    # the monitors watched past the last output.
    cycles = max(m.cycles[-1] for m in monitors if m.cycles) + 2

    firings = int(dut.firings.value)
    assert firings == want.firings, f"{name}: {firings} firings, model {want.firings}"
    return cycles, want, monitors


async def run_case(dut, case, *, stalls, seed):
    rng = np.random.default_rng(seed)
    inputs, _ = case.make(PARAMS, rng)
    idle, back = (0.25, 0.3) if stalls else (0.0, 0.0)
    wall = time.perf_counter()
    cycles, want, _ = await run_config(dut, case.name, case.config, inputs.vi, inputs.si, idle=idle, back=back,
                                       seed=seed)
    wall = time.perf_counter() - wall
    if not stalls:
        record(case.name, rtl_cycles=cycles, model_cycles=want.cycles, busy_cycles=int(dut.busy_cycles.value),
               firings=want.firings, rtl_wall_s=wall)
    return cycles, want.cycles


@cocotb.test()
async def random_kernels_rtl(dut):
    """Constrained-random kernels: model = reference, RTL = model, under stalls drawn from each seed."""
    start_clock(dut)
    first, count = (int(v) for v in RANDOM_SEEDS.split(":"))
    coverage = random_kernels.Coverage()
    ratios, wall = [], time.perf_counter()
    for seed in range(first, first + count):
        kernel = random_kernels.pcu_kernel(seed, PARAMS)
        repro = (f"seed {seed}: rerun with OPENRDU_RANDOM_SEEDS={seed}:1 python -m cosim run pcu --testcase "
                 f"random_kernels_rtl (model alone: python -m sw.tile.random_kernels pcu {seed})")
        problems = random_kernels.check_pcu(kernel)
        assert not problems, f"{repro}\nmodel against reference: " + "; ".join(problems)
        idle, back = np.random.default_rng([seed, 3]).choice([0.0, 0.2, 0.5], 2)
        try:
            cycles, want, monitors = await run_config(dut, kernel.name, kernel.config, kernel.vi, kernel.si,
                                                      idle=idle, back=back, seed=seed)
        except AssertionError as e:
            raise AssertionError(f"{repro}\n{kernel.config}\n{e}") from None
        coverage.pcu_kernel(kernel)
        if coverage.stalls(idle, back, monitors):
            ratios.append(want.cycles / cycles)
            # The model's cycle estimate holds for random kernels as for the library's (within 10%).
            assert 0.9 <= ratios[-1] <= 1.1, f"{repro}\nmodel/RTL cycles {ratios[-1]:.3f}"
    _, _, hits = coverage.report()
    dut._log.info(f"{count} random kernels from seed {first}: RTL equals the model; model/RTL cycles "
                  f"{min(ratios, default=1):.3f} to {max(ratios, default=1):.3f} without stalls")
    record("random_kernels", kernels=count, first_seed=first, coverage=hits, cycle_ratios=ratios,
           wall_s=time.perf_counter() - wall)


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
