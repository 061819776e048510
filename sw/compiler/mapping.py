"""Map a Llama decode step onto the chip: chip ops, fusion into kernels, placement, memory map, launches.

The decode step is lowered to a list of *chip ops* (:func:`chip_ops`), each
a small dataflow template over PCUs and PMUs: an RMSNorm, a GEMV, RoPE,
attention scores with the softmax, attention times V, a residual add, a
product. Ops exchange *activation tensors*, streams of ``lanes``-word
vectors.

:func:`pack` groups consecutive ops into kernels. It adds ops to a kernel
while the kernel still places, finds AGCUs and routes on the array; a tensor
whose producer and consumer share a kernel flows over the fabric (held in
PMUs where it must wait), any other goes to an HBM scratch region and is
read back by the next kernel. An op that reads an HBM tensor written earlier
in the same kernel (attention reading the KV cache) starts a new kernel,
since every AGCU starts reading when the kernel starts. Fused mode packs as
much as fits; unfused mode puts every op in its own kernel, the op-by-op
baseline.

Every weight streams from HBM once per token through an AGCU in the order
its GEMV consumes it: as bf16, widened to fp32 lanes by the AGCU, when the
checkpoint's values are all bf16, else as fp32.
"""

from dataclasses import dataclass, field

import numpy as np

from hw.mem.params import HBM, TIER_NAMES
from sw.runtime.chip import Pattern
from sw.tile.kernel import Kernel, KernelError
from sw.tile.pcu import PcuConfig, Stage, f32
from sw.tile.pmu import AddressPattern, PmuConfig, ReadMode
from sw.tile.route import RoutingError

MASKED = -1.0e30                   # added to scores past the current position; exp() of it is 0


class CompileError(ValueError):
    """A model the target cannot run; the message names the op, the resource, needed and available."""


class FitError(Exception):
    """A kernel ran out of a resource while ops were added to it (the packer then cuts before the op)."""


@dataclass(frozen=True)
class Region:
    """A named block of one memory tier."""

    name: str
    tier: int
    offset: int
    nbytes: int
    what: str


