"""Batched prefill: the prompt's decoder layers as kernels over a chunk of positions, the GEMVs as GEMMs.

A decode step feeds one token through every layer and streams every weight once for it. Prefill runs the
prompt's positions (all but the last) through the layers a chunk at a time, op by op, each op one kernel over
the chunk's ``block`` positions:

- a projection is a **GEMM** (``prefill_gemm``): a PMU holds ``stages`` positions' inputs and is read by
  columns (lane ``s`` = position ``s``'s input at ``k``), the weight rows stream on vi1 of a systolic PCU and
  each tile of ``lanes`` outputs drains ``stages`` rows, one per position. ``ways`` such blocks share one
  weight stream (multicast), so the weights stream once per ``ways x stages`` positions. Each output is the
  same fused multiply-add chain over ``k``, in the same order, as the decode GEMV's: bit-identical results;
- attention is a GEMM per head where the array has room (``prefill_scores``, ``prefill_values``): the head's K
  goes once into the transposing PMU and V once into a PMU, each read once per block of ``stages`` query
  positions; the scores' drained rows are put back in position order for the softmax. Elsewhere (the 2x4
  chip's scores) the decode step's template runs looped over the positions, as the other ops do;
- every other op (RMSNorm, RoPE, the residual adds, the SwiGLU product) is the decode step's own template
  **looped over the positions**: every PMU runs its passes once per position and every AGCU pattern gains an
  outer level (:meth:`sw.loopnest.LoopNest.with_outer`) stepping a position: a row of the chunk's activation
  regions (``act.pf.<tensor>``), the position's row of the KV cache and of the RoPE and mask tables, nothing
  for the weights. Attention at position ``p`` attends over the chunk's bucket ``tp`` with mask row ``p``, so
  the keys past ``p`` weigh exactly 0, as in the decode step's bucket;
- the embedding rows are copied into the chunk's first activation rows by a kernel per position
  (``prefill_embed``: an AGCU pattern cannot step through rows that move with different token ids).

Each kernel runs once over the whole chunk (``Program.iterations`` stays 1: its patterns and pass counts
cover every position). A chunk's launches take ``pos`` = the chunk's first position (the tables and the KV
cache move with it; the chunk's own rows do not); the embedding copies take the token and the row in the
chunk. The last prompt token then runs as an ordinary decode step, which reads the KV cache prefill wrote
and gives the first logits. A chunk longer than what is left of the prompt is padded (its padding positions
repeat the row of the last position it prefills): their KV rows lie past the prompt, masked for every real position and
overwritten by the decode steps that reach them.

Layers whose ops equal layer 0's (names aside) reuse layer 0's programs, their streams moved to the layer's
regions, and an attention head reuses head 0's. Where a prefill kernel cannot be built (an input of
``stages`` positions past one PMU, a pattern with no loop level left) the compiler says why
(``CompiledModel.prefill_note``) and the runtime feeds the prompt token by token.
"""

import re
from dataclasses import dataclass, replace

import numpy as np

from facts.loopnest import LEVELS
from sw.compiler.builder import FitError, KernelBuilder
from sw.compiler.fuse import build_kernel
from sw.compiler.launch import Launch, linear
from sw.compiler.lower import k_chunk
from sw.compiler.memory_map import word_count
from sw.compiler.ops import ChipOp, ChipTensor
from sw.compiler.layout import MASKED, fp32_words, mask_table
from sw.compiler.templates import TEMPLATES, softmax
from sw.errors import CompileError
from sw.tile.pcu import PcuConfig, Stage, f32
from sw.tile.pmu import AddressPattern, PmuConfig, ReadMode

# Blocks of positions one weight stream feeds, most first (each takes a PMU and a systolic PCU).
WAYS = (4, 2, 1)
# Chunk sizes compiled (rounded up to a multiple of the PCU's stages, at most the context).
BLOCKS = (8, 32, 128)


@dataclass(frozen=True)
class PrefillKernels:
    """The kernels of one prefill chunk of ``block`` positions whose attention spans ``tp`` positions."""

    block: int
    tp: int
    launches: list[Launch]


