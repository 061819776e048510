"""The kernel builder: one kernel being filled with chip ops, its units placed and its AGCUs picked."""

from dataclasses import replace

from sw.compiler.launch import Stream, linear
from sw.compiler.memory_map import word_count
from sw.errors import CompileError
from sw.loopnest import LoopNest
from sw.tile.kernel import Kernel, KernelError
from sw.tile.pmu import PASS_BITS


class FitError(Exception):
    """A kernel ran out of a resource while ops were added to it (fusion then cuts before the op)."""


class KernelBuilder:
    """One kernel being filled with ops: places units, picks AGCUs, records transfers.

    ``tensors``: name -> :class:`sw.compiler.ops.ChipTensor`; ``local``: the tensors this kernel produces.
    ``position`` hints are mesh coordinates (unit (r, c) at (r + 1, c); I/O rows 0 and rows + 1).
    ``iterations``: passes of an outer loop the kernel runs (a looped kernel, :mod:`sw.compiler.loop`): every
    PMU runs its passes that many times; FitError where that exceeds a PMU's pass counter.
    """

    def __init__(self, target, mmap, tensors, local, iterations=1):
        self.target, self.mmap, self.tensors, self.local = target, mmap, tensors, local
        self.iterations = iterations
        self.params = p = target.array
        self.lanes = p.lanes
        self.wb = target.memory.word_bytes
        self.kernel = Kernel(p, tail_ops=target.tail_ops, post_ops=target.post_ops)
        self.free = {"pcu": [(r, c) for r, c, k in p.units() if k == "pcu"],
                     "pmu": [(r, c) for r, c, k in p.units() if k == "pmu"]}
        self.io_free = {d: [(s, c) for s in ("t", "b") for c in range(p.cols)] for d in ("read", "write")}
        self.streams = []
        self.producers = {}          # tensor -> Endpoint producing it in this kernel
        self.uses = []               # (tensor, sinks)
        self.count = 0

    @staticmethod
    def mesh(pos):
        return (pos[0] + 1, pos[1])

    def _name(self, op, what):
        self.count += 1
        name = f"{op}.{what}"
        return f"{name}#{self.count}" if self.kernel.has_node(name) else name

    def unit(self, kind, config, op, what, near=()):
        """Place a ``kind`` unit with ``config`` at the free position nearest the ``near`` mesh points."""
        if not self.free[kind]:
            raise FitError(f"{kind.upper()}s: all {self._used(kind)} are used")
        if kind == "pmu" and self.iterations > 1:
            n, passes, limit = self.iterations, max(config.write_passes, config.read_passes), (1 << PASS_BITS) - 1
            if passes * n > limit:
                raise FitError(f"{op}: {passes} PMU passes x {n} iterations exceed the {limit} a PMU counts")
            config = replace(config, write_passes=config.write_passes * n, read_passes=config.read_passes * n)
        near = [n for n in near if n is not None]
        best = min(self.free[kind], key=lambda q: (sum(abs(q[0] + 1 - a) + abs(q[1] - b) for a, b in near), q))
        self.free[kind].remove(best)
        place = self.kernel.pcu if kind == "pcu" else self.kernel.pmu
        try:
            return place(best, config, name=self._name(op, what))
        except KernelError as e:
            raise CompileError(f"op {op}: {e}") from None

    def _used(self, kind):
        return sum(1 for u in self.kernel.units.values() if u.kind == kind)

    def pos(self, endpoint):
        u = self.kernel.units.get(endpoint.node)
        return self.mesh(u.pos) if u else None

    def _agcu(self, direction, near):
        if not self.io_free[direction]:
            raise FitError(f"AGCU {direction}s: all {2 * self.params.cols} are used")
        rows = {"t": 0, "b": self.params.rows + 1}
        near = [n for n in near if n is not None]
        best = min(self.io_free[direction],
                   key=lambda q: (sum(abs(rows[q[0]] - a) + abs(q[1] - b) for a, b in near), q))
        self.io_free[direction].remove(best)
        return best, self.target.agcus.index(best)

    def read(self, name, region, counts, strides, sinks, *, last_level=None, offset=0, pos_stride=0,
             token_stride=0, bf16=False):
        """Stream ``region`` (at ``offset`` bytes in) to the ``sinks`` through a free AGCU.

        A read of words an earlier op of the kernel writes waits for that write (``Stream.after``); FitError
        when several writes of the kernel may store words it reads (one AGCU can wait for one write only).
        """
        r = self.mmap[region]
        nest = LoopNest(counts, strides, last_level=last_level)
        after = self._writer(name, region, r.offset + offset, nest, pos_stride, token_stride)
        (side, col), k = self._agcu("read", [self.pos(s) for s in sinks])
        host = self.kernel.host_input(self._name(name, "in"), col=col, side=side)
        self.kernel.connect(host.out, list(sinks))
        self.streams.append(Stream(k, "read", region, r.tier, r.offset + offset, nest, pos_stride, token_stride, bf16,
                                   after))

    def _writer(self, name, region, base, nest, pos_stride, token_stride):
        """The AGCU of the kernel's one write that may store a word the read of ``nest`` from ``base`` visits at
        some position, or None; FitError when there are several."""
        read = (base, nest, pos_stride)
        writers = [s for s in self.streams if s.direction == "write" and s.region == region
                   and (token_stride or self._overlap(region, read, (s.offset, s.nest, s.pos_stride)))]
        if len(writers) > 1:
            raise FitError(f"{name} reads {region} where {len(writers)} writes of this kernel store; a read waits "
                           f"for one")
        if writers and writers[0].nest.padded()[0][-1] > 1:
            # The AGCU gate pairs top-level iterations; an unlooped read must wait for the whole write.
            raise FitError(f"{name} reads {region}, which a write of {writers[0].nest.padded()[0][-1]} top-level "
                           f"iterations stores; a read waits for a write of one")
        return writers[0].agcu if writers else None

    def _overlap(self, region, a, b):
        """Whether two streams of ``region``, each ``(base bytes, nest, pos_stride)``, may visit a common word at
        some position that keeps both inside the region: the byte spans, moving with the position, are compared."""
        r = self.mmap[region]
        spans = []
        for base, nest, stride in (a, b):
            lo = sum(min(0, (c - 1) * s) for c, s in zip(nest.bounds, nest.strides))
            hi = sum(max(0, (c - 1) * s) for c, s in zip(nest.bounds, nest.strides))
            spans.append((base + lo * self.wb + nest.offset * self.wb, base + (hi + nest.offset + 1) * self.wb - 1,
                          stride))
        (a0, a1, sa), (b0, b1, sb) = spans
        if sa < 0 or sb < 0:
            return True
        # Positions 0..top keep both streams inside the region.
        top = min(((r.offset + r.nbytes - 1 - end) // s for _, end, s in spans if s > 0), default=None)
        if top is not None and top < 0:
            return True
        # At position p the spans meet when (sa - sb) p <= b1 - a0 and (sb - sa) p <= a1 - b0.
        low, high = 0, top
        for d, c in ((sa - sb, b1 - a0), (sb - sa, a1 - b0)):
            if d == 0:
                if c < 0:
                    return False
            elif d > 0:
                high = c // d if high is None else min(high, c // d)
            else:
                low = max(low, -(c // -d))
        return high is None or low <= high

    def write(self, name, source, region, counts, strides, *, offset=0, pos_stride=0):
        """Stream ``source`` into ``region`` through a free AGCU."""
        (side, col), k = self._agcu("write", [self.pos(source)])
        host = self.kernel.host_output(self._name(name, "out"), col=col, side=side)
        self.kernel.connect(source, host.inp)
        r = self.mmap[region]
        self.streams.append(Stream(k, "write", region, r.tier, r.offset + offset, LoopNest(counts, strides),
                                   pos_stride))

    def on_chip(self, tensor):
        return tensor in self.local

    def use(self, tensor, sinks):
        """Consume activation ``tensor`` at ``sinks`` (multicast): from the fabric or read from memory."""
        self.uses.append((tensor, list(sinks)))

    def produce(self, tensor, source):
        self.producers[tensor] = source

    def near_tensor(self, tensor):
        return self.pos(self.producers[tensor]) if tensor in self.producers else None

    def finish(self, needed_later):
        """Connect produced tensors to their sinks here and to memory when later kernels need them."""
        sinks_of = {}
        for tensor, sinks in self.uses:
            if tensor in self.producers:
                sinks_of.setdefault(tensor, []).extend(sinks)
            else:
                self.read_tensor(tensor, sinks)
        for tensor, source in self.producers.items():
            sinks = sinks_of.get(tensor, [])
            if tensor in needed_later:
                t = self.tensors[tensor]
                words = word_count(4 * t.words, self.wb, f"tensor {tensor}")
                (side, col), k = self._agcu("write", [self.pos(source)])
                host = self.kernel.host_output(self._name(tensor, "out"), col=col, side=side)
                sinks = sinks + [host.inp]
                r = self.mmap[t.scratch]
                counts, strides = linear(words)
                self.streams.append(Stream(k, "write", r.name, r.tier, r.offset, LoopNest(counts, strides)))
            if not sinks:
                raise CompileError(f"tensor {tensor} is produced but nothing consumes it")
            self.kernel.connect(source, sinks)

    def read_tensor(self, tensor, sinks):
        """Stream activation ``tensor`` from memory to ``sinks``: its home region (the embedding row, moving with
        the token) or its scratch region."""
        t = self.tensors[tensor]
        home = t.home
        size = 2 if home is not None and home.bf16 else 4
        counts, strides = linear(word_count(size * t.words, self.wb, f"tensor {tensor}"))
        if home is not None:
            self.read(tensor, home.region, counts, strides, sinks, token_stride=home.token_stride,
                      pos_stride=home.pos_stride, bf16=home.bf16)
        else:
            self.read(tensor, t.scratch, counts, strides, sinks)
