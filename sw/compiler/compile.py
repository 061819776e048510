"""Compile a Llama checkpoint for a target: the compiler's passes, in order, and the fit checks.

``compile_model(checkpoint, target, mode="fused")`` returns a
:class:`sw.compiler.program.CompiledModel`: one list of kernel launches per
attention-length bucket (powers of two times the lane count, up to the
context), the memory map and the memory image (weights in the layout their
GEMVs stream, RoPE and mask tables, program bitstreams).
"""

import time

import numpy as np

from sw.compiler.checkpoint import largest_memory, load_checkpoint
from sw.compiler.decode import Padding, decode_graph, pad_weights
from sw.compiler.fuse import fuse
from sw.compiler.launch import Launch
from sw.compiler.layout import is_bf16, layout
from sw.compiler.lower import lower
from sw.compiler.program import CompiledModel
from sw.errors import CompileError
from sw.runtime import launch_list

def max_context(shape, target):
    """The longest attention the target's PMUs hold: ``tp * head_dim`` words in the K-transposing PMU."""
    lanes, words = target.array.lanes, target.array.pmu_words
    tp = words // Padding.of(shape, lanes).head_dim // lanes * lanes
    return min(tp, shape.context_limit // lanes * lanes)


def check_fit(shape, target, context):
    """Raise CompileError naming the first size the target cannot take, needed vs available."""
    a, m = target.array, target.memory
    L, words = a.lanes, a.pmu_words
    pad = Padding.of(shape, L)             # sizes the array computes at: zero-padded to whole vectors
    d, f, hd = pad.hidden, pad.intermediate, pad.head_dim
    if 4 * L % m.word_bytes:
        raise CompileError(f"target {target.name}: a vector of {L} lanes ({4 * L} bytes) is not a whole number of "
                           f"{m.word_bytes}-byte memory words")
    if shape.num_heads % shape.num_kv_heads:
        raise CompileError(f"{shape.num_heads} heads are not a multiple of {shape.num_kv_heads} KV heads")
    for what, n in (("a GEMV input of hidden size", d), ("the down projection's input (intermediate size)", f),
                    ("the output projection's input (heads x head_dim)", shape.num_heads * hd),
                    ("the RoPE input (q and k heads x head_dim)", (shape.num_heads + shape.num_kv_heads) * hd)):
        if n > words:
            raise CompileError(f"{what}: {n} words do not fit one PMU of {words} words "
                               f"(ArrayParams.lanes x pmu_bank_words)")
    if context % L or context < L:
        raise CompileError(f"context {context} must be a positive multiple of the array's {L} lanes")
    if context > shape.context_limit:
        raise CompileError(f"context {context} exceeds the model's max_position_embeddings {shape.max_positions}"
                           + ("" if shape.context_limit == shape.max_positions else
                              f" x dynamic RoPE factor {shape.rope.factor:g} = {shape.context_limit}"))
    if context * hd > words:
        raise CompileError(f"attention over {context} positions: K of one head is {context} x {hd} = "
                           f"{context * hd} words, a PMU holds {words}; the target's longest context for this "
                           f"head_dim is {max_context(shape, target)}")


def buckets(context, lanes):
    out, tp = [], lanes
    while tp < context:
        out.append(tp)
        tp *= 2
    return out + [context]


def stream_dtypes(shape, target, weights):
    """Whether the GEMV weights and the embedding table stream as bf16 (``(gemv, embed)``).

    bf16 when every value is one (a bf16 checkpoint), and, for the embedding row, when a row
    of bf16 fills whole memory words.
    """
    names = [n for n in weights if n.endswith("_proj.weight") or n in ("lm_head.weight",
                                                                        "model.embed_tokens.weight")]
    gemv = all(is_bf16(weights[n]) for n in names)
    return gemv, gemv and (2 * weights["model.embed_tokens.weight"].shape[1]) % target.memory.word_bytes == 0


def _kernels_text(launches):
    lines = []
    for launch in launches:
        c, m = launch.units()
        reads = sum(1 for st in launch.streams if st.direction == "read")
        lines.append(f"  {launch.name}: {c} PCUs, {m} PMUs, {reads} AGCU reads, {len(launch.streams) - reads} writes, "
                     f"{len(launch.program.connections)} routes, {launch.program_region}: "
                     f"{', '.join(op.name for op in launch.ops)}")
    return "\n".join(lines)


def launch_entries(launches, mmap, target):
    """The launch-list entries of a step's ``launches`` (:mod:`sw.runtime.launch_list`), each with its
    program's Program Load record: the sequencer skips the load when that program is resident."""
    wb, entries = target.memory.word_bytes, []
    for launch in launches:
        r = mmap[launch.program_region]
        program = launch_list.program_pattern(r.tier, r.offset, len(launch.program.words), wb)
        directions = {"read": {}, "write": {}}
        for s in launch.streams:
            directions[s.direction][s.agcu] = launch_list.ListDirection(s.pattern(0, 0), s.token_stride,
                                                                        s.pos_stride)
        entries.append(launch_list.ListEntry(program, directions["read"], directions["write"]))
    return entries


def compile_model(checkpoint, target, *, mode="fused", context=None, trace=None):
    """Compile ``checkpoint`` (a path or a loaded :class:`Checkpoint`) for ``target``.

    The passes, in order: checkpoint (read and checked) -> graph (:func:`sw.compiler.decode.decode_graph`,
    checked) -> memory layout of weights, tables and KV caches -> chip ops per context bucket ->
    kernels (fusion, with placement and routes) -> memory map of scratch and programs -> the
    :class:`CompiledModel`. ``trace``, when given, is called with each pass's result as text
    (``openrdu compile --ir``).
    """
    show = trace or (lambda text: None)
    if mode not in ("fused", "unfused"):
        raise CompileError(f"mode must be 'fused' or 'unfused', not {mode!r}")
    start = time.perf_counter()
    # Weights are bounded by the largest named target's memory, or this target's if it is larger (a target file).
    memory = max(largest_memory(), (target.memory.hbm.capacity + target.memory.ddr.capacity, target.name))
    ckpt = load_checkpoint(checkpoint, memory=memory) if not hasattr(checkpoint, "weights") else checkpoint
    shape = ckpt.shape
    L = target.array.lanes
    context = max_context(shape, target) if context is None else context
    check_fit(shape, target, context)
    padding = Padding.of(shape, L)
    weights = pad_weights(shape, padding, ckpt.weights)
    gemv_bf16, embed_bf16 = stream_dtypes(shape, target, weights)
    show(f"== checkpoint\n  {shape}\n  weights streamed as {'bf16' if gemv_bf16 else 'fp32'}, "
         f"context {context} on {target.describe()}")
    graph = decode_graph(shape, context=context, padding=padding, weight_dtype="bf16" if gemv_bf16 else "fp32")
    show(f"== graph\n{graph}")

    steps = {tp: lower(graph, target, tp, gemv_bf16=gemv_bf16, embed_bf16=embed_bf16)
             for tp in buckets(context, L)}
    step = steps[context]
    show(f"== chip ops (attending over {context} positions; the other buckets differ only there)\n" +
         "\n".join(f"  {op}" for op in step.ops))
    mmap, image, zeroed = layout(step.placements, target, weights, gemv_bf16=gemv_bf16,
                                 embed_bf16=embed_bf16)
    for t in step.tensors.values():
        if t.home is None:
            mmap.add(t.scratch, 4 * t.words, "scratch")

    programs, built, all_buckets = {}, {}, {}
    for tp, step in steps.items():
        launches = []
        for index, (kernel_ops, program, streams) in enumerate(fuse(target, mmap, step.tensors, list(step.ops),
                                                                    fused=mode == "fused", cache=built)):
            words = np.asarray(program.words, np.uint32)
            key = words.tobytes()
            if key not in programs:
                region = f"program.{len(programs)}"
                pad = -words.size % (target.memory.word_bytes // 4)
                mmap.add(region, 4 * (words.size + pad), "program")
                image[region] = np.concatenate([words, np.zeros(pad, np.uint32)])
                programs[key] = region
            launches.append(Launch(f"k{index}", kernel_ops, program, streams, programs[key]))
        all_buckets[tp] = launches
    lists = {}
    for tp, launches in all_buckets.items():
        region = f"launches.{tp}"
        words = launch_list.encode(launch_entries(launches, mmap, target), target.memory, len(target.agcus))
        mmap.add(region, 4 * words.size, "launches")
        image[region], lists[tp] = words, region
    show(f"== kernels ({mode}; placed and routed; attending over {context} positions)\n"
         f"{_kernels_text(all_buckets[context])}")
    show(f"== memory map\n{mmap.table()}")
    compiled = CompiledModel(shape, target, mode, context, all_buckets, mmap, image, zeroed, "logits",
                             time.perf_counter() - start, str(getattr(ckpt, "path", "")), lists)
    show(f"== program: {len(all_buckets)} context buckets {sorted(all_buckets)}, {len(programs)} distinct "
         f"bitstreams, {sum(w.nbytes for w in image.values())} bytes of memory image\n")
    return compiled
