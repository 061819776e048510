"""Compile a Llama checkpoint for a target: the compiler's passes, in order, and the fit checks.

``compile_model(checkpoint, target, mode="fused")`` returns a
:class:`sw.compiler.program.CompiledModel`: one list of kernel launches per
attention-length bucket (powers of two times the lane count, up to the
context), the memory map and the memory image (weights in the layout their
GEMVs stream, RoPE and mask tables, program bitstreams).
"""

import time
from math import isqrt

import numpy as np

from facts.loopnest import MAX_COUNT
from hw.tile.pmu import PASS_BITS
from sw.compiler.checkpoint import Weights, bf16_exact, largest_memory, load_checkpoint
from sw.compiler.decode import Padding, decode_graph, pad_weights
from sw.compiler.fuse import fuse
from sw.compiler.launch import Launch
from sw.compiler.layout import layout, round_bf16
from sw.compiler.loop import loop_layers
from sw.compiler.prefill import compile_prefill
from sw.compiler.lower import k_chunk, lower
from sw.compiler.program import CompiledModel
from sw.errors import CheckpointError, CompileError
from sw.runtime import launch_list

def default_context(shape, target):
    """The context compiled when none is asked for: the longest whose K of one head (``context x head_dim``
    words) fits the transposing PMU whole, so no bucket chunks K."""
    lanes, words = target.array.lanes, target.array.pmu_words
    tp = words // Padding.of(shape, lanes).head_dim // lanes * lanes
    return min(tp, shape.context_limit // lanes * lanes)


def attention_bytes(shape, target, context):
    """HBM bytes that grow with the context: ``(KV caches, mask tables, RoPE tables)``, fp32.

    Each layer's q/k cache holds a row for every q and k head (the current q goes there too), its V cache
    one per KV head; one ``context x context`` mask per distinct sliding window (0: none) and the RoPE
    cos and sin tables, ``context`` rows of head_dim each.
    """
    hd = Padding.of(shape, target.array.lanes).head_dim
    kv = shape.num_layers * (shape.num_heads + 2 * shape.num_kv_heads) * context * hd * 4
    masks = len({shape.window(i) for i in range(shape.num_layers)}) * context * context * 4
    return kv, masks, 2 * context * hd * 4


def _attention_problem(shape, target, context):
    """Why attention over ``context`` positions does not fit ``target`` (resource, needed vs available), or None."""
    a, wb = target.array, target.memory.word_bytes
    L, words, hd, nh = a.lanes, a.pmu_words, Padding.of(shape, a.lanes).head_dim, shape.num_heads
    if context > words:
        return (f"a head's scores row is {context} words (the scores, exp and probability PMUs hold one), a PMU "
                f"holds {words}")
    if 4 * L * context // wb > MAX_COUNT:
        return (f"V of one head streams as {4 * L * context // wb} memory words per lane block in one AGCU loop "
                f"level, which counts to {MAX_COUNT}")
    chunk = k_chunk(context, hd, L, words)
    if chunk is None:
        return f"a block of {L} keys of head_dim {hd} is {L * hd} words, a PMU holds {words}"
    if nh * (context // chunk) > (1 << PASS_BITS) - 1:
        return (f"K of one head in {context // chunk} chunks of {chunk} positions for {nh} heads is "
                f"{nh * (context // chunk)} passes of the transposing PMU, which counts to {(1 << PASS_BITS) - 1}")
    kv, masks, rope = attention_bytes(shape, target, context)
    if kv + masks + rope > target.memory.hbm.capacity:
        return (f"its KV caches ({kv} bytes), mask tables ({masks}) and RoPE tables ({rope}) need "
                f"{kv + masks + rope} bytes of HBM before any weight, the HBM holds {target.memory.hbm.capacity}")
    return None


def max_context(shape, target):
    """The longest context ``target`` takes for ``shape``: within the model's positions, a head's scores row
    in one PMU, K streamed and chunked through the transposing PMU (:func:`sw.compiler.lower.k_chunk`) and the
    attention's own HBM regions (:func:`attention_bytes`; the weights are the memory map's to check)."""
    a, cap = target.array, target.memory.hbm.capacity
    L = a.lanes
    kv, masks, rope = (n // L for n in attention_bytes(shape, target, L))   # bytes per position (masks: squared)
    linear, square = kv + rope, masks // L
    hbm = (isqrt(linear * linear + 4 * square * cap) - linear) // (2 * square)
    top = min(shape.context_limit, a.pmu_words, MAX_COUNT * target.memory.word_bytes // (4 * L), hbm) // L * L
    while top >= L and _attention_problem(shape, target, top):
        top -= L
    return top


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
    if d > words:
        raise CompileError(f"a vector of hidden size (the RMSNorm input, the residual, a GEMV input): {d} words do "
                           f"not fit one PMU of {words} words (ArrayParams.lanes x pmu_bank_words)")
    # Wider GEMV inputs stream through their PMU in chunks, once per tile of outputs (lower.k_chunk).
    for what, k in (("the down projection's input (intermediate size)", f),
                    ("the output projection's input (heads x head_dim)", shape.num_heads * hd)):
        chunk = k_chunk(k, 1, L, words)
        if d // L * (k // chunk) > (1 << PASS_BITS) - 1:
            raise CompileError(f"{what}: {k} words in {k // chunk} chunks of {chunk} for each of {d // L} tiles of "
                               f"outputs are {d // L * (k // chunk)} passes of its PMU, which counts to "
                               f"{(1 << PASS_BITS) - 1}")
    if context % L or context < L:
        raise CompileError(f"context {context} must be a positive multiple of the array's {L} lanes")
    if context > shape.context_limit:
        raise CompileError(f"context {context} exceeds the model's max_position_embeddings {shape.max_positions}"
                           + ("" if shape.context_limit == shape.max_positions else
                              f" x dynamic RoPE factor {shape.rope.factor:g} = {shape.context_limit}"))
    if why := _attention_problem(shape, target, context):
        raise CompileError(f"attention over {context} positions: {why}; the target's attention takes at most "
                           f"{max_context(shape, target)} positions for this model (less where the weights and "
                           f"programs leave less HBM)")


def buckets(context, lanes):
    out, tp = [], lanes
    while tp < context:
        out.append(tp)
        tp *= 2
    return out + [context]


WEIGHTS_DTYPES = ("auto", "bf16", "fp32")
_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float64": "fp64"}


def _matrices(weights):
    return [n for n in weights if n.endswith("_proj.weight") or n in ("lm_head.weight", "model.embed_tokens.weight")]


def stream_dtypes(shape, target, weights, policy="auto", hidden=None):
    """Whether the GEMV weights and the embedding table stream as bf16 (``(gemv, embed)``) under ``policy``.

    ``auto``: bf16 when every value of the matrices is one (a bf16 checkpoint), else fp32 words;
    ``bf16``: bf16 (the matrices rounded to it, :func:`weights_policy`); ``fp32``: fp32 words. The
    embedding row streams as bf16 only when the GEMVs do and a row of ``hidden`` (default: the shape's)
    bf16 values fills whole memory words. ``weights``: a :class:`sw.compiler.checkpoint.Weights` (its
    ``bf16`` names are used, nothing is read) or any mapping.
    """
    if policy not in WEIGHTS_DTYPES:
        raise CompileError(f"weights dtype must be one of {', '.join(WEIGHTS_DTYPES)}, not {policy!r}")
    known = getattr(weights, "bf16", None)
    gemv = policy == "bf16" or policy == "auto" and all(n in known if known is not None else bf16_exact(weights[n])
                                                        for n in _matrices(weights))
    return gemv, gemv and 2 * (hidden or shape.hidden_size) % target.memory.word_bytes == 0


def weights_policy(ckpt, target, policy="auto"):
    """The weights to lay out under ``policy``, how they stream, and the summary's words for it.

    Returns ``(weights, gemv_bf16, embed_bf16, text)``: ``weights`` as lazy as ``ckpt.weights``, with
    ``bf16`` every matrix (projections, embedding, lm_head) not already made of bf16 values rounded to
    the nearest one (:func:`sw.compiler.layout.round_bf16`); bf16 matrices are passed through untouched,
    so a bf16 checkpoint compiles bit for bit as under ``auto``. Norm gains and biases stay fp32.
    """
    weights = ckpt.weights
    if not isinstance(weights, Weights):
        weights = Weights(weights.__getitem__, weights, {n for n, w in weights.items() if bf16_exact(w)})
    hidden = Padding.of(ckpt.shape, target.array.lanes).hidden
    gemv, embed = stream_dtypes(ckpt.shape, target, weights, policy, hidden)
    names = _matrices(weights)
    stored = "/".join(sorted({_SHORT.get(ckpt.weight_dtypes.get(n, "float32"), "fp32") for n in names}))
    exact = all(n in weights.bf16 for n in names)
    if policy == "bf16" and not exact:
        already = weights.bf16

        def rounded(name, w):
            if w.ndim != 2 or name in already:
                return w
            w = round_bf16(w)
            if not np.isfinite(w).all():
                raise CheckpointError(f"{ckpt.path}: weight {name!r} holds values beyond bf16's largest "
                                      f"(3.39e38): --weights-dtype bf16 cannot round them")
            return w
        weights = weights.map(rounded, already | set(names))
        text = f"{stored} rounded to bf16 (--weights-dtype bf16)"
    elif gemv:
        text = "bf16 as stored" if stored == "bf16" else f"{stored} holding bf16 values only, streamed as bf16"
    else:
        why = {"fp32": "--weights-dtype fp32", "auto": "not every value is a bf16 value; --weights-dtype bf16 "
                                                        "rounds them"}[policy]
        text = f"{stored} streamed as fp32 words ({why})"
    if gemv and not embed:
        text += "; embedding rows as fp32 words (a bf16 row is not whole memory words)"
    return weights, gemv, embed, text


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


MODES = ("fused", "unfused", "looped")


def compile_model(checkpoint, target, *, mode="fused", context=None, trace=None, weights_dtype="auto",
                  prefill=False):
    """Compile ``checkpoint`` (a path or a loaded :class:`Checkpoint`) for ``target``.

    The passes, in order: checkpoint (read and checked) -> graph (:func:`sw.compiler.decode.decode_graph`,
    checked) -> memory layout of weights, tables and KV caches -> chip ops per context bucket ->
    kernels (fusion, with placement and routes) -> memory map of scratch and programs -> the
    :class:`CompiledModel`. ``trace``, when given, is called with each pass's result as text
    (``openrdu compile --ir``). ``weights_dtype`` is the weights policy, ``auto``, ``bf16`` or ``fp32``
    (:func:`weights_policy`); weights are read one tensor at a time as the layout fills each region.
    ``prefill``: also compile the prompt's chunk kernels (:mod:`sw.compiler.prefill`), which the runtime
    runs instead of a decode step per prompt token.
    """
    show = trace or (lambda text: None)
    if mode not in MODES:
        raise CompileError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if weights_dtype not in WEIGHTS_DTYPES:
        raise CompileError(f"weights dtype must be one of {', '.join(WEIGHTS_DTYPES)}, not {weights_dtype!r}")
    start = time.perf_counter()
    # Weights are bounded by the largest named target's memory, or this target's if it is larger (a target file).
    memory = max(largest_memory(), (target.memory.hbm.capacity + target.memory.ddr.capacity, target.name))
    ckpt = load_checkpoint(checkpoint, memory=memory) if not hasattr(checkpoint, "weights") else checkpoint
    shape = ckpt.shape
    L = target.array.lanes
    context = default_context(shape, target) if context is None else context
    check_fit(shape, target, context)
    padding = Padding.of(shape, L)
    weights, gemv_bf16, embed_bf16, weights_text = weights_policy(ckpt, target, weights_dtype)
    weights = weights.map(lambda name, w: pad_weights(shape, padding, {name: w})[name])
    show(f"== checkpoint\n  {shape}\n  weights: {weights_text}, context {context} on {target.describe()}")
    graph = decode_graph(shape, context=context, padding=padding, weight_dtype="bf16" if gemv_bf16 else "fp32")
    show(f"== graph\n{graph}")

    steps = {tp: lower(graph, target, tp, gemv_bf16=gemv_bf16, embed_bf16=embed_bf16,
                       fused=mode != "unfused")
             for tp in buckets(context, L)}
    step = steps[context]
    show(f"== chip ops (attending over {context} positions; the other buckets differ only there)\n" +
         "\n".join(f"  {op}" for op in step.ops))
    mmap, image, zeroed = layout(step.placements, target, weights, gemv_bf16=gemv_bf16,
                                 embed_bf16=embed_bf16)
    for t in step.tensors.values():
        if t.home is None:
            mmap.add(t.scratch, 4 * t.words, "scratch")

    programs, built, all_buckets, loop_note, looped = {}, {}, {}, "", {}
    if mode == "looped":
        # Every bucket looped, or none: a program is looped or fused as a whole. The residual rows the pass
        # allocates go into a copy of the map, kept only when it loops.
        trial = mmap.copy()
        for tp, step in steps.items():
            looped[tp], why = loop_layers(target, trial, step.tensors, list(step.ops), cache=built)
            if looped[tp] is None:
                where = f"attending over {tp} positions: " if len(steps) > 1 else ""
                loop_note, looped = f"layers not looped ({where}{why}); fused instead", {}
                break
        else:
            mmap = trial
    def register(program):
        """The region holding ``program``'s bitstream: one per distinct bitstream."""
        words = np.asarray(program.words, np.uint32)
        key = words.tobytes()
        if key not in programs:
            region = f"program.{len(programs)}"
            pad = -words.size % (target.memory.word_bytes // 4)
            mmap.add(region, 4 * (words.size + pad), "program")
            image[region] = np.concatenate([words, np.zeros(pad, np.uint32)])
            programs[key] = region
        return programs[key]

    for tp, step in steps.items():
        launches = []
        kernels = looped.get(tp) or fuse(target, mmap, step.tensors, list(step.ops), fused=mode != "unfused",
                                         cache=built)
        for index, (kernel_ops, program, streams) in enumerate(kernels):
            launches.append(Launch(f"k{index}", kernel_ops, program, streams, register(program)))
        all_buckets[tp] = launches
    embed, chunks, prefill_note = None, [], ""
    if prefill:
        flat = steps[context] if mode == "unfused" else lower(graph, target, context, gemv_bf16=gemv_bf16,
                                                               embed_bf16=embed_bf16, fused=False)
        embed, chunks, prefill_note = compile_prefill(target, mmap, image, list(flat.ops), flat.tensors, context,
                                                      sorted(steps), register)
        show(f"== prefill: {prefill_note or f'{len(chunks)} chunk programs (block, positions attended): ' + ', '.join(f'({c.block}, {c.tp})' for c in chunks)}")
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
                             time.perf_counter() - start, str(getattr(ckpt, "path", "")), lists,
                             weights_dtype, weights_text, loop_note, "token" if "token" in mmap.regions else "",
                             chunks, embed, prefill_note)
    show(f"== program: {len(all_buckets)} context buckets {sorted(all_buckets)}, {len(programs)} distinct "
         f"bitstreams, {sum(w.nbytes for w in image.values())} bytes of memory image\n")
    return compiled
