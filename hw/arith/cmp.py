"""fp32 max, min and comparison flags."""

from amaranth import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from .fp import unpack32, CANON_NAN32
from .pipeline import Pipeline

CmpOperands = data.StructLayout({"a": 32, "b": 32})
CmpResult = data.StructLayout({"max": 32, "min": 32, "lt": 1, "equal": 1, "gt": 1, "unordered": 1})


def _order_key(bits, sign):
    """Unsigned key whose integer order is the float order with -0 < +0."""
    return Mux(sign, ~bits, Cat(bits[:31], Const(1, 1)))


def fp32_cmp_datapath(m, reg, a, b):
    """Max, min and IEEE comparison flags; one register level."""
    ua, ub = unpack32(a), unpack32(b)
    # Denormals-are-zero: a subnormal becomes the zero of its sign.
    da = Mux(ua.is_zero, Cat(Const(0, 31), ua.sign), a)
    db = Mux(ub.is_zero, Cat(Const(0, 31), ub.sign), b)
    key_a, key_b = _order_key(da, ua.sign), _order_key(db, ub.sign)
    unordered = ua.is_nan | ub.is_nan
    both_zero = ua.is_zero & ub.is_zero
    a_ge_b = key_a >= key_b

    result = Signal(CmpResult, name="cmp_result")
    m.d.comb += [
        result.max.eq(Mux(unordered, CANON_NAN32, Mux(a_ge_b, da, db))),
        result.min.eq(Mux(unordered, CANON_NAN32, Mux(a_ge_b, db, da))),
        result.equal.eq(~unordered & (both_zero | (da == db))),
        result.lt.eq(~unordered & ~both_zero & (key_a < key_b)),
        result.gt.eq(~unordered & ~both_zero & (key_a > key_b)),
        result.unordered.eq(unordered),
    ]
    return reg(result, name="cmp_out")


class Fp32Cmp(wiring.Component):
    """Pipelined fp32 max/min/compare, one operation per cycle.

    Attributes
    ----------
    i : In(stream.Signature(CmpOperands))
    o : Out(stream.Signature(CmpResult))
        ``max``, ``min`` (canonical NaN if either input is NaN; ``-0 < +0``)
        and the IEEE flags ``lt``, ``equal``, ``gt``, ``unordered``.
    """

    LATENCY = 1

    def __init__(self):
        super().__init__({"i": In(stream.Signature(CmpOperands)), "o": Out(stream.Signature(CmpResult))})

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.i, self.o, latency=self.LATENCY)
        m.d.comb += self.o.payload.eq(fp32_cmp_datapath(m, pipe.reg, self.i.payload.a, self.i.payload.b))
        return m
