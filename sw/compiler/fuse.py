"""Kernel fusion: group consecutive chip ops into kernels that fit the array.

:func:`fuse` adds ops to a kernel while the kernel still places, finds AGCUs
and routes on the array; a tensor whose producer and consumer share a kernel
flows over the fabric (held in PMUs where it must wait), any other goes to an
HBM scratch region and is read back by the next kernel. An op that reads an
HBM region written earlier in the same kernel (attention reading the KV
cache) stays in it: its read waits for that write (``Stream.after``, see
:meth:`KernelBuilder.read`); where several writes of the kernel may store
what it reads, the builder's FitError cuts before it. Fused mode fuses as
much as fits; unfused mode puts every op in its own kernel, the op-by-op
baseline.
"""

from sw.compiler.builder import FitError, KernelBuilder
from sw.compiler.templates import TEMPLATES
from sw.errors import CompileError
from sw.tile.kernel import KernelError
from sw.tile.route import RoutingError


def build_kernel(target, mmap, tensors, ops, needed_later, iterations=1, templates=TEMPLATES):
    """One kernel running ``ops``; raises FitError when it does not fit, CompileError when it never can.

    Returns ``(program, streams)``: the :class:`sw.tile.kernel.Program` and its AGCU
    :class:`sw.compiler.launch.Stream` list. ``iterations``: as for :class:`KernelBuilder` (a looped kernel's
    PMU passes; its patterns are the caller's to loop). ``templates``: chip-op kind -> template.
    """
    local = {t for op in ops for t in op.outputs}
    b = KernelBuilder(target, mmap, tensors, local, iterations)
    try:
        for op in ops:
            templates[op.kind](b, op)
        b.finish(needed_later)
        program = b.kernel.build()
    except RoutingError as e:
        raise FitError(f"routing: {e}") from None
    except KernelError as e:
        raise CompileError(f"kernel {' + '.join(op.name for op in ops)}: {e}") from None
    return program, b.streams


def fuse(target, mmap, tensors, ops, *, fused, cache=None):
    """Group ``ops`` into kernels: greedily as many as fit (fused) or one per kernel (unfused).

    Returns a list of ``(ops, program, streams)``. ``cache`` (a dict) keeps built kernels and
    refusals between calls with the same ops, e.g. the context buckets, whose kernels differ
    only where they attend.
    """
    cache = {} if cache is None else cache

    def build(group, later):
        key = (repr([(op.name, op.kind, op.inputs, op.outputs, op.attrs) for op in group]), tuple(sorted(later)))
        if key not in cache:
            try:
                cache[key] = build_kernel(target, mmap, tensors, group, later)
            except FitError as e:
                cache[key] = e
        if isinstance(cache[key], FitError):
            raise cache[key]
        return cache[key]

    consumers = {}
    for index, op in enumerate(ops):
        for t in op.inputs:
            consumers.setdefault(t, []).append(index)
    kernels = []
    i = 0
    while i < len(ops):
        best, why = None, None
        for j in range(i + 1, len(ops) + 1):
            later = {t for k in range(i, j) for t in ops[k].outputs if any(c >= j for c in consumers.get(t, []))}
            try:
                best = (j, *build(ops[i:j], later))
            except FitError as e:
                why = str(e)
                break
            if not fused:
                break
        if best is None:
            raise CompileError(f"op {ops[i].name} ({ops[i].kind}) does not fit the {target.array.rows}x"
                               f"{target.array.cols} array on its own: {why}")
        j, program, streams = best
        kernels.append((ops[i:j], program, streams))
        i = j
    return kernels
