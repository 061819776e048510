"""Kernel looping: a model's identical decoder layers run as one kernel whose AGCU patterns loop over the layers.

The pass takes a decode step's chip ops (after lowering) and, where it can:

- finds the layers: the ops named ``L<i>.``, consecutive and in order, each layer's ops equal to layer 0's once
  the layer index is taken out of every name (ops, tensors, regions), each layer taking one activation from before
  it (the residual stream) and leaving one to after it;
- builds layer 0's ops as one kernel in which every PMU runs its passes once per layer
  (``KernelBuilder``'s ``iterations``), and gives each AGCU pattern an outermost level over the layers
  (:meth:`sw.loopnest.LoopNest.with_outer`), stepping by the distance between layer 0's and layer 1's regions
  (weights, KV caches; 0 for the shared RoPE and mask tables), checked the same for every layer;
- carries the residual stream through HBM rows ``act.loop.x.0`` to ``act.loop.x.<layers>``: layer i reads row i
  and writes row i + 1, and its reads of the row wait for the previous layer's write (``Stream.lag`` 1; a KV-cache
  read waits for this layer's cache write, lag 0), so layer i + 1's weights stream in while layer i finishes;
- copies the embedding row into row 0 in a kernel of its own (an AGCU pattern cannot start at a row that moves
  with the token and then step to fixed rows), and fuses the ops after the last layer, which read the last row.

The looped kernel's :class:`~sw.tile.kernel.Program` says its ``iterations``; the RTL runs it from its pass counts
and patterns alone, the fast model runs its body once per layer. Where the layers cannot be looped (one layer
does not fit the array, layers differ, a pattern has no level left) :func:`loop_layers` says why in one line and
the caller fuses instead.
"""

import re
from dataclasses import replace

from sw.compiler.builder import FitError, KernelBuilder
from sw.compiler.fuse import build_kernel, fuse
from sw.compiler.launch import linear
from sw.compiler.memory_map import word_count
from sw.compiler.ops import ChipOp, ChipTensor
from sw.errors import CompileError
from sw.tile.pcu import PcuConfig

_LAYER = re.compile(r"L(\d+)\.")


def carry_region(row):
    """The HBM scratch region of residual row ``row`` (0: the first layer's input)."""
    return f"act.loop.x.{row}"


def _carry_tensor(row):
    return f"loop.x.{row}"


def _canon(value, layer):
    """``value`` with layer ``layer``'s index taken out of every name in it."""
    if isinstance(value, str):
        return re.sub(rf"\bL{layer}\.", "L#.", value)
    if isinstance(value, tuple):
        return tuple(_canon(v, layer) for v in value)
    if isinstance(value, list):
        return [_canon(v, layer) for v in value]
    if isinstance(value, dict):
        return {k: _canon(v, layer) for k, v in value.items()}
    return value


def _renamed(op, names):
    """``op`` with activation tensors renamed by ``names``."""
    return replace(op, inputs=tuple(names.get(t, t) for t in op.inputs),
                   outputs=tuple(names.get(t, t) for t in op.outputs))


class Layers:
    """The layers :func:`find_layers` found.

    Attributes
    ----------
    before, after : list of ChipOp
        The ops before the first layer and after the last.
    layers : list of list of ChipOp
        Each layer's ops, in order.
    carry : list of str
        The residual stream's tensors: ``carry[i]`` layer i's input, ``carry[-1]`` the last layer's output.
    """

    def __init__(self, before, layers, after, carry):
        self.before, self.layers, self.after, self.carry = before, layers, after, carry


def find_layers(ops, tensors):
    """The step's repeated layers as :class:`Layers`, or a one-line reason why they cannot be looped (a str)."""
    index = [int(m.group(1)) if (m := _LAYER.match(op.name)) else None for op in ops]
    where = [i for i, layer in enumerate(index) if layer is not None]
    if not where:
        return "no decoder layers among the chip ops"
    first, last = where[0], where[-1]
    if any(layer is None for layer in index[first:last + 1]):
        return "the layers' ops are not consecutive"
    n = max(index[first:last + 1]) + 1
    if n < 2:
        return "one layer: nothing to loop"
    groups = [[] for _ in range(n)]
    previous = 0
    for op, layer in zip(ops[first:last + 1], index[first:last + 1]):
        if layer < previous:
            return f"op {op.name} comes after layer {previous}'s ops"
        previous = layer
        groups[layer].append(op)
    later = ops[last + 1:]
    carry = []
    for layer, group in enumerate(groups):
        made = {t for op in group for t in op.outputs}
        taken = list(dict.fromkeys(t for op in group for t in op.inputs if t not in made))
        if len(taken) != 1:
            return f"layer {layer} takes {len(taken)} activations from before it ({', '.join(taken)}), not one"
        if layer and taken[0] not in {t for op in groups[layer - 1] for t in op.outputs}:
            return f"layer {layer} takes {taken[0]}, which layer {layer - 1} does not make"
        carry.append(taken[0])
    for layer, group in enumerate(groups):
        made = {t for op in group for t in op.outputs}
        outside = [op for g in groups[layer + 1:] for op in g] + list(later) + list(ops[:first])
        left = list(dict.fromkeys(t for op in outside for t in op.inputs if t in made))
        expected = carry[layer + 1] if layer + 1 < n else None
        if layer + 1 < n and left != [expected] or layer + 1 == n and len(left) > 1:
            return f"layer {layer} leaves {len(left)} activations to later ops ({', '.join(left)}), not one"
        if layer + 1 == n:
            if not left:
                return f"nothing after layer {layer} reads its output"
            carry.append(left[0])
    words = {tensors[t].words for t in carry}
    if len(words) != 1:
        return f"the residual stream changes size between layers ({sorted(words)} words)"
    def canonical(op, layer):
        """``op`` with layer ``layer``'s index out of its names and its residual tensors named by role."""
        wiring = {carry[layer]: "X#in", carry[layer + 1]: "X#out"}
        return (_canon(op.name, layer), op.kind, _canon(op.attrs, layer), _canon(op.reads_home, layer),
                _canon(op.writes_home, layer), tuple(_canon(wiring.get(t, t), layer) for t in op.inputs),
                tuple(_canon(wiring.get(t, t), layer) for t in op.outputs))

    body = [canonical(op, 0) for op in groups[0]]
    for layer, group in enumerate(groups[1:], 1):
        ops_l = [canonical(op, layer) for op in group]
        if ops_l != body:
            differ = next((a[0] for a, b in zip(ops_l, body) if a != b), f"{len(ops_l)} ops, not {len(body)}")
            return f"layer {layer} differs from layer 0 (at {differ})"
    return Layers(list(ops[:first]), groups, list(later), carry)


