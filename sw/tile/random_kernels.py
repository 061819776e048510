"""Constrained-random kernels: random legal PCU configurations and array programs with hostile data.

Every kernel is a pure function of its seed: :func:`pcu_kernel` draws one
PCU configuration and its input streams, :func:`array_kernel` one program
built with the kernel API (PMU patterns with transposed and broadcast reads
and multi-buffering, multicast routes, chains of PCUs passing scalars) and
its host inputs. Data words come from a mix of classes (:data:`CLASSES`):
NaN with any payload, infinities, subnormals, signed zeros, values whose
sums and products round on a tie, values that overflow and values that
flush, besides ordinary ones.

:func:`check_pcu` and :func:`check_array` run a kernel on the fast model and
on the independent reference (:mod:`sw.tile.oracle`) and return the
differences; the RTL testbenches (``cosim/tb/test_pcu.py``,
``cosim/tb/test_array.py``) run the same kernels against the model. A failing
kernel is reproduced from its number alone::

    python -m sw.tile.random_kernels pcu 1234
    python -m sw.tile.random_kernels array 1234 --params 3x4

:class:`Coverage` counts the bins the stimulus hit (:data:`BINS`).
"""

import argparse
import dataclasses
import sys
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from hw.tile.params import ArrayParams
from hw.tile.pcu import ALL_TAIL_OPS, POST_OPS
from sw.model.array import ArrayModel
from sw.model.pcu import PcuModel
from sw.tile import oracle
from sw.tile.kernel import Kernel, KernelError, Program
from sw.tile.pcu import PcuConfig, Stage
from sw.tile.pmu import AddressPattern, PmuConfig, ReadMode
from sw.tile.route import RoutingError

CLASSES = ("normal", "zero", "nan", "inf", "subnormal", "tie", "huge", "tiny")
OPS = ("pass", "add", "sub", "mul", "fma", "max", "min")
SOURCES = ("r0", "r1", "r2", "r3", "s0", "s1", "const", "zero")
TAILS = ("none", "exp", "recip", "rsqrt", "sigmoid", "silu", "bf16")
POSTS = ("none", "recip", "rsqrt")
# Arrays the model-only kernels run on (the RTL unit ``array`` is "small").
PARAMS = {
    "small": ArrayParams(rows=2, cols=4, lanes=4, stages=2, pmu_bank_words=64),
    "3x4": ArrayParams(rows=3, cols=4, lanes=4, stages=2, pmu_bank_words=64),
    "2x4x8": ArrayParams(rows=2, cols=4, lanes=8, stages=3, pmu_bank_words=32),
}
# Coverage bins: every name a kernel can hit, by category.
BINS = {
    "op": OPS,
    "source": SOURCES,
    "tail": TAILS,
    "so_func": POSTS,
    "scalar_out": ("every/sum", "every/max", "group/sum", "group/max"),
    "scalar_in": ("s0/per_firing", "s0/per_group", "s1/per_firing", "s1/per_group"),
    "mode": ("simd", "systolic/1", "systolic/full", "systolic/group_src=0", "systolic/operand", "systolic/reduce"),
    "pmu_read": ("ROW", "COLUMN", "BROADCAST"),
    "pmu_buffers": (1, 2, 3, 4),
    "pmu_pattern": ("reads_per_fill>1", "two-level", "bounded passes", "last per row", "negative stride",
                    "repeated address", "two transposed blocks", "runtime base"),
    "route": ("multicast", "scalar unit->unit", "bottom host input", "scalar host input", "two PCUs chained"),
    "template": ("single", "chain", "stats", "systolic", "pmu"),
    "special": ("nan", "+inf", "-inf", "subnormal", "+0", "-0", "tie", "overflow", "flush"),
    "stall": ("input idle", "output back-pressure", "output held", "no stalls"),
}
# Which operand classes reached which part of the datapath (sw.tile.oracle.Census.cross).
BINS["reached"] = tuple(f"{where}/{cls}" for where in OPS + tuple(f"tail:{t}" for t in TAILS[1:]) +
                        ("reduce:sum", "reduce:max", "systolic", "post:recip", "post:rsqrt")
                        for cls in oracle.CROSS_CLASSES
                        # The post unit's input is a sum, flushed: never subnormal.
                        if not (where.startswith("post:") and cls == "subnormal"))


