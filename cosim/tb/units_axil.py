"""Simulation unit of the runtime's AXI4-Lite master (:class:`cosim.axil.AxiLiteHost`).

Two AXI4-Lite slave ports, each for one master under test: ``s_axil`` is a
:class:`~hw.mem.csr.CsrBank` behind an :class:`~hw.mem.axi_slice.AxiSlice`,
as the chip has its registers; ``p_axil`` passes straight through to the
master port ``m_axil``, where the testbench puts cocotbext-axi's slave model
with idle cycles and back-pressure on every channel.
"""

from amaranth import Module, Signal
from amaranth.lib import wiring

from cosim.harness import SimUnit
from hw.mem.axi_slice import AxiSlice
from hw.mem.csr import CsrBank, Register, axil_slave_members

CSR_ADDR_BITS = 6
MODEL_ADDR_BITS = 12

REGISTERS = (
    Register("scratch", 32, "rw", init=0x5EED, doc="free for software"),
    Register("wide", 48, "rw", init=0x1234_5678_9ABC, doc="two words, the upper one 16 bits wide"),
    Register("narrow", 5, "rw", init=3, doc="five bits"),
    Register("pulse", 8, "w1p", doc="pulses; writes with a bit set are counted in pulses"),
    Register("pulses", 32, "ro"),
    Register("ident", 32, "ro", doc="a constant"),
)
IDENT = 0xA71C_0DE5


class AxilBench(wiring.Component):
    """A register bank behind a register slice (``s_axil_*``) and a wire from ``p_axil_*`` to ``m_axil_*``."""

    def __init__(self):
        self.csr_members = axil_slave_members(addr_bits=CSR_ADDR_BITS)
        self.through = axil_slave_members(addr_bits=MODEL_ADDR_BITS, prefix="p_axil")
        self.out = {"m" + name[1:]: member.flip() for name, member in self.through.items()}
        super().__init__({**self.csr_members, **self.through, **self.out})

    def elaborate(self, platform):
        m = Module()
        m.submodules.csr = csr = CsrBank(REGISTERS, addr_bits=CSR_ADDR_BITS)
        m.submodules.slice = axil_slice = AxiSlice(members=self.csr_members, prefix="s_axil")
        axil_slice.insert(m, outer=self, inner=csr)
        count = Signal(32)
        with m.If(csr.pulse != 0):
            m.d.sync += count.eq(count + 1)
        m.d.comb += [csr.pulses.eq(count), csr.ident.eq(IDENT)]
        for name, member in self.through.items():
            inner, outer = getattr(self, name), getattr(self, "m" + name[1:])
            m.d.comb += (outer.eq(inner) if member.flow == wiring.In else inner.eq(outer))
        return m


UNITS = {"axil": SimUnit(name="axil", design=lambda: AxilBench(), testbench="cosim.tb.test_axil")}
