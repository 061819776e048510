"""cocotb testbench of the tile array: kernels built with the kernel API, loaded and run end to end.

For each kernel of sw/tile/kernels.py the array is reset, the
program's bitstream is sent on ``config`` (status OK, ``load_cycles`` equal
to the word count), and the host inputs are driven on their I/O ports. It
runs twice: with random idle input cycles and output back-pressure (every
output must equal ArrayModel's bit for bit), and without stalls (the same,
and the cycle count within 10% of the model's estimate). A bitstream with a
bad CRC must be refused and leave the array idle: every unit's record
is still all zero, which keeps it from firing.

``random_kernels_rtl`` runs the constrained-random kernels of
:mod:`sw.tile.random_kernels` for this array (seeds ``OPENRDU_RANDOM_SEEDS``,
``first:count``), each with stalls drawn from its seed: the model must equal
the independent reference and the RTL the model, bit for bit. A failure names
its seed and the command that runs it alone.
"""

import os
import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from cosim.components import Scoreboard, StreamDriver, StreamMonitor, pauses, reset as reset_with, run, start_clock
from cosim.metrics import record
from cosim.streams import pack_scalars, pack_vectors, unpack_scalars, unpack_vectors
from sw.tile import kernels as array_kernels
from cosim.tb import timing_cases
from cosim.tb.units_array import ARRAYS
from hw.tile.array import IO_SIDES, io_port_name
from hw.tile.config import Status
from hw.tile.switch import NETWORKS, UNIT_INPUTS, UNIT_OUTPUTS
from sw.model.array import ArrayModel
from sw.tile import random_kernels

P, TAIL_OPS, POST_OPS = ARRAYS[os.environ["OPENRDU_ARRAY"]]
SEED = int(os.environ.get("OPENRDU_SEED", "1"))
RANDOM_SEEDS = os.environ.get("OPENRDU_RANDOM_SEEDS", "0:6")


def pack(data, last, network):
    return pack_vectors(data, last, P.lanes) if network == "vector" else pack_scalars(data, last)


def show(network):
    def text(payload):
        data, last = unpack_vectors([payload], P.lanes) if network == "vector" else unpack_scalars([payload])
        return f"{[hex(v) for v in np.ravel(data[0])]} last={last[0]}"
    return text


def output_ports():
    """(port name, network) of every I/O port the array drives: each one a monitor watches."""
    return [(io_port_name(side, c, UNIT_INPUTS[net][0]), net) for side in IO_SIDES for c in range(P.cols)
            for net in NETWORKS]


def counters(dut, name):
    value = int(getattr(dut, name).value)
    return [(value >> (32 * k)) & 0xFFFF_FFFF for k in range(P.rows * P.cols)]


async def reset(dut):
    await reset_with(dut, zero=["config__valid"] + [f"{io_port_name(side, c, UNIT_OUTPUTS[net][0])}__valid"
                                                    for side in IO_SIDES for c in range(P.cols) for net in NETWORKS]
                     + [f"{name}__ready" for name, _ in output_ports()])


async def load(dut, words):
    """Send a bitstream without idle cycles; return (status, load_cycles) once the loader is idle."""
    await run(dut, [StreamDriver(dut, "config", words)], settle=0)
    await ReadOnly()
    while int(dut.config_busy.value):
        await FallingEdge(dut.clk)
        await ReadOnly()
    await FallingEdge(dut.clk)
    return Status(int(dut.config_status.value)), int(dut.config_load_cycles.value)


class HoldCountingMonitor(StreamMonitor):
    """A monitor that also counts the cycles an output was offered and held back by back-pressure."""

    held_cycles = 0

    def sample(self, cycle):
        if self.valid.value and not self.take:
            self.held_cycles += 1
        return super().sample(cycle)