def values(rng, shape, weights):
    """fp32 patterns (uint32, ``shape``) drawn from :data:`CLASSES` with ``weights``."""
    n = int(np.prod(shape))
    cls = rng.choice(len(CLASSES), n, p=weights)
    sign = rng.integers(0, 2, n).astype(np.uint32) << np.uint32(31)
    frac = rng.integers(0, 1 << 23, n).astype(np.uint32)
    normal = (rng.standard_normal(n) * 2.0 ** rng.integers(-4, 5, n)).astype(np.float32).view(np.uint32)
    # Ties: 1 + 2**-12 squared, 1 + 2**-23 plus a half ulp, 1.5 and 2**-24 next to ones.
    tie = np.array([0x3F800800, 0x3F800001, 0x33800000, 0x3FC00000, 0x3F800000, 0x34000000], np.uint32)
    tie = tie[rng.integers(0, len(tie), n)] + (rng.integers(-2, 3, n).astype(np.uint32) << np.uint32(23))
    exp = lambda lo, hi: rng.integers(lo, hi + 1, n).astype(np.uint32) << np.uint32(23)
    table = np.stack([
        normal,
        sign,
        sign | np.uint32(0x7F800000) | np.maximum(frac, 1),
        sign | np.uint32(0x7F800000),
        sign | np.maximum(frac, 1),
        sign | tie,
        sign | exp(247, 254) | frac,
        sign | exp(1, 12) | frac,
    ])
    return table[cls, np.arange(n)].reshape(shape).astype(np.uint32)


def _weights(rng):
    """A kernel's class mix: a third mostly ordinary data, the rest a random mix of every class."""
    if rng.random() < 0.35:
        w = np.array([0.8, 0.05, 0.0, 0.0, 0.05, 0.1, 0.0, 0.0])
    else:
        w = rng.dirichlet(np.ones(len(CLASSES))) + np.array([1.0, 0, 0, 0, 0, 0, 0, 0])
    return w / w.sum()


def _const(rng, weights):
    return int(values(rng, (1,), weights)[0])


def _post_float(rng):
    """so_scale / so_bias: ordinary values mostly, sometimes zero, huge, subnormal, inf or NaN."""
    return float(rng.choice([1.0, 0.25, -2.0, 1e-5, 3.0, -0.0, 0.0, 3e38, 1e-40, np.inf, np.nan, 1e-37],
                            p=[0.2, 0.15, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]))


def _stages(params, rng, weights, scalars):
    sources = ["r0", "r1", "r2", "r3", "const", "zero"] + scalars
    count = int(rng.integers(0, params.stages + 1))
    pick = lambda: str(rng.choice(sources))
    return tuple(Stage(str(rng.choice(OPS)), pick(), pick(), pick(), str(rng.choice(["r0", "r1", "r2", "r3"])),
                       _const(rng, weights)) for _ in range(count))


