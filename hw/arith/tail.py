"""PCU tail functions on fp32: exp, recip, rsqrt, sigmoid and silu.

Each function is built from the bit-exact units (``fp32_add_datapath``,
``fp32_mul_datapath``, ``fp32_cmp_datapath``, ``fp32_to_int_datapath``),
exponent-field insertion (:func:`ldexp_datapath`) and small constant ROMs,
in the same order as the golden model ``sw/golden/tail.py``. Every datapath
has a fixed latency (the ``*_LATENCY`` constants) and takes one operation per
cycle; the algorithms and their measured accuracy are in ``docs/numerics.md``.
"""

import math
import struct

from amaranth import Module, Signal, Cat, Const, Mux, Array, signed
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from .add import fp32_add_datapath, Fp32Add
from .cmp import fp32_cmp_datapath, Fp32Cmp, CmpResult
from .convert import fp32_to_int_datapath, Fp32ToInt
from .fp import unpack32, CANON_NAN32, INF32, EXP_MAX
from .mul import fp32_mul_datapath, Fp32Mul
from .pipeline import Pipeline

ONE = 0x3F80_0000
HALF = 0x3F00_0000
SIGN = 0x8000_0000
NEG_INF = 0xFF80_0000

# The same constants as sw/golden/tail.py, where each is explained.
EXP_X_LO = 0xC2D0_0000
EXP_X_HI = 0x42D0_0000
EXP_LOG2E = 0x3FB8_AA3B
EXP_ROUNDER = 0x4B40_0000
EXP_LN2_HI = 0x3F31_7200
EXP_LN2_LO = 0x35BF_BE8E
EXP_COEFFS = (0x3EFF_FFFE, 0x3E2A_AA45, 0x3D2A_AC8B, 0x3C09_1FE9, 0x3AB5_0D2F)
NEWTON_STEPS = 2
SILU_SCALE = 64
SILU_ONE_SCALED = 0x1F80_0000


def _f32(value):
    """fp32 bit pattern of a Python float, rounded to nearest even."""
    return struct.unpack("<I", struct.pack("<f", value))[0]


