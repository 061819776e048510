"""A looped kernel (:mod:`sw.compiler.loop`) on the co-simulated chip against the fast model.

A residual chain of ``LAYERS`` layers, ``x[i + 1] = W[i] x[i] + x[i]`` (one GEMV whose drain adds the
residual), compiled by the kernel-looping pass like a model's decoder layers: a copy kernel puts x[0] in the
first residual row, one looped kernel walks the layers' weights with its patterns' outer level, reads row i
only once layer i - 1 has written it (an AGCU read gated with lag 1) and writes row i + 1, and a last kernel
reads the final row. The same calls run on :class:`cosim.device.CocotbDevice` and on
:class:`sw.runtime.device.ModelDevice`: every residual row and the output bit-identical, the looped
kernel's cycles within ``TOLERANCE`` of the RTL's (measured: 1.1% with 16 x 16 weights, 0.6% with
64 x 64). The AGCU testbench (``looped_gated_reads``) shows an ungated read of such a chain seeing stale rows.
"""

import os

import cocotb
import numpy as np

from cosim.device import CocotbDevice
from hw.mem.params import HBM
from sw.compiler.launch import Launch
from sw.compiler.layout import fp32_words, gemv_layout
from sw.compiler.loop import carry_region, loop_layers
from sw.compiler.memory_map import MemoryMap
from sw.compiler.ops import ChipOp, ChipTensor
from sw.runtime.device import ModelDevice
from sw.target import CHIP

SEED = int(os.environ.get("OPENRDU_SEED", "1"))
LAYERS = 3
# 16 x 16 weights: latency-bound layers; 64 x 64: each layer's 1,024 weight words stream at the tier's rate.
SIZES = (4 * CHIP.array.lanes, 16 * CHIP.array.lanes)
TOLERANCE = 0.05


def looped_chain(seed, d, layers=LAYERS):
    """The chain's chip ops compiled by :func:`loop_layers` on ``CHIP``: (kernels, memory map, image, reference).

    ``image``: region -> uint32 words (weights, x[0]); ``reference``: the residual rows x[0..layers] and the
    output ``W_out x[layers]`` as float32 arrays computed in float64 and rounded per step, for orientation only
    (bit-exactness is against the fast model).
    """
    rng = np.random.default_rng(seed)
    mmap = MemoryMap(CHIP.memory)
    image = {}
    for i in range(layers):
        mmap.add(f"w.L{i}.mv", 4 * d * d, "weight")
    mmap.add("w.head", 4 * d * d, "weight")
    mmap.add("act.x0", 4 * d, "scratch")
    mmap.add("out", 4 * d, "output")
    weights = [rng.normal(0, 0.3, (d, d)).astype(np.float32) for _ in range(layers + 1)]
    x0 = rng.normal(0, 1, d).astype(np.float32)
    for i, w in enumerate(weights):
        image[f"w.L{i}.mv" if i < layers else "w.head"] = fp32_words(gemv_layout(w, CHIP.array.lanes))
    image["act.x0"] = x0.view(np.uint32)
    tensors = {"x0": ChipTensor("x0", d)}
    ops = []
    for i in range(layers):
        x_in = "x0" if i == 0 else f"L{i - 1}.x"
        tensors[f"L{i}.x"] = ChipTensor(f"L{i}.x", d)
        ops.append(ChipOp(f"L{i}.mv", "gemv", (x_in, x_in), (f"L{i}.x",),
                          dict(bf16=False, k=d, n=d, weight=f"w.L{i}.mv", join="add")))
    ops.append(ChipOp("head", "gemv", (f"L{layers - 1}.x",), (), dict(bf16=False, k=d, n=d, weight="w.head",
                                                                         out_home=("out", (d * 4 // 16,), (1,), 0)),
                      writes_home=("out",)))
    kernels, why = loop_layers(CHIP, mmap, tensors, ops)
    assert kernels is not None, why
    rows = [x0]
    for w in weights[:layers]:
        rows.append((w.astype(np.float64) @ rows[-1] + rows[-1]).astype(np.float32))
    return kernels, mmap, image, rows + [(weights[-1].astype(np.float64) @ rows[-1]).astype(np.float32)]


async def run_chain(device, kernels, mmap, image, d):
    """Write ``image``, run the kernels in order, read every residual row and the output back.

    Returns ``(rows, output, kernel cycles of each launch)``.
    """
    wb = CHIP.memory.word_bytes
    for region, words in image.items():
        await device.write(HBM, mmap[region].offset, np.asarray(words, np.uint32))
    at = mmap.add("programs", 64 * 1024, "program").offset
    cycles = []
    for ops, program, streams in kernels:
        words = np.asarray(program.words, np.uint32)
        words = np.concatenate([words, np.zeros(-words.size % (wb // 4), np.uint32)])
        await device.write(HBM, at, words)
        await device.load_program(program, HBM, at)
        cycles.append(await device.execute(*Launch(ops[0].name, ops, program, streams).patterns(0, 0)))
        at += words.nbytes
    rows = [await device.read(HBM, mmap[carry_region(i)].offset, d) for i in range(LAYERS + 1)]
    return rows, await device.read(HBM, mmap["out"].offset, d), cycles


@cocotb.test()
async def looped_residual_chain_matches_the_model(dut):
    rtl = CocotbDevice(dut, CHIP, limit=400_000)
    await rtl.start()
    for d in SIZES:
        kernels, mmap, image, reference = looped_chain(SEED, d)
        assert [k[1].iterations for k in kernels] == [1, LAYERS, 1]
        looped = kernels[1][2]
        gated = [s for s in looped if s.direction == "read" and s.region == carry_region(0)]
        assert gated and all(s.lag == 1 and s.after is not None for s in gated)
        rtl_rows, rtl_out, rtl_cycles = await run_chain(rtl, kernels, mmap, image, d)
        model_rows, model_out, model_cycles = await run_chain(ModelDevice(CHIP), kernels, mmap, image, d)
        for i, (a, b) in enumerate(zip(rtl_rows, model_rows)):
            assert np.array_equal(a, b), f"d={d}, residual row {i}: RTL {a.view(np.float32)} model {b.view(np.float32)}"
        assert np.array_equal(rtl_out, model_out), f"d={d}: output"
        # The chain computes what it should (float32 per step vs float64 per step: close, not equal).
        got = [r.view(np.float32) for r in rtl_rows] + [rtl_out.view(np.float32)]
        for i, (g, want) in enumerate(zip(got, reference)):
            assert np.allclose(g, want, rtol=1e-3, atol=1e-3), f"d={d}, row {i}: {g} vs {want}"
        ratio = model_cycles[1] / rtl_cycles[1]
        dut._log.info(f"d={d}: looped kernel of {LAYERS} layers: RTL {rtl_cycles[1]} cycles, model {model_cycles[1]} "
                      f"({ratio:.3f}); copy {rtl_cycles[0]} vs {model_cycles[0]}, head {rtl_cycles[2]} vs "
                      f"{model_cycles[2]}")
        assert abs(ratio - 1) <= TOLERANCE, f"d={d}: looped kernel: model {model_cycles[1]} vs RTL {rtl_cycles[1]}"