def _layer_strides(mmap, streams, layers, wb):
    """Bytes each stream's region moves per layer (``id(stream)`` -> bytes): the step from layer 0's region to
    layer 1's (residual rows: a row; tables all layers share: 0); or a one-line reason (a str) when a layer's
    region is missing or the layers' regions are not evenly spaced."""
    strides = {}
    for s in streams:
        region = s.region
        carry = re.fullmatch(r"act\.loop\.x\.(\d+)", region)
        if carry:
            names = [carry_region(int(carry.group(1)) + layer) for layer in range(layers)]
        elif re.search(r"\bL0\.", region):
            names = [re.sub(r"\bL0\.", f"L{layer}.", region) for layer in range(layers)]
        else:
            strides[id(s)] = 0
            continue
        missing = [n for n in names if n not in mmap.regions]
        if missing:
            return f"region {missing[0]} (layer {names.index(missing[0])}'s {region}) is not in the memory map"
        regions = [mmap[n] for n in names]
        step = regions[1].offset - regions[0].offset
        if any(r.offset != regions[0].offset + k * step or r.tier != regions[0].tier or r.nbytes != regions[0].nbytes
               for k, r in enumerate(regions)) or step % wb:
            return f"the layers' {_canon(region, 0)} regions are not evenly spaced in memory"
        strides[id(s)] = step
    return strides


def _copy_kernel(target, mmap, tensors, source, row):
    """A kernel that streams activation ``source`` (e.g. the embedding row) through one PCU into ``row``."""
    b = KernelBuilder(target, mmap, tensors, set())
    pcu = b.unit("pcu", PcuConfig(), "embed", "copy")
    b.read_tensor(source, [pcu.vi0])
    counts, strides = linear(word_count(4 * tensors[source].words, b.wb, f"tensor {source}"))
    b.write("embed", pcu.vo0, carry_region(row), counts, strides)
    op = ChipOp("embed", "copy", (source,), (_carry_tensor(row),))
    return [op], b.kernel.build(), b.streams


def loop_layers(target, mmap, tensors, ops, *, cache=None):
    """The step's kernels with its layers looped, and a note: ``(kernels, None)`` or ``(None, reason)``.

    ``kernels`` is a list of ``(ops, program, streams)`` as :func:`sw.compiler.fuse.fuse` gives: the copy of
    the first layer's input into the residual rows, the looped kernel
    (its ops: every layer's), then the fused ops after the layers. ``mmap`` gains the residual rows.
    """
    cache = {} if cache is None else cache
    found = find_layers(ops, tensors)
    if isinstance(found, str):
        return None, found
    if found.before:
        return None, f"{len(found.before)} ops run before the first layer"
    n, wb = len(found.layers), target.memory.word_bytes
    words = tensors[found.carry[0]].words
    for row in range(n + 1):
        mmap.add(carry_region(row), 4 * words, "scratch")
    local = dict(tensors)
    for row in range(n + 1):
        local[_carry_tensor(row)] = ChipTensor(_carry_tensor(row), words)
    body = [_renamed(op, {found.carry[0]: _carry_tensor(0), found.carry[1]: _carry_tensor(1)})
            for op in found.layers[0]]
    key = ("loop", n, repr([(op.name, op.kind, op.inputs, op.outputs, op.attrs) for op in body]))
    if key not in cache:
        try:
            cache[key] = build_kernel(target, mmap, local, body, {_carry_tensor(1)}, n)
        except (FitError, CompileError) as e:
            cache[key] = f"a layer does not fit one kernel of the {target.array.rows}x{target.array.cols} array: {e}"
    if isinstance(cache[key], str):
        return None, cache[key]
    program, streams = cache[key]
    strides = _layer_strides(mmap, streams, n, wb)
    if isinstance(strides, str):
        return None, strides
    writer = [s.agcu for s in streams if s.direction == "write" and s.region == carry_region(1)]
    looped = []
    for s in streams:
        try:
            nest = s.nest.with_outer(n, strides[id(s)] // wb)
        except ValueError as e:
            return None, f"{s.region}'s pattern: {e}"
        if s.direction == "read" and s.region == carry_region(0):
            s = replace(s, after=writer[0], lag=1)
        looped.append(replace(s, nest=nest))
    program = replace(program, iterations=n)
    kernels = [_copy_kernel(target, mmap, local, found.carry[0], 0)]
    kernels.append(([op for group in found.layers for op in group], program, looped))
    after = [_renamed(op, {found.carry[-1]: _carry_tensor(n)}) for op in found.after]
    if after:
        kernels += fuse(target, mmap, local, after, fused=True, cache=cache)
    return kernels, None