def pcu_config(params, rng, weights, *, tails=TAILS, posts=POSTS, inputs=None, systolic=None, scalars=None,
               so=None):
    """A random valid :class:`PcuConfig`.

    ``inputs`` fixes the consumed vector inputs, ``systolic`` the mode, ``scalars`` the s0/s1 modes
    (a pair), ``so`` the scalar output, when a kernel's wiring needs them; otherwise they are drawn.
    """
    tails = [t for t in TAILS if t in tails]
    posts = [t for t in POSTS if t in posts]
    if systolic is None:
        systolic = rng.random() < 0.2 and inputs in (None, (0, 1))
    if systolic:
        return PcuConfig(inputs=(0, 1), group_src=int(rng.integers(0, 2)), systolic=True,
                         systolic_rows=int(rng.integers(1, params.stages + 1)),
                         stages=_stages(params, rng, weights, []), tail=str(rng.choice(tails)),
                         out_src=str(rng.choice(["r0", "r1", "r2", "r3"], p=[0.7, 0.1, 0.1, 0.1])))
    if inputs is None:
        inputs = tuple(k for k in range(3) if rng.random() < 0.5) or (int(rng.integers(0, 3)),)
    if scalars is None:
        scalars = tuple(str(rng.choice(["none", "per_firing", "per_group"], p=[0.5, 0.25, 0.25])) for _ in range(2))
    stages = _stages(params, rng, weights, [f"s{k}" for k in range(2) if scalars[k] != "none"])
    reduce = str(rng.choice(["none", "sum", "max"] if so in (None, "none") else ["sum", "max"]))
    if so is None:
        so = "none" if reduce == "none" else str(rng.choice(["none", "every", "group"]))
    vo = so == "none" or rng.random() < 0.6
    dsts = [st.dst for st in stages]
    return PcuConfig(inputs=inputs, group_src=int(rng.choice(inputs)), s0=scalars[0], s1=scalars[1], stages=stages,
                     out_src=dsts[-1] if dsts and rng.random() < 0.7 else str(rng.choice(["r0", "r1", "r2", "r3"])),
                     tail=str(rng.choice(tails)), reduce=reduce, vo=vo, so=so,
                     so_scale=_post_float(rng) if so != "none" else 1.0,
                     so_bias=_post_float(rng) if so != "none" else 0.0,
                     so_func=str(rng.choice(posts)) if so != "none" else "none")


def _length(rng, short):
    """Firings of a stream: 1 to ``short`` mostly, 20 to 48 in one draw of seven (fills FIFOs under stalls)."""
    return int(rng.integers(20, 49)) if rng.random() < 1 / 7 else int(rng.integers(1, short + 1))


def _last(rng, n, *, max_group=4):
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(1, max_group + 1)))
    last = np.zeros(n, bool)
    last[np.minimum(np.cumsum(sizes), n) - 1] = True
    return last


@dataclass
class PcuKernel:
    """One random PCU kernel: configuration and input streams (``vi``, ``si`` as :meth:`PcuModel.run` takes)."""

    seed: int
    params: ArrayParams
    config: PcuConfig
    vi: dict
    si: dict
    weights: np.ndarray

    @property
    def name(self):
        return f"random_pcu_{self.seed}"


def pcu_kernel(seed, params=PARAMS["small"]):
    """The PCU kernel of ``seed``: any tail and post function (the RTL unit ``pcu`` builds them all)."""
    rng = np.random.default_rng([seed, 1])
    weights = _weights(rng)
    cfg = pcu_config(params, rng, weights)
    n = _length(rng, 12)
    lasts = {k: _last(rng, n) for k in range(3)}
    if cfg.systolic and rng.random() < 0.7:
        lasts[1 - cfg.group_src] = lasts[cfg.group_src]
    vi = {k: (values(rng, (n, params.lanes), weights), lasts[k]) for k in cfg.inputs}
    groups = int(lasts[cfg.group_src].sum())
    # Half the systolic kernels take a vi2 operand per drained row, drawn from a stream of their own so
    # every other seed's kernel stays as it was.
    extra = np.random.default_rng([seed, 2])
    if cfg.systolic and extra.random() < 0.5:
        cfg = dataclasses.replace(cfg, inputs=(0, 1, 2), systolic_operand=True)
        rows = groups * cfg.systolic_rows
        vi[2] = (values(extra, (rows, params.lanes), weights), _last(extra, rows))
    # Half the systolic kernels reduce their drained rows to so0, from a third stream for the same reason.
    more = np.random.default_rng([seed, 4])
    if cfg.systolic and more.random() < 0.5:
        cfg = dataclasses.replace(cfg, so=str(more.choice(["every", "group"])), reduce=str(more.choice(["sum", "max"])),
                                  vo=bool(more.random() < 0.7), so_scale=_post_float(more),
                                  so_bias=_post_float(more), so_func=str(more.choice(POSTS)))
    si = {k: values(rng, (n if mode == "per_firing" else groups,), weights)
          for k, mode in enumerate((cfg.s0, cfg.s1)) if mode != "none"}
    return PcuKernel(seed, params, cfg, vi, si, weights)