class MemoryMap:
    """Bump allocation of named regions per tier, aligned to the TLN word."""

    def __init__(self, memory):
        self.memory = memory
        self.regions = {}
        self._top = {tier: 0 for tier in TIER_NAMES}

    def add(self, name, nbytes, what, tier=HBM):
        if name in self.regions:
            if (self.regions[name].nbytes, self.regions[name].tier) != (nbytes, tier):
                raise CompileError(f"memory map: region {name} is allocated twice with different sizes")
            return self.regions[name]
        wb = self.memory.word_bytes
        size = -(-max(nbytes, wb) // wb) * wb
        capacity = self.memory.tiers[tier].capacity
        if self._top[tier] + size > capacity:
            raise CompileError(f"memory map: {name} ({nbytes} bytes) does not fit {TIER_NAMES[tier].upper()}: "
                               f"{self._top[tier] + size} bytes needed, {capacity} available")
        region = Region(name, tier, self._top[tier], nbytes, what)
        self._top[tier] += size
        self.regions[name] = region
        return region

    def __getitem__(self, name):
        return self.regions[name]

    def bytes_by(self, key):
        out = {}
        for r in self.regions.values():
            k = key(r)
            out[k] = out.get(k, 0) + r.nbytes
        return out

    def table(self):
        return "\n".join(f"  {TIER_NAMES[r.tier]} {r.offset:#010x} {r.nbytes:>9} B  {r.what:<9} {r.name}"
                         for r in sorted(self.regions.values(), key=lambda r: (r.tier, r.offset)))


@dataclass(frozen=True)
class Stream:
    """One AGCU transfer of a launch; its base moves with the token and the position.

    ``base(token, pos) = region offset + offset + token * token_stride + pos * pos_stride`` (bytes);
    ``counts`` / ``strides`` in TLN words as :class:`sw.runtime.chip.Pattern` takes them.
    """

    agcu: int
    direction: str
    region: str
    tier: int
    offset: int
    counts: tuple
    strides: tuple
    last_every: int = 0
    pos_stride: int = 0
    token_stride: int = 0
    bf16: bool = False

    def pattern(self, token, pos):
        return Pattern(self.tier, self.offset + token * self.token_stride + pos * self.pos_stride,
                       self.counts, self.strides, self.last_every, self.bf16)

    @property
    def words(self):
        return int(np.prod(self.counts))


@dataclass
class Launch:
    """One kernel of a decode step: its program, the ops it runs and its AGCU transfers."""

    name: str
    ops: list
    program: object
    streams: list
    program_region: str = ""

    def patterns(self, token, pos):
        reads = {s.agcu: s.pattern(token, pos) for s in self.streams if s.direction == "read"}
        writes = {s.agcu: s.pattern(token, pos) for s in self.streams if s.direction == "write"}
        return reads, writes

    def units(self):
        kinds = [u.kind for u in self.program.units.values()]
        return kinds.count("pcu"), kinds.count("pmu")


@dataclass
class ChipOp:
    """One template instance: ``kind``, activation ``inputs`` / ``outputs``, and its settings."""

    name: str
    kind: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    reads_home: tuple = ()       # HBM-resident tensors (caches) the op reads
    writes_home: tuple = ()      # and writes


@dataclass(frozen=True)
class Home:
    """Where an activation tensor lives in memory when it is not only on chip (e.g. the embedding row)."""

    region: str
    token_stride: int = 0
    pos_stride: int = 0
    bf16: bool = False


def _words(nbytes, wb, where):
    if nbytes % wb:
        raise CompileError(f"{where}: {nbytes} bytes is not a whole number of {wb}-byte memory words")
    return nbytes // wb


def _linear(words):
    """Counts and strides of ``words`` consecutive words (two levels past the 16-bit count)."""
    if words < 1 << 16:
        return (words,), (1,)
    for inner in range(1 << 15, 0, -1):
        if words % inner == 0 and words // inner < 1 << 16:
            return (inner, words // inner), (1, inner)
    raise CompileError(f"a stream of {words} words cannot be split into two 16-bit loop counts")


class KernelBuilder:
    """One kernel being filled with ops: places units, picks AGCUs, records transfers.

    ``position`` hints are mesh coordinates (unit (r, c) at (r + 1, c); I/O rows 0 and rows + 1).
    """

    def __init__(self, target, mmap, tensors, local):
        self.target, self.mmap, self.tensors, self.local = target, mmap, tensors, local
        self.params = p = target.array
        self.lanes = p.lanes
        self.wb = target.memory.word_bytes
        self.kernel = Kernel(p, tail_ops=target.tail_ops, post_ops=target.post_ops)
        self.free = {"pcu": [(r, c) for r, c, k in p.units() if k == "pcu"],
                     "pmu": [(r, c) for r, c, k in p.units() if k == "pmu"]}
        self.io_free = {d: [(s, c) for s in ("t", "b") for c in range(p.cols)] for d in ("read", "write")}
        self.streams = []
        self.producers = {}          # tensor -> Endpoint producing it in this kernel
        self.uses = []               # (tensor, sinks, framing)
        self.count = 0

    @staticmethod
    def mesh(pos):
        return (pos[0] + 1, pos[1])

    def _name(self, op, what):
        self.count += 1
        name = f"{op}.{what}"
        return f"{name}#{self.count}" if self.kernel.has_node(name) else name

    def unit(self, kind, config, op, what, near=()):
        if not self.free[kind]:
            raise FitError(f"{kind.upper()}s: all {self._used(kind)} are used")
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

    def read(self, name, region, counts, strides, sinks, *, last_every=0, offset=0, pos_stride=0,
             token_stride=0, bf16=False):
        """Stream ``region`` (at ``offset`` bytes in) to the ``sinks`` through a free AGCU."""
        (side, col), k = self._agcu("read", [self.pos(s) for s in sinks])
        host = self.kernel.host_input(self._name(name, "in"), col=col, side=side)
        self.kernel.connect(host.out, list(sinks))
        r = self.mmap[region]
        self.streams.append(Stream(k, "read", region, r.tier, r.offset + offset, tuple(counts), tuple(strides),
                                   last_every, pos_stride, token_stride, bf16))

    def write(self, name, source, region, counts, strides, *, offset=0, pos_stride=0):
        (side, col), k = self._agcu("write", [self.pos(source)])
        host = self.kernel.host_output(self._name(name, "out"), col=col, side=side)
        self.kernel.connect(source, host.inp)
        r = self.mmap[region]
        self.streams.append(Stream(k, "write", region, r.tier, r.offset + offset, tuple(counts), tuple(strides),
                                   0, pos_stride))

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
                self._read_tensor(tensor, sinks)
        for tensor, source in self.producers.items():
            sinks = sinks_of.get(tensor, [])
            if tensor in needed_later:
                t = self.tensors[tensor]
                words = _words(4 * t["words"], self.wb, f"tensor {tensor}")
                (side, col), k = self._agcu("write", [self.pos(source)])
                host = self.kernel.host_output(self._name(tensor, "out"), col=col, side=side)
                sinks = sinks + [host.inp]
                r = self.mmap[t["scratch"]]
                counts, strides = _linear(words)
                self.streams.append(Stream(k, "write", r.name, r.tier, r.offset, counts, strides))
            if not sinks:
                raise CompileError(f"tensor {tensor} is produced but nothing consumes it")
            self.kernel.connect(source, sinks)

    def _read_tensor(self, tensor, sinks):
        t = self.tensors[tensor]
        home = t.get("home")
        size = 2 if home is not None and home.bf16 else 4
        counts, strides = _linear(_words(size * t["words"], self.wb, f"tensor {tensor}"))
        if home is not None:
            self.read(tensor, home.region, counts, strides, sinks, token_stride=home.token_stride,
                      pos_stride=home.pos_stride, bf16=home.bf16)
        else:
            self.read(tensor, t["scratch"], counts, strides, sinks)


# Op templates: each places its units, consumes its inputs and produces its outputs through the builder.

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
                                    vo=False, so="group", so_scale=1.0 / d, so_bias=op.attrs["eps"],
                                    so_func="rsqrt"), op.name, "stats", near)
    xbuf = b.unit("pmu", _row_buffer(L, d // L), op.name, "xbuf", near + [b.mesh(stats.pos)])
    norm = b.unit("pcu", PcuConfig(inputs=(0, 1), s0="per_group",
                                   stages=(Stage("mul", "r0", "s0"), Stage("mul", "r0", "r1"))),
                  op.name, "norm", [b.mesh(stats.pos), b.mesh(xbuf.pos)])
    b.use(x, [stats.vi0, xbuf.vi0])
    b.kernel.connect(stats.so0, norm.si0)
    b.kernel.connect(xbuf.vo0, norm.vi0)
    words = _words(4 * d, b.wb, op.name)
    b.read(op.attrs["gain"], op.attrs["gain"], *_linear(words), [norm.vi1])
    b.produce(op.outputs[0], norm.vo0)


def _gemv(b, op):
    L, k_in, n_out = b.lanes, op.attrs["k"], op.attrs["n"]
    x, = op.inputs
    tiles = n_out // L
    # One read pass walks the input once per tile (stride 0 over tiles), ending a group after each walk.
    buf = b.unit("pmu", PmuConfig(write=AddressPattern.linear(k_in // L, L),
                                  read=AddressPattern((k_in, tiles), (1, 0), last_level=0),
                                  read_mode=ReadMode.BROADCAST, write_passes=1, read_passes=1),
                 op.name, "xbuf", [b.near_tensor(x)])
    mac = b.unit("pcu", PcuConfig(inputs=(0, 1), group_src=0, systolic=True, systolic_rows=1,
                                  tail=op.attrs.get("tail", "none")), op.name, "mac", [b.mesh(buf.pos)])
    b.use(x, [buf.vi0])
    b.kernel.connect(buf.vo0, mac.vi0)
    bf16 = op.attrs.get("bf16", False)
    words = _words((2 if bf16 else 4) * k_in * n_out, b.wb, op.name)
    b.read(op.attrs["weight"], op.attrs["weight"], *_linear(words), [mac.vi1], bf16=bf16)
    home = op.attrs.get("out_home")
    if home:
        region, counts, strides, pos_stride = home
        b.write(op.name, mac.vo0, region, counts, strides, pos_stride=pos_stride)
    else:
        b.produce(op.outputs[0], mac.vo0)


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
    straight = b.unit("pmu", PmuConfig(write=AddressPattern.linear(heads * nv, L),
                                       read=AddressPattern((nv, heads), (L, hd), last_level=0),
                                       write_passes=1, read_passes=1), op.name, "x", near)
    # rotate_half at vector granularity: the second half of each head, then the first.
    rotated = b.unit("pmu", PmuConfig(write=AddressPattern.linear(heads * nv, L),
                                      read=AddressPattern((half, 2, heads), (L, -half * L, hd), offset=half * L,
                                                          last_level=1),
                                      write_passes=1, read_passes=1), op.name, "x_rot", near)
    sin = b.unit("pcu", PcuConfig(inputs=(0, 1), stages=(Stage("mul", "r0", "r1"),)), op.name, "sin",
                 [b.mesh(rotated.pos)])
    out = b.unit("pcu", PcuConfig(inputs=(0, 1, 2), stages=(Stage("fma", "r0", "r1", "r2"),)), op.name, "cos",
                 [b.mesh(straight.pos), b.mesh(sin.pos)])
    b.use(x, [straight.vi0, rotated.vi0])
    b.kernel.connect(rotated.vo0, sin.vi0)
    b.kernel.connect(straight.vo0, out.vi0)
    b.kernel.connect(sin.vo0, out.vi2)
    row = _words(4 * hd, b.wb, op.name)
    for table, sink in (("rope.sin", sin.vi1), ("rope.cos", out.vi1)):
        b.read(table, table, (row, heads), (1, 0), [sink], pos_stride=4 * hd)
    region, counts, strides = op.attrs["out_home"]
    b.write(op.name, out.vo0, region, counts, strides, pos_stride=4 * hd)


def _attention_scores(b, op):
    """Per head: q . K^T scaled, masked, softmax; K arrives row by row and a PMU transposes it."""
    L, hd, nh, nkv, tp, tmax = (b.lanes, op.attrs["head_dim"], op.attrs["heads"], op.attrs["kv_heads"],
                                op.attrs["tp"], op.attrs["tmax"])
    nv, tb, group = hd // L, tp // L, nh // nkv
    words = b.params.pmu_words
    qbuf = b.unit("pmu", PmuConfig(write=AddressPattern.linear(nh * nv, L),
                                   read=AddressPattern((hd, tb, nh), (1, 0, hd), last_level=0),
                                   read_mode=ReadMode.BROADCAST, write_passes=1, read_passes=1), op.name, "q")
    kbuffers = 2 if 2 * tp * hd <= words else 1
    kbuf = b.unit("pmu", PmuConfig(write=AddressPattern((nv, tp), (tp * L, L)),
                                   read=AddressPattern((L, nv, tb), (1, tp * L, L * L), last_level=None),
                                   read_mode=ReadMode.COLUMN, stripe=True, buffers=kbuffers,
                                   buffer_words=tp * hd if kbuffers > 1 else 0, write_passes=nh, read_passes=nh),
                  op.name, "kT", [b.mesh(qbuf.pos)])
    score = b.unit("pcu", PcuConfig(inputs=(0, 1), group_src=0, systolic=True, systolic_rows=1,
                                    stages=(Stage("mul", "r0", "const", const=f32(hd ** -0.5)),)),
                   op.name, "qk", [b.mesh(qbuf.pos), b.mesh(kbuf.pos)])
    peak = b.unit("pcu", PcuConfig(inputs=(0, 1), group_src=1, stages=(Stage("add", "r0", "r1"),), reduce="max",
                                   so="group"), op.name, "mask_max", [b.mesh(score.pos)])
    sbuffers = 2 if 2 * tp <= words else 1
    xbuf = b.unit("pmu", _row_buffer(L, tb, passes=nh, buffers=sbuffers), op.name, "scores", [b.mesh(peak.pos)])
    expo = b.unit("pcu", PcuConfig(s0="per_group", stages=(Stage("sub", "r0", "s0"),), tail="exp", reduce="sum",
                                   so="group", so_func="recip"), op.name, "exp_sum",
                  [b.mesh(peak.pos), b.mesh(xbuf.pos)])
    ebuf = b.unit("pmu", _row_buffer(L, tb, passes=nh, buffers=sbuffers), op.name, "exp", [b.mesh(expo.pos)])
    scale = b.unit("pcu", PcuConfig(s0="per_group", stages=(Stage("mul", "r0", "s0"),)), op.name, "normalise",
                   [b.mesh(expo.pos), b.mesh(ebuf.pos)])
    k = b.kernel
    k.connect(qbuf.vo0, score.vi0)
    k.connect(kbuf.vo0, score.vi1)
    k.connect(score.vo0, peak.vi0)
    k.connect(peak.vo0, xbuf.vi0)
    k.connect(peak.so0, expo.si0)
    k.connect(xbuf.vo0, expo.vi0)
    k.connect(expo.vo0, ebuf.vi0)
    k.connect(expo.so0, scale.si0)
    k.connect(ebuf.vo0, scale.vi0)
    slots = op.attrs["slots"]
    row = _words(4 * hd, b.wb, op.name)
    head_stride = tmax * row
    b.read(f"{op.name}.q", slots, (row, nh), (1, head_stride), [qbuf.vi0], pos_stride=4 * hd)
    b.read(f"{op.name}.k", slots, (tp * row, group, nkv), (1, 0, head_stride), [kbuf.vi0], offset=nh * tmax * 4 * hd)
    mask_row = _words(4 * tp, b.wb, op.name)
    b.read("mask", "mask", (mask_row, nh), (1, 0), [peak.vi1], last_every=1, pos_stride=4 * tmax)
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
    vw = _words(4 * L, b.wb, op.name)
    b.read(f"{op.name}.v", op.attrs["values"], (tp * vw, nv, group, nkv), (1, tmax * vw, 0, nv * tmax * vw),
           [pv.vi1])
    b.produce(op.outputs[0], pv.vo0)


TEMPLATES = {"rmsnorm": _rmsnorm, "gemv": _gemv, "add": _elementwise, "mul": _elementwise, "rope": _rope,
             "attention_scores": _attention_scores, "attention_values": _attention_values}
# (PCUs, PMUs) of each template, for summaries; "add" takes a PMU only when its residual is on chip.
UNITS = {"rmsnorm": (2, 1), "gemv": (1, 1), "add": (1, 1), "mul": (1, 0), "rope": (2, 2),
         "attention_scores": (4, 3), "attention_values": (1, 1)}


def build_kernel(target, mmap, tensors, ops, needed_later):
    """One kernel running ``ops``; raises FitError when it does not fit, CompileError when it never can."""
    local = {t for op in ops for t in op.outputs}
    b = KernelBuilder(target, mmap, tensors, local)
    try:
        for op in ops:
            TEMPLATES[op.kind](b, op)
        b.finish(needed_later)
        program = b.kernel.build()
    except RoutingError as e:
        raise FitError(f"routing: {e}") from None
    except KernelError as e:
        raise CompileError(f"kernel {' + '.join(op.name for op in ops)}: {e}") from None
    return program, b.streams


def pack(target, mmap, tensors, ops, *, fused, cache=None):
    """Group ``ops`` into kernels: greedily as many as fit (fused) or one per kernel (unfused).

    ``cache`` (a dict) keeps built kernels and refusals between calls with the same ops, e.g. the
    context buckets, whose kernels differ only where they attend.
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
        written = set()
        for j in range(i + 1, len(ops) + 1):
            op = ops[j - 1]
            if set(op.reads_home) & written:
                why = f"{op.name} reads {', '.join(sorted(set(op.reads_home) & written))} written in this kernel"
                break
            written |= set(op.writes_home)
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


FORMAT = "openrdu-compiled-1"


@dataclass
class CompiledModel:
    """Everything the runtime needs to run a model on a target.

    Attributes
    ----------
    shape : LlamaShape
    target : sw.target.Target
    mode : str
        ``"fused"`` or ``"unfused"``.
    context : int
        Positions the KV cache holds; prompts plus generated tokens must fit.
    buckets : dict
        Attention length ``tp`` -> the launches of one decode step that attends
        over ``tp`` positions (the smallest bucket covering ``pos + 1`` runs).
    memory_map : MemoryMap
    image : dict
        Region name -> uint32 words to load before running (weights, tables, programs).
    zeroed : list
        Regions to clear before a new sequence (the KV caches).
    logits : str
        Region holding the logits after a step.
    compile_seconds : float
    """

    shape: object
    target: object
    mode: str
    context: int
    buckets: dict
    memory_map: MemoryMap
    image: dict
    zeroed: list
    logits: str
    compile_seconds: float = 0.0
    checkpoint: str = ""
    format: str = FORMAT

    def bucket(self, pos):
        """The launches of the step at ``pos`` (0-based)."""
        for tp in sorted(self.buckets):
            if pos < tp:
                return tp, self.buckets[tp]
        raise CompileError(f"position {pos} is past the compiled context of {self.context} positions")

    def launches(self, tp=None):
        return self.buckets[tp or max(self.buckets)]

    def summary(self):
        """Kernels, units, routes, bytes per tier and the memory map."""
        from sw.compiler.estimate import estimate_step

        t, s = self.target, self.shape
        tp = max(self.buckets)
        launches = self.buckets[tp]
        pcus, pmus = t.array.rows * t.array.cols // 2, t.array.rows * t.array.cols // 2
        lines = [f"{self.checkpoint or 'model'}: {s.num_layers} layers, d={s.hidden_size}, {s.num_heads} heads "
                 f"({s.num_kv_heads} KV) x {s.head_dim}, FFN {s.intermediate_size}, vocab {s.vocab_size}",
                 f"target {t.describe()}",
                 f"mode {self.mode}: {len(launches)} kernels per decode step ({len(self.buckets)} context buckets "
                 f"up to {self.context} positions), compiled in {self.compile_seconds:.2f} s", ""]
        lines.append(f"{'kernel':<12} {'PCUs':>5} {'PMUs':>5} {'AGCU r/w':>8} {'routes':>6} {'hops':>5}  ops")
        for launch in launches:
            c, m = launch.units()
            reads = sum(1 for st in launch.streams if st.direction == "read")
            writes = len(launch.streams) - reads
            hops = sum(v["channel_hops"] for v in launch.program.routing.stats().values())
            lines.append(f"{launch.name:<12} {c:>2}/{pcus:<2} {m:>2}/{pmus:<2} {reads:>4}/{writes:<3} "
                         f"{len(launch.program.connections):>6} {hops:>5}  {', '.join(o.name for o in launch.ops)}")
        by_what = self.memory_map.bytes_by(lambda r: (TIER_NAMES[r.tier], r.what))
        lines.append("")
        lines.append("memory: " + ", ".join(f"{tier.upper()} {what} {n / 1024:.1f} KiB"
                                            for (tier, what), n in sorted(by_what.items())))
        est = estimate_step(self, tp)
        lines.append(f"per token at {tp} positions: {est['bytes_read']} bytes read, {est['bytes_written']} written; "
                     f"estimated {est['cycles']:.0f} cycles ({est['kernel_cycles']:.0f} in kernels, "
                     f"{est['launch_cycles']:.0f} launching {len(launches)} kernels)")
        return "\n".join(lines)


def save(compiled, path):
    """Write ``compiled`` to ``path`` (a pickle: a local build artifact, not a checkpoint format)."""
    import pickle

    with open(path, "wb") as f:
        pickle.dump(compiled, f, protocol=pickle.HIGHEST_PROTOCOL)


def load(path):
    """Read a compiled model written by :func:`save`."""
    import pickle

    try:
        with open(path, "rb") as f:
            compiled = pickle.load(f)
    except OSError as e:
        raise CompileError(f"{path}: cannot read the compiled model ({e.strerror})") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError) as e:
        raise CompileError(f"{path}: not a compiled OpenRDU model ({type(e).__name__}: {e})") from None
    if not isinstance(compiled, CompiledModel) or compiled.format != FORMAT:
        raise CompileError(f"{path}: not a compiled OpenRDU model of format {FORMAT}")
    return compiled
