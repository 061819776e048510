"""Compile a Llama checkpoint for a target: lower the decode step to chip ops, pack kernels, lay out memory.

``compile_model(checkpoint, target, mode="fused")`` returns a
:class:`sw.compiler.mapping.CompiledModel`: one list of kernel launches per
attention-length bucket (powers of two times the lane count, up to the
context), the memory map and the memory image (weights in the layout their
GEMVs stream, RoPE and mask tables, program bitstreams).
"""

import time

import numpy as np

from sw.compiler.checkpoint import load_checkpoint
from sw.compiler.mapping import (MASKED, ChipOp, CompiledModel, CompileError, Home, MemoryMap, _words, Launch,
                                 pack)
from sw.model.reference import rope_tables


def _fp32_words(array):
    return np.ascontiguousarray(np.asarray(array, dtype=np.float32)).view(np.uint32).reshape(-1)


def is_bf16(array):
    """Whether every value is a bf16 value (its fp32 pattern's low 16 bits are zero)."""
    return not np.any(_fp32_words(array) & 0xFFFF)


def _bf16_words(array):
    """bf16 values packed two to a 32-bit word, the first in the low half (as the AGCU widens them)."""
    halves = (_fp32_words(array) >> 16).astype("<u2")
    if halves.size % 2:
        halves = np.concatenate([halves, np.zeros(1, "<u2")])
    return halves.view("<u4")