async def run_kernel(dut, case, *, stalls, seed, idle=None, back=None, monitors_out=None):
    """Load and run one case; returns (RTL cycles, model cycles).

    ``idle`` and ``back`` override the stall probabilities ``stalls`` selects; ``monitors_out``, a list,
    receives the output monitors.
    """
    prog = case.program
    want = ArrayModel(prog).run(case.inputs)
    await reset(dut)
    status, cycles = await load(dut, prog.words)
    assert status == Status.OK, f"{case.name}: loader status {status.name} after a good bitstream"
    assert cycles == len(prog.words), f"{case.name}: load took {cycles} cycles for {len(prog.words)} words"

    if idle is None:
        idle, back = (0.3, 0.3) if stalls else (0.0, 0.0)
    wall = time.perf_counter()
    drivers = []
    for k, (name, host) in enumerate(prog.host_inputs.items()):
        value = case.inputs[name]
        data, last = value if isinstance(value, tuple) else (value, np.zeros(np.size(value), bool))
        drivers.append(StreamDriver(dut, host.top, pack(data, last, host.network), pauses=pauses(idle, (seed, k))))
    # Every output port is watched: one no host output uses must stay silent.
    outputs = {host.top: name for name, host in prog.host_outputs.items()}
    monitors = []
    for k, (port, network) in enumerate(output_ports()):
        name = outputs.get(port)
        expected = pack(*want.outputs[name], network) if name else []
        board = Scoreboard(expected, name=f"{case.name} output {name!r} ({port})" if name else f"{case.name} {port}",
                           last_bit=32 * P.lanes if network == "vector" else 32, show=show(network))
        monitors.append(HoldCountingMonitor(dut, port, board, pauses=pauses(back, (seed, 50 + k))))
    if monitors_out is not None:
        monitors_out.extend(monitors)
    # Watched after the last output for longer than a chain of unit pipelines: a late extra word fails too.
    await run(dut, drivers + monitors, settle=256, stall_limit=2000)
    wall = time.perf_counter() - wall
    # From the falling edge before cycle 0 to the one after the last output's cycle, as measured before
    # the monitors watched past the last output.
    rtl = max(m.cycles[-1] for m in monitors if m.cycles) + 2

    busy = counters(dut, "busy_cycles")
    used = {u.pos[0] * P.cols + u.pos[1] for u in prog.units.values()}
    for index, cycles in enumerate(busy):
        assert (cycles > 0) == (index in used), \
            f"{case.name}: unit {index} busy for {cycles} cycles; used units: {sorted(used)}"
    if not stalls:
        pcus = [u.pos[0] * P.cols + u.pos[1] for u in prog.units.values() if P.is_pcu(*u.pos)]
        record(case.name, rtl_cycles=rtl, model_cycles=want.cycles, rtl_wall_s=wall,
               pcu_busy=[busy[k] for k in pcus])
    return rtl, want.cycles


def _register(name):
    async def kernel(dut):
        start_clock(dut)
        case = array_kernels.KERNELS[name](P, TAIL_OPS, POST_OPS, np.random.default_rng(SEED))
        dut._log.info("\n" + case.program.summary())
        await run_kernel(dut, case, stalls=True, seed=SEED)
        rtl, model = await run_kernel(dut, case, stalls=False, seed=SEED + 100)
        ratio = model / rtl
        dut._log.info(f"{case.name}: RTL {rtl} cycles, model {model} ({ratio:.3f})")
        assert 0.9 <= ratio <= 1.1, f"{case.name}: model estimates {model} cycles, RTL took {rtl}"
    kernel.__name__ = kernel.__qualname__ = name
    return cocotb.test()(kernel)


for _name in array_kernels.kernels_for(P, TAIL_OPS, POST_OPS):
    globals()[_name] = _register(_name)


