"""cocotb testbench of the tile array: kernels built with the kernel API, loaded and run end to end.

For each kernel of cosim/tb/array_kernels.py the array is reset, the
program's bitstream is sent on ``config`` (status OK, ``load_cycles`` equal
to the word count), and the host inputs are driven on their I/O ports. It
runs twice: with random idle input cycles and output back-pressure (every
output must equal ArrayModel's bit for bit), and without stalls (the same,
and the cycle count within 10% of the model's estimate). A bitstream with a
bad CRC must be refused and leave the array idle: every unit's record
is still all zero, which keeps it from firing.
"""

import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly
from cocotb.utils import get_sim_time

from cosim.metrics import record
from cosim.streams import collect, drive, pack_scalars, pack_vectors, unpack_scalars, unpack_vectors
from cosim.tb import array_kernels
from cosim.tb.units_array import ARRAYS
from hw.tile.array import IO_SIDES, io_port_name
from hw.tile.config import Status
from hw.tile.switch import NETWORKS, UNIT_INPUTS, UNIT_OUTPUTS
from sw.model.array import ArrayModel

P, TAIL_OPS, POST_OPS = ARRAYS[os.environ["OPENRDU_ARRAY"]]
SEED = int(os.environ.get("OPENRDU_SEED", "1"))
PERIOD_NS = 10


def unpack(payloads, network):
    return unpack_vectors(payloads, P.lanes) if network == "vector" else unpack_scalars(payloads)


def counters(dut, name):
    value = int(getattr(dut, name).value)
    return [(value >> (32 * k)) & 0xFFFF_FFFF for k in range(P.rows * P.cols)]


async def reset(dut):
    dut.rst.value = 1
    dut.config__valid.value = 0
    for side in IO_SIDES:
        for c in range(P.cols):
            for net in NETWORKS:
                getattr(dut, f"{io_port_name(side, c, UNIT_OUTPUTS[net][0])}__valid").value = 0
                getattr(dut, f"{io_port_name(side, c, UNIT_INPUTS[net][0])}__ready").value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await FallingEdge(dut.clk)


async def load(dut, words):
    """Send a bitstream without idle cycles; return (status, load_cycles) once the loader is idle."""
    await drive(dut, "config", words)
    await ReadOnly()
    while int(dut.config_busy.value):
        await FallingEdge(dut.clk)
        await ReadOnly()
    await FallingEdge(dut.clk)
    return Status(int(dut.config_status.value)), int(dut.config_load_cycles.value)


async def run_kernel(dut, case, *, stalls, seed):
    """Load and run one case; returns (RTL cycles, model cycles)."""
    prog = case.program
    want = ArrayModel(prog).run(case.inputs)
    await reset(dut)
    status, cycles = await load(dut, prog.words)
    assert status == Status.OK, f"{case.name}: loader status {status.name} after a good bitstream"
    assert cycles == len(prog.words), f"{case.name}: load took {cycles} cycles for {len(prog.words)} words"

    idle, back = (0.3, 0.3) if stalls else (0.0, 0.0)
    wall = time.perf_counter()
    start = get_sim_time("ns")
    for k, (name, host) in enumerate(prog.host_inputs.items()):
        value = case.inputs[name]
        data, last = value if isinstance(value, tuple) else (value, np.zeros(np.size(value), bool))
        payloads = pack_vectors(data, last, P.lanes) if host.network == "vector" else pack_scalars(data, last)
        cocotb.start_soon(drive(dut, host.top, payloads, idle=idle, seed=seed + k))
    tasks = {name: cocotb.start_soon(collect(dut, host.top, len(want.outputs[name][1]), backpressure=back,
                                             seed=seed + 50 + k, cycle_limit=20_000))
             for k, (name, host) in enumerate(prog.host_outputs.items())}
    got = {name: await task for name, task in tasks.items()}
    rtl = round((get_sim_time("ns") - start) / PERIOD_NS)
    wall = time.perf_counter() - wall

    for name, payloads in got.items():
        data, last = unpack(payloads, prog.host_outputs[name].network)
        w_data, w_last = want.outputs[name]
        w_data = w_data.reshape(data.shape)
        bad = np.flatnonzero((data != w_data).reshape(len(last), -1).any(axis=1) | (last != w_last))
        assert not len(bad), (f"{case.name}: {len(bad)} of {len(last)} words of output {name!r} differ from "
                              f"the model; first {bad[0]}: got {[hex(v) for v in np.ravel(data[bad[0]])]} "
                              f"last={last[bad[0]]}, want {[hex(v) for v in np.ravel(w_data[bad[0]])]} "
                              f"last={w_last[bad[0]]}")
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
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
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


@cocotb.test()
async def bad_bitstream(dut):
    """A bitstream with a corrupted CRC is refused; with every record still zero, the array stays idle
    and the I/O switch stops taking offered words once its FIFO is full."""
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
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