def gemv_layout(w, lanes):
    """A (n, k) weight as its GEMV streams it: per tile of ``lanes`` outputs, k rows of ``lanes`` (zero-padded)."""
    n, k = w.shape
    tiles = -(-n // lanes)
    padded = np.zeros((tiles * lanes, k), np.float32)
    padded[:n] = w
    return padded.reshape(tiles, lanes, k).transpose(0, 2, 1)


def max_context(shape, target):
    """The longest attention the target's PMUs hold: ``tp * head_dim`` words in the K-transposing PMU."""
    lanes, words = target.array.lanes, target.array.pmu_words
    tp = words // shape.head_dim // lanes * lanes
    return min(tp, shape.max_positions // lanes * lanes)


def check_fit(shape, target, context):
    """Raise CompileError naming the first size the target cannot take, needed vs available."""
    a, m = target.array, target.memory
    L, words = a.lanes, a.pmu_words
    d, f, hd = shape.hidden_size, shape.intermediate_size, shape.head_dim
    if 4 * L % m.word_bytes:
        raise CompileError(f"target {target.name}: a vector of {L} lanes ({4 * L} bytes) is not a whole number of "
                           f"{m.word_bytes}-byte memory words")
    for what, n in (("hidden size", d), ("intermediate size", f), ("head_dim", hd)):
        if n % L:
            raise CompileError(f"{what} {n} is not a multiple of the array's {L} lanes")
    if hd % (2 * L):
        raise CompileError(f"head_dim {hd}: RoPE rotates half-heads of {hd // 2} values, not a multiple of the "
                           f"array's {L} lanes")
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
    if context > shape.max_positions:
        raise CompileError(f"context {context} exceeds the model's max_position_embeddings {shape.max_positions}")
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
    return gemv, gemv and (2 * shape.hidden_size) % target.memory.word_bytes == 0


def _layout(shape, target, context, weights):
    """Memory map and image: weights as streamed, tables, KV caches, scratch for every activation."""
    L = target.array.lanes
    hd, nh, nkv = shape.head_dim, shape.num_heads, shape.num_kv_heads
    mmap, image, zeroed = MemoryMap(target.memory), {}, []
    gemv_bf16, embed_bf16 = stream_dtypes(shape, target, weights)
    matrix = _bf16_words if gemv_bf16 else _fp32_words

    def put(name, words, what):
        mmap.add(name, 4 * words.size, what)
        image[name] = words

    put("w.embed", (_bf16_words if embed_bf16 else _fp32_words)(weights["model.embed_tokens.weight"]), "weight")
    for i in range(shape.num_layers):
        p = f"model.layers.{i}."
        w = lambda part: weights[p + part + ".weight"]
        put(f"w.L{i}.norm1", _fp32_words(w("input_layernorm")), "weight")
        qk = np.concatenate([w("self_attn.q_proj"), w("self_attn.k_proj")])
        put(f"w.L{i}.qk", matrix(gemv_layout(qk, L)), "weight")
        put(f"w.L{i}.v", matrix(gemv_layout(w("self_attn.v_proj"), L)), "weight")
        put(f"w.L{i}.o", matrix(gemv_layout(w("self_attn.o_proj"), L)), "weight")
        put(f"w.L{i}.norm2", _fp32_words(w("post_attention_layernorm")), "weight")
        for part in ("gate", "up", "down"):
            put(f"w.L{i}.{part}", matrix(gemv_layout(w(f"mlp.{part}_proj"), L)), "weight")
        # q of this step and every position's k, one row of head_dim per position and head.
        mmap.add(f"kv.L{i}.qk", 4 * (nh + nkv) * context * hd, "kv_cache")
        # V by lane blocks: [kv head][block of L dims][position][L], so a head's block streams contiguously.
        mmap.add(f"kv.L{i}.v", 4 * nkv * context * hd, "kv_cache")
        zeroed += [f"kv.L{i}.qk", f"kv.L{i}.v"]
    put("w.norm", _fp32_words(weights["model.norm.weight"]), "weight")
    head = weights["model.embed_tokens.weight" if shape.tie_word_embeddings else "lm_head.weight"]
    put("w.lm_head", matrix(gemv_layout(head, L)), "weight")
    cos = np.zeros((context, hd), np.float32)
    sin = np.zeros((context, hd), np.float32)
    for pos in range(context):
        c, s = rope_tables(hd, pos, shape.rope_theta)
        cos[pos], sin[pos] = c, np.concatenate([-s[:hd // 2], s[hd // 2:]])
    put("rope.cos", _fp32_words(cos), "table")
    put("rope.sin", _fp32_words(sin), "table")
    put("mask", _fp32_words(np.where(np.arange(context)[None, :] <= np.arange(context)[:, None], 0.0, MASKED)),
        "table")
    vocab_padded = -(-shape.vocab_size // L) * L
    mmap.add("logits", 4 * vocab_padded, "output")
    return mmap, image, zeroed


def chip_ops(shape, target, context, tp, *, gemv_bf16=False, embed_bf16=False):
    """The decode step as chip ops, attending over ``tp`` positions, and its activation tensors.

    ``gemv_bf16`` / ``embed_bf16``: the weights and the embedding table are stored as bf16.
    """
    L, wb = target.array.lanes, target.memory.word_bytes
    d, f, hd, nh, nkv = (shape.hidden_size, shape.intermediate_size, shape.head_dim, shape.num_heads,
                         shape.num_kv_heads)
    eps = shape.rms_norm_eps
    ops, tensors = [], {}

    def tensor(name, words, home=None):
        tensors[name] = {"words": words, "scratch": f"act.{name}", "home": home}
        return name

    def op(name, kind, inputs, outputs, **attrs):
        reads = attrs.pop("reads_home", ())
        writes = attrs.pop("writes_home", ())
        ops.append(ChipOp(name, kind, list(inputs), list(outputs), attrs, tuple(reads), tuple(writes)))

    row = _words(4 * hd, wb, "head_dim")
    vw = _words(4 * L, wb, "vector")
    nv = hd // L
    x = tensor("x0", d, Home("w.embed", token_stride=(2 if embed_bf16 else 4) * d, bf16=embed_bf16))

    def gemv(name, inputs, outputs, **attrs):
        op(name, "gemv", inputs, outputs, bf16=gemv_bf16, **attrs)
    for i in range(shape.num_layers):
        n = lambda s: f"L{i}.{s}"
        slots, values = f"kv.L{i}.qk", f"kv.L{i}.v"
        op(n("norm1"), "rmsnorm", [x], [tensor(n("h"), d)], d=d, eps=eps, gain=f"w.L{i}.norm1")
        gemv(n("qk"), [n("h")], [tensor(n("qk_raw"), (nh + nkv) * hd)], k=d, n=(nh + nkv) * hd,
           weight=f"w.L{i}.qk")
        gemv(n("v"), [n("h")], [], k=d, n=nkv * hd, weight=f"w.L{i}.v",
           out_home=(values, (vw, nv, nkv), (1, context * vw, nv * context * vw), 4 * L), writes_home=[values])
        op(n("rope"), "rope", [n("qk_raw")], [], head_dim=hd, heads=nh + nkv,
           out_home=(slots, (row, nh + nkv), (1, context * row)), writes_home=[slots])
        attn = dict(head_dim=hd, heads=nh, kv_heads=nkv, tp=tp, tmax=context)
        op(n("scores"), "attention_scores", [], [tensor(n("probs"), nh * tp)], slots=slots, reads_home=[slots],
           **attn)
        op(n("pv"), "attention_values", [n("probs")], [tensor(n("attn"), nh * hd)], values=values,
           reads_home=[values], **attn)
        gemv(n("o"), [n("attn")], [tensor(n("o_out"), d)], k=nh * hd, n=d, weight=f"w.L{i}.o")
        op(n("add1"), "add", [x, n("o_out")], [tensor(n("x_mid"), d)], words=d)
        op(n("norm2"), "rmsnorm", [n("x_mid")], [tensor(n("h2"), d)], d=d, eps=eps, gain=f"w.L{i}.norm2")
        gemv(n("gate"), [n("h2")], [tensor(n("gate_act"), f)], k=d, n=f, weight=f"w.L{i}.gate", tail="silu")
        gemv(n("up"), [n("h2")], [tensor(n("up_out"), f)], k=d, n=f, weight=f"w.L{i}.up")
        op(n("mul"), "mul", [n("gate_act"), n("up_out")], [tensor(n("act"), f)], words=f)
        gemv(n("down"), [n("act")], [tensor(n("down_out"), d)], k=f, n=d, weight=f"w.L{i}.down")
        x = tensor(n("x_out"), d)
        op(n("add2"), "add", [n("x_mid"), n("down_out")], [x], words=d)
    op("final_norm", "rmsnorm", [x], [tensor("x_final", d)], d=d, eps=eps, gain="w.norm")
    vocab_padded = -(-shape.vocab_size // L) * L
    gemv("lm_head", ["x_final"], [], k=d, n=vocab_padded, weight="w.lm_head",
       out_home=("logits", (vocab_padded * 4 // wb,), (1,), 0), writes_home=["logits"])
    return ops, tensors


def compile_model(checkpoint, target, *, mode="fused", context=None):
    """Compile ``checkpoint`` (a path or a loaded :class:`Checkpoint`) for ``target``."""
    if mode not in ("fused", "unfused"):
        raise CompileError(f"mode must be 'fused' or 'unfused', not {mode!r}")
    start = time.perf_counter()
    ckpt = load_checkpoint(checkpoint) if not hasattr(checkpoint, "weights") else checkpoint
    shape = ckpt.shape
    L = target.array.lanes
    context = max_context(shape, target) if context is None else context
    check_fit(shape, target, context)
    mmap, image, zeroed = _layout(shape, target, context, ckpt.weights)
    dtypes = dict(zip(("gemv_bf16", "embed_bf16"), stream_dtypes(shape, target, ckpt.weights)))
    _, tensors = chip_ops(shape, target, context, context, **dtypes)
    for name, t in tensors.items():
        if t["home"] is None:
            mmap.add(t["scratch"], 4 * t["words"], "scratch")
    programs, built = {}, {}
    all_buckets = {}
    for tp in buckets(context, L):
        ops, tensors = chip_ops(shape, target, context, tp, **dtypes)
        launches = []
        for index, (kernel_ops, program, streams) in enumerate(pack(target, mmap, tensors, ops,
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
    return CompiledModel(shape, target, mode, context, all_buckets, mmap, image, zeroed, "logits",
                         time.perf_counter() - start, str(getattr(ckpt, "path", "")))
