"""cocotb testbench of the whole chip (unit ``chip``), driven by the runtime's register driver.

Programs and inputs are placed in HBM through the back door; each kernel is
then launched the SN40L way (Program Load, Argument Load, Execute) over
AXI4-Lite, with the AGCUs streaming inputs from HBM into the fabric and
results back, and its outputs are checked bit for bit against the array's
fast model. The copy engine runs beside a kernel, and the host port moves
data over AXI4; random host bursts under back-pressure run beside kernels and
copies.
"""

import logging
import os

import cocotb
import numpy as np
from cocotb.triggers import gather

from cosim.metrics import record
from sw.tile.kernel import Kernel
from sw.tile.kernels import KERNELS, ArrayCase, bf16_round, floats, kernels_for, rel_error, rows_last
from sw.tile.pcu import PcuConfig
from sw.tile.pmu import AddressPattern, PmuConfig, ReadMode
from cosim.tb.chip_launch import WB, launch, place, start
from cosim.tb.host_stress import backpressure, random_bursts
from cosim.tb.units_chip import ARRAY, MEMORY, POST_OPS, TAIL_OPS
from hw.mem.params import DDR, HBM
from sw.runtime.alloc import TierAllocator
from sw.runtime.chip import ChipError

SEED = int(os.environ.get("OPENRDU_SEED", "1"))


@cocotb.test()
async def kernels_from_hbm(dut):
    """GEMV + bias + SiLU, softmax and RMSNorm streamed from HBM by AGCUs, bit-exact against the model."""
    driver, _, stores = await start(dut)
    alloc = TierAllocator("hbm", MEMORY.hbm.capacity)
    rng = np.random.default_rng(SEED)
    for name in kernels_for(ARRAY, TAIL_OPS, POST_OPS):
        if name == "gemm":
            continue  # its A stream carries groups of k vectors on two multicast PCUs; covered by sim-array
        case = KERNELS[name](ARRAY, TAIL_OPS, POST_OPS, rng)
        outputs, model, cycles, load_cycles, statuses = await launch(driver, stores, alloc, case)
        for out, got in outputs.items():
            want = model.outputs[out][0]
            assert np.array_equal(got, want), f"{case.name}: output {out} differs from the fast model at " \
                                              f"{np.argwhere(got != want)[:4].tolist()}"
        assert case.error({k: (v, None) for k, v in outputs.items()}) <= case.tolerance, case.name
        assert load_cycles == len(case.program.words), f"{case.name}: program load took {load_cycles} cycles"
        record(f"chip.{case.name}", kernel_cycles=cycles, model_cycles=model.chip_cycles, load_cycles=load_cycles)
        dut._log.info(f"{case.name}: kernel {cycles} cycles on the chip, chip model {model.chip_cycles} "
                      f"(array alone {model.cycles}), program load {load_cycles} cycles")
        assert abs(model.chip_cycles / cycles - 1) <= 0.10, \
            f"{case.name}: chip model estimates {model.chip_cycles} cycles, the RTL took {cycles}"


