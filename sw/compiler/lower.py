"""Lower the decode-step graph to chip ops and the memory regions they need.

The graph (:func:`sw.compiler.decode.decode_graph`) says what a decode step
computes; this pass decides how the chip's templates compute it. Its rules,
over the graph's ops in order:

- ``embed``: no chip op; its output is read straight from the embedding
  table's row (a :class:`Home` that moves with the token id).
- ``rmsnorm`` -> ``rmsnorm``, its gain streamed from a region.
- ``matvec`` -> ``gemv``; a matvec's bias (its third input) is added in the
  gemv's second PCU (fused: in its own PCU's drain), streamed from a region.
  Consecutive matvecs of one input whose outputs go to ``rope`` (q and k)
  are one gemv over their stacked weights (and biases); a matvec
  whose output only goes into a KV cache (v) writes it there, in the
  lane-block layout attention reads V in; one whose output is a graph output
  (the logits) writes that region; one whose output is the first operand of
  ``silu_mul`` (the gate) applies SiLU in its PCU's tail.
- ``rope``: the ropes over one stacked gemv's output are one rope over all
  its heads, writing every row (q too) into the region of the cache the k
  rows go to, so attention reads q and K from one region.
- ``kv_write``: no chip op; the cache was written by the op above.
- ``attention`` -> ``attention_scores`` (q.K^T, mask, softmax) and
  ``attention_values`` (times V); a sliding window is a mask table of its own.
  K of one head goes through the transposing PMU in chunks of ``chunk``
  positions when it does not fit that PMU whole (:func:`k_chunk`).
- a gemv whose input does not fit one PMU (``k`` words) takes ``chunk``: the
  input streams from memory through its PMU that many words a pass, once
  per tile of outputs, so every output still sums over all of K in order
  (:func:`k_chunk` with one word per position).
- the logits (the graph's output) -> also ``argmax``: greedy decoding's token
  on chip, so the host reads one word instead of every logit.
- ``add`` -> ``add``; ``silu_mul`` -> ``mul``. Fused, a matvec without a
  bias whose output is only the second operand of one ``add`` (the residual
  add after o-proj and down-proj) or ``silu_mul`` (the up projection) takes
  that op into its gemv (``join``): the first operand joins the gemv's drain
  on vi2, the same fp32 operation on the same values.

Regions are listed in the order the memory map allocates them: each layer's
weights in op order then its KV caches (in the graph's order), then the
weights after the last layer, the tables (RoPE, mask), the outputs.
"""

from dataclasses import dataclass

from sw.compiler.decode import short_name
from sw.compiler.memory_map import word_count
from sw.compiler.ops import ChipOp, ChipTensor, Home
from sw.errors import CompileError


@dataclass(frozen=True)
class Placement:
    """A memory region the chip ops need, and what fills it.

    ``layout``: ``"rows"`` (a table read a row at a time), ``"vector"`` (fp32), ``"gemv"`` (the
    stacked ``sources`` in the order their GEMV streams them), ``"bias"`` (the stacked ``sources``,
    fp32, zero-padded to ``args``: the GEMV's outputs), ``"kv_cache"`` and ``"output"`` (``nbytes``,
    nothing loaded), ``"rope"`` and ``"mask"`` (tables of ``args``: context, head_dim,
    :class:`sw.compiler.checkpoint.Rope`, the true head_dim / context, sliding window or 0).
    """

    name: str
    what: str
    layout: str
    sources: tuple = ()
    nbytes: int = 0
    args: tuple = ()


