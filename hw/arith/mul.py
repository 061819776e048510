"""Multipliers: bf16 x bf16 -> fp32 (exact) and fp32 x fp32 -> fp32 (rounded)."""

from amaranth import Module, Cat, Const, Mux, signed
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from .fp import datapath_module, wire, stage, fp_class, round_pack, special_pack, EXP_MAX
from .pipeline import Pipeline

MulOperands = data.StructLayout({"a": 16, "b": 16})
Fp32MulOperands = data.StructLayout({"a": 32, "b": 32})


def _mul_operands(m, a, b, *, frac_bits, name):
    """Sign, special flags, unbounded product exponent and significands of ``a * b``.

    The significands always carry the hidden bit: when an operand is zero (or
    subnormal) the product's value is never used, the flags decide.
    """
    w = 1 + 8 + frac_bits
    za, ia, na = fp_class(m, a[:w - 1], frac_bits=frac_bits, name=f"{name}_a")
    zb, ib, nb = fp_class(m, b[:w - 1], frac_bits=frac_bits, name=f"{name}_b")
    nan = na | nb | (ia & zb) | (za & ib)
    inf = ia | ib
    zero = za | zb
    exp = wire(m, a[frac_bits:w - 1] + b[frac_bits:w - 1] - Const(127, signed(10)), name=f"{name}_exp0",
               shape=signed(10))
    sig_a = Cat(a[:frac_bits], Const(1, 1))
    sig_b = Cat(b[:frac_bits], Const(1, 1))
    return a[w - 1] ^ b[w - 1], nan, inf, zero, exp, sig_a, sig_b


def bf16_mul_datapath(m, reg, a, b):
    """Build the multiplier datapath with two register levels; return the fp32 result.

    The 8 x 8-bit significand product has at most 16 significant bits, which
    fp32's 24-bit significand holds exactly: no rounding is ever needed, only
    the range checks (overflow to inf, flush-to-zero below 2^-126).
    """
    m = datapath_module(m, reg)
    sign, nan, inf, zero, exp, sig_a, sig_b = _mul_operands(m, a, b, frac_bits=7, name="mul")
    sign1, nan1, inf1, zero1, exp1, prod1 = stage(m, reg, "mul_s1", sign, nan, inf, zero, exp, sig_a * sig_b)

    # prod1 lies in [2^14, 2^16): its top bit decides a one-place normalisation.
    top = prod1[15]
    exp2 = wire(m, exp1 + top, name="mul_exp_norm", shape=signed(11))
    frac = Cat(Const(0, 8), Mux(top, prod1[:15], Cat(Const(0, 1), prod1[:14])))
    # A zero operand's exponent field is 0, so its product's exponent is at
    # most 127: zero products never look like overflows.
    value = Mux(exp2 >= EXP_MAX, Const(0x7F80_0000, 31), Cat(frac, exp2[:8]))
    result = special_pack(sign=sign1, nan=nan1, inf=inf1, zero=zero1 | (exp2 <= 0), zero_sign=sign1,
                          value=Cat(value, sign1))
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
    m = datapath_module(m, reg)
    sign, nan, inf, zero, exp, sig_a, sig_b = _mul_operands(m, a, b, frac_bits=23, name="fmul")
    sign1, nan1, inf1, zero1, exp1, lo1, hi1 = stage(
        m, reg, "fmul_s1", sign, nan, inf, zero, exp, sig_a * sig_b[:12], sig_a * sig_b[12:])

    prod = wire(m, lo1 + (hi1 << 12), name="fmul_prod", shape=48)
    # Nonzero significands give a product in [2^46, 2^48): bit 47 decides
    # whether the hidden bit moves up one place.
    top = prod[47]
    norm = wire(m, Mux(top, prod, prod << 1), name="fmul_norm", shape=48)
    sign2, nan2, inf2, zero2, exp2, sig2, guard2, sticky2 = stage(
        m, reg, "fmul_s2", sign1, nan1, inf1, zero1, exp1 + top, norm[24:], norm[23], norm[:23].any())

    packed = round_pack(m, sign=sign2, exp=exp2, sig=sig2, guard=guard2, sticky=sticky2, name="fmul")
    result = special_pack(sign=sign2, nan=nan2, inf=inf2, zero=zero2, zero_sign=sign2, value=packed)
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
