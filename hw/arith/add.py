"""fp32 adder/subtractor with round-to-nearest-even."""

from amaranth import Module, Signal, Cat, Const, Mux, signed
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from .fp import unpack32, leading_one, round_pack, CANON_NAN32, INF32
from .pipeline import Pipeline

AddOperands = data.StructLayout({"a": 32, "b": 32, "sub": 1})

# Aligned significands carry three bits below the 24-bit significand: guard,
# round and sticky, enough for correct RNE of a sum or difference.
_EXT = 3
_WIDTH = 24 + _EXT


def fp32_add_datapath(m, reg, a, b, sub):
    """Build the adder datapath with three register levels; return the fp32 result.

    Stage 1 orders the operands by magnitude, stage 2 aligns and adds, stage 3
    normalises, rounds and packs.
    """
    ua, ub = unpack32(a), unpack32(b)
    sb = ub.sign ^ sub
    # Magnitudes after denormals-are-zero; comparing exponent:fraction as an
    # integer orders them.
    mag_a = Mux(ua.is_zero, 0, a[:31])
    mag_b = Mux(ub.is_zero, 0, b[:31])
    swap = mag_b > mag_a
    nan = ua.is_nan | ub.is_nan | (ua.is_inf & ub.is_inf & (ua.sign != sb))
    inf = ua.is_inf | ub.is_inf

    s_big = reg(Mux(swap, sb, ua.sign), name="add_s_big")
    s_small = reg(Mux(swap, ua.sign, sb), name="add_s_small")
    e_big = reg(Mux(swap, ub.exp, ua.exp), name="add_e_big")
    e_small = Mux(swap, ua.exp, ub.exp)
    m_big = reg(Mux(swap, ub.sig, ua.sig), name="add_m_big")
    m_small = reg(Mux(swap, ua.sig, ub.sig), name="add_m_small")
    diff = Mux(swap, ub.exp, ua.exp) - e_small
    shift = reg(Mux(diff > _WIDTH, _WIDTH, diff)[:5], name="add_shift")
    nan1 = reg(nan, name="add_nan1")
    inf1 = reg(inf, name="add_inf1")
    inf_sign1 = reg(Mux(ua.is_inf, ua.sign, sb), name="add_inf_sign1")

    small_ext = Cat(Const(0, _EXT), m_small)
    shifted = Signal(_WIDTH, name="add_shifted")
    m.d.comb += shifted.eq(small_ext >> shift)
    lost = (shifted << shift)[:_WIDTH] != small_ext
    aligned = shifted | lost
    big_ext = Cat(Const(0, _EXT), m_big)
    eff_sub = s_big != s_small
    total = Signal(_WIDTH + 1, name="add_total")
    m.d.comb += total.eq(Mux(eff_sub, big_ext - aligned, big_ext + aligned))

    total2 = reg(total, name="add_total2")
    s_big2 = reg(s_big, name="add_s_big2")
    zero_sign2 = reg(s_big & s_small, name="add_zero_sign2")
    e_big2 = reg(e_big, name="add_e_big2")
    nan2 = reg(nan1, name="add_nan2")
    inf2 = reg(inf1, name="add_inf2")
    inf_sign2 = reg(inf_sign1, name="add_inf_sign2")

    # The hidden bit belongs at bit _WIDTH - 1; a carry sits one above it.
    # Left shifts by more than one only follow a subtraction of operands whose
    # exponents differ by at most one, where no bit was lost in alignment.
    lead = leading_one(m, total2, name="add_lead")
    norm = Signal(_WIDTH, name="add_norm")
    extra_sticky = Signal()
    exp = Signal(signed(11), name="add_exp")
    with m.If(total2[_WIDTH]):
        m.d.comb += [norm.eq(total2[1:]), extra_sticky.eq(total2[0]), exp.eq(e_big2 + 1)]
    with m.Else():
        lz = Signal(range(_WIDTH), name="add_lz")
        m.d.comb += [lz.eq(_WIDTH - 1 - lead), norm.eq(total2 << lz), exp.eq(e_big2 - lz)]
    packed = round_pack(m, sign=s_big2, exp=exp, sig=norm[_EXT:], guard=norm[_EXT - 1],
                        sticky=norm[:_EXT - 1].any() | extra_sticky, name="add")
    result = Signal(32, name="add_result")
    with m.If(nan2):
        m.d.comb += result.eq(CANON_NAN32)
    with m.Elif(inf2):
        m.d.comb += result.eq(Cat(Const(INF32, 31), inf_sign2))
    with m.Elif(total2 == 0):
        m.d.comb += result.eq(Cat(Const(0, 31), zero_sign2))
    with m.Else():
        m.d.comb += result.eq(packed)
    return reg(result, name="add_out")


class Fp32Add(wiring.Component):
    """Pipelined fp32 adder/subtractor (round to nearest even), one operation per cycle.

    Attributes
    ----------
    i : In(stream.Signature(AddOperands))
        ``a`` and ``b`` as fp32 bit patterns; ``sub`` set computes ``a - b``.
    o : Out(stream.Signature(32))
        The sum as an fp32 bit pattern, ``LATENCY`` cycles later.
    """

    LATENCY = 3

    def __init__(self):
        super().__init__({"i": In(stream.Signature(AddOperands)), "o": Out(stream.Signature(32))})

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.i, self.o, latency=self.LATENCY)
        p = self.i.payload
        m.d.comb += self.o.payload.eq(fp32_add_datapath(m, pipe.reg, p.a, p.b, p.sub))
        return m
