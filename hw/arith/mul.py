"""Multipliers: bf16 x bf16 -> fp32 (exact) and fp32 x fp32 -> fp32 (rounded)."""

from amaranth import Module, Signal, Cat, Const, Mux, signed
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from .fp import unpack16, unpack32, round_pack, CANON_NAN32, INF32, EXP_MAX
from .pipeline import Pipeline

MulOperands = data.StructLayout({"a": 16, "b": 16})
Fp32MulOperands = data.StructLayout({"a": 32, "b": 32})


def bf16_mul_datapath(m, reg, a, b):
    """Build the multiplier datapath with two register levels; return the fp32 result.

    The 8 x 8-bit significand product has at most 16 significant bits, which
    fp32's 24-bit significand holds exactly: no rounding is ever needed, only
    the range checks (overflow to inf, flush-to-zero below 2^-126).
    """
    ua, ub = unpack16(a), unpack16(b)
    nan = ua.is_nan | ub.is_nan | (ua.is_inf & ub.is_zero) | (ua.is_zero & ub.is_inf)
    inf = ua.is_inf | ub.is_inf
    zero = ua.is_zero | ub.is_zero

    sign1 = reg(ua.sign ^ ub.sign, name="mul_sign")
    nan1 = reg(nan, name="mul_nan")
    inf1 = reg(inf, name="mul_inf")
    zero1 = reg(zero, name="mul_zero")
    prod1 = reg(ua.sig * ub.sig, name="mul_prod")
    exp1 = reg(ua.exp + ub.exp - Const(127, signed(10)), name="mul_exp")

    # prod1 lies in [2^14, 2^16): its top bit decides a one-place normalisation.
    top = prod1[15]
    exp2 = Signal(signed(11), name="mul_exp_norm")
    m.d.comb += exp2.eq(exp1 + top)
    frac = Mux(top, Cat(Const(0, 8), prod1[:15]), Cat(Const(0, 9), prod1[:14]))
    result = Signal(32, name="mul_result")
    with m.If(nan1):
        m.d.comb += result.eq(CANON_NAN32)
    with m.Elif(inf1 | (~zero1 & (exp2 >= EXP_MAX))):
        m.d.comb += result.eq(Cat(Const(INF32, 31), sign1))
    with m.Elif(zero1 | (exp2 <= 0)):
        m.d.comb += result.eq(Cat(Const(0, 31), sign1))
    with m.Else():
        m.d.comb += result.eq(Cat(frac, exp2[:8], sign1))
    return reg(result, name="mul_out")


class Bf16Mul(wiring.Component):
    """Pipelined bf16 x bf16 -> fp32 multiplier, one operation per cycle.

    Exact while the product is a normal fp32 number; see ``docs/numerics.md``.

    Attributes
    ----------
    i : In(stream.Signature(MulOperands))
        Operands ``a`` and ``b`` as bf16 bit patterns.
    o : Out(stream.Signature(32))
        Product as an fp32 bit pattern, ``LATENCY`` cycles later.
    """

    LATENCY = 2

    def __init__(self):
        super().__init__({"i": In(stream.Signature(MulOperands)), "o": Out(stream.Signature(32))})

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.i, self.o, latency=self.LATENCY)
        m.d.comb += self.o.payload.eq(bf16_mul_datapath(m, pipe.reg, self.i.payload.a, self.i.payload.b))
        return m


def fp32_mul_datapath(m, reg, a, b):
    """Build the fp32 multiplier datapath with three register levels; return the fp32 result.

    Stage 1 forms two 24 x 12-bit partial products, stage 2 adds them and
    normalises the 48-bit product by at most one place, stage 3 rounds to
    nearest even with an unbounded exponent and then applies the range
    checks (overflow to inf, flush-to-zero below 2^-126).
    """
    ua, ub = unpack32(a), unpack32(b)
    nan = ua.is_nan | ub.is_nan | (ua.is_inf & ub.is_zero) | (ua.is_zero & ub.is_inf)
    inf = ua.is_inf | ub.is_inf
    zero = ua.is_zero | ub.is_zero

    sign1 = reg(ua.sign ^ ub.sign, name="fmul_sign1")
    nan1 = reg(nan, name="fmul_nan1")
    inf1 = reg(inf, name="fmul_inf1")
    zero1 = reg(zero, name="fmul_zero1")
    exp1 = reg(ua.exp + ub.exp - Const(127, signed(10)), name="fmul_exp1")
    lo1 = reg(ua.sig * ub.sig[:12], name="fmul_lo1")
    hi1 = reg(ua.sig * ub.sig[12:], name="fmul_hi1")

    prod = Signal(48, name="fmul_prod")
    m.d.comb += prod.eq(lo1 + (hi1 << 12))
    # Nonzero significands give a product in [2^46, 2^48): bit 47 decides
    # whether the hidden bit moves up one place.
    top = prod[47]
    norm = Mux(top, prod, prod << 1)
    sig2 = reg(norm[24:48], name="fmul_sig2")
    guard2 = reg(norm[23], name="fmul_guard2")
    sticky2 = reg(norm[:23].any(), name="fmul_sticky2")
    exp2 = reg(exp1 + top, name="fmul_exp2")
    sign2 = reg(sign1, name="fmul_sign2")
    nan2 = reg(nan1, name="fmul_nan2")
    inf2 = reg(inf1, name="fmul_inf2")
    zero2 = reg(zero1, name="fmul_zero2")

    exp_wide = Signal(signed(11), name="fmul_exp_wide")
    m.d.comb += exp_wide.eq(exp2)
    packed = round_pack(m, sign=sign2, exp=exp_wide, sig=sig2, guard=guard2, sticky=sticky2, name="fmul")
    result = Signal(32, name="fmul_result")
    with m.If(nan2):
        m.d.comb += result.eq(CANON_NAN32)
    with m.Elif(inf2):
        m.d.comb += result.eq(Cat(Const(INF32, 31), sign2))
    with m.Elif(zero2):
        m.d.comb += result.eq(Cat(Const(0, 31), sign2))
    with m.Else():
        m.d.comb += result.eq(packed)
    return reg(result, name="fmul_out")


class Fp32Mul(wiring.Component):
    """Pipelined fp32 x fp32 -> fp32 multiplier (round to nearest even), one operation per cycle.

    Rounds as if the exponent range were unbounded, then flushes results
    below 2^-126 to signed zero and saturates to inf; see ``docs/numerics.md``.

    Attributes
    ----------
    i : In(stream.Signature(Fp32MulOperands))
        Operands ``a`` and ``b`` as fp32 bit patterns.
    o : Out(stream.Signature(32))
        Product as an fp32 bit pattern, ``LATENCY`` cycles later.
    """

    LATENCY = 3

    def __init__(self):
        super().__init__({"i": In(stream.Signature(Fp32MulOperands)), "o": Out(stream.Signature(32))})

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.i, self.o, latency=self.LATENCY)
        m.d.comb += self.o.payload.eq(fp32_mul_datapath(m, pipe.reg, self.i.payload.a, self.i.payload.b))
        return m