def blocks(context, stages):
    """The chunk sizes compiled for ``context`` positions on PCUs of ``stages`` stages."""
    up = lambda n: -(-n // stages) * stages
    return sorted({up(b) for b in BLOCKS if up(b) <= context})


def chunks(prompt, sizes, context, buckets):
    """How ``prompt`` positions (those before the last prompt token) split into chunks: ``(start, block, tp)``.

    Each chunk is the smallest block that covers what is left when it wastes less than half of itself, else
    the largest that fits in what is left; the last chunk is padded to the smallest block. ``tp``: the
    smallest attention bucket covering the chunk. Positions that no block fits before the context ends are
    left to decode steps: the returned chunks cover ``sum(block)`` positions from 0, possibly fewer than
    ``prompt``.
    """
    out, start = [], 0
    while start < prompt:
        left = prompt - start
        fits = [b for b in sizes if start + b <= context]
        if not fits:
            break
        cover = [b for b in fits if b >= left]
        under = [b for b in fits if b <= left]
        if cover and (2 * left > cover[0] or not under):
            block = cover[0]
        else:
            block = under[-1]
        tp = min(t for t in buckets if t >= start + block)
        out.append((start, block, tp))
        start += block
    return out


def _scratch(tensor):
    return f"pf.{tensor}"


def _gemm(b, op):
    """``ways`` blocks of ``stages`` positions at a time: each block's inputs in a PMU read by columns, one weight
    stream multicast to each block's systolic PCU, each tile of ``lanes`` outputs drained as ``stages`` rows (one
    per position) and written row by row, or into the V cache. The weights stream once per ``ways x stages``
    positions."""
    L, S, k, n, ways = b.lanes, b.params.stages, op.attrs["k"], op.attrs["n"], op.attrs["ways"]
    nv, tiles = k // L, n // L
    bf16 = op.attrs.get("bf16", False)
    tail, bias = op.attrs.get("tail", "none"), op.attrs.get("bias")
    x, wb = op.inputs[0], b.wb
    row, vw = word_count(4 * k, wb, op.name), word_count(4 * L, wb, op.name)
    home = op.attrs.get("out_home")
    macs, outs = [], []
    for way in range(ways):
        xbuf = _gemm_buffer(b, op, f"xbuf{way}", nv, tiles, blocks=1)
        mac = b.unit("pcu", PcuConfig(inputs=(0, 1), group_src=0, systolic=True, systolic_rows=S,
                                      tail="none" if bias else tail), op.name, f"mac{way}", [b.mesh(xbuf.pos)])
        b.kernel.connect(xbuf.vo0, mac.vi0)
        b.read(f"{x}.{way}", b.tensors[x].scratch, *linear(S * row), [xbuf.vi0], offset=way * S * row * wb)
        out = mac.vo0
        if bias:
            add = b.unit("pcu", PcuConfig(inputs=(0, 1), group_src=0, stages=(Stage("add", "r0", "r1"),), tail=tail),
                         op.name, f"bias{way}", [b.mesh(mac.pos)])
            b.kernel.connect(mac.vo0, add.vi0)
            out = add.vo0
            outs.append(add)
        macs.append(mac)
        if home:
            # The V cache: tile t of position s at the position's row of lane block t (decode: vw, nv, kv heads).
            region, counts, strides, pos_stride = home
            b.write(f"{op.name}.{way}", out, region, (vw, S, tiles), (1, pos_stride // wb, strides[1]),
                    offset=way * S * pos_stride, pos_stride=pos_stride)
        else:
            out_row = word_count(4 * n, wb, op.name)
            b.write(f"{op.name}.{way}", out, b.tensors[op.outputs[0]].scratch, (vw, S, tiles), (1, out_row, vw),
                    offset=way * S * out_row * wb)
    b.read(op.attrs["weight"], op.attrs["weight"], *linear(word_count((2 if bf16 else 4) * k * n, wb, op.name)),
           [mac.vi1 for mac in macs], bf16=bf16)
    if bias:
        # Each drained row takes its tile's bias vector: the tile's vector once per position.
        b.read(bias, bias, (vw, S, tiles), (1, 0, vw), [add.vi1 for add in outs])


def _gemm_buffer(b, op, what, vectors, reads, blocks=None):
    """A PMU holding ``stages`` positions' rows of ``vectors`` vectors in the GEMM layout (vector ``j`` of
    position ``s`` at row ``j * stages + s``), read by columns ``reads`` times per block (lane ``s``: position
    ``s``'s word), a pass per block (default: every block of the chunk). The lanes past ``stages`` read the
    next block's rows (or a margin of ``lanes`` rows after the last), which the systolic PCU does not use."""
    L, S = b.lanes, b.params.stages
    span, words = (S * vectors + L) * L, b.params.pmu_words
    if span > words:
        raise FitError(f"{op.name}: {S} positions' rows of {vectors * L} words and a {L}-row margin ({span} words) "
                       f"do not fit one PMU of {words}")
    buffers = 2 if 2 * span <= words else 1
    blocks = op.attrs["block"] // S if blocks is None else blocks
    return b.unit("pmu", PmuConfig(write=AddressPattern((vectors, S), (S * L, L)),
                                   read=AddressPattern((L, vectors, reads), (1, S * L, 0), last_level=1),
                                   read_mode=ReadMode.COLUMN, stripe=True, buffers=buffers,
                                   buffer_words=span if buffers > 1 else 0, write_passes=blocks,
                                   read_passes=blocks), op.name, what)


def _scores(b, op):
    """One head's scores for the chunk, ``stages`` positions per systolic tile: q rows of a block in a PMU read by
    columns, the head's K once into a transposing PMU read once per block, each tile of ``lanes`` keys drained as
    ``stages`` rows (scaled, the mask row added from the ``mask_gemm`` table on vi2); a PMU puts the rows back in
    position order, a PCU folds each position's max, and the softmax runs per position as in the decode step.
    The same products and sums in the same order as the decode step's, so the same probabilities."""
    a = op.attrs
    L, S, hd, nh, nkv, tp, tmax, B, h = (b.lanes, b.params.stages, a["head_dim"], a["heads"], a["kv_heads"], a["tp"],
                                         a["tmax"], a["block"], a["head"])
    nv, tb, blocks, words = hd // L, tp // L, a["block"] // b.params.stages, b.params.pmu_words
    if tp * hd > words:
        raise FitError(f"{op.name}: K of one head over {tp} positions ({tp * hd} words) does not fit one PMU")
    qbuf = _gemm_buffer(b, op, "q", nv, tb)
    kbuf = b.unit("pmu", PmuConfig(write=AddressPattern((nv, tp), (tp * L, L)),
                                   read=AddressPattern((L, nv, tb), (1, tp * L, L * L), last_level=None),
                                   read_mode=ReadMode.COLUMN, stripe=True, write_passes=1, read_passes=blocks,
                                   reads_per_fill=blocks), op.name, "kT", [b.mesh(qbuf.pos)])
    score = b.unit("pcu", PcuConfig(inputs=(0, 1, 2), group_src=0, systolic=True, systolic_rows=S,
                                    systolic_operand=True,
                                    stages=(Stage("mul", "r0", "const", const=f32(a["scale"])),
                                            Stage("add", "r0", "r1"))),
                   op.name, "qk", [b.mesh(qbuf.pos), b.mesh(kbuf.pos)])
    sbuffers = 2 if 2 * S * tp <= words else 1
    order = b.unit("pmu", PmuConfig(write=AddressPattern((S, tb), (tp, L)),
                                    read=AddressPattern((tb, S), (L, tp), last_level=0), buffers=sbuffers,
                                    buffer_words=S * tp if sbuffers > 1 else 0, write_passes=blocks,
                                    read_passes=blocks), op.name, "order", [b.mesh(score.pos)])
    peak = b.unit("pcu", PcuConfig(reduce="max", vo=False, so="group"), op.name, "max", [b.mesh(order.pos)])
    k = b.kernel
    k.connect(qbuf.vo0, score.vi0)
    k.connect(kbuf.vo0, score.vi1)
    k.connect(score.vo0, order.vi0)
    norm = softmax(b, op.name, order.vo0, peak.so0, tb, B, also=[peak.vi0])
    slots, wb = a["slots"], b.wb
    row = word_count(4 * hd, wb, op.name)
    head_stride = tmax * row
    b.read(f"{op.name}.q", slots, (row, B), (1, row), [qbuf.vi0], offset=h * head_stride * wb, pos_stride=4 * hd)
    b.read(f"{op.name}.k", slots, (tp * row,), (1,), [kbuf.vi0],
           offset=(nh * tmax * hd * 4) + (h // (nh // nkv)) * head_stride * wb)
    block_mask = word_count(4 * S * tp, wb, op.name)
    b.read("mask", a["mask_gemm"], (block_mask, blocks), (1, word_count(4 * S * tmax, wb, op.name)), [score.vi2],
           pos_stride=4 * tmax)
    probs = b.tensors[op.outputs[0]].scratch
    # Each position's row of each head, as the decode step's scores (per position, head after head) lie.
    tpw = word_count(4 * tp, wb, op.name)
    b.write(op.name, norm.vo0, probs, (tpw, B), (1, nh * tpw), offset=h * tp * 4)


def _values(b, op):
    """One head's attention output for the chunk: the probabilities of ``stages`` positions in a PMU read by
    columns, the head's V once into a PMU read once per block, each lane block of the head drained as ``stages``
    rows and written to the positions' rows; per output the decode step's sum in the same order."""
    a = op.attrs
    L, S, hd, nh, nkv, tp, tmax, B, h = (b.lanes, b.params.stages, a["head_dim"], a["heads"], a["kv_heads"], a["tp"],
                                         a["tmax"], a["block"], a["head"])
    nv, tb, blocks, words = hd // L, tp // L, B // S, b.params.pmu_words
    if tp * hd > words:
        raise FitError(f"{op.name}: V of one head over {tp} positions ({tp * hd} words) does not fit one PMU")
    pbuf = _gemm_buffer(b, op, "p", tb, nv)
    vbuf = b.unit("pmu", PmuConfig(write=AddressPattern.linear(nv * tp, L), read=AddressPattern.linear(nv * tp, L),
                                   write_passes=1, read_passes=blocks, reads_per_fill=blocks), op.name, "v",
                  [b.mesh(pbuf.pos)])
    pv = b.unit("pcu", PcuConfig(inputs=(0, 1), group_src=0, systolic=True, systolic_rows=S), op.name, "pv",
                [b.mesh(pbuf.pos), b.mesh(vbuf.pos)])
    b.kernel.connect(pbuf.vo0, pv.vi0)
    b.kernel.connect(vbuf.vo0, pv.vi1)
    wb = b.wb
    probs = b.tensors[op.inputs[0]].scratch
    tpw = word_count(4 * tp, wb, op.name)
    b.read(op.name, probs, (tpw, B), (1, nh * tpw), [pbuf.vi0], offset=h * tp * 4)
    vw = word_count(4 * L, wb, op.name)
    b.read(f"{op.name}.v", a["values"], (tp * vw, nv), (1, tmax * vw), [vbuf.vi0],
           offset=(h // (nh // nkv)) * nv * tmax * vw * wb)
    qrow = word_count(4 * nh * hd, wb, op.name)
    b.write(op.name, pv.vo0, b.tensors[op.outputs[0]].scratch, (vw, S, nv, blocks), (1, qrow, vw, S * qrow),
            offset=h * hd * 4)


PREFILL_TEMPLATES = dict(TEMPLATES, prefill_gemm=_gemm, prefill_scores=_scores, prefill_values=_values)
# Kernels over the whole chunk at once (the others are built for one position, or one block, and looped).
WHOLE = ("prefill_scores", "prefill_values")


def _per_step(op, stages):
    """Positions one pass of ``op``'s kernel body covers."""
    return stages * op.attrs["ways"] if op.kind == "prefill_gemm" else 1


def _looped(target, tensors, op, program, streams, block):
    """``program`` and ``streams`` over a chunk of ``block`` positions: each pattern's outer level steps a
    position's rows (``_per_step`` positions an iteration). ValueError when a pattern has no level left."""
    wb, q = target.memory.word_bytes, _per_step(op, target.array.stages)
    iterations = block // q
    rows = {t.scratch: 4 * t.words // wb for t in tensors.values() if t.home is None}
    out = []
    for s in streams:
        if s.region in rows:
            step = q * rows[s.region]
        elif s.pos_stride:
            step = q * s.pos_stride // wb
        else:
            step = 0
        out.append(replace(s, nest=s.nest.with_outer(iterations, step, LEVELS)))
    return program, out


_LAYER = re.compile(r"\bL(\d+)\.")


def _layer_of(op):
    m = _LAYER.match(op.name)
    return int(m.group(1)) if m else None


def prefill_ops(step_ops, tensors):
    """The chunk ops of a decode step's unfused chip ops (its layers; the ops after them stay the decode step's)
    and their tensors, one position's words each: ``(ops, tensors)``; CompileError naming an op no prefill
    kernel computes."""
    layered = [op for op in step_ops if _layer_of(op) is not None]
    renamed = {name: _scratch(name) for name in tensors}
    pf_tensors = {_scratch(name): ChipTensor(_scratch(name), t.words) for name, t in tensors.items()}
    ops = []
    for op in layered:
        kind = op.kind
        if kind == "gemv":
            if op.attrs.get("chunk") or op.attrs.get("join"):
                raise CompileError(f"{op.name}: a GEMV whose input streams in chunks has no prefill GEMM")
            kind = "prefill_gemm"
        elif kind not in ("rmsnorm", "rope", "attention_scores", "attention_values", "add", "mul"):
            raise CompileError(f"{op.name} ({op.kind}): no prefill kernel computes it")
        ops.append(replace(op, kind=kind, inputs=tuple(renamed[t] for t in op.inputs),
                           outputs=tuple(renamed[t] for t in op.outputs)))
    return ops, pf_tensors


def _embed_kernel(target, mmap, tensors, source, dest):
    """The copy of one embedding row (``source``, homed at the embedding table) into row ``pos`` of ``dest``."""
    b = KernelBuilder(target, mmap, tensors, set())
    pcu = b.unit("pcu", PcuConfig(), "prefill_embed", "copy")
    b.read_tensor(source, [pcu.vi0])
    words = tensors[dest].words
    counts, strides = linear(word_count(4 * words, b.wb, f"tensor {dest}"))
    b.write("prefill_embed", pcu.vo0, tensors[dest].scratch, counts, strides, pos_stride=4 * words)
    op = ChipOp("prefill_embed", "copy", (source,), (dest,))
    return Launch("prefill_embed", [op], b.kernel.build(), b.streams)


def _canonical(op, carry_in):
    """``op`` with its layer index and residual input taken out of its names: equal for every layer's op."""
    layer = _layer_of(op)
    strip = lambda v: re.sub(rf"\bL{layer}\.", "L#.", v) if isinstance(v, str) else \
        tuple(strip(x) for x in v) if isinstance(v, tuple) else v
    names = lambda ts: tuple("X#in" if t == carry_in else strip(t) for t in ts)
    return (strip(op.name), op.kind, repr({k: strip(v) for k, v in op.attrs.items()}), names(op.inputs),
            names(op.outputs))


def compile_prefill(target, mmap, image, step_ops, tensors, context, buckets, register):
    """The prefill kernels of a model whose decode step (at its largest bucket, unfused) is ``step_ops``.

    ``mmap`` and ``image`` gain the chunk activation regions and the GEMM mask tables; ``register(program)``
    returns the memory region holding a program (the caller's, shared with the decode step's programs).
    Returns ``(embed, chunks, note)``: the embedding copy's :class:`Launch`, a :class:`PrefillKernels` per
    (block, tp), and "" or why there is no prefill (then ``embed`` is None and ``chunks`` empty).
    """
    L, S = target.array.lanes, target.array.stages
    sizes = blocks(context, S)
    if not sizes:
        return None, [], f"no prefill chunk of a multiple of {S} positions fits the context of {context}"
    try:
        ops, pf = prefill_ops(step_ops, tensors)
    except CompileError as e:
        return None, [], f"no prefill ({e}); the prompt runs token by token"
    top = max(sizes)
    for t in pf.values():
        mmap.add(t.scratch, 4 * t.words * top, "scratch")
    for mask in sorted({op.attrs["mask"] for op in ops if op.kind == "attention_scores"}):
        window = int(mask.removeprefix("mask.w")) if mask.startswith("mask.w") else 0
        # Rows in blocks of `stages` positions (the last block padded with masked rows when stages do not
        # divide the context), each block's rows interleaved tile by tile as the GEMM drains them.
        rows = -(-context // S) * S
        table = np.full((rows, context), MASKED, np.float32)
        table[:context] = mask_table(context, window)
        table = table.reshape(rows // S, S, context // L, L).transpose(0, 2, 1, 3)
        words = fp32_words(table.ravel())
        mmap.add(f"{mask}.gemm", 4 * words.size, "table")
        image[f"{mask}.gemm"] = words
    carry = {}
    for op in ops:
        layer = _layer_of(op)
        if layer not in carry:
            made = {t for o in ops if _layer_of(o) == layer for t in o.outputs}
            carry[layer] = next(t for o in ops if _layer_of(o) == layer for t in o.inputs if t not in made)
    embed_source = next(name for name, t in tensors.items() if t.home is not None)
    local = dict(pf, **{embed_source: tensors[embed_source]})
    embed = _embed_kernel(target, mmap, local, embed_source, carry[0])
    embed.program_region = register(embed.program)
    built, out = {}, []

    def build(op, block, tensors_tp):
        key = (block, _canonical(op, carry[_layer_of(op)]))
        if key not in built and op.kind in WHOLE and op.attrs["head"]:
            # Heads differ only in where their streams start: head 0's program, this head's streams.
            program, _ = build(replace(op, attrs=dict(op.attrs, head=0)), block, tensors_tp)
            try:
                b = KernelBuilder(target, mmap, tensors_tp, set(op.outputs))
                PREFILL_TEMPLATES[op.kind](b, op)
                b.finish(set(op.outputs))
                built[key] = (op, program, b.streams)
            except (FitError, ValueError, CompileError) as e:
                built[key] = f"{op.name} over {block} positions: {e}"
        if key not in built:
            try:
                whole = op.kind in WHOLE
                program, streams = build_kernel(target, mmap, tensors_tp, [op], set(op.outputs),
                                                templates=PREFILL_TEMPLATES,
                                                iterations=1 if whole else block // _per_step(op, S))
                built[key] = (op, program, streams) if whole else \
                    (op, *_looped(target, tensors_tp, op, program, streams, block))
            except (FitError, ValueError, CompileError) as e:
                built[key] = f"{op.name} over {block} positions: {e}"
        if isinstance(built[key], str):
            raise CompileError(built[key])
        model, program, streams = built[key]
        return program, _moved(mmap, streams, model, op)

    for block in sizes:
        for tp in (t for t in buckets if t >= block):
            # The scores of a position are a row per head over the positions attended.
            at = {o.outputs[0]: ChipTensor(o.outputs[0], o.attrs["heads"] * tp) for o in ops
                  if o.kind == "attention_scores"}
            tensors_tp = dict(pf, **at)
            launches = []
            try:
                for op in ops:
                    op = _at_bucket(op, tp, target)
                    variants = [op]
                    if op.kind == "prefill_gemm":
                        # As many blocks per weight stream as the array's units and the chunk allow.
                        for ways in (w for w in WAYS if block % (w * S) == 0):
                            variants = [replace(op, attrs=dict(op.attrs, ways=ways))]
                            try:
                                build(variants[0], block, tensors_tp)
                                break
                            except CompileError:
                                if ways == 1:
                                    raise
                    if op.kind in ("attention_scores", "attention_values"):
                        # A GEMM per head where its units fit the array, else the decode template per position.
                        kind = "prefill_scores" if op.kind == "attention_scores" else "prefill_values"
                        extra = {"mask_gemm": f"{op.attrs['mask']}.gemm"} if kind == "prefill_scores" else {}
                        heads = [replace(op, name=f"{op.name}.h{h}", kind=kind,
                                         attrs=dict(op.attrs, head=h, block=block, **extra))
                                 for h in range(op.attrs["heads"])]
                        try:
                            build(heads[0], block, tensors_tp)
                            variants = heads
                        except CompileError:
                            pass
                    for variant in variants:
                        program, streams = build(variant, block, tensors_tp)
                        launches.append(Launch(f"p{len(launches)}", [variant], program, streams, register(program)))
            except CompileError as e:
                return None, [], f"no prefill ({e}); the prompt runs token by token"
            out.append(PrefillKernels(block, tp, launches))
    return embed, out, ""


def _at_bucket(op, tp, target):
    """``op`` attending over ``tp`` positions (attention ops; the others as they are)."""
    if op.kind not in ("attention_scores", "attention_values"):
        return op
    attrs = dict(op.attrs, tp=tp)
    attrs.pop("chunk", None)
    chunk = k_chunk(tp, op.attrs["head_dim"], target.array.lanes, target.array.pmu_words)
    if chunk is None:
        raise CompileError(f"{op.name}: K of {target.array.lanes} positions does not fit a PMU")
    if chunk < tp and op.kind == "attention_scores":
        attrs["chunk"] = chunk
    return replace(op, attrs=attrs)


def _moved(mmap, streams, model, op):
    """``streams`` built for ``model`` (an op of some layer), moved to ``op``'s regions: each region named after
    ``model``'s tensors or layer becomes ``op``'s, at the same place within it."""
    if model is op:
        return streams
    names = {}
    for a, b in zip(model.inputs + model.outputs, op.inputs + op.outputs):
        names[f"act.{a}"] = f"act.{b}"
    la, lb = _layer_of(model), _layer_of(op)
    out = []
    for s in streams:
        region = names.get(s.region) or re.sub(rf"\bL{la}\.", f"L{lb}.", s.region)
        src, dst = mmap[s.region], mmap[region]
        if src.nbytes != dst.nbytes or src.tier != dst.tier:
            raise CompileError(f"{op.name}: region {region} differs from {s.region} in size or tier")
        out.append(replace(s, region=region, offset=dst.offset + s.offset - src.offset))
    return out