@cocotb.test(skip=os.environ["OPENRDU_ARRAY"] not in random_kernels.PARAMS)
async def random_kernels_rtl(dut):
    """Constrained-random kernels: model = reference, RTL = model, under stalls drawn from each seed."""
    start_clock(dut)
    first, count = (int(v) for v in RANDOM_SEEDS.split(":"))
    unit = "array" if os.environ["OPENRDU_ARRAY"] == "small" else f"array-{os.environ['OPENRDU_ARRAY']}"
    coverage = random_kernels.Coverage()
    ratios, wall = [], time.perf_counter()
    for seed in range(first, first + count):
        kernel = random_kernels.array_kernel(seed, os.environ["OPENRDU_ARRAY"], TAIL_OPS, POST_OPS)
        repro = (f"seed {seed}: rerun with OPENRDU_RANDOM_SEEDS={seed}:1 python -m cosim run {unit} --testcase "
                 f"random_kernels_rtl")
        problems = random_kernels.check_array(kernel)
        assert not problems, f"{repro}\nmodel against reference: " + "; ".join(problems)
        idle, back = np.random.default_rng([seed, 3]).choice([0.0, 0.2, 0.5], 2)
        monitors = []
        try:
            rtl, model = await run_kernel(dut, kernel, stalls=True, seed=seed, idle=idle, back=back,
                                          monitors_out=monitors)
        except AssertionError as e:
            raise AssertionError(f"{repro}\n{kernel.program.summary()}\n{e}") from None
        coverage.array_kernel(kernel)
        if coverage.stalls(idle, back, monitors):
            ratios.append(model / rtl)
            # The model's cycle estimate holds for random kernels as for the library's (within 10%).
            assert 0.9 <= ratios[-1] <= 1.1, f"{repro}\nmodel/RTL cycles {ratios[-1]:.3f}"
    _, _, hits = coverage.report()
    dut._log.info(f"{count} random kernels from seed {first}: RTL equals the model; model/RTL cycles "
                  f"{min(ratios, default=1):.3f} to {max(ratios, default=1):.3f} without stalls")
    record("random_kernels", kernels=count, first_seed=first, coverage=hits, cycle_ratios=ratios,
           wall_s=time.perf_counter() - wall)


@cocotb.test(skip=os.environ["OPENRDU_ARRAY"] != "small")
async def timing_table(dut):
    """The kernels of ``cosim/tb/timing_cases.py`` take exactly the cycles listed there without stalls, which
    the model tests hold ``ArrayModel`` to."""
    start_clock(dut)
    for name, (build, cycles) in timing_cases.ARRAY.items():
        rtl, _ = await run_kernel(dut, build(), stalls=False, seed=SEED)
        dut._log.info(f"{name}: RTL {rtl} cycles")
        assert rtl == cycles, f"{name}: RTL took {rtl} cycles, the table lists {cycles}"


@cocotb.test()
async def bad_bitstream(dut):
    """A bitstream with a corrupted CRC is refused; with every record still zero, the array stays idle
    and the I/O switch stops taking offered words once its FIFO is full."""
    start_clock(dut)
    name = array_kernels.kernels_for(P, TAIL_OPS, POST_OPS)[0]
    case = array_kernels.KERNELS[name](P, TAIL_OPS, POST_OPS, np.random.default_rng(SEED))
    words = list(case.program.words)
    words[-1] ^= 1
    await reset(dut)
    status, cycles = await load(dut, words)
    assert status == Status.BAD_CHECKSUM, f"status {status.name} after a bad CRC"
    assert cycles == len(words), f"refusal after {cycles} cycles, the CRC is word {len(words) - 1}"
    assert int(dut.config_loads_refused.value) == 1 and int(dut.config_loads_ok.value) == 0
    host = next(iter(case.program.host_inputs.values()))
    getattr(dut, f"{host.top}__valid").value = 1
    await ClockCycles(dut.clk, 20)
    await ReadOnly()
    assert not int(getattr(dut, f"{host.top}__ready").value), "an unconfigured switch kept taking words"
    await FallingEdge(dut.clk)
    assert not any(counters(dut, "busy_cycles")), "a unit ran without a configuration"
    getattr(dut, f"{host.top}__valid").value = 0
