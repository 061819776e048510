"""The on-chip launch sequencer (``hw/mem/sequencer.py``) in the ``chip`` unit's simulation.

One launch list of three kernels (GEMV + bias + SiLU, then softmax twice,
sharing one program so the second Program Load is skipped, the second
reading its input at a token-stepped base and writing at a position-stepped
one) runs on :class:`cosim.device.CocotbDevice` and on the fast model's
:class:`sw.runtime.device.ModelDevice`: outputs bit-identical to each other
and to the array model, kernel cycles equal to host-orchestrated launches of
the same kernels, total cycles within 3%. Then the errors: patterns stepped
outside HBM and below address 0, a list that ends before its final entry,
an enable naming a missing AGCU, a refused program, and a stalled kernel
(the watchdog). And an entry whose read waits for its own kernel's write
(``after`` in the direction record), both stepped by the position, and
looped entries whose reads wait per top-level iteration (``lag`` 0 and 1).
Last, a reset with the sequencer, the copy engine and the AGCUs idle (their
clocks gated) clears their registers.
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from cosim.device import CocotbDevice
from cosim.tb.test_device import expect_chip_error, readback_program
from hw.mem.params import DDR, HBM
from hw.mem.sequencer import Phase, sequencer_status_layout
from sw.layout import unpack
from sw.loopnest import LoopNest
from sw.model.array import ArrayModel
from sw.runtime.alloc import TierAllocator
from sw.runtime.chip import Pattern, stream_pattern
from sw.runtime.device import ModelDevice
from sw.runtime.launch_list import ListDirection, ListEntry, encode, program_pattern
from sw.target import CHIP
from sw.tile.kernels import gemv_bias_act, softmax

SEED = int(os.environ.get("OPENRDU_SEED", "1"))
WB = CHIP.memory.word_bytes
N_AGCUS = len(CHIP.agcus)
TOKEN, POS, ROWS = 2, 1, 3          # the stepped entry's tables hold ROWS rows; the step uses TOKEN and POS
TOTAL_TOLERANCE = 0.03
LIMIT = 50_000                      # cycles a list may take: these take about a thousand


def padded(words):
    words = np.asarray(words, dtype=np.uint32)
    return np.concatenate([words, np.zeros(-words.size % (WB // 4), np.uint32)])


def agcu(port):
    return CHIP.agcus.index((port.side, port.col))


def make_cases():
    """GEMV + bias + SiLU, then softmax twice (one program, two inputs): the same on every call.

    Softmax runs again without a Program Load; GEMV does not (its broadcast
    buffer keeps state between runs, on the host's launches too), so it comes first.
    """
    rng = np.random.default_rng(SEED)
    build = lambda f: f(CHIP.array, CHIP.tail_ops, CHIP.post_ops, rng)
    cases = [build(gemv_bias_act), build(softmax), build(softmax)]
    assert cases[1].program.words == cases[2].program.words, "the two softmax cases must share a program"
    return cases


async def place(device, cases, *, stepped=(2,), beyond=()):
    """Write programs, inputs and the launch list of ``cases`` to ``device``; the same addresses on every device.

    Entries in ``stepped`` read input ``x`` from row ``TOKEN`` of a token-strided table and write
    their output to row ``POS`` of a position-strided one; entries in ``beyond`` read ``x`` one
    HBM capacity further on per position (outside HBM). Returns ``(list_at, list_words, entries,
    programs, outputs)``, ``outputs[i]`` mapping each output of entry ``i`` to ``(byte offset of
    the step's row, shape)``.
    """
    alloc = TierAllocator("hbm", CHIP.memory.hbm.capacity)
    rng = np.random.default_rng(SEED + 7)
    programs, entries, outputs, loaded = {}, [], [], {}
    for i, case in enumerate(cases):
        program = case.program
        key = tuple(program.words)
        if key not in loaded:
            words = padded(program.words)
            loaded[key] = at = alloc.allocate(words.nbytes, f"program{i}").offset
            await device.write(HBM, at, words)
            programs[(HBM, at)] = program
        reads = {}
        for name, (data, last) in case.inputs.items():
            raw = np.ascontiguousarray(data, dtype=np.uint32).reshape(-1)
            rows = ROWS if i in stepped and name == "x" else 1
            block = alloc.allocate(rows * raw.nbytes, f"{i}.{name}").offset
            table = rng.integers(0, 1 << 32, (rows, raw.size), dtype=np.uint32)
            table[TOKEN if rows > 1 else 0] = raw
            await device.write(HBM, block, table)
            pattern = stream_pattern(HBM, block, last, lanes=CHIP.array.lanes, word_bytes=WB)
            token_stride = raw.nbytes if rows > 1 else 0
            pos_stride = CHIP.memory.hbm.capacity if i in beyond and name == "x" else 0
            reads[agcu(program.host_inputs[name])] = ListDirection(pattern, token_stride, pos_stride)
        shapes = {name: out[0].shape for name, out in ArrayModel(program).run(case.inputs).outputs.items()}
        writes, outs = {}, {}
        for name, port in program.host_outputs.items():
            nbytes = 4 * int(np.prod(shapes[name]))
            rows = ROWS if i in stepped else 1
            block = alloc.allocate(rows * nbytes, f"{i}.{name}.out").offset
            pos_stride = nbytes if rows > 1 else 0
            writes[agcu(port)] = ListDirection(Pattern.linear(HBM, block, nbytes // WB), 0, pos_stride)
            outs[name] = (block + POS * pos_stride, shapes[name])
        entries.append(ListEntry(program_pattern(HBM, loaded[key], len(program.words), WB), reads, writes))
        outputs.append(outs)
    words = encode(entries, CHIP.memory, N_AGCUS)
    list_at = alloc.allocate(words.nbytes, "list").offset
    await device.write(HBM, list_at, words)
    return list_at, words, entries, programs, outputs


async def read_outputs(device, outputs):
    return [{name: (await device.read(HBM, at, int(np.prod(shape)))).reshape(shape)
             for name, (at, shape) in outs.items()} for outs in outputs]


@cocotb.test()
async def sequencer_runs_a_list(dut):
    """Three kernels from one list: bit-identical on both backends, the shared program loaded once, cycles alike."""
    rtl, model = CocotbDevice(dut, CHIP, limit=LIMIT), ModelDevice(CHIP)
    cases = make_cases()
    runs = {}
    for device in (rtl, model):
        list_at, words, entries, programs, outputs = await place(device, cases)
        out = await device.run_list(HBM, list_at, words.size, token=TOKEN, pos=POS, programs=programs)
        runs[device.backend] = out, await read_outputs(device, outputs)
        dut._log.info(f"{device.backend}: {out}")
    (got_rtl, outs_rtl), (got_model, outs_model) = runs["rtl"], runs["model"]
    for i, case in enumerate(cases):
        want = ArrayModel(case.program).run(case.inputs).outputs
        for name, got in outs_rtl[i].items():
            assert np.array_equal(got, outs_model[i][name]), f"entry {i} ({case.name}): {name} differs between backends"
            assert np.array_equal(got, want[name][0]), f"entry {i} ({case.name}): {name} differs from the array model"
    for out in (got_rtl, got_model):
        assert out["entries"] == 3 and out["program_loads"] == 2, f"entries and loads (one skipped): {out}"
    assert got_rtl["program_load_cycles"] == got_model["program_load_cycles"] == \
        len(cases[0].program.words) + len(cases[2].program.words)
    assert abs(got_model["cycles"] / got_rtl["cycles"] - 1) <= TOTAL_TOLERANCE, \
        f"model {got_model['cycles']} cycles for the list, RTL {got_rtl['cycles']}"
    # Done, the parser is back in its idle state, though busy fell the cycle before it left its drain (the clock
    # gate's parser term): phase fetch, entry one past the last launched.
    status = unpack(sequencer_status_layout(), await rtl.driver.read("seq_status"))
    assert status == dict(busy=0, done=1, error=0, cause=0, phase=Phase.FETCH, entry=len(cases)), \
        f"idle sequencer's status {status}"

    # The program the list left resident runs again from the host without a reload, output unchanged.
    for at, shape in outputs[2].values():
        await rtl.write(HBM, at, np.zeros(int(np.prod(shape)), np.uint32))
    cycles = await rtl.execute(*entries[2].patterns(TOKEN, POS))
    again = (await read_outputs(rtl, outputs[2:]))[0]
    assert all(np.array_equal(again[name], outs_rtl[2][name]) for name in again), "softmax again from the host"

    # The same kernels launched by the host, the shared program loaded once: the same kernel cycles.
    host = []
    for i, entry in enumerate(entries):
        if i != 2:
            await rtl.load_program(programs[(HBM, entry.program.base)], HBM, entry.program.base)
        host.append(await rtl.execute(*entry.patterns(TOKEN, POS)))
    dut._log.info(f"host-orchestrated kernels {host} (softmax again from the list's program: {cycles}); "
                  f"the list's {got_rtl['kernel_cycles']} kernel cycles in {got_rtl['cycles']} "
                  f"({got_rtl['sequencer_cycles']} sequencing), the model's {got_model['cycles']}")
    assert sum(host) == got_rtl["kernel_cycles"], f"host-launched kernels {host}, the list's {got_rtl}"

    # A Program Load by the host makes its program resident: a list starting with it skips the load.
    for device in (rtl, model):
        list_at, words, entries, programs, _ = await place(device, cases[1:2], stepped=())
        (at, program), = programs.items()
        await device.load_program(program, *at)
        out = await device.run_list(HBM, list_at, words.size, token=0, pos=0, programs=programs)
        assert out["program_loads"] == 0 and out["entries"] == 1, f"{device.backend}: {out}"
        dut._log.info(f"{device.backend}: one resident entry, {out}")


@cocotb.test()
async def sequencer_refuses(dut):
    """Patterns stepped outside HBM, no final entry, a missing AGCU, a bad program: errors that name the entry."""
    rtl, model = CocotbDevice(dut, CHIP, limit=LIMIT), ModelDevice(CHIP)
    cases = make_cases()
    x = agcu(cases[1].program.host_inputs["x"])
    for device in (rtl, model):
        list_at, words, _, programs, _ = await place(device, cases[:2], stepped=(), beyond=(1,))
        error = await expect_chip_error(device.run_list(HBM, list_at, words.size, token=0, pos=1, programs=programs),
                                        f"{device.backend}: a pattern stepped outside HBM")
        assert "launch list entry 1" in error and f"AGCU {x}" in error, f"{device.backend}: {error}"

        # A base stepped below zero leaves the address range: every word refused, none wrapped into a tier.
        list_at, words, entries, programs, _ = await place(device, cases[1:2], stepped=())
        (k, d), = entries[0].reads.items()
        below = encode([ListEntry(entries[0].program, {k: ListDirection(d.pattern, token_stride=-(1 << 30))},
                                  entries[0].writes)], CHIP.memory, N_AGCUS)
        await device.write(HBM, list_at, below)
        error = await expect_chip_error(device.run_list(HBM, list_at, below.size, token=1, pos=0, programs=programs),
                                        f"{device.backend}: a base stepped below zero")
        assert "launch list entry 0" in error and f"AGCU {k}" in error and "word 0 " in error, \
            f"{device.backend}: {error}"

        # Entry 1's header at word 45 (header 2, program record 7, four direction records of 9); final is bit 33.
        list_at, words, _, programs, _ = await place(device, cases[:2], stepped=())
        assert words.size == 72, words.size
        for word, flip, entry, what in ((46, 1 << 1, 2, "no entry marked final"),
                                        (45, 1 << (2 * N_AGCUS), 1, "an enable naming a missing AGCU")):
            await device.write(HBM, list_at + 4 * word, words[word:word + 1] ^ flip)
            error = await expect_chip_error(device.run_list(HBM, list_at, words.size, token=0, pos=0,
                                                            programs=programs), f"{device.backend}: {what}")
            assert f"launch list entry {entry}:" in error, f"{device.backend}: {what}: {error}"
            await device.write(HBM, list_at + 4 * word, words[word:word + 1])

    # A corrupt bitstream where the list says the program is: the array refuses it.
    list_at, words, entries, _, _ = await place(rtl, cases[2:], stepped=())
    at = entries[0].program.base
    await rtl.write(HBM, at + 8, (await rtl.read(HBM, at + 8, 1)) ^ 1)
    error = await expect_chip_error(rtl.driver.run_list(HBM, list_at, words.size // (WB // 4), 0, 0),
                                    "a corrupt program")
    assert error.startswith("launch list entry 0: program load") and "BAD_" in error, error


@cocotb.test()
async def sequencer_watchdog(dut):
    """A kernel whose output pattern is longer than its output never ends: the stall names entry, phase and AGCU."""
    rtl = CocotbDevice(dut, CHIP, limit=10_000)
    case = make_cases()[0]
    list_at, words, entries, programs, _ = await place(rtl, [case], stepped=())
    (k, y), = entries[0].writes.items()
    longer = ListEntry(entries[0].program, entries[0].reads, {k: ListDirection(Pattern.linear(
        HBM, y.pattern.base, 2 * y.pattern.words))})
    words = encode([longer], CHIP.memory, N_AGCUS)
    await rtl.write(HBM, list_at, words)
    error = await expect_chip_error(rtl.run_list(HBM, list_at, words.size, token=0, pos=0, programs=programs),
                                    "a stalled kernel")
    side, col = CHIP.agcus[k]
    assert error.startswith("sequencer stalled at launch list entry 0 (executing)") and \
        f"AGCU {k} ({side}{col}) write {y.pattern.words}/{2 * y.pattern.words} words" in error, error
    dut._log.info(error)



@cocotb.test()
async def sequencer_runs_a_gated_entry(dut):
    """A list entry whose read waits for the entry's write (``after``), both bases stepped by the position: the
    read sees the written data on both backends, kernel cycles within 10%."""
    program, k = readback_program()
    n = 16 * CHIP.array.lanes
    words = n * 4 // WB
    x = np.random.default_rng(SEED + 3).standard_normal(n).astype(np.float32)
    src, region, out, list_at, program_at = 0x10000, 0x20000, 0x30000, 0x40000, 0x50000
    stride = 4 * n                                  # one row of the region per position
    entry = ListEntry(program_pattern(HBM, program_at, len(program.words), WB),
                      {k["a"]: ListDirection(Pattern.linear(HBM, src, words)),
                       k["r"]: ListDirection(Pattern.linear(HBM, region, words, after=k["y"]), pos_stride=stride)},
                      {k["y"]: ListDirection(Pattern.linear(HBM, region, words), pos_stride=stride),
                       k["z"]: ListDirection(Pattern.linear(HBM, out, words))})
    listed = encode([entry], CHIP.memory, N_AGCUS)
    runs = {}
    for device in (CocotbDevice(dut, CHIP, limit=LIMIT), ModelDevice(CHIP)):
        await device.write(HBM, program_at, padded(program.words))
        await device.write(HBM, list_at, listed)
        await device.write(HBM, src, x.view(np.uint32))
        await device.write(HBM, region, np.full(3 * n, 7, np.uint32))
        runs[device.backend] = await device.run_list(HBM, list_at, listed.size, token=0, pos=POS,
                                                     programs={(HBM, program_at): program})
        got = await device.read(HBM, out, n)
        assert np.array_equal(got, (2 * x).view(np.uint32)), f"{device.backend}: the gated read missed the write"
        assert np.array_equal(await device.read(HBM, region + POS * stride, n), got), device.backend
    rtl, model = runs["rtl"]["kernel_cycles"], runs["model"]["kernel_cycles"]
    assert abs(model / rtl - 1) <= 0.10, f"gated entry: model {model} kernel cycles, RTL {rtl}"
    dut._log.info(f"gated entry: RTL {runs['rtl']}, model {runs['model']}")


@cocotb.test()
async def sequencer_runs_looped_gated_entries(dut):
    """Looped entries: every pattern walks ``ITERATIONS`` blocks at its outermost level, y = 2a block by block and
    r read back from y's region gated per iteration: lag 0 reads block i once y's iteration i is written; lag 1
    reads slot i, which y's iteration i - 1 writes (slot 0 is the loop's input). The RTL reads exactly that; the
    fast model, which gates on whole writes, refuses both in one line."""
    program, k = readback_program()
    iterations, n = 3, 4 * CHIP.array.lanes
    words = n * 4 // WB
    x = np.random.default_rng(SEED + 4).standard_normal((iterations, n)).astype(np.float32)
    src, region, out, list_at, program_at = 0x10000, 0x20000, 0x30000, 0x40000, 0x50000
    looped = lambda base, **gate: Pattern(HBM, base, LoopNest((words, 1, 1, iterations), (1, 0, 0, words)), **gate)
    entries = [ListEntry(program_pattern(HBM, program_at, len(program.words), WB) if lag == 0 else None,
                         {k["a"]: ListDirection(looped(src)),
                          k["r"]: ListDirection(looped(region + lag * 0x4000, after=k["y"], lag=lag))},
                         {k["y"]: ListDirection(looped(region + lag * (0x4000 + 4 * n))),
                          k["z"]: ListDirection(looped(out + lag * 0x4000))}) for lag in (0, 1)]
    listed = encode(entries, CHIP.memory, N_AGCUS)
    seven = np.full((iterations + 1) * n, 7, np.uint32)
    for device in (CocotbDevice(dut, CHIP, limit=LIMIT), ModelDevice(CHIP)):
        await device.write(HBM, program_at, padded(program.words))
        await device.write(HBM, list_at, listed)
        await device.write(HBM, src, x.view(np.uint32).reshape(-1))
        for lag in (0, 1):
            await device.write(HBM, region + lag * 0x4000, seven)
        if device.backend == "model":
            error = await expect_chip_error(device.run_list(HBM, list_at, listed.size, token=0, pos=0,
                                                            programs={(HBM, program_at): program}),
                                            "a looped gated entry on the fast model")
            assert "fast model gates on a whole write only" in error, error
            continue
        run = await device.run_list(HBM, list_at, listed.size, token=0, pos=0, programs={(HBM, program_at): program})
        doubled = (2 * x).view(np.uint32)
        lagged = np.concatenate([seven[:n].reshape(1, n), doubled[:-1]])
        for lag, want in ((0, doubled), (1, lagged)):
            got = (await device.read(HBM, out + lag * 0x4000, iterations * n)).reshape(iterations, n)
            bad = [i for i in range(iterations) if not np.array_equal(got[i], want[i])]
            assert not bad, f"lag {lag}: iterations {bad} read other words than the write's iterations stored"
        dut._log.info(f"looped gated entries: {run}")


@cocotb.test()
async def reset_clears_the_idle_units(dut):
    """A reset after a list has run and a copy has finished (the sequencer, the copy engine and the AGCUs idle,
    their gated clocks stopped) clears their status registers; the same list and copy then run as before."""
    rtl = CocotbDevice(dut, CHIP, limit=LIMIT)
    list_at, words, _, programs, _ = await place(rtl, make_cases()[1:2], stepped=())
    block = np.random.default_rng(SEED + 5).integers(0, 1 << 32, 64 * WB // 4, dtype=np.uint32)
    await rtl.write(DDR, 0x1000, block)
    statuses = ["seq_status", "seq_enable", "seq_list_status", "seq_cycles", "seq_kernel_cycles",
                "seq_program_cycles", "seq_entries", "seq_program_loads", "program_status", "copy_status",
                *(f"agcu{k}_{d}_status" for k in range(N_AGCUS) for d in ("read", "write"))]
    runs = []
    for again in (False, True):
        out = await rtl.run_list(HBM, list_at, words.size, token=0, pos=0, programs=programs)
        copy_cycles = await rtl.copy(DDR, 0x1000, HBM, 0x800000, block.size * 4)
        assert np.array_equal(await rtl.read(HBM, 0x800000, block.size), block), "the copy's data"
        runs.append((out, copy_cycles))
        if again:
            break
        values = {name: await rtl.driver.read(name) for name in statuses}
        assert all(values[name] for name in ("seq_status", "seq_entries", "copy_status")), values
        dut.rst.value = 1
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        rtl.loaded = None
        values = {name: await rtl.driver.read(name) for name in statuses}
        assert not any(values.values()), f"after a reset with the units idle: {values}"
    assert runs[0] == runs[1], f"before and after the reset: {runs}"
