"""Simulation unit ``loopnest``: the loop-nest address counter alone, at the PMU's level count."""

from amaranth import Module
from amaranth.lib import wiring

from cosim.harness import SimUnit
from hw.loopnest import LoopNestCounter

# Narrow enough that strides and bases reach negative and far addresses quickly.
STRIDE_BITS = 10
ADDR_BITS = 28


class LoopNestTop(wiring.Component):
    """:class:`LoopNestCounter` with its ports at the top, ``final`` as ``is_final``.

    Verilator's model class has a ``final()`` method, which a top-level port of that name would hide.
    """

    def __init__(self):
        self.counter = LoopNestCounter(stride_bits=STRIDE_BITS, addr_bits=ADDR_BITS)
        members = dict(self.counter.signature.members)
        members["is_final"] = members.pop("final")
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.counter = c = self.counter
        m.d.comb += [c.counts.eq(self.counts), c.strides.eq(self.strides), c.load.eq(self.load),
                     c.base.eq(self.base), c.step.eq(self.step),
                     self.addr.eq(c.addr), self.is_final.eq(c.final), self.ends.eq(c.ends)]
        return m


UNITS = {
    "loopnest": SimUnit(name="loopnest", design=LoopNestTop, testbench="cosim.tb.test_loopnest"),
}