def k_chunk(tp, hd, lanes, words):
    """Positions of K the transposing PMU of ``attention_scores`` holds per pass, over ``tp`` positions.

    ``tp``: whole when ``tp * hd`` words fit a PMU of ``words`` (one pass per head, as always);
    else the longest divisor of ``tp`` in whole blocks of ``lanes`` keys that fits two buffers of
    the PMU (so one chunk streams in while the previous is read), or failing that one buffer.
    The chunks of a head arrive and drain in key order, so the scores are the same stream as
    unchunked. None when not even ``lanes`` keys fit.
    """
    if tp * hd <= words:
        return tp
    blocks = tp // lanes
    for buffers in (2, 1):
        for n in range(2, blocks + 1):
            if blocks % n == 0 and buffers * (tp // n) * hd <= words:
                return tp // n
    return None


@dataclass(frozen=True)
class Lowered:
    """The chip ops of a decode step, the activation tensors they exchange, the regions they use."""

    ops: tuple
    tensors: dict
    placements: tuple


def lower(graph, target, tp, *, gemv_bf16=False, embed_bf16=False, fused=False):
    """The chip ops of ``graph`` attending over ``tp`` positions; CompileError for a graph the rules miss.

    ``gemv_bf16`` / ``embed_bf16``: the weights and the embedding table are stored as bf16. ``fused``: the
    ops will be fused into kernels, so a gemv joins its bias, a residual add or the SwiGLU product in its
    own PCU's drain (unfused keeps them separate ops, the op-by-op baseline).
    """
    L, wb = target.array.lanes, target.memory.word_bytes
    T = graph.tensors
    uses = {}
    for op in graph.ops:
        for name in op.inputs:
            uses.setdefault(name, []).append(op)
    ops, tensors, chip = [], {}, {}          # chip: graph tensor -> chip tensor carrying it
    placed, caches, tables, outputs = [], [], {}, []
    in_region = {}                           # graph tensor -> the cache region its rows were written to
    cache_region = {}                        # graph KV cache -> its region
    matvecs, ropes = [], []                  # stacks waiting to become one gemv / one rope
    joined = set()                           # add / silu_mul ops a gemv took into its drain
    layer, logits = None, None               # logits: (region, padded n, vocab) of the graph's output

    def refuse(op, why):
        return CompileError(f"graph op {op.name} ({op.kind}): {why}")

    def tensor(name, words, home=None):
        tensors[name] = ChipTensor(name, words, home)
        return name

    def emit(name, kind, inputs, outputs, reads=(), writes=(), **attrs):
        ops.append(ChipOp(name, kind, tuple(inputs), tuple(outputs), attrs, tuple(reads), tuple(writes)))

    def operand(op, name):
        if name not in chip:
            raise refuse(op, f"reads {name}, which no chip op produces as an activation")
        return chip[name]

    def prefix(name):
        return name[:name.rfind(".") + 1]

    def gemv_attrs(matvecs, region):
        weights, biases = [op.inputs[0] for op in matvecs], [op.inputs[2] for op in matvecs if len(op.inputs) > 2]
        rows, k = sum(T[w].shape[0] for w in weights), T[weights[0]].shape[1]
        n = -(-rows // L) * L
        placed.append(Placement(region, "weight", "gemv", tuple(weights)))
        if biases and len(biases) != len(weights):
            raise refuse(matvecs[0], "the matvecs stacked into one gemv must all have a bias or none")
        chunk = k_chunk(k, 1, L, target.array.pmu_words)      # never None: a PMU holds lanes x bank words
        common = dict(bf16=gemv_bf16, k=k, n=n, weight=region, **({"chunk": chunk} if chunk < k else {}))
        if not biases:
            return rows, common
        bias = f"{region}.bias"
        placed.append(Placement(bias, "weight", "bias", tuple(biases), args=(n,)))
        return rows, dict(common, bias=bias, **({"join": "bias"} if fused else {}))

    def joins(op, out, rows, consumers, attrs):
        """The add / silu_mul a fused gemv can take into its drain: the only consumer, ``out`` its second operand."""
        if not fused or "bias" in attrs or len(consumers) != 1 or rows != attrs["n"]:
            return None
        join = consumers[0]
        ok = join.kind in ("add", "silu_mul") and join.inputs[1] == out and join.inputs[0] in chip
        return join if ok and T[join.outputs[0]].elements == rows else None

    def flush_matvecs():
        if not matvecs:
            return
        name = prefix(matvecs[0].name) + "".join(op.name[len(prefix(op.name)):] for op in matvecs)
        rows, attrs = gemv_attrs(list(matvecs), f"w.{name}")
        out = tensor(f"{name}_raw", rows)
        emit(name, "gemv", [operand(matvecs[0], matvecs[0].inputs[1])], [out], **attrs)
        start = 0
        for op in matvecs:
            chip[op.outputs[0]] = (out, start)
            start += T[op.outputs[0]].elements
        matvecs.clear()

    def flush_ropes():
        if not ropes:
            return
        stacked = [chip.get(op.inputs[0]) for op in ropes]
        source = stacked[0][0] if isinstance(stacked[0], tuple) else None
        starts = [sum(T[o.inputs[0]].elements for o in ropes[:i]) for i in range(len(ropes) + 1)]
        if source is None or stacked != [(source, start) for start in starts[:-1]] or \
                starts[-1] != tensors[source].words:
            raise refuse(ropes[0], "the ropes of one step must rotate the whole output of one stacked matvec")
        heads = sum(op.attrs["heads"] for op in ropes)
        hd = T[ropes[0].inputs[0]].elements // ropes[0].attrs["heads"]
        writes = [u for op in ropes for u in uses.get(op.outputs[0], []) if u.kind == "kv_write"]
        if len(writes) != 1:
            raise refuse(ropes[0], "exactly one of the rotated tensors must go into a KV cache")
        cache = writes[0].inputs[0]
        context = T[cache].shape[1]
        slots = f"kv.{source.removesuffix('_raw')}"
        caches.append((cache, Placement(slots, "kv_cache", "kv_cache", nbytes=4 * heads * context * hd)))
        cache_region[cache] = slots
        for table in ("rope.cos", "rope.sin"):
            tables.setdefault(table, Placement(table, "table", "rope",
                                               args=(context, hd, ropes[0].attrs["rope"], ropes[0].attrs["head_dim"])))
        row = word_count(4 * hd, wb, "head_dim")
        emit(f"{prefix(ropes[0].name)}rope", "rope", [source], [], writes=[slots], head_dim=hd, heads=heads,
             out_home=(slots, (row, heads), (1, context * row)))
        for op in ropes:
            in_region[op.outputs[0]] = slots
        ropes.clear()

    for op in graph.ops:
        consumers = uses.get(op.outputs[0], []) if op.outputs else []
        stacks = op.kind == "matvec" and consumers and all(u.kind == "rope" for u in consumers)
        if not stacks or (matvecs and op.inputs[1] != matvecs[0].inputs[1]):
            flush_matvecs()
        if op.kind != "rope":
            flush_ropes()
        if op.layer != layer:
            placed.extend(p for _, p in sorted(caches, key=lambda c: list(T).index(c[0])))
            caches.clear()
            layer = op.layer
        out = op.outputs[0] if op.outputs else None
        if op.kind == "embed":
            table = op.inputs[0]
            d = T[table].shape[1]
            region = f"w.{short_name(table)}"
            placed.append(Placement(region, "weight", "rows", (table,)))
            chip[out] = tensor(out, d, Home(region, token_stride=(2 if embed_bf16 else 4) * d, bf16=embed_bf16))
        elif op.kind == "rmsnorm":
            x, gain = op.inputs
            region = f"w.{short_name(gain)}"
            placed.append(Placement(region, "weight", "vector", (gain,)))
            d = T[x].elements
            emit(op.name, "rmsnorm", [operand(op, x)], [tensor(out, d)], d=d, size=op.attrs["size"],
                 eps=op.attrs["eps"], gain=region)
            chip[out] = out
        elif op.kind == "matvec" and stacks:
            matvecs.append(op)
        elif op.kind == "matvec":
            x = op.inputs[1]
            rows, attrs = gemv_attrs([op], f"w.{op.name}")
            if T[out].role == "output":
                outputs.append(Placement(out, "output", "output", nbytes=4 * attrs["n"]))
                emit(op.name, "gemv", [operand(op, x)], [], writes=[out], **attrs,
                     out_home=(out, (attrs["n"] * 4 // wb,), (1,), 0))
                logits = (out, attrs["n"], rows)
            elif consumers and all(u.kind == "kv_write" and u.inputs[1] == out for u in consumers):
                cache = consumers[0].inputs[0]
                if not any(u.kind == "attention" and u.inputs[2] == cache for u in uses.get(cache, [])):
                    raise refuse(op, f"only a V cache is written straight from a matvec, and {cache} is not one")
                nkv, context, hd = T[cache].shape
                region = f"kv.{op.name}"
                caches.append((cache, Placement(region, "kv_cache", "kv_cache", nbytes=4 * nkv * context * hd)))
                cache_region[cache] = region
                vw, nv = word_count(4 * L, wb, "vector"), hd // L
                emit(op.name, "gemv", [operand(op, x)], [], writes=[region], **attrs,
                     out_home=(region, (vw, nv, nkv), (1, context * vw, nv * context * vw), 4 * L))
                in_region[out] = region
            elif [u.kind for u in consumers] == ["silu_mul"] and consumers[0].inputs[0] == out:
                chip[out] = tensor(f"{out}_act", rows)
                emit(op.name, "gemv", [operand(op, x)], [chip[out]], **attrs, tail="silu")
            elif join := joins(op, out, rows, consumers, attrs):
                # The join's first operand (the residual, the gate's SiLU) on vi2: r0 + r1 or r0 * r1 per element.
                result = join.outputs[0]
                other = operand(join, join.inputs[0])
                chip[result] = tensor(result, rows)
                emit(f"{op.name}+{join.name[len(prefix(join.name)):]}", "gemv", [operand(op, x), other], [result],
                     **attrs, join="add" if join.kind == "add" else "mul")
                joined.add(join.name)
            else:
                chip[out] = tensor(out, rows)
                emit(op.name, "gemv", [operand(op, x)], [out], **attrs)
        elif op.kind == "rope":
            ropes.append(op)
        elif op.kind == "kv_write":
            cache, value, _ = op.inputs
            if cache not in cache_region or in_region.get(value) != cache_region[cache]:
                raise refuse(op, f"{value} was not written into {cache}'s region by the op that made it")
        elif op.kind == "attention":
            q, k_cache, v_cache, _ = op.inputs
            slots, values = in_region.get(q), cache_region.get(v_cache)
            if slots is None or slots != cache_region.get(k_cache) or values is None:
                raise refuse(op, "q and K must be in one region and V in another, written by the ops before")
            nkv, context, hd = T[k_cache].shape
            nh, window = op.attrs["heads"], op.attrs.get("window", 0)
            mask = f"mask.w{window}" if window else "mask"
            tables.setdefault(mask, Placement(mask, "table", "mask", args=(context, window)))
            attn = dict(head_dim=hd, heads=nh, kv_heads=nkv, tp=tp, tmax=context)
            scale = op.attrs["head_dim"] ** -0.5
            chunk = k_chunk(tp, hd, L, target.array.pmu_words)
            if chunk is None:
                raise refuse(op, f"a block of {L} keys of head_dim {hd} ({L * hd} words) does not fit one PMU of "
                                 f"{target.array.pmu_words} words")
            probs = tensor(f"{prefix(op.name)}probs", nh * tp)
            emit(f"{prefix(op.name)}scores", "attention_scores", [], [probs], reads=[slots], slots=slots, mask=mask,
                 scale=scale, **attn, **({"chunk": chunk} if chunk < tp else {}))
            chip[out] = tensor(out, T[out].elements)
            emit(f"{prefix(op.name)}pv", "attention_values", [probs], [out], reads=[values], values=values, **attn)
        elif op.kind in ("add", "silu_mul") and op.name in joined:
            pass
        elif op.kind in ("add", "silu_mul"):
            words = T[out].elements
            chip[out] = tensor(out, words)
            emit(op.name, "add" if op.kind == "add" else "mul", [operand(op, t) for t in op.inputs], [out],
                 words=words)
        else:
            raise refuse(op, "no chip template computes this op")
    flush_matvecs()
    flush_ropes()
    placed.extend(p for _, p in sorted(caches, key=lambda c: list(T).index(c[0])))
    if logits:
        region, n, vocab = logits
        tables["argmax.index"] = Placement("argmax.index", "table", "argmax", args=(n, vocab, 0))
        pad = None
        if n > vocab:
            tables["argmax.pad"] = Placement("argmax.pad", "table", "argmax", args=(n, vocab, 1))
            pad = "argmax.pad"
        outputs.append(Placement("token", "output", "output", nbytes=4 * L))
        emit("argmax", "argmax", [], [], reads=[region, "argmax.index"] + ([pad] if pad else []), writes=["token"],
             logits=region, n=n, vocab=vocab, index="argmax.index", pad=pad, token="token")
    return Lowered(tuple(ops), tensors, tuple(placed + list(tables.values()) + outputs))
