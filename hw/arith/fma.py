"""Multiply-add: bf16 x bf16 + fp32 -> fp32."""

from amaranth import Module
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from .add import fp32_add_datapath, Fp32Add
from .mul import bf16_mul_datapath, Bf16Mul
from .pipeline import Pipeline

FmaOperands = data.StructLayout({"a": 16, "b": 16, "c": 32})


class Fma(wiring.Component):
    """Pipelined ``a * b + c`` with bf16 ``a``, ``b`` and fp32 ``c`` and result.

    The multiplier's product is exact, so the adder's rounding is the only
    one: a fused multiply-add while the product stays in fp32's range.

    Attributes
    ----------
    i : In(stream.Signature(FmaOperands))
    o : Out(stream.Signature(32))
        ``a * b + c`` as an fp32 bit pattern, ``LATENCY`` cycles later.
    """

    LATENCY = Bf16Mul.LATENCY + Fp32Add.LATENCY

    def __init__(self):
        super().__init__({"i": In(stream.Signature(FmaOperands)), "o": Out(stream.Signature(32))})

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.i, self.o, latency=self.LATENCY)
        p = self.i.payload
        product = bf16_mul_datapath(m, pipe.reg, p.a, p.b)
        c = p.c
        for stage in range(Bf16Mul.LATENCY):
            c = pipe.reg(c, name=f"fma_c{stage + 1}")
        m.d.comb += self.o.payload.eq(fp32_add_datapath(m, pipe.reg, product, c, 0))
        return m