@dataclass
class ArrayKernel:
    """One random array kernel: the program, its host inputs, the template it follows."""

    seed: int
    params_name: str
    program: Program
    inputs: dict
    template: str
    features: set = field(default_factory=set)
    weights: np.ndarray = None

    @property
    def name(self):
        return f"random_array_{self.seed}"


class _Builder:
    """Kernel API calls of one draw, with host ports placed on free I/O positions."""

    def __init__(self, params, tail_ops, post_ops, rng, weights):
        self.p, self.rng, self.weights = params, rng, weights
        self.k = Kernel(params, tail_ops=tail_ops, post_ops=post_ops)
        self.inputs, self.features = {}, set()
        units = [(r, c) for r, c, _ in params.units()]
        order = rng.permutation(len(units))
        self.free = {"pcu": [units[i] for i in order if params.is_pcu(*units[i])],
                     "pmu": [units[i] for i in order if not params.is_pcu(*units[i])]}
        self.io = {net: [(s, c) for s in ("t", "b") for c in rng.permutation(params.cols).tolist()]
                   for net in ("vector", "scalar")}
        self.outs = set()

    def tails(self, pos, ops):
        return {op.name.lower() for op in (ops.get(pos, ()) if isinstance(ops, dict) else ops)} | {"none"}

    def pcu(self, **kw):
        pos = self.free["pcu"].pop()
        cfg = pcu_config(self.p, self.rng, self.weights, tails=self.tails(pos, self.k.tail_ops),
                         posts=self.tails(pos, self.k.post_ops), **kw)
        return self.k.pcu(pos, cfg)

    def pmu(self, cfg):
        return self.k.pmu(self.free["pmu"].pop(), cfg)

    def host_in(self, data, last, network="vector"):
        side, col = self.io[network].pop(0) if self.rng.random() < 0.7 else self.io[network].pop()
        if side == "b":
            self.features.add("bottom host input")
        if network == "scalar":
            self.features.add("scalar host input")
        name = f"in{len(self.inputs)}"
        self.inputs[name] = (data, last)
        return self.k.host_input(name, col, network=network, side=side)

    def host_out(self, source):
        network = "scalar" if source.port == "so0" else "vector"
        side, col = next((s, c) for s in ("b", "t") for c in range(self.p.cols)
                         if (network, s, c) not in self.outs)
        self.outs.add((network, side, col))
        return self.k.host_output(f"out{len(self.outs)}", col, network=network, side=side)

    def connect(self, source, sinks):
        sinks = sinks if isinstance(sinks, list) else [sinks]
        if len(sinks) > 1:
            self.features.add("multicast")
        if source.port == "so0" and any(s.port.startswith("si") for s in sinks) and \
                source.node in self.k.units:
            self.features.add("scalar unit->unit")
        self.k.connect(source, sinks)

    def vectors(self, n):
        return values(self.rng, (n, self.p.lanes), self.weights)

    def feed_pcu(self, unit, n, last, given, wired=()):
        """Connect ``given`` (port -> source endpoint) to ``unit``, and host inputs to its other inputs
        except those in ``wired`` (connected already)."""
        cfg = unit.config
        groups = int(last.sum())
        for k in cfg.inputs:
            if f"vi{k}" not in given and f"vi{k}" not in wired:
                lk = last if k == cfg.group_src else _last(self.rng, n)
                self.connect(self.host_in(self.vectors(n), lk).out, getattr(unit, f"vi{k}"))
        for k, mode in enumerate((cfg.s0, cfg.s1)):
            if mode != "none" and f"si{k}" not in given:
                count = n if mode == "per_firing" else groups
                h = self.host_in(values(self.rng, (count,), self.weights), np.zeros(count, bool), "scalar")
                self.connect(h.out, getattr(unit, f"si{k}"))
        for port, source in given.items():
            self.connect(source, getattr(unit, port))

    def outputs(self, unit, taken=()):
        for port, on in (("vo0", unit.config.vo if unit.kind == "pcu" else True),
                         ("so0", unit.kind == "pcu" and unit.config.so != "none")):
            if on and port not in taken:
                self.connect(getattr(unit, port), self.host_out(getattr(unit, port)).inp)