def chained_gemvs(rng, *, k=64, tiles=8, tiles2=16):
    """y = (x @ Wa) @ Wb on two systolic PCUs, ``Wa`` and ``Wb`` streamed from HBM at once: the second GEMV's
    broadcast PMU fills only when the first GEMV is done, so ``Wb``'s AGCU stops when its credits run out and
    leaves HBM to ``Wa`` until then."""
    lanes = ARRAY.lanes
    k2 = tiles * lanes

    def broadcast(rows, reads):
        return PmuConfig(write=AddressPattern.linear(rows, lanes), read=AddressPattern.linear(rows * lanes, 1),
                         read_mode=ReadMode.BROADCAST, reads_per_fill=reads, write_passes=1, read_passes=reads)

    kern = Kernel(ARRAY, tail_ops=TAIL_OPS, post_ops=POST_OPS)
    x_in, wa_in, wb_in = kern.host_input("x", col=1), kern.host_input("wa", col=0), kern.host_input("wb", col=1, side="b")
    xbuf = kern.pmu((0, 1), broadcast(k // lanes, tiles), name="xbuf")
    mac = kern.pcu((0, 0), PcuConfig(inputs=(0, 1), group_src=0, systolic=True, systolic_rows=1), name="mac")
    hbuf = kern.pmu((1, 0), broadcast(tiles, tiles2), name="hbuf")
    mac2 = kern.pcu((1, 1), PcuConfig(inputs=(0, 1), group_src=0, systolic=True, systolic_rows=1), name="mac2")
    y_out = kern.host_output("y", col=2)
    for source, sink in ((x_in.out, xbuf.vi0), (xbuf.vo0, mac.vi0), (wa_in.out, mac.vi1), (mac.vo0, hbuf.vi0),
                         (hbuf.vo0, mac2.vi0), (wb_in.out, mac2.vi1), (mac2.vo0, y_out.inp)):
        kern.connect(source, sink)
    x = bf16_round(rng.standard_normal(k) * 0.5)
    wa = bf16_round(rng.standard_normal((k, tiles * lanes)) * 0.5)
    wb = bf16_round(rng.standard_normal((k2, tiles2 * lanes)) * 0.5)
    stream = lambda w, rows, t: w.reshape(rows, t, lanes).transpose(1, 0, 2).reshape(t * rows, lanes)
    inputs = {"x": (x.reshape(-1, lanes), rows_last(1, k // lanes)), "wa": (stream(wa, k, tiles), rows_last(tiles, k)),
              "wb": (stream(wb, k2, tiles2), rows_last(tiles2, k2))}

    def error(outputs):
        return rel_error(outputs["y"][0].reshape(-1), (floats(x) @ floats(wa)) @ floats(wb))
    return ArrayCase("chained_gemvs", kern.build(), inputs, error, 1e-4)


@cocotb.test()
async def stream_held_by_its_credits(dut):
    """A read stream whose consumer starts late holds only its AGCU's credits of words and leaves HBM to the
    stream the kernel waits for; the chip model's estimate is within 10% of the RTL."""
    driver, _, stores = await start(dut)
    alloc = TierAllocator("hbm", MEMORY.hbm.capacity)
    case = chained_gemvs(np.random.default_rng(SEED + 3))
    outputs, model, cycles, _, _ = await launch(driver, stores, alloc, case)
    assert np.array_equal(outputs["y"], model.outputs["y"][0]), "chained GEMVs differ from the fast model"
    assert case.error({k: (v, None) for k, v in outputs.items()}) <= case.tolerance
    record(f"chip.{case.name}", kernel_cycles=cycles, model_cycles=model.chip_cycles)
    dut._log.info(f"{case.name}: kernel {cycles} cycles on the chip, chip model {model.chip_cycles}")
    assert abs(model.chip_cycles / cycles - 1) <= 0.10, \
        f"{case.name}: chip model estimates {model.chip_cycles} cycles, the RTL took {cycles}"


@cocotb.test()
async def copy_beside_a_kernel(dut):
    """A DDR -> HBM copy and a host write run while a kernel streams from HBM; all three results are exact."""
    driver, bus, stores = await start(dut)
    alloc = TierAllocator("hbm", MEMORY.hbm.capacity)
    rng = np.random.default_rng(SEED + 1)
    length = 8 * 1024
    source = rng.integers(0, 256, length, dtype=np.uint8)
    stores[DDR].write(0x10000, source)
    target = alloc.allocate(length, "copy target").offset
    case = KERNELS["gemv"](ARRAY, TAIL_OPS, POST_OPS, rng, k=32, tiles=6)

    alone_outputs, _, alone_cycles, _, _ = await launch(driver, stores, alloc, case)
    copy_alone = await timed_copy(driver, target, length)

    # Kernel, copy and a host write all at once, on disjoint memory.
    host_bytes = rng.integers(0, 256, 512, dtype=np.uint8).tobytes()
    host_at = (1 << MEMORY.addr_bits) + 0x40000
    await driver.start_copy(DDR, 0x10000, HBM, target + 0, length)
    host_write = cocotb.start_soon(bus.axi.write(host_at, host_bytes))
    outputs, model, cycles, _, _ = await launch(driver, stores, alloc, case)
    status = await driver.wait_copy()
    await host_write
    assert stores[DDR].read(0x40000, len(host_bytes)).tobytes() == host_bytes, "host write beside the kernel"
    for out, got in outputs.items():
        assert np.array_equal(got, model.outputs[out][0]), f"kernel beside the copy: {out} differs"
        assert np.array_equal(got, alone_outputs[out])
    assert np.array_equal(stores[HBM].read(target, length), source), "copied bytes differ"
    assert status["bytes"] == length
    # The copy is DDR-bound (2 B/cycle); the kernel's HBM streams barely slow it.
    assert status["cycles"] <= 1.2 * copy_alone, f"copy took {status['cycles']} beside the kernel, {copy_alone} alone"
    record("chip.copy_beside_kernel", copy_cycles=status["cycles"], copy_alone=copy_alone,
           kernel_cycles=cycles, kernel_alone=alone_cycles)


async def timed_copy(driver, target, length):
    await driver.start_copy(DDR, 0x10000, HBM, target, length)
    return (await driver.wait_copy())["cycles"]


@cocotb.test()
async def host_port_and_errors(dut):
    """AXI4 writes to DDR read back through HBM after a copy; a bad program and an out-of-range pattern are refused."""
    driver, bus, stores = await start(dut)
    rng = np.random.default_rng(SEED + 2)
    data = rng.integers(0, 256, 512, dtype=np.uint8).tobytes()
    ddr_base = 1 << MEMORY.addr_bits
    await bus.axi.write(ddr_base + 0x2000, data)
    assert stores[DDR].read(0x2000, len(data)).tobytes() == data
    assert bytes((await bus.axi.read(ddr_base + 0x2000, len(data))).data) == data

    alloc = TierAllocator("hbm", MEMORY.hbm.capacity)
    case = KERNELS["gemv"](ARRAY, TAIL_OPS, POST_OPS, rng)
    words = list(case.program.words) + [0] * (-len(case.program.words) % 4)
    words[len(words) // 2] ^= 1
    at = place(stores[HBM], alloc, "corrupt", words)
    try:
        await driver.load_program(HBM, at, len(words))
    except ChipError as error:
        assert "BAD_CHECKSUM" in str(error) or "BAD_LENGTH" in str(error), str(error)
    else:
        raise AssertionError("a corrupt program was accepted")

    # An input whose last two words lie past the end of HBM: the kernel still
    # completes (those words read as zeros), the controller counts two errors
    # and the driver names the AGCU and the word.
    errors_before = (await driver.tier_stats("hbm"))["errors"]
    x_words = case.inputs["x"][0].nbytes // WB
    x_port = case.program.host_inputs["x"]
    try:
        await launch(driver, stores, alloc, case, input_at={"x": MEMORY.hbm.capacity - 2 * WB})
    except ChipError as error:
        k = driver.agcu_at(x_port.side, x_port.col)
        assert f"AGCU {k}" in str(error) and f"word {x_words - 2}" in str(error), str(error)
    else:
        raise AssertionError("a read past the end of HBM was not reported")
    assert (await driver.tier_stats("hbm"))["errors"] == errors_before + 2


@cocotb.test()
async def host_stress_beside_kernels_and_copies(dut):
    """``OPENRDU_CHIP_STRESS`` random host bursts (default 200) from four workers, 1 to 4 words each, under
    back-pressure on every AXI channel, into host-owned windows of HBM and DDR across 4 KiB boundaries,
    while kernels stream from HBM through the AGCUs back to back and the copy engine moves random spans
    DDR -> HBM and HBM -> DDR back to back. Every host read returns the byte model's bytes; after each copy
    the host reads part of what it wrote; at the end every kernel's outputs, every copy destination and the
    host windows are exact."""
    driver, bus, stores = await start(dut)
    total = int(os.environ.get("OPENRDU_CHIP_STRESS", "200"))
    addr_bits = MEMORY.addr_bits
    for port in (bus.axi.write_if, bus.axi.read_if):
        port.log.setLevel(logging.WARNING)    # cocotbext-axi logs every burst at INFO
    backpressure(bus.axi, 0.3, SEED)
    # The host link moves 2/15 B a cycle: short bursts keep the run short. Worker w's windows straddle a
    # 4 KiB boundary in the upper half of HBM and in DDR; kernels allocate below 8 MiB, copies use their own areas.
    workers, span = 4, 512
    bases = {HBM: 8 << 20, DDR: 4 << 20}
    windows = [{t: (bases[t] + (w + 1) * 4096 - span // 2,
                    stores[t].read(bases[t] + (w + 1) * 4096 - span // 2, span).copy()) for t in (HBM, DDR)}
               for w in range(workers)]
    area = 8192
    rng = np.random.default_rng((SEED, 6))
    sources = {DDR: 6 << 20, HBM: 12 << 20}      # a copy from one tier reads its source area
    targets = {HBM: 13 << 20, DDR: 7 << 20}      # and writes the other tier's target area
    source_bytes = {t: rng.integers(0, 256, area, dtype=np.uint8) for t in (HBM, DDR)}
    for t, at in sources.items():
        stores[t].write(at, source_bytes[t])
    target_models = {t: stores[t].read(at, area).copy() for t, at in targets.items()}
    host_done, kernels_run, kernel_outputs, copies, written = [], [], [], [], []

    async def host():
        written.extend(await random_bursts(bus.axi, windows, total, SEED, word_bytes=WB, addr_bits=addr_bits,
                                           max_words=4))
        host_done.append(True)

    async def kernels():
        alloc = TierAllocator("hbm", 8 << 20)
        krng = np.random.default_rng((SEED, 5))
        names = [name for name in kernels_for(ARRAY, TAIL_OPS, POST_OPS) if name != "gemm"]
        while not host_done or len(kernels_run) < 2:
            case = KERNELS[names[len(kernels_run) % len(names)]](ARRAY, TAIL_OPS, POST_OPS, krng)
            before = set(alloc.blocks)
            outputs, model, _, _, _ = await launch(driver, stores, alloc, case)
            for name, got in outputs.items():
                assert np.array_equal(got, model.outputs[name][0]), f"{case.name} beside host bursts: {name} differs"
            # Keep the outputs where they are, to check at the end that nothing wrote over them.
            for block in [alloc[n] for n in alloc.blocks if n not in before]:
                out = next((name for name in outputs if block.name.endswith(f".{name}.out")), None)
                if out is None:
                    alloc.free(block.name)
                else:
                    kernel_outputs.append((case.name, block.offset, outputs[out].copy()))
            kernels_run.append(case.name)

    async def copy_engine():
        while not host_done or len(copies) < 2:
            src_tier = (DDR, HBM)[len(copies) % 2]
            dst_tier = 1 - src_tier
            length = WB * int(rng.integers(1, 257))
            src = WB * int(rng.integers(0, (area - length) // WB + 1))
            dst = WB * int(rng.integers(0, (area - length) // WB + 1))
            await driver.start_copy(src_tier, sources[src_tier] + src, dst_tier, targets[dst_tier] + dst, length)
            status = await driver.wait_copy()
            assert status["bytes"] == length, f"copy {len(copies)}: {status}"
            target_models[dst_tier][dst:dst + length] = source_bytes[src_tier][src:src + length]
            # The host reads part of what the copy wrote, now that it is done, behind the workers' bursts.
            lo = dst + int(rng.integers(length))
            size = int(rng.integers(1, min(4 * WB, dst + length - lo) + 1))
            got = await bus.axi.read((dst_tier << addr_bits) | (targets[dst_tier] + lo), size)
            assert got.data == target_models[dst_tier][lo:lo + size].tobytes(), \
                f"copy {len(copies)}: the host read {size} bytes at {dst_tier}:{targets[dst_tier] + lo:#x} wrong"
            copies.append(length)

    await gather(host(), kernels(), copy_engine())
    backpressure(bus.axi, 0, SEED)
    for w, window in enumerate(windows):
        for t, (base, model) in window.items():
            assert np.array_equal(stores[t].read(base, span), model), f"worker {w}, tier {t}: differs from the model"
    for t, at in targets.items():
        assert np.array_equal(stores[t].read(at, area), target_models[t]), f"copy target in tier {t} differs"
    for t, at in sources.items():
        assert np.array_equal(stores[t].read(at, area), source_bytes[t]), f"copy source in tier {t} was written"
    for name, at, want in kernel_outputs:
        assert np.array_equal(stores[HBM].read(at, want.nbytes).view("<u4").reshape(want.shape), want), \
            f"{name}'s output at {at:#x} was written over"
    dut._log.info("%d random host bursts (%d bytes written) beside %d kernels and %d copies (%d bytes), checked",
                  total, sum(written), len(kernels_run), len(copies), sum(copies))
    record("chip_stress", bursts=total, bytes_written=sum(written), kernels=len(kernels_run),
           copies=len(copies), copy_bytes=sum(copies))
