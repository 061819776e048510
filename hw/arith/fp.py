"""Combinational helpers on IEEE-style bit patterns, shared by the arithmetic units.

The numerics policy is in ``docs/numerics.md``: round to nearest even,
denormals-are-zero on inputs, flush-to-zero on results, canonical NaN.

The helpers are written for small generated Verilog, because the PCU
instantiates the arithmetic dozens of times: every value used more than once
is a named signal (Amaranth emits an expression again at each use), there
are no ``If`` chains or ``Case`` trees (each becomes a process), leading-zero
counts work in log2 steps, shifts by a signal are one shift operator, and
the values a stage hands on are registered together (:func:`stage`).
"""

import weakref

from amaranth import Module, Signal, Cat, Const, Mux, Value, signed

from facts.fp import CANON_NAN16, CANON_NAN32, INF32
from .pipeline import Pipeline

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


def datapath_module(m, reg):
    """The module a datapath adds its combinational logic to: ``m``, or a submodule of it.

    With the registers of a :class:`Pipeline` that is ``m``. Any other
    ``reg``, such as the pass-through the PCU's single-cycle systolic update
    uses inside an ``If``, gets a submodule, one per ``(m, reg)`` pair and
    shared by every datapath built with them: statements added under a
    caller's ``If`` are conditional, so each internal signal would become a
    process of its own, where in a submodule only the results are
    conditioned (about 40% less Verilog per adder and multiplier).
    """
    if isinstance(getattr(reg, "__self__", None), Pipeline):
        return m
    subs = _COMB_MODULES.setdefault(m, {})
    if id(reg) not in subs:
        # Keeping ``reg`` alive keeps its id from being reused.
        subs[id(reg)] = (reg, Module())
        m.submodules += subs[id(reg)][1]
    return subs[id(reg)][1]


_COMB_MODULES = weakref.WeakKeyDictionary()


def wire(m, value, *, name, shape=None):
    """A combinational signal named ``name`` that carries ``value`` (so later uses share it)."""
    value = Value.cast(value)
    s = Signal(shape if shape is not None else value.shape(), name=name)
    m.d.comb += s.eq(value)
    return s


def stage(m, reg, name, *values):
    """Register ``values`` together, as one register named ``name``; return the registered copies.

    One wide register per pipeline stage instead of one per value keeps the
    Verilog short. Signed values come back signed. Where ``reg`` is no
    register but passes its value through (the PCU's single-cycle systolic
    update does that), the values still go through one named signal:
    Amaranth would otherwise emit the whole concatenation again for each
    slice taken from it.
    """
    values = [Value.cast(v) for v in values]
    packed = reg(Cat(*values), name=name)
    if not isinstance(packed, Signal):
        packed = wire(m, packed, name=name)
    out, pos = [], 0
    for v in values:
        part = packed[pos:pos + len(v)]
        out.append(part.as_signed() if v.shape().signed else part)
        pos += len(v)
    return out


def fp_class(m, mag, *, frac_bits, name):
    """``(zero, inf, nan)`` of a float magnitude (the pattern without its sign bit).

    ``frac_bits`` is the width of the fraction field. Zero includes subnormals
    (denormals-are-zero).
    """
    inf_mag = Const(EXP_MAX << frac_bits, len(mag))
    zero = wire(m, mag[frac_bits:] == 0, name=f"{name}_zero")
    inf = wire(m, mag == inf_mag, name=f"{name}_inf")
    nan = wire(m, mag > inf_mag, name=f"{name}_nan")
    return zero, inf, nan


def leading_one(m, value, *, name):
    """Index of the highest set bit of ``value`` (0 when ``value`` is 0).

    A priority encoder in log2 steps: each step halves the window and keeps
    the upper half when it holds a set bit, which gives one bit of the index.
    """
    steps = max(1, (len(value) - 1).bit_length())
    window = Cat(value, Const(0, (1 << steps) - len(value)))
    bits = []
    for k in reversed(range(steps)):
        half = 1 << k
        upper = wire(m, window[half:2 * half].any(), name=f"{name}_b{k}")
        bits.append(upper)
        if k:
            window = wire(m, Mux(upper, window[half:2 * half], window[:half]), name=f"{name}_w{k}")
    pos = Signal(range(len(value)), name=name)
    m.d.comb += pos.eq(Cat(*reversed(bits)))
    return pos


def normalize(m, value, *, name):
    """Shift ``value`` left until its top bit is set; return ``(shifted, count)``.

    log2 steps of 16, 8, 4, 2 and 1 places (for up to 32 bits), each taken
    when the top bits it would shift out are zero. A zero ``value`` stays
    zero, with every step taken.
    """
    n = len(value)
    steps = max(1, (n - 1).bit_length())
    taken = []
    for k in reversed(range(steps)):
        s = 1 << k
        take = wire(m, value[n - s:] == 0, name=f"{name}_z{s}")
        value = wire(m, Mux(take, Cat(Const(0, s), value[:n - s]), value), name=f"{name}_n{s}")
        taken.append(take)
    return value, Cat(*reversed(taken))


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
    # A carry out of the significand leaves its 24 low bits zero, so the
    # fraction is rounded[:23] either way; the carry moves into the exponent.
    exp_r = Signal(signed(11), name=f"{name}_exp")
    m.d.comb += exp_r.eq(exp + rounded[24])
    result = Signal(32, name=f"{name}_bits")
    m.d.comb += result.eq(Cat(Mux(exp_r >= EXP_MAX, Const(INF32, 31),
                                  Mux(exp_r <= 0, Const(0, 31), Cat(rounded[:23], exp_r[:8]))),
                              sign))
    return result


def special_pack(*, sign, nan, inf, zero, zero_sign, value):
    """Apply an operation's special results to its rounded ``value``.

    NaN gives the canonical NaN, else ``inf`` infinity of ``sign``, else
    ``zero`` a zero of ``zero_sign``, else ``value``.
    """
    return Mux(nan, Const(CANON_NAN32, 32),
               Mux(inf, Cat(Const(INF32, 31), sign), Mux(zero, Cat(Const(0, 31), zero_sign), value)))
