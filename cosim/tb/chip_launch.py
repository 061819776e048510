"""Launching a kernel-API program on the co-simulated chip, shared by its testbench and the demo.

Programs and inputs go to HBM through the back door; the runtime's driver
then runs Program Load, Argument Load and Execute over AXI4-Lite; outputs are
read back through the back door and checked against the chip's fast model.
"""

import numpy as np

from cosim.device import CocotbDevice
from cosim.tb.units_chip import AGCUS, ARRAY, MEMORY, TARGET
from hw.mem.params import HBM
from sw.model.array import ArrayModel
from sw.model.chip import ChipModel
from sw.runtime.chip import Pattern, stream_pattern

WB = MEMORY.word_bytes


async def start(dut):
    """Clock and reset the chip; returns its ``(ChipDriver, CocotbChipBus, {tier: TierStore})``."""
    # The testbench's kernels take a few thousand cycles: a short limit reports a stall quickly.
    device = CocotbDevice(dut, TARGET, limit=200_000)
    await device.start()
    return device.driver, device.bus, device.stores


def place(store, alloc, name, words):
    """Put uint32 ``words`` in HBM through the back door; returns the byte offset."""
    raw = np.ascontiguousarray(np.asarray(words, dtype="<u4").reshape(-1))
    block = alloc.allocate(max(raw.nbytes, WB), name)
    store.write(block.offset, raw)
    return block.offset


async def launch(driver, stores, alloc, case, *, input_at=None):
    """Load ``case``'s program and inputs into HBM, run it, and return (outputs, model run, cycles, ...).

    ``input_at`` maps an input name to a byte address to read it from
    instead of a fresh block (to provoke errors).
    """
    input_at = input_at or {}
    run = f"{case.name}@{len(alloc.blocks)}"
    program = case.program
    words = list(program.words) + [0] * (-len(program.words) % (WB // 4))
    program_at = place(stores[HBM], alloc, f"{run}.program", words)
    load_cycles = await driver.load_program(HBM, program_at, len(words))
    reads = {}
    for name, (data, last) in case.inputs.items():
        port = program.host_inputs[name]
        at = input_at.get(name) or place(stores[HBM], alloc, f"{run}.{name}", data)
        reads[driver.agcu_at(port.side, port.col)] = stream_pattern(HBM, at, last, lanes=ARRAY.lanes,
                                                                    word_bytes=WB)
    model = ArrayModel(program).run(case.inputs)
    writes, out_at = {}, {}
    for name, port in program.host_outputs.items():
        want = model.outputs[name][0]
        block = alloc.allocate(want.nbytes, f"{run}.{name}.out")
        out_at[name] = (block.offset, want.shape)
        writes[driver.agcu_at(port.side, port.col)] = Pattern.linear(HBM, block.offset, want.nbytes // WB)
    cycles, statuses = await driver.execute(reads, writes)
    outputs = {name: stores[HBM].read(at, int(np.prod(shape)) * 4).view("<u4").reshape(shape)
               for name, (at, shape) in out_at.items()}
    # The chip's fast model, on a copy of the inputs at the same addresses.
    chip_model = ChipModel(ARRAY, MEMORY, AGCUS)
    for k, pattern in reads.items():
        chip_model.memory[HBM].write(pattern.base, stores[HBM].read(pattern.base, pattern.words * WB))
    chip_model.load_program(program)
    estimate, model_outputs = chip_model.execute(reads, writes)
    for name, got in outputs.items():
        assert np.array_equal(model_outputs[name][0], got), f"{case.name}: chip model output {name} differs"
        at, shape = out_at[name]
        assert np.array_equal(chip_model.memory[HBM].read(at, got.nbytes), stores[HBM].read(at, got.nbytes))
    model.chip_cycles = estimate
    return outputs, model, cycles, load_cycles, statuses
