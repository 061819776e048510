"""Format conversions: fp32 <-> bf16 and int32 <-> fp32."""

from amaranth import Signal, Cat, Const, Mux, signed

from .fp import unpack16, unpack32, leading_one, round_pack, CANON_NAN16, CANON_NAN32
from .pipeline import unary_unit


def fp32_to_bf16_datapath(m, reg, x):
    """fp32 -> bf16 with round to nearest even; one register level."""
    u = unpack32(x)
    # Adding 0x7FFF plus the kept LSB rounds the low half away to nearest even;
    # a carry out of the fraction moves into the exponent, up to inf.
    rounded = (x + 0x7FFF + x[16])[16:32]
    result = Mux(u.is_nan, CANON_NAN16, Mux(u.is_zero, Cat(Const(0, 15), u.sign), rounded))
    return reg(result, name="f2bf_out")


def bf16_to_fp32_datapath(m, reg, x):
    """bf16 -> fp32, exact; one register level."""
    u = unpack16(x)
    result = Mux(u.is_nan, CANON_NAN32, Mux(u.is_zero, Cat(Const(0, 31), u.sign), Cat(Const(0, 16), x)))
    return reg(result, name="bf2f_out")


def int_to_fp32_datapath(m, reg, x):
    """int32 -> fp32 with round to nearest even; two register levels."""
    sign = x[31]
    # |INT32_MIN| = 2^31 still fits 32 unsigned bits.
    mag = Signal(32, name="i2f_mag")
    m.d.comb += mag.eq(Mux(sign, -x.as_signed(), x))
    lead = leading_one(m, mag, name="i2f_lead")
    mag1 = reg(mag, name="i2f_mag1")
    lead1 = reg(lead, name="i2f_lead1")
    sign1 = reg(sign, name="i2f_sign1")

    norm = Signal(32, name="i2f_norm")
    m.d.comb += norm.eq(mag1 << (31 - lead1)[:5])
    packed = round_pack(m, sign=sign1, exp=127 + lead1, sig=norm[8:], guard=norm[7],
                        sticky=norm[:7].any(), name="i2f")
    return reg(Mux(mag1 == 0, 0, packed), name="i2f_out")


def fp32_to_int_datapath(m, reg, x):
    """fp32 -> int32 rounding toward zero, saturating; two register levels."""
    u = unpack32(x)
    e = Signal(signed(9), name="f2i_e")
    m.d.comb += e.eq(u.exp - 127)
    mag = Signal(31, name="f2i_mag")
    with m.If(e >= 23):
        m.d.comb += mag.eq(u.sig << (e - 23)[:3])
    with m.Elif(e >= 0):
        m.d.comb += mag.eq(u.sig >> (23 - e)[:5])
    small = (e < 0) | u.is_nan
    saturate = (e >= 31) & ~u.is_nan
    mag1 = reg(Mux(small, 0, mag), name="f2i_mag1")
    sign1 = reg(u.sign, name="f2i_sign1")
    saturate1 = reg(saturate, name="f2i_saturate1")

    value = Mux(sign1, -mag1, mag1)
    limit = Mux(sign1, Const(0x8000_0000, 32), Const(0x7FFF_FFFF, 32))
    return reg(Mux(saturate1, limit, value[:32]), name="f2i_out")


def _unit(name, datapath, in_width, out_width, latency, doc):
    return unary_unit(name, datapath, in_width, out_width, latency, doc, module=__name__)


Fp32ToBf16 = _unit("Fp32ToBf16", fp32_to_bf16_datapath, 32, 16, 1, """\
fp32 -> bf16 with round to nearest even; values past the bf16 maximum give inf.

``i`` carries fp32 bit patterns, ``o`` bf16 bit patterns ``LATENCY`` cycles later.
""")

Bf16ToFp32 = _unit("Bf16ToFp32", bf16_to_fp32_datapath, 16, 32, 1, """\
bf16 -> fp32, exact (the low half is zero); subnormals read as zero.

``i`` carries bf16 bit patterns, ``o`` fp32 bit patterns ``LATENCY`` cycles later.
""")

IntToFp32 = _unit("IntToFp32", int_to_fp32_datapath, 32, 32, 2, """\
int32 -> fp32 with round to nearest even (exact up to 2^24 in magnitude).

``i`` carries two's-complement int32, ``o`` fp32 bit patterns ``LATENCY`` cycles later.
""")

Fp32ToInt = _unit("Fp32ToInt", fp32_to_int_datapath, 32, 32, 2, """\
fp32 -> int32 rounding toward zero; out-of-range values and infinities
saturate, NaN gives 0.

``i`` carries fp32 bit patterns, ``o`` two's-complement int32 ``LATENCY`` cycles later.
""")
