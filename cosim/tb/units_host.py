"""Simulation units of the host interface: AXI4 data port and AXI4-Lite registers
in front of the TLN crossbar and both memory controllers (small parameters).

``host-sliced`` is ``host-fast`` with an AXI register slice
(:class:`hw.mem.axi_slice.AxiSlice`) on every channel of both buses, as the
chip has them: the same tests, idle cycles and back-pressure included, run
through the slices."""

from dataclasses import replace

from amaranth import Module, Signal
from amaranth.lib import wiring

from cosim.harness import SimUnit
from cosim.store import STORE_SOURCES
from hw.mem import params
from hw.mem.axi_slice import connect_host_buses
from hw.mem.controller import COUNTER_BITS, MemController
from hw.mem.crossbar import TlnCrossbar
from hw.mem.csr import CsrBank, Register, axil_slave_members
from hw.mem.host import HostPort, axi4_slave_members

PARAMS = params.SMALL
# Unit name -> memory parameters. ``host-fast`` runs the link at one word per
# cycle, so the TLN sees back-to-back requests from both directions at once.
LINKS = {"host": PARAMS, "host-fast": replace(PARAMS, host_bytes_per_cycle=PARAMS.word_bytes)}
LINKS["host-sliced"] = LINKS["host-fast"]
# Units with register slices between the ports and the host port and register bank.
SLICED = frozenset({"host-sliced"})
ID_BITS = 4
CSR_ADDR_BITS = 8

REGISTERS = (
    Register("scratch", 32, "rw", init=0x5EED, doc="free for software"),
    Register("scratch_wide", 40, "rw", doc="free for software, two words"),
    Register("doorbell", 8, "w1p", doc="pulses; counted into doorbell_count, last one in doorbell_last"),
    Register("doorbell_count", 32, "ro"),
    Register("doorbell_last", 8, "ro"),
    Register("host_bytes_written", COUNTER_BITS, "ro", doc="host link, host to chip"),
    Register("host_bytes_read", COUNTER_BITS, "ro", doc="host link, chip to host"),
    Register("host_busy", COUNTER_BITS, "ro", doc="cycles with a host burst open"),
    Register("hbm_errors", 32, "ro", doc="HBM accesses refused (out of range)"),
    Register("hbm_first_error_addr", PARAMS.addr_bits, "ro"),
    Register("ddr_errors", 32, "ro", doc="DDR accesses refused (out of range)"),
    Register("ddr_first_error_addr", PARAMS.addr_bits, "ro"),
)


class HostTop(wiring.Component):
    """HostPort + CsrBank + TlnCrossbar(masters=1) + HBM and DDR controllers.

    Only the two host buses are ports, under their standard flat names;
    with ``slices`` each passes through an :class:`~hw.mem.axi_slice.AxiSlice`.
    """

    def __init__(self, mem_params, *, slices=False):
        self.mem_params, self.slices = mem_params, slices
        self.axi_members = axi4_slave_members(id_bits=ID_BITS, addr_bits=mem_params.addr_bits + 1,
                                              data_bytes=mem_params.word_bytes)
        self.axil_members = axil_slave_members(addr_bits=CSR_ADDR_BITS)
        super().__init__({**self.axi_members, **self.axil_members})

    def elaborate(self, platform):
        m = Module()
        P = self.mem_params
        m.submodules.host = host = HostPort(P, id_bits=ID_BITS)
        m.submodules.csr = csr = CsrBank(REGISTERS, addr_bits=CSR_ADDR_BITS)
        m.submodules.xbar = xbar = TlnCrossbar(P, masters=1, tag_bits=host.tag_bits)
        connect_host_buses(m, self, axi=host, axil=csr, axi_members=self.axi_members,
                           axil_members=self.axil_members, slices=self.slices)
        wiring.connect(m, host.tln, xbar.m0)
        ctrls = []
        for index, port in ((params.HBM, xbar.hbm), (params.DDR, xbar.ddr)):
            ctrl = MemController(P.tiers[index], tier_index=index, word_bytes=P.word_bytes,
                                 addr_bits=P.addr_bits, tag_bits=xbar.wide_tag_bits)
            m.submodules[params.TIER_NAMES[index]] = ctrl
            wiring.connect(m, port.req, ctrl.req)
            wiring.connect(m, ctrl.resp, port.resp)
            ctrls.append(ctrl)
        hbm, ddr = ctrls

        count = Signal(32)
        last = Signal(8)
        with m.If(csr.doorbell != 0):
            m.d.sync += [count.eq(count + 1), last.eq(csr.doorbell)]
        m.d.comb += [
            csr.doorbell_count.eq(count),
            csr.doorbell_last.eq(last),
            csr.host_bytes_written.eq(host.stats.bytes_written),
            csr.host_bytes_read.eq(host.stats.bytes_read),
            csr.host_busy.eq(host.stats.busy),
            csr.hbm_errors.eq(hbm.stats.errors),
            csr.hbm_first_error_addr.eq(hbm.stats.first_error_addr),
            csr.ddr_errors.eq(ddr.stats.errors),
            csr.ddr_first_error_addr.eq(ddr.stats.first_error_addr),
        ]
        return m


UNITS = {
    name: SimUnit(name=name, design=lambda p=p, s=name in SLICED: HostTop(p, slices=s),
                  testbench="cosim.tb.test_host", env={"OPENRDU_HOST_UNIT": name}, sources=STORE_SOURCES)
    for name, p in LINKS.items()
}