def _pmu_config(params, rng, features):
    """A random PMU pattern: (config, vectors written per fill, fills, write bases, read bases).

    Runtime bases (one buffer) move each fill to a random place and its reads with it, so every word read
    was written by the kernel (the RTL's banks keep what earlier kernels left).
    """
    lanes, words = params.lanes, params.pmu_words
    mode = [ReadMode.ROW, ReadMode.COLUMN, ReadMode.BROADCAST][int(rng.integers(0, 3))]
    buffers = int(rng.integers(1, 5))
    rpf = int(rng.integers(1, 4)) if rng.random() < 0.4 else 1
    if mode == ReadMode.COLUMN:
        blocks = int(rng.integers(1, 3))
        rows = lanes * blocks
        read = AddressPattern(bounds=(lanes, blocks), strides=(1, lanes * lanes), last_level=1)
    else:
        rows = int(rng.integers(1, 7))
        if mode == ReadMode.ROW and rows > 1 and rng.random() < 0.5:
            # Two levels, rows read in a permuted (or repeated) order.
            inner = int(rng.integers(1, rows + 1))
            outer = int(rng.integers(1, 3))
            read = AddressPattern(bounds=(inner, outer), strides=(lanes * int(rng.integers(0, 2)),
                                                                  lanes * int(rng.integers(0, rows - inner + 1))),
                                  offset=0, last_level=int(rng.integers(0, 2)))
        elif mode == ReadMode.ROW:
            read = AddressPattern.linear(rows, lanes)
            if rows > 1 and rng.random() < 0.5:
                read = AddressPattern(bounds=(rows,), strides=(-lanes,), offset=(rows - 1) * lanes)
        else:
            count = int(rng.integers(1, 2 * rows * lanes + 1))
            read = AddressPattern(bounds=(count,), strides=(int(rng.integers(0, 2)),),
                                  offset=int(rng.integers(0, rows * lanes - (count - 1) if count <= rows * lanes
                                                          else 1)))
            read = read if read.span()[1] < rows * lanes else AddressPattern.linear(min(count, rows * lanes), 1)
    size = rows * lanes
    if buffers * size > words:
        buffers = 1
    fills = int(rng.integers(1, 4))
    bounded = rng.random() < 0.5
    write = AddressPattern.linear(rows, lanes)
    bases = ((), ())
    if buffers == 1 and rng.random() < 0.3:
        reach = max(size, read.span()[1] + {ReadMode.ROW: lanes, ReadMode.COLUMN: (lanes - 1) * lanes + 1,
                                            ReadMode.BROADCAST: 1}[mode])
        w_bases = lanes * rng.integers(0, (words - reach) // lanes + 1, fills)
        bases = (w_bases, np.repeat(w_bases, rpf))
        write = AddressPattern(bounds=write.bounds, strides=write.strides, runtime_base=True)
        read = AddressPattern(bounds=read.bounds, strides=read.strides, offset=read.offset,
                              last_level=read.last_level, runtime_base=True)
        features.add("runtime base")
    cfg = PmuConfig(write=write, read=read, read_mode=mode,
                    stripe=mode == ReadMode.COLUMN or bool(rng.random() < 0.3), buffers=buffers,
                    buffer_words=size if buffers > 1 else 0, reads_per_fill=rpf,
                    write_passes=fills if bounded else 0, read_passes=fills * rpf if bounded else 0)
    cfg.validate(params)
    features.update({mode.name, f"buffers={buffers}"})
    if rpf > 1:
        features.add("reads_per_fill>1")
    if len(read.bounds) > 1:
        features.add("two-level")
    if bounded:
        features.add("bounded passes")
    if read.last_level == 0 and len(read.bounds) > 1:
        features.add("last per row")
    if any(st < 0 for st in read.strides):
        features.add("negative stride")
    if len(np.unique(read.addresses())) < read.count:
        features.add("repeated address")
    if mode == ReadMode.COLUMN and rows > lanes:
        features.add("two transposed blocks")
    return cfg, rows, fills, bases


def _template(b, template):
    """Place and connect the units of ``template``; returns nothing, raises on a draw that does not fit."""
    p, rng = b.p, b.rng
    lanes = p.lanes
    if template == "single":
        unit = b.pcu()
        n = _length(rng, 10)
        b.feed_pcu(unit, n, _last(rng, n), {})
        b.outputs(unit)
    elif template == "chain":
        first = b.pcu(systolic=False)
        n = _length(rng, 10)
        last = _last(rng, n)
        b.feed_pcu(first, n, last, {})
        if not first.config.vo:
            raise KernelError("chain: the first PCU emits no vectors")
        s = first.config.so
        scalars = ("per_firing" if s == "every" else "per_group" if s == "group" else "none",
                   str(rng.choice(["none", "per_firing"])))
        second = b.pcu(systolic=False, scalars=scalars)
        # The second PCU's groups are the first one's: its group input is the first one's vectors.
        port = f"vi{second.config.group_src}"
        given = {port: first.vo0}
        if s != "none":
            given["si0"] = first.so0
        b.features.add("two PCUs chained")
        if rng.random() < 0.3:
            b.connect(given.pop(port), [getattr(second, port), b.host_out(first.vo0).inp])
        b.feed_pcu(second, n, last, given, wired=(port,))
        b.outputs(second)
    elif template == "stats":
        g, groups = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        n = g * groups
        last = np.tile(np.arange(g) == g - 1, groups)
        stats = b.pcu(systolic=False, inputs=(0,), so="group")
        buf = b.pmu(PmuConfig(write=AddressPattern.linear(g, lanes), read=AddressPattern.linear(g, lanes),
                              buffers=2, buffer_words=g * lanes))
        b.features.update({"ROW", "buffers=2"})
        x = b.host_in(b.vectors(n), last)
        b.connect(x.out, [stats.vi0, buf.vi0])
        b.feed_pcu(stats, n, last, {}, wired=("vi0",))
        use = b.pcu(systolic=False, inputs=(0,), scalars=("per_group", str(rng.choice(["none", "per_firing"]))))
        b.feed_pcu(use, n, last, {"si0": stats.so0, "vi0": buf.vo0})
        b.outputs(stats, taken=("so0",))
        b.outputs(use)
    elif template == "systolic":
        k, tiles = int(rng.integers(1, 7)), int(rng.integers(1, 4))
        mm = b.pcu(systolic=True)
        a = b.host_in(b.vectors(k * tiles), np.tile(np.arange(k) == k - 1, tiles))
        buf = b.pmu(PmuConfig(write=AddressPattern.linear(k, lanes), read=AddressPattern.linear(k, lanes),
                              reads_per_fill=tiles, write_passes=1, read_passes=tiles))
        b.features.update({"ROW", "buffers=1", "bounded passes"} | ({"reads_per_fill>1"} if tiles > 1 else set()))
        w = b.host_in(b.vectors(k), np.arange(k) == k - 1)
        b.connect(a.out, mm.vi0)
        b.connect(w.out, buf.vi0)
        b.connect(buf.vo0, mm.vi1)
        b.outputs(mm)
    else:
        cfg, rows, fills, bases = _pmu_config(p, rng, b.features)
        buf = b.pmu(cfg)
        x = b.host_in(b.vectors(rows * fills), _last(rng, rows * fills))
        b.connect(x.out, buf.vi0)
        for port, base in zip(("si0", "si1"), bases):
            if len(base):
                b.connect(b.host_in(base.astype(np.uint32), np.zeros(len(base), bool), "scalar").out,
                          getattr(buf, port))
        reads = oracle.pmu(p, cfg, b.inputs[x.name][0], *bases)[1]
        if rng.random() < 0.3 or not reads[-1]:
            b.outputs(buf)
        else:
            unit = b.pcu(systolic=False)
            port = f"vi{unit.config.group_src}"
            if rng.random() < 0.3:
                b.connect(buf.vo0, [getattr(unit, port), b.host_out(buf.vo0).inp])
                b.feed_pcu(unit, len(reads), reads, {}, wired=(port,))
            else:
                b.feed_pcu(unit, len(reads), reads, {port: buf.vo0})
            b.outputs(unit)


def array_kernel(seed, params_name="small", tail_ops=ALL_TAIL_OPS, post_ops=POST_OPS):
    """The array kernel of ``seed`` on ``PARAMS[params_name]`` with the given PCU functions.

    Draws until a program builds (a draw may not fit: no free position, a route that does not exist);
    every draw comes from the seed's generator, so the kernel is the same on every call.
    """
    params = PARAMS[params_name]
    rng = np.random.default_rng([seed, 2])
    for _ in range(100):
        weights = _weights(rng)
        template = str(rng.choice(["single", "chain", "stats", "systolic", "pmu"], p=[0.25, 0.2, 0.15, 0.15, 0.25]))
        b = _Builder(params, tail_ops, post_ops, rng, weights)
        try:
            _template(b, template)
            program = b.k.build()
        except (KernelError, RoutingError, IndexError, StopIteration, ValueError):
            continue
        features = b.features | {template}
        return ArrayKernel(seed, params_name, program, b.inputs, template, features, weights)
    raise RuntimeError(f"seed {seed}: no buildable kernel in 100 draws")


def _diff(what, got, want):
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return [f"{what}: shape {got.shape}, reference {want.shape}"]
    bad = np.argwhere(got != want)
    if not len(bad):
        return []
    i = tuple(bad[0])
    return [f"{what}: {len(bad)} of {got.size} differ, first at {list(i)}: {int(got[i]):#x}, reference "
            f"{int(want[i]):#x}"]


def check_pcu(kernel, census=None, *, model=PcuModel):
    """Differences between the fast model and the reference on ``kernel`` (empty list: none)."""
    got = model(kernel.params, kernel.config).run(kernel.vi, kernel.si)
    want = oracle.pcu(kernel.params, kernel.config, kernel.vi, kernel.si, census)
    problems = []
    for name in ("vo", "vo_last", "so", "so_last"):
        problems += _diff(name, getattr(got, name), want[name])
    problems += [f"tail {v[0]:#x} -> {v[1]:#x}, formula {v[2]!r}" for v in want["violations"][:3]]
    return problems


def check_array(kernel, census=None):
    """Differences between ArrayModel and the reference on ``kernel`` (empty list: none)."""
    got = ArrayModel(kernel.program).run(kernel.inputs).outputs
    want, violations = oracle.array(kernel.program, kernel.inputs, census)
    problems = []
    for name in want:
        problems += _diff(f"{name} data", got[name][0], want[name][0])
        problems += _diff(f"{name} last", got[name][1], want[name][1])
    problems += [f"tail {v[0]:#x} -> {v[1]:#x}, formula {v[2]!r}" for v in violations[:3]]
    return problems


class Coverage:
    """Bins of :data:`BINS` hit by the kernels recorded, with hit counts."""

    def __init__(self):
        self.hits = Counter()

    def stalls(self, idle, back, monitors):
        """Count the stall situations of one RTL run (input idle and output back-pressure fractions, the output
        monitors); True when there were none, so the run's cycles may be compared with the model's."""
        for cause, name in ((idle, "input idle"), (back, "output back-pressure"),
                            (any(m.held_cycles for m in monitors), "output held")):
            if cause:
                self.add("stall", name)
        if not idle and not back:
            self.add("stall", "no stalls")
            return True
        return False

    def add(self, category, name, count=1):
        if name not in BINS[category]:
            raise KeyError(f"coverage bin {category}/{name} is not in BINS")
        self.hits[(category, name)] += count

    def config(self, cfg):
        """Bins of one PCU configuration."""
        if cfg.systolic:
            self.add("mode", "systolic/1" if cfg.systolic_rows == 1 else "systolic/full")
            if cfg.group_src == 0:
                self.add("mode", "systolic/group_src=0")
            if cfg.systolic_operand:
                self.add("mode", "systolic/operand")
            if cfg.so != "none":
                self.add("mode", "systolic/reduce")
        else:
            self.add("mode", "simd")
        for st in cfg.stages:
            self.add("op", st.op)
            for s in (st.a, st.b, st.c) if st.op in ("fma",) else (st.a, st.b) if st.op != "pass" else (st.a,):
                self.add("source", s)
        self.add("tail", cfg.tail)
        if cfg.so != "none":
            self.add("scalar_out", f"{cfg.so}/{cfg.reduce}")
            self.add("so_func", cfg.so_func)
        for k, mode in enumerate((cfg.s0, cfg.s1)):
            if mode != "none":
                self.add("scalar_in", f"s{k}/{mode}")

    def census(self, census):
        for name in BINS["special"]:
            if census.counts[name]:
                self.add("special", name, census.counts[name])
        for (where, cls), count in census.cross.items():
            if count:
                self.add("reached", f"{where}/{cls}", count)

    def pcu_kernel(self, kernel):
        self.config(kernel.config)

    def array_kernel(self, kernel):
        for u in kernel.program.units.values():
            if u.kind == "pcu":
                self.config(u.config)
        for f in kernel.features:
            if f.startswith("buffers="):
                self.add("pmu_buffers", int(f.split("=")[1]))
            elif f in BINS["pmu_read"]:
                self.add("pmu_read", f)
            elif f in BINS["pmu_pattern"]:
                self.add("pmu_pattern", f)
            elif f in BINS["route"]:
                self.add("route", f)
            elif f in BINS["template"]:
                self.add("template", f)

    def merge(self, hits):
        """Add hit counts from a dict ``"category/name" -> count`` (e.g. from an RTL run)."""
        for key, count in hits.items():
            category, name = key.split("/", 1)
            self.add(category, int(name) if category == "pmu_buffers" else name, count)

    def report(self):
        """(fraction of bins hit, list of holes as "category/name", dict of hits as "category/name" -> count)."""
        total = [(c, n) for c, names in BINS.items() for n in names]
        holes = [f"{c}/{n}" for c, n in total if not self.hits[(c, n)]]
        return (len(total) - len(holes)) / len(total), holes, {f"{c}/{n}": v for (c, n), v in self.hits.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sw.tile.random_kernels",
                                     description="Run one random kernel on the fast model and the reference.")
    parser.add_argument("kind", choices=("pcu", "array"))
    parser.add_argument("seed", type=int)
    parser.add_argument("--params", default="small", choices=sorted(PARAMS))
    args = parser.parse_args(argv)
    if args.kind == "pcu":
        kernel = pcu_kernel(args.seed, PARAMS[args.params])
        print(kernel.config)
        problems = check_pcu(kernel)
    else:
        kernel = array_kernel(args.seed, args.params)
        print(f"template {kernel.template}\n{kernel.program.summary()}")
        for u in kernel.program.units.values():
            print(f"  {u.name}: {u.config}")
        problems = check_array(kernel)
    print("\n".join(problems) if problems else f"seed {args.seed}: model and reference agree")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
