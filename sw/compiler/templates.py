"""The chip-op templates: each places its units through a KernelBuilder, consumes its inputs, produces its outputs.

:data:`TEMPLATES` maps a chip-op kind to its template.
"""

from facts.loopnest import MAX_COUNT
from sw.compiler.builder import FitError
from sw.compiler.launch import linear
from sw.compiler.layout import argmax_scale
from sw.compiler.memory_map import word_count
from sw.tile.pcu import PcuConfig, Stage, f32
from sw.tile.pmu import AddressPattern, PmuConfig, ReadMode


def _row_buffer(lanes, vectors, *, passes=1, buffers=1):
    words = vectors * lanes
    return PmuConfig(write=AddressPattern.linear(vectors, lanes), read=AddressPattern.linear(vectors, lanes),
                     buffers=buffers, buffer_words=words if buffers > 1 else 0, write_passes=passes,
                     read_passes=passes)


def _rmsnorm(b, op):
    L, d = b.lanes, op.attrs["d"]
    x, = op.inputs
    near = [b.near_tensor(x)]
    stats = b.unit("pcu", PcuConfig(stages=(Stage("mul", "r0", "r0", dst="r1"),), out_src="r1", reduce="sum",
                                    vo=False, so="group", so_scale=1.0 / op.attrs["size"], so_bias=op.attrs["eps"],
                                    so_func="rsqrt"), op.name, "stats", near)
    xbuf = b.unit("pmu", _row_buffer(L, d // L), op.name, "xbuf", near + [b.mesh(stats.pos)])
    norm = b.unit("pcu", PcuConfig(inputs=(0, 1), s0="per_group",
                                   stages=(Stage("mul", "r0", "s0"), Stage("mul", "r0", "r1"))),
                  op.name, "norm", [b.mesh(stats.pos), b.mesh(xbuf.pos)])
    b.use(x, [stats.vi0, xbuf.vi0])
    b.kernel.connect(stats.so0, norm.si0)
    b.kernel.connect(xbuf.vo0, norm.vi0)
    words = word_count(4 * d, b.wb, op.name)
    b.read(op.attrs["gain"], op.attrs["gain"], *linear(words), [norm.vi1])
    b.produce(op.outputs[0], norm.vo0)


def _gemv(b, op):
    """GEMV, one systolic PCU: x[k] broadcast from a PMU on vi0, weight rows on vi1, one tile of L outputs per walk.

    ``join`` (fused ops): a stream that joins each tile as it drains, on vi2: ``bias`` (the bias region,
    before the tail), ``add`` (the residual, the op's second input) or ``mul`` (the gate's SiLU output).
    """
    L, k_in, n_out = b.lanes, op.attrs["k"], op.attrs["n"]
    x = op.inputs[0]
    tiles = n_out // L
    chunk = op.attrs.get("chunk", k_in)
    bf16 = op.attrs.get("bf16", False)
    words = word_count((2 if bf16 else 4) * k_in * n_out, b.wb, op.name)
    if chunk == k_in:
        # One read pass walks the input once per tile (stride 0 over tiles), ending a group after each walk.
        xbuf = PmuConfig(write=AddressPattern.linear(k_in // L, L),
                         read=AddressPattern((k_in, tiles), (1, 0), last_level=0),
                         read_mode=ReadMode.BROADCAST, write_passes=1, read_passes=1)
    else:
        # The input does not fit the PMU: memory streams it once per tile, a chunk a pass (double-buffered where
        # two fit), so each tile's walk is the same k words in the same order; the weights' tile ends close groups.
        if b.on_chip(x):
            raise FitError(f"{op.name}: its input of {k_in} words is read from memory in chunks of {chunk}, so its "
                           f"producer ends the kernel before")
        passes, buffers = tiles * (k_in // chunk), 2 if 2 * chunk <= b.params.pmu_words else 1
        xbuf = PmuConfig(write=AddressPattern.linear(chunk // L, L), read=AddressPattern((chunk,), (1,)),
                         read_mode=ReadMode.BROADCAST, buffers=buffers, buffer_words=chunk if buffers > 1 else 0,
                         write_passes=passes, read_passes=passes)
    buf = b.unit("pmu", xbuf, op.name, "xbuf", [b.near_tensor(x)])
    tail, bias, join = op.attrs.get("tail", "none"), op.attrs.get("bias"), op.attrs.get("join")
    # A bias not joined in the drain takes a second PCU, and the tail with it.
    bias_pcu = bias and join != "bias"
    mac = b.unit("pcu", PcuConfig(inputs=(0, 1, 2) if join else (0, 1), group_src=0 if chunk == k_in else 1,
                                  systolic=True, systolic_rows=1, systolic_operand=bool(join),
                                  stages=(Stage("mul" if join == "mul" else "add", "r0", "r1"),) if join else (),
                                  tail="none" if bias_pcu else tail), op.name, "mac", [b.mesh(buf.pos)])
    b.kernel.connect(buf.vo0, mac.vi0)
    if chunk == k_in:
        b.use(x, [buf.vi0])
        b.read(op.attrs["weight"], op.attrs["weight"], *linear(words), [mac.vi1], bf16=bf16)
    else:
        t = b.tensors[x]
        home = t.home
        counts, strides = linear(word_count((2 if home and home.bf16 else 4) * k_in, b.wb, op.name))
        b.read(x, home.region if home else t.scratch, counts + (tiles,), strides + (0,), [buf.vi0],
               token_stride=home.token_stride if home else 0, pos_stride=home.pos_stride if home else 0,
               bf16=bool(home and home.bf16))
        tile = word_count((2 if bf16 else 4) * k_in * L, b.wb, op.name)
        counts, strides = linear(tile)
        b.read(op.attrs["weight"], op.attrs["weight"], counts + (tiles,), strides + (tile,), [mac.vi1],
               last_level=len(counts) - 1, bf16=bf16)
    out = mac.vo0
    if join == "bias":
        b.read(bias, bias, *linear(word_count(4 * n_out, b.wb, op.name)), [mac.vi2])
    elif join:
        other = op.inputs[1]
        if join == "add" and b.on_chip(other):
            # The residual is made long before the drains take it: a PMU holds it so its producer (which also
            # feeds the next RMSNorm) is not held. The gate's SiLU output (mul) comes tile by tile with the drains.
            hold = b.unit("pmu", _row_buffer(L, tiles), op.name, "operand", [b.near_tensor(other), b.mesh(mac.pos)])
            b.use(other, [hold.vi0])
            b.kernel.connect(hold.vo0, mac.vi2)
        else:
            b.use(other, [mac.vi2])
    if bias_pcu:
        # The bias joins each tile of outputs as it drains, before the tail (SiLU of gate + bias).
        add = b.unit("pcu", PcuConfig(inputs=(0, 1), group_src=0, stages=(Stage("add", "r0", "r1"),), tail=tail),
                     op.name, "bias", [b.mesh(mac.pos)])
        b.kernel.connect(mac.vo0, add.vi0)
        b.read(bias, bias, *linear(word_count(4 * n_out, b.wb, op.name)), [add.vi1])
        out = add.vo0
    home = op.attrs.get("out_home")
    if home:
        region, counts, strides, pos_stride = home
        b.write(op.name, out, region, counts, strides, pos_stride=pos_stride)
    else:
        b.produce(op.outputs[0], out)


def _elementwise(b, op):
    """``add`` (residual + other) and ``mul`` of two activation tensors."""
    L, n = b.lanes, op.attrs["words"]
    first, second = op.inputs
    near = [b.near_tensor(first), b.near_tensor(second)]
    alu = b.unit("pcu", PcuConfig(inputs=(0, 1), group_src=0, stages=(Stage(op.kind, "r0", "r1"),)),
                 op.name, op.kind, near)
    if op.kind == "add" and b.on_chip(first):
        # The residual arrives long before the other operand: a PMU holds it so its producer is not held.
        rbuf = b.unit("pmu", _row_buffer(L, n // L), op.name, "residual", [b.near_tensor(first), b.mesh(alu.pos)])
        b.use(first, [rbuf.vi0])
        b.kernel.connect(rbuf.vo0, alu.vi0)
    else:
        b.use(first, [alu.vi0])
    b.use(second, [alu.vi1])
    b.produce(op.outputs[0], alu.vo0)


def _rope(b, op):
    L, hd, heads = b.lanes, op.attrs["head_dim"], op.attrs["heads"]
    nv = hd // L
    half = nv // 2
    x, = op.inputs
    near = [b.near_tensor(x)]
    words = b.params.pmu_words
    if heads * hd <= words:
        def whole():
            return dict(write=AddressPattern.linear(heads * nv, L), write_passes=1, read_passes=1)
        straight, rotated = ((nv, heads), (L, hd)), ((half, 2, heads), (L, -half * L, hd))
    else:
        # All heads do not fit a PMU: a head a pass (double-buffered where two fit), the same vectors in order.
        buffers = 2 if 2 * hd <= words else 1

        def whole():
            return dict(write=AddressPattern.linear(nv, L), write_passes=heads, read_passes=heads, buffers=buffers,
                        buffer_words=hd if buffers > 1 else 0)
        straight, rotated = ((nv,), (L,)), ((half, 2), (L, -half * L))
    # Each PMU gets patterns of its own: a shared object would be written once by reference in the program file.
    straight = b.unit("pmu", PmuConfig(read=AddressPattern(*straight, last_level=0), **whole()), op.name, "x", near)
    # rotate_half at vector granularity: the second half of each head, then the first.
    rotated = b.unit("pmu", PmuConfig(read=AddressPattern(*rotated, offset=half * L, last_level=1), **whole()),
                     op.name, "x_rot", near)
    sin = b.unit("pcu", PcuConfig(inputs=(0, 1), stages=(Stage("mul", "r0", "r1"),)), op.name, "sin",
                 [b.mesh(rotated.pos)])
    out = b.unit("pcu", PcuConfig(inputs=(0, 1, 2), stages=(Stage("fma", "r0", "r1", "r2"),)), op.name, "cos",
                 [b.mesh(straight.pos), b.mesh(sin.pos)])
    b.use(x, [straight.vi0, rotated.vi0])
    b.kernel.connect(rotated.vo0, sin.vi0)
    b.kernel.connect(straight.vo0, out.vi0)
    b.kernel.connect(sin.vo0, out.vi2)
    row = word_count(4 * hd, b.wb, op.name)
    for table, sink in (("rope.sin", sin.vi1), ("rope.cos", out.vi1)):
        b.read(table, table, (row, heads), (1, 0), [sink], pos_stride=4 * hd)
    region, counts, strides = op.attrs["out_home"]
    b.write(op.name, out.vo0, region, counts, strides, pos_stride=4 * hd)


def softmax(b, name, scores, maxima, vectors, rows, also=()):
    """Softmax of ``rows`` rows of ``vectors`` vectors: ``scores`` (a vo0, also feeding the sinks ``also``) and each
    row's max (``maxima``, a so0). A PMU holds each row while its max arrives, a PCU takes ``exp(x - max)``
    and folds the reciprocal of its sum, a PMU holds the exponentials while the sum arrives, a PCU scales
    them. Returns the scaling PCU (its vo0 is the probabilities)."""
    L = b.lanes
    buffers = 2 if 2 * vectors * L <= b.params.pmu_words else 1
    xbuf = b.unit("pmu", _row_buffer(L, vectors, passes=rows, buffers=buffers), name, "scores", [b.pos(scores)])
    expo = b.unit("pcu", PcuConfig(s0="per_group", stages=(Stage("sub", "r0", "s0"),), tail="exp", reduce="sum",
                                   so="group", so_func="recip"), name, "exp_sum", [b.pos(maxima), b.mesh(xbuf.pos)])
    ebuf = b.unit("pmu", _row_buffer(L, vectors, passes=rows, buffers=buffers), name, "exp", [b.mesh(expo.pos)])
    scale = b.unit("pcu", PcuConfig(s0="per_group", stages=(Stage("mul", "r0", "s0"),)), name, "normalise",
                   [b.mesh(expo.pos), b.mesh(ebuf.pos)])
    k = b.kernel
    k.connect(scores, [*also, xbuf.vi0] if also else xbuf.vi0)
    k.connect(maxima, expo.si0)
    k.connect(xbuf.vo0, expo.vi0)
    k.connect(expo.vo0, ebuf.vi0)
    k.connect(expo.so0, scale.si0)
    k.connect(ebuf.vo0, scale.vi0)
    return scale


def _attention_scores(b, op):
    """Per head: q . K^T scaled, masked and its max in one systolic PCU, then softmax; K arrives row by row and a
    PMU transposes it.

    ``chunk`` (positions, default ``tp``): K longer than that PMU holds goes through it a chunk per pass, its
    rows in order, so the PCU sees the same columns in the same order and one head's scores stay one row.
    """
    L, hd, nh, nkv, tp, tmax = (b.lanes, op.attrs["head_dim"], op.attrs["heads"], op.attrs["kv_heads"],
                                op.attrs["tp"], op.attrs["tmax"])
    nv, tb, group = hd // L, tp // L, nh // nkv
    chunk = op.attrs.get("chunk", tp)
    words = b.params.pmu_words
    if nh * hd <= words:
        q = dict(write=AddressPattern.linear(nh * nv, L), read=AddressPattern((hd, tb, nh), (1, 0, hd), last_level=0),
                 write_passes=1, read_passes=1)
    else:
        # All heads' q do not fit a PMU: a head a pass, the same words in the same order.
        qbuffers = 2 if 2 * hd <= words else 1
        q = dict(write=AddressPattern.linear(nv, L), read=AddressPattern((hd, tb), (1, 0), last_level=0),
                 buffers=qbuffers, buffer_words=hd if qbuffers > 1 else 0, write_passes=nh, read_passes=nh)
    qbuf = b.unit("pmu", PmuConfig(read_mode=ReadMode.BROADCAST, **q), op.name, "q")
    kbuffers = 2 if 2 * chunk * hd <= words else 1
    passes = nh * (tp // chunk)
    kbuf = b.unit("pmu", PmuConfig(write=AddressPattern((nv, chunk), (chunk * L, L)),
                                   read=AddressPattern((L, nv, chunk // L), (1, chunk * L, L * L), last_level=None),
                                   read_mode=ReadMode.COLUMN, stripe=True, buffers=kbuffers,
                                   buffer_words=chunk * hd if kbuffers > 1 else 0, write_passes=passes,
                                   read_passes=passes),
                  op.name, "kT", [b.mesh(qbuf.pos)])
    # Each drained row (L keys) is scaled, then takes its mask row from vi2; the max folds over vi2's groups
    # (one head's rows), so the scores and their maximum leave the same PCU.
    score = b.unit("pcu", PcuConfig(inputs=(0, 1, 2), group_src=0, systolic=True, systolic_rows=1,
                                    systolic_operand=True,
                                    stages=(Stage("mul", "r0", "const", const=f32(op.attrs["scale"])),
                                            Stage("add", "r0", "r1")), reduce="max", so="group"),
                   op.name, "qk", [b.mesh(qbuf.pos), b.mesh(kbuf.pos)])
    b.kernel.connect(qbuf.vo0, score.vi0)
    b.kernel.connect(kbuf.vo0, score.vi1)
    scale = softmax(b, op.name, score.vo0, score.so0, tb, nh)
    slots = op.attrs["slots"]
    row = word_count(4 * hd, b.wb, op.name)
    head_stride = tmax * row
    b.read(f"{op.name}.q", slots, (row, nh), (1, head_stride), [qbuf.vi0], pos_stride=4 * hd)
    # A head's K in one loop level, or where it counts past what one level holds a level per chunk (per block of
    # keys if even a chunk does).
    keys = chunk if chunk * row <= MAX_COUNT else L
    counts, strides = ((tp * row, group, nkv), (1, 0, head_stride)) if tp * row <= MAX_COUNT else \
        ((keys * row, tp // keys, group, nkv), (1, keys * row, 0, head_stride))
    b.read(f"{op.name}.k", slots, counts, strides, [kbuf.vi0], offset=nh * tmax * 4 * hd)
    mask_row = word_count(4 * tp, b.wb, op.name)
    b.read("mask", op.attrs["mask"], (mask_row, nh), (1, 0), [score.vi2], last_level=0, pos_stride=4 * tmax)
    b.produce(op.outputs[0], scale.vo0)


def _attention_values(b, op):
    """Per head: probabilities (broadcast from a PMU) times V, V streamed in lane blocks."""
    L, hd, nh, nkv, tp, tmax = (b.lanes, op.attrs["head_dim"], op.attrs["heads"], op.attrs["kv_heads"],
                                op.attrs["tp"], op.attrs["tmax"])
    nv, tb, group = hd // L, tp // L, nh // nkv
    probs, = op.inputs
    buffers = 2 if 2 * tp <= b.params.pmu_words else 1
    pbuf = b.unit("pmu", PmuConfig(write=AddressPattern.linear(tb, L),
                                   read=AddressPattern((tp, nv), (1, 0), last_level=0), read_mode=ReadMode.BROADCAST,
                                   buffers=buffers, buffer_words=tp if buffers > 1 else 0, write_passes=nh,
                                   read_passes=nh), op.name, "p", [b.near_tensor(probs)])
    pv = b.unit("pcu", PcuConfig(inputs=(0, 1), group_src=0, systolic=True, systolic_rows=1), op.name, "pv",
                [b.mesh(pbuf.pos)])
    b.use(probs, [pbuf.vi0])
    b.kernel.connect(pbuf.vo0, pv.vi0)
    vw = word_count(4 * L, b.wb, op.name)
    b.read(f"{op.name}.v", op.attrs["values"], (tp * vw, nv, group, nkv), (1, tmax * vw, 0, nv * tmax * vw),
           [pv.vi1])
    b.produce(op.outputs[0], pv.vo0)


def _argmax(b, op):
    """Greedy decoding's token on chip: the first index of the largest of ``n`` logits, as ``-index`` in fp32.

    A PCU folds the max ``m`` of the logits (a padding logit gets ``-inf`` added first); the key PCUs then
    compute, per logit ``v`` at index ``i``, ``-i * s - max(m - v, 0) * 2**127`` with ``s = 2**-k <= 1 / n``
    (:func:`sw.compiler.layout.argmax_scale`, from a table that holds ``-inf`` for the padding): exactly
    ``-i * s`` where ``v == m``; below ``-2`` elsewhere, since a positive difference that is a normal fp32
    number is at least ``2**-126``. Their max is ``-s`` times the first index of ``m``, which a last PCU scales
    back to ``-index`` and turns into a vector for the AGCU to write to the ``token`` region. The four stages
    spread over as many PCUs as the PCU's stage count needs. A NaN logit (or ``+inf``, whose difference is
    NaN) makes the result NaN: the runtime then reads the logits and picks on the host. Two logits closer than
    ``2**-126`` (both tiny) count as equal, and the lower index wins, as it does for equal ones.
    """
    L, n, S = b.lanes, op.attrs["n"], b.params.stages
    logits, pad = op.attrs["logits"], op.attrs.get("pad")
    words = word_count(4 * n, b.wb, op.name)
    peak = b.unit("pcu", PcuConfig(inputs=(0, 1) if pad else (0,), stages=(Stage("add", "r0", "r1"),) if pad else (),
                                   reduce="max", vo=False, so="group"), op.name, "max")
    b.read(f"{op.name}.max", logits, *linear(words), [peak.vi0])
    if pad:
        b.read(f"{op.name}.pad", pad, *linear(words), [peak.vi1])
    steps = [Stage("sub", "s0", "r0"), Stage("max", "r0", "zero"), Stage("mul", "r0", "const", const=f32(2.0 ** 127)),
             Stage("sub", "r1", "r0")]
    keys = []
    for k in range(0, len(steps), S):
        first, final = k == 0, k + S >= len(steps)
        fold = dict(reduce="max", so="group", vo=False) if final else {}
        unit = b.unit("pcu", PcuConfig(inputs=(0, 1) if final else (0,), s0="per_group" if first else "none",
                                       stages=tuple(steps[k:k + S]), **fold),
                      op.name, "key", [b.mesh((keys[-1] if keys else peak).pos)])
        if keys:
            b.kernel.connect(keys[-1].vo0, unit.vi0)
        keys.append(unit)
    b.kernel.connect(peak.so0, keys[0].si0)
    b.read(f"{op.name}.key", logits, *linear(words), [keys[0].vi0])
    b.read(f"{op.name}.index", op.attrs["index"], *linear(words), [keys[-1].vi1])
    emit = b.unit("pcu", PcuConfig(s0="per_group", stages=(Stage("mul", "s0", "const", const=f32(1 / argmax_scale(n))),)),
                  op.name, "emit", [b.mesh(keys[-1].pos)])
    b.kernel.connect(keys[-1].so0, emit.si0)
    vector = word_count(4 * L, b.wb, op.name)
    b.read(f"{op.name}.one", op.attrs["index"], *linear(vector), [emit.vi0])
    b.write(op.name, emit.vo0, op.attrs["token"], *linear(vector))


TEMPLATES = {"rmsnorm": _rmsnorm, "gemv": _gemv, "add": _elementwise, "mul": _elementwise, "rope": _rope,
             "attention_scores": _attention_scores, "attention_values": _attention_values, "argmax": _argmax}
