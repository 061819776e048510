"""fp32 adder/subtractor with round-to-nearest-even."""

from amaranth import Module, Cat, Const, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from .fp import datapath_module, wire, stage, normalize, round_pack, special_pack, INF32
from .pipeline import Pipeline

AddOperands = data.StructLayout({"a": 32, "b": 32, "sub": 1})

# Aligned significands carry three bits below the 24-bit significand: guard,
# round and sticky, enough for correct RNE of a sum or difference.
_EXT = 3
_WIDTH = 24 + _EXT


def fp32_add_datapath(m, reg, a, b, sub):
    """Build the adder datapath with three register levels; return the fp32 result.

    Stage 1 orders the operands by magnitude, stage 2 aligns and adds, stage 3
    normalises, rounds and packs. Written for compact Verilog (see
    ``hw/arith/fp.py``): one adder serves sums and differences, and the
    normalisation is a log2-step shifter.
    """
    m = datapath_module(m, reg)
    # Magnitudes after denormals-are-zero; comparing exponent:fraction as an
    # integer orders them, and infinity is the largest non-NaN magnitude.
    sa = a[31]
    sb = wire(m, b[31] ^ sub, name="add_sb")
    mag_a = wire(m, Mux(a[23:31] == 0, 0, a[:31]), name="add_mag_a", shape=31)
    mag_b = wire(m, Mux(b[23:31] == 0, 0, b[:31]), name="add_mag_b", shape=31)
    swap = wire(m, mag_b > mag_a, name="add_swap")
    big = wire(m, Mux(swap, mag_b, mag_a), name="add_big")
    small = wire(m, Mux(swap, mag_a, mag_b), name="add_small")
    eff_sub = wire(m, sa ^ sb, name="add_eff_sub")
    diff = wire(m, (big[23:] - small[23:])[:8], name="add_diff", shape=8)
    inf_mag = Const(INF32, 31)
    # The bigger magnitude is inf or NaN whenever either operand is; the
    # smaller one is inf only when both are.
    nan = (big > inf_mag) | ((small == inf_mag) & eff_sub)
    inf = big == inf_mag
    s_big = Mux(swap, sb, sa)
    shift = Mux(diff[5:].any(), 31, diff[:5])
    m_big = Cat(big[:23], big[23:].any())
    m_small = Cat(small[:23], small[23:].any())
    s_big1, eff_sub1, nan1, inf1, shift1, e_big1, m_big1, m_small1 = stage(
        m, reg, "add_s1", s_big, eff_sub, nan, inf, shift, big[23:], m_big, m_small)

    # Align: a shift of 31 clears every bit (exponents more than 27 apart).
    small_ext = Cat(Const(0, _EXT), m_small1)
    shifted = wire(m, small_ext >> shift1, name="add_shifted", shape=_WIDTH)
    lost = (shifted << shift1)[:_WIDTH] != small_ext
    # big - aligned as big + ~aligned + 1: the bigger magnitude keeps it >= 0.
    aligned = Cat(shifted | lost, Const(0, 1))
    addend = Mux(eff_sub1, ~aligned, aligned)
    total = (Cat(Const(0, _EXT), m_big1) + addend + eff_sub1)[:_WIDTH + 1]
    total2, e_big2, s_big2, zero_sign2, nan2, inf2 = stage(
        m, reg, "add_s2", total, e_big1, s_big1, s_big1 & ~eff_sub1, nan1, inf1)

    # The hidden bit of an unnormalised total sits at bit _WIDTH - 1 and a
    # carry one above; after normalisation the leading one is at bit _WIDTH.
    # Left shifts by more than one only follow a subtraction of operands whose
    # exponents differ by at most one, where no bit was lost in alignment.
    norm, lz = normalize(m, total2, name="add_norm")
    packed = round_pack(m, sign=s_big2, exp=e_big2 + 1 - lz, sig=norm[_EXT + 1:], guard=norm[_EXT],
                        sticky=norm[:_EXT].any(), name="add")
    result = special_pack(sign=s_big2, nan=nan2, inf=inf2, zero=~norm[_WIDTH], zero_sign=zero_sign2, value=packed)
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
