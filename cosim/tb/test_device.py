"""Conformance of the device interface's two backends, in the ``chip`` unit's simulation.

One sequence of :class:`sw.runtime.device.Device` calls (write inputs, place
a program, load it, execute, read outputs back, copy, read the tiers'
counters) runs on :class:`cosim.device.CocotbDevice` (the Verilator chip) and
on :class:`sw.runtime.device.ModelDevice` (the fast model, in this same
process), using nothing outside the interface. Outputs must be bit-identical, kernel and copy
cycles within 10%, and both must refuse the same mistakes with
:class:`~sw.runtime.chip.ChipError`: the runtime's decode loop runs on
either unchanged.
"""

import os

import cocotb
import numpy as np

from cosim.device import CocotbDevice
from sw.tile.kernel import Kernel
from sw.tile.kernels import gemv_bias_act, softmax
from sw.tile.pcu import PcuConfig, Stage
from hw.mem.params import DDR, HBM
from sw.model.array import ArrayModel
from sw.runtime.alloc import TierAllocator
from sw.runtime.chip import ChipError, Pattern, stream_pattern
from sw.runtime.device import Device, ModelDevice
from sw.target import CHIP

SEED = int(os.environ.get("OPENRDU_SEED", "1"))
WB = CHIP.memory.word_bytes
TOLERANCE = 0.10