RECIP_SEED = tuple(_f32(2.0 / ((1 + j / 128) + (1 + (j + 1) / 128))) for j in range(128))
RSQRT_SEED = tuple(_f32(2.0 / (math.sqrt(2.0 ** (j // 64) * (1 + (j % 64) / 64))
                               + math.sqrt(2.0 ** (j // 64) * (1 + (j % 64 + 1) / 64))))
                   for j in range(128))

_ADD, _MUL, _CMP, _F2I, _LDEXP, _ROM = Fp32Add.LATENCY, Fp32Mul.LATENCY, Fp32Cmp.LATENCY, Fp32ToInt.LATENCY, 1, 1


def ldexp_datapath(m, reg, x, k):
    """``x * 2**k`` by exponent-field arithmetic; one register level.

    ``k`` is a signed value. Exact while the result is normal; an exponent
    of 0 or below flushes to signed zero and 255 or above gives signed
    infinity. Zeros, infinities and NaN (made canonical) pass unchanged.
    """
    u = unpack32(x)
    e2 = Signal(signed(max(len(k), 9) + 2), name="ldexp_e")
    m.d.comb += e2.eq(u.exp + k)
    result = Signal(32, name="ldexp_result")
    with m.If(u.is_nan):
        m.d.comb += result.eq(CANON_NAN32)
    with m.Elif(u.is_inf | (~u.is_zero & (e2 >= EXP_MAX))):
        m.d.comb += result.eq(Cat(Const(INF32, 31), u.sign))
    with m.Elif(u.is_zero | (e2 <= 0)):
        m.d.comb += result.eq(Cat(Const(0, 31), u.sign))
    with m.Else():
        m.d.comb += result.eq(Cat(u.frac, e2[:8], u.sign))
    return reg(result, name="ldexp_out")


class _Schedule:
    """Operands tagged with the register level they are valid at.

    Each operation delays its operands to the latest of their levels, so the
    composed datapaths stay aligned without hand-counted delay chains.
    Constants (level ``None``) are valid at every level.
    """

    def __init__(self, m, reg, prefix):
        self.m, self.reg, self.prefix = m, reg, prefix
        self._delayed = {}

    def at(self, operand, level):
        value, start = operand
        if start is None:
            return value
        if start > level:
            raise ValueError(f"operand valid at level {start} is needed at level {level}")
        for k in range(start, level):
            key = (id(value), k + 1)
            if key not in self._delayed:
                self._delayed[key] = (self.reg(value, name=f"{self.prefix}_d{k + 1}"), value)
            value = self._delayed[key][0]
        return value

    def _level(self, *operands):
        return max((t for _, t in operands if t is not None), default=0)

    def add(self, a, b, *, sub=0):
        t = self._level(a, b)
        return fp32_add_datapath(self.m, self.reg, self.at(a, t), self.at(b, t), sub), t + _ADD

    def mul(self, a, b):
        t = self._level(a, b)
        return fp32_mul_datapath(self.m, self.reg, self.at(a, t), self.at(b, t)), t + _MUL

    def cmp(self, a, b, field):
        t = self._level(a, b)
        flags = data.View(CmpResult, fp32_cmp_datapath(self.m, self.reg, self.at(a, t), self.at(b, t)))
        return getattr(flags, field), t + _CMP

    def to_int(self, a):
        t = self._level(a)
        return fp32_to_int_datapath(self.m, self.reg, self.at(a, t)), t + _F2I

    def ldexp(self, a, k):
        t = self._level(a, k)
        return ldexp_datapath(self.m, self.reg, self.at(a, t), self.at(k, t)), t + _LDEXP

    def rom(self, table, index, *, name):
        t = self._level(index)
        rom = Array(Const(v, 32) for v in table)
        return self.reg(rom[self.at(index, t)], name=name), t + _ROM


def _const(value):
    return Const(value, 32), None


def _exp(s, x, offset):
    """e**x * 2**offset on scheduled operands; ``offset`` is a scheduled signed value."""
    xc = s.cmp(s.cmp(x, _const(EXP_X_LO), "max"), _const(EXP_X_HI), "min")
    t = s.mul(xc, _const(EXP_LOG2E))
    nf = s.add(s.add(t, _const(EXP_ROUNDER)), _const(EXP_ROUNDER), sub=1)
    n, n_level = s.to_int(nf)
    r = s.add(s.add(xc, s.mul(nf, _const(EXP_LN2_HI)), sub=1), s.mul(nf, _const(EXP_LN2_LO)), sub=1)
    q = _const(EXP_COEFFS[-1])
    for c in EXP_COEFFS[-2::-1]:
        q = s.add(s.mul(q, r), _const(c))
    p = s.add(s.add(s.mul(s.mul(r, r), q), r), _const(ONE))
    level = s._level((n, n_level), offset, p)
    k = Signal(signed(34), name="exp_k")
    s.m.d.comb += k.eq(s.at((n, n_level), level).as_signed() + s.at(offset, level))
    return s.ldexp(p, (k, level))


def _recip(s, x):
    """1/x on a scheduled operand, specials included."""
    u = unpack32(x[0])
    d = (Cat(u.frac, Const(ONE >> 23, 9)), x[1])
    seed = s.rom(RECIP_SEED, (u.frac[16:], x[1]), name="recip_seed")
    y = (Mux(s.at((u.frac == 0, x[1]), seed[1]), ONE, seed[0]), seed[1])
    for _ in range(NEWTON_STEPS):
        y = s.add(y, s.mul(y, s.add(_const(ONE), s.mul(d, y), sub=1)))
    k = Signal(signed(9), name="recip_k")
    s.m.d.comb += k.eq(127 - u.exp)
    z, level = s.ldexp(y, (k, x[1]))
    sign, zero, inf, nan = (s.at((flag, x[1]), level) for flag in (u.sign, u.is_zero, u.is_inf, u.is_nan))
    result = Signal(32, name="recip_result")
    with s.m.If(nan):
        s.m.d.comb += result.eq(CANON_NAN32)
    with s.m.Elif(zero):
        s.m.d.comb += result.eq(Cat(Const(INF32, 31), sign))
    with s.m.Elif(inf):
        s.m.d.comb += result.eq(Cat(Const(0, 31), sign))
    with s.m.Else():
        s.m.d.comb += result.eq(Cat(z[:31], sign))
    return result, level


def exp_datapath(m, reg, x):
    """e**x; ``EXP_LATENCY`` register levels. See ``sw.golden.tail.exp``."""
    s = _Schedule(m, reg, "exp")
    z, level = _exp(s, (x, 0), (Const(0, signed(2)), None))
    assert level == EXP_LATENCY
    return z


def recip_datapath(m, reg, x):
    """1/x; ``RECIP_LATENCY`` register levels. See ``sw.golden.tail.recip``."""
    z, level = _recip(_Schedule(m, reg, "recip"), (x, 0))
    assert level == RECIP_LATENCY
    return z


def rsqrt_datapath(m, reg, x):
    """1/sqrt(x); ``RSQRT_LATENCY`` register levels. See ``sw.golden.tail.rsqrt``."""
    s = _Schedule(m, reg, "rsqrt")
    u = unpack32(x)
    odd = ~u.exp[0]
    dh = (Cat(u.frac, (126 + odd)[:8], Const(0, 1)), 0)
    seed = s.rom(RSQRT_SEED, (Cat(u.frac[17:], odd), 0), name="rsqrt_seed")
    y = (Mux(s.at(((u.frac == 0) & ~odd, 0), seed[1]), ONE, seed[0]), seed[1])
    for _ in range(NEWTON_STEPS):
        y = s.add(y, s.mul(y, s.add(_const(HALF), s.mul(dh, s.mul(y, y)), sub=1)))
    k = Signal(signed(10), name="rsqrt_k")
    m.d.comb += k.eq((odd + 127 - u.exp) >> 1)
    z, level = s.ldexp(y, (k, 0))
    assert level == RSQRT_LATENCY
    sign, zero, inf, nan = (s.at((flag, 0), level) for flag in (u.sign, u.is_zero, u.is_inf, u.is_nan))
    result = Signal(32, name="rsqrt_result")
    with m.If(nan | (sign & ~zero)):
        m.d.comb += result.eq(CANON_NAN32)
    with m.Elif(zero):
        m.d.comb += result.eq(Cat(Const(INF32, 31), sign))
    with m.Elif(inf):
        m.d.comb += result.eq(0)
    with m.Else():
        m.d.comb += result.eq(z)
    return result


def sigmoid_datapath(m, reg, x):
    """1 / (1 + e**-x) as ``recip(1 + exp(-x))``; ``SIGMOID_LATENCY`` register levels."""
    s = _Schedule(m, reg, "sigmoid")
    e = _exp(s, (x ^ SIGN, 0), (Const(0, signed(2)), None))
    z, level = _recip(s, s.add(e, _const(ONE)))
    assert level == SIGMOID_LATENCY
    return z


def silu_datapath(m, reg, x):
    """x * sigmoid(x), scaled by 2^64 for negative x; ``SILU_LATENCY`` register levels.

    See ``sw.golden.tail.silu`` for why the scaling keeps results that
    sigmoid alone would flush.
    """
    s = _Schedule(m, reg, "silu")
    neg = x[31]
    k = Signal(signed(8), name="silu_k")
    m.d.comb += k.eq(Mux(neg, -SILU_SCALE, 0))
    e = _exp(s, (x ^ SIGN, 0), (k, 0))
    one = (Mux(s.at((neg, 0), e[1]), Const(SILU_ONE_SCALED, 32), Const(ONE, 32)), e[1])
    z, level = s.ldexp(s.mul((x, 0), _recip(s, s.add(e, one))), (k, 0))
    assert level == SILU_LATENCY
    below = s.at(((x > EXP_X_LO) & (x <= NEG_INF), 0), level)
    return Mux(below, SIGN, z)


EXP_LATENCY = 54
RECIP_LATENCY = 26
RSQRT_LATENCY = 32
SIGMOID_LATENCY = EXP_LATENCY + _ADD + RECIP_LATENCY
SILU_LATENCY = SIGMOID_LATENCY + _MUL + _LDEXP


def _tail_unit(name, datapath, latency, doc):
    def __init__(self):
        wiring.Component.__init__(self, {"i": In(stream.Signature(32)), "o": Out(stream.Signature(32))})

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.i, self.o, latency=latency)
        m.d.comb += self.o.payload.eq(datapath(m, pipe.reg, self.i.payload))
        return m

    return type(name, (wiring.Component,), {
        "__doc__": doc, "__init__": __init__, "elaborate": elaborate, "LATENCY": latency,
        "__module__": __name__})


Exp = _tail_unit("Exp", exp_datapath, EXP_LATENCY, """\
Pipelined e**x on fp32, one operation per cycle.

``i`` carries fp32 bit patterns, ``o`` the results ``LATENCY`` cycles later.
""")

Recip = _tail_unit("Recip", recip_datapath, RECIP_LATENCY, """\
Pipelined 1/x on fp32, one operation per cycle.

``i`` carries fp32 bit patterns, ``o`` the results ``LATENCY`` cycles later.
""")

Rsqrt = _tail_unit("Rsqrt", rsqrt_datapath, RSQRT_LATENCY, """\
Pipelined 1/sqrt(x) on fp32, one operation per cycle.

``i`` carries fp32 bit patterns, ``o`` the results ``LATENCY`` cycles later.
""")

Sigmoid = _tail_unit("Sigmoid", sigmoid_datapath, SIGMOID_LATENCY, """\
Pipelined logistic sigmoid 1 / (1 + e**-x) on fp32, one operation per cycle.

``i`` carries fp32 bit patterns, ``o`` the results ``LATENCY`` cycles later.
""")

Silu = _tail_unit("Silu", silu_datapath, SILU_LATENCY, """\
Pipelined x * sigmoid(x) on fp32, one operation per cycle.

``i`` carries fp32 bit patterns, ``o`` the results ``LATENCY`` cycles later.
""")
