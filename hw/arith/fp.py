"""Combinational helpers on IEEE-style bit patterns, shared by the arithmetic units.

The numerics policy is in ``docs/numerics.md``: round to nearest even,
denormals-are-zero on inputs, flush-to-zero on results, canonical NaN.
"""

from amaranth import Signal, Cat, Const, Mux, signed

CANON_NAN32 = 0x7FC0_0000
CANON_NAN16 = 0x7FC0
INF32 = 0x7F80_0000
EXP_MAX = 0xFF


class Unpacked:
    """Fields and class flags of a float bit pattern (fp32 or bf16).

    ``sig`` is the significand with its hidden bit, zero for zeros and for
    subnormals (denormals-are-zero).
    """

    def __init__(self, bits, *, frac_bits):
        width = 1 + 8 + frac_bits
        assert len(bits) == width
        self.sign = bits[width - 1]
        self.exp = bits[frac_bits:width - 1]
        self.frac = bits[:frac_bits]
        self.is_zero = self.exp == 0
        self.is_inf = (self.exp == EXP_MAX) & (self.frac == 0)
        self.is_nan = (self.exp == EXP_MAX) & (self.frac != 0)
        self.sig = Mux(self.is_zero, 0, Cat(self.frac, Const(1, 1)))


def unpack32(bits):
    return Unpacked(bits, frac_bits=23)


def unpack16(bits):
    return Unpacked(bits, frac_bits=7)


def leading_one(m, value, *, name):
    """Index of the highest set bit of ``value`` (0 when ``value`` is 0)."""
    pos = Signal(range(len(value)), name=name)
    for k in range(len(value)):
        with m.If(value[k]):
            m.d.comb += pos.eq(k)
    return pos


def round_pack(m, *, sign, exp, sig, guard, sticky, name):
    """Round a normalised significand to nearest even and pack an fp32 result.

    Parameters
    ----------
    sign : 1-bit value
    exp : signed value
        Biased exponent of ``sig`` (hidden bit at bit 23), unbounded range.
    sig : 24-bit value
        Significand with the hidden bit set.
    guard, sticky : 1-bit values
        The first bit below ``sig`` and the OR of all bits below that.

    Results that round to 2^128 or beyond become infinity; results below
    2^-126 after rounding become zero of ``sign`` (flush-to-zero).
    """
    rounded = Signal(25, name=f"{name}_rounded")
    m.d.comb += rounded.eq(sig + (guard & (sticky | sig[0])))
    carry = rounded[24]
    exp_r = Signal(signed(11), name=f"{name}_exp")
    m.d.comb += exp_r.eq(exp + carry)
    frac = Mux(carry, rounded[1:24], rounded[:23])
    result = Signal(32, name=f"{name}_bits")
    with m.If(exp_r >= EXP_MAX):
        m.d.comb += result.eq(Cat(Const(INF32, 31), sign))
    with m.Elif(exp_r <= 0):
        m.d.comb += result.eq(Cat(Const(0, 31), sign))
    with m.Else():
        m.d.comb += result.eq(Cat(frac, exp_r[:8], sign))
    return result