def padded(words):
    """A program's words followed by zeros to whole TLN words, as the runtime writes them."""
    words = np.asarray(words, dtype=np.uint32)
    return np.concatenate([words, np.zeros(-words.size % (WB // 4), np.uint32)])


async def run_case(device, case, *, input_at=None):
    """Place ``case`` in HBM, run it on ``device`` and read its outputs back: (outputs, kernel cycles, load cycles).

    Addresses come from a fresh allocator, so both backends use the same
    ones. ``input_at`` maps an input name to a byte address to stream it
    from instead (to leave the tier).
    """
    input_at = input_at or {}
    alloc = TierAllocator("hbm", CHIP.memory.hbm.capacity)
    program = case.program
    words = padded(program.words)
    program_at = alloc.allocate(words.nbytes, "program").offset
    await device.write(HBM, program_at, words)
    load_cycles = await device.load_program(program, HBM, program_at)
    reads = {}
    for name, (data, last) in case.inputs.items():
        port = program.host_inputs[name]
        at = input_at.get(name)
        if at is None:
            raw = np.ascontiguousarray(data, dtype=np.uint32).reshape(-1)
            at = alloc.allocate(max(raw.nbytes, WB), name).offset
            await device.write(HBM, at, raw)
        reads[CHIP.agcus.index((port.side, port.col))] = stream_pattern(HBM, at, last, lanes=CHIP.array.lanes,
                                                                        word_bytes=WB)
    # Output sizes from the array model alone: the device under test does not see it.
    shapes = {name: out[0].shape for name, out in ArrayModel(program).run(case.inputs).outputs.items()}
    writes, out_at = {}, {}
    for name, port in program.host_outputs.items():
        nbytes = 4 * int(np.prod(shapes[name]))
        out_at[name] = alloc.allocate(nbytes, f"{name}.out").offset
        writes[CHIP.agcus.index((port.side, port.col))] = Pattern.linear(HBM, out_at[name], nbytes // WB)
    cycles = await device.execute(reads, writes)
    outputs = {name: (await device.read(HBM, at, int(np.prod(shapes[name])))).reshape(shapes[name])
               for name, at in out_at.items()}
    return outputs, cycles, load_cycles


def within(model, rtl):
    return abs(model / rtl - 1) <= TOLERANCE


@cocotb.test()
async def device_backends_agree(dut):
    """GEMV + bias + SiLU and softmax, and a DDR -> HBM copy: bit-identical results, cycles within 10%."""
    rtl, model = CocotbDevice(dut, CHIP), ModelDevice(CHIP)
    assert isinstance(rtl, Device) and isinstance(model, Device)
    assert (rtl.backend, model.backend) == ("rtl", "model")
    for build in (gemv_bias_act, softmax):
        # One generator per backend from the same seed: the same case twice.
        cases = [build(CHIP.array, CHIP.tail_ops, CHIP.post_ops, np.random.default_rng(SEED)) for _ in range(2)]
        got_rtl, cycles_rtl, load_rtl = await run_case(rtl, cases[0])
        got_model, cycles_model, load_model = await run_case(model, cases[1])
        name = cases[0].name
        for out, got in got_rtl.items():
            want = got_model[out]
            assert got.dtype == want.dtype == np.uint32 and got.shape == want.shape, f"{name}: {out} shape"
            assert np.array_equal(got, want), f"{name}: {out} differs between the backends at " \
                                              f"{np.argwhere(got != want)[:4].tolist()}"
        assert cases[0].error({k: (v, None) for k, v in got_rtl.items()}) <= cases[0].tolerance, name
        assert load_rtl == load_model == len(cases[0].program.words), f"{name}: loads {load_rtl}, {load_model}"
        assert within(cycles_model, cycles_rtl), f"{name}: model {cycles_model} cycles, RTL {cycles_rtl}"
        dut._log.info(f"{name}: {cycles_rtl} cycles on the RTL, {cycles_model} on the model")

    length = 4096
    data = np.random.default_rng(SEED).integers(0, 1 << 32, length // 4, dtype=np.uint32)
    copies = {}
    for device in (rtl, model):
        await device.write(DDR, 0x20000, data)
        copies[device.backend] = await device.copy(DDR, 0x20000, HBM, 0x100000, length)
        assert np.array_equal(await device.read(HBM, 0x100000, data.size), data), f"{device.backend}: copy"
    assert within(copies["model"], copies["rtl"]), f"copy: model {copies['model']} cycles, RTL {copies['rtl']}"
    for device in (rtl, model):
        stats = await device.tier_stats()
        assert set(stats) == {"hbm", "ddr"} and stats["ddr"]["reads"] >= length // WB, f"{device.backend}: {stats}"
    dut._log.info(f"copy of {length} bytes: {copies['rtl']} cycles on the RTL, {copies['model']:.0f} on the model")


@cocotb.test()
async def copy_runs_beside_kernels(dut):
    """A started copy runs while two kernels do (the copy engine beside the AGCUs on the TLN): the data and the
    kernels' outputs are exact, and wait_copy reports that the kernels covered part of the copy, on the RTL at
    least as much as the fast model credits (its register accesses run on the chip's clock too)."""
    rtl, model = CocotbDevice(dut, CHIP), ModelDevice(CHIP)
    length = 2048
    data = np.random.default_rng(SEED + 1).integers(0, 1 << 32, length // 4, dtype=np.uint32)
    waits, outs = {}, {}
    for device in (rtl, model):
        await device.write(DDR, 0x30000, data)
        await device.start_copy(DDR, 0x30000, HBM, 0x200000, length)
        await expect_chip_error(device.start_copy(DDR, 0x30000, HBM, 0x300000, length),
                                f"{device.backend}: a second copy while one runs")
        outs[device.backend] = []
        for build in (gemv_bias_act, softmax):
            case = build(CHIP.array, CHIP.tail_ops, CHIP.post_ops, np.random.default_rng(SEED))
            got, _, _ = await run_case(device, case)
            outs[device.backend].append(got)
        waits[device.backend] = await device.wait_copy()
        assert np.array_equal(await device.read(HBM, 0x200000, data.size), data), f"{device.backend}: copy"
        await expect_chip_error(device.wait_copy(), f"{device.backend}: wait_copy with no copy")
    for got_rtl, got_model in zip(outs["rtl"], outs["model"]):
        for name, got in got_rtl.items():
            assert np.array_equal(got, got_model[name]), f"{name} differs beside a copy"
    r, m = waits["rtl"], waits["model"]
    assert within(m["cycles"], r["cycles"]), f"copy: model {m['cycles']} cycles, RTL {r['cycles']}"
    assert 0 <= m["waited"] < m["cycles"] and 0 <= r["waited"] < r["cycles"], (r, m)
    assert r["waited"] <= m["waited"] + TOLERANCE * r["cycles"], (r, m)
    dut._log.info(f"copy of {length} bytes beside two kernels: RTL {r['cycles']} cycles, {r['waited']} waited; "
                  f"model {m['cycles']:.0f}, {m['waited']:.0f} waited")


@cocotb.test()
async def device_backends_refuse_alike(dut):
    """Host access outside a tier, a program not where it is said to be, and a pattern past HBM's end: ChipError."""
    rtl, model = CocotbDevice(dut, CHIP), ModelDevice(CHIP)
    capacity = CHIP.memory.hbm.capacity
    for device in (rtl, model):
        await expect_chip_error(device.write(HBM, capacity - 4, np.zeros(2, np.uint32)),
                                f"{device.backend}: a host write past HBM's end")
        await expect_chip_error(device.read(HBM, capacity - 4, 2), f"{device.backend}: a host read past HBM's end")

    case = [gemv_bias_act(CHIP.array, CHIP.tail_ops, CHIP.post_ops, np.random.default_rng(SEED)) for _ in range(2)]
    for device, c in zip((rtl, model), case):
        await device.write(HBM, 0, padded(c.program.words) ^ 1)
        await expect_chip_error(device.load_program(c.program, HBM, 0), f"{device.backend}: a wrong bitstream")
        # x's last two words lie past the end of HBM: the kernel completes, then the AGCU's error is reported.
        error = await expect_chip_error(run_case(device, c, input_at={"x": capacity - 2 * WB}),
                                        f"{device.backend}: a read pattern past HBM's end")
        port = c.program.host_inputs["x"]
        k = CHIP.agcus.index((port.side, port.col))
        assert f"AGCU {k}" in error and "word 2" in error, f"{device.backend}: {error}"


def readback_program():
    """y = a + a through a PCU, z = r through the fabric: gate r on y's write and z reads back 2a.

    Returns the program and each host port's AGCU index by name.
    """
    kern = Kernel(CHIP.array, tail_ops=CHIP.tail_ops, post_ops=CHIP.post_ops)
    a, y, r, z = (kern.host_input("a", col=0), kern.host_output("y", col=0), kern.host_input("r", col=1),
                  kern.host_output("z", col=1))
    double = kern.pcu((0, 0), PcuConfig(inputs=(0,), stages=(Stage("add", "r0", "r0"),)), name="double")
    kern.connect(a.out, double.vi0)
    kern.connect(double.vo0, y.inp)
    kern.connect(r.out, z.inp)
    program = kern.build()
    return program, {name: CHIP.agcus.index((p.side, p.col)) for name, p in (*program.host_inputs.items(),
                                                                             *program.host_outputs.items())}


@cocotb.test()
async def gated_read_sees_the_kernels_write(dut):
    """A read gated on a write of the same kernel (``Pattern.after``) reads what that write stored, on both
    backends, cycles within 10%; gated on a write that needs its own data, the RTL stalls and the model
    refuses, both naming the two AGCUs."""
    program, k = readback_program()
    n = 64 * CHIP.array.lanes
    x = np.random.default_rng(SEED + 2).standard_normal(n).astype(np.float32)
    src, region, out = 0x10000, 0x20000, 0x30000
    words = n * 4 // WB
    results = {}
    for device in (CocotbDevice(dut, CHIP, limit=20_000), ModelDevice(CHIP)):
        await device.write(HBM, 0, padded(program.words))
        await device.load_program(program, HBM, 0)
        await device.write(HBM, src, x.view(np.uint32))
        await device.write(HBM, region, np.full(n, 7, np.uint32))
        # y = 2x goes to the region that z reads back once y's write is done: z = 2x, not the old 7s.
        reads = {k["a"]: Pattern.linear(HBM, src, words), k["r"]: Pattern.linear(HBM, region, words, after=k["y"])}
        writes = {k["y"]: Pattern.linear(HBM, region, words), k["z"]: Pattern.linear(HBM, out, words)}
        cycles = await device.execute(reads, writes)
        got = await device.read(HBM, out, n)
        assert np.array_equal(got, (2 * x).view(np.uint32)), f"{device.backend}: the gated read did not see the write"
        # z's read waits for z's own write: it never starts.
        reads[k["r"]] = Pattern.linear(HBM, region, words, after=k["z"])
        error = await expect_chip_error(device.execute(reads, writes), f"{device.backend}: a read gated on itself")
        assert f"AGCU {k['r']}" in error and f"AGCU {k['z']}" in error, f"{device.backend}: {error}"
        results[device.backend] = cycles, error
    (rtl, rtl_error), (model, model_error) = results["rtl"], results["model"]
    assert within(model, rtl), f"gated kernel: model {model} cycles, RTL {rtl}"
    dut._log.info(f"gated read-back: {rtl} cycles on the RTL, {model} on the model; stall: {rtl_error}")


async def expect_chip_error(call, what):
    try:
        await call
    except ChipError as error:
        return str(error)
    raise AssertionError(f"{what} was not refused")
