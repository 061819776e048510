"""The runtime's chip bus on the Verilator model: AXI4-Lite registers and done lines, through cocotb."""

import logging

import cocotb
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer, ValueChange
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiMaster, AxiResp

from sw.runtime.chip import ChipError


class CocotbChipBus:
    """``read32`` / ``write32`` over cocotbext-axi's AXI4-Lite master; ``wait_for`` awaits a done line.

    Python waits on an edge of the done line rather than polling registers,
    so the simulator runs free while a kernel executes. ``resets`` counts the
    edges of the ``rst`` port (a simulator callback, nothing per cycle): the
    driver does not rewrite a register word with the value it wrote there
    since the count last changed.
    """

    def __init__(self, dut, *, limit=1_000_000, period_ns=10):
        self.dut = dut
        self.limit, self.period_ns = limit, period_ns
        self.csr = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        # cocotbext-axi logs every register access at INFO: thousands of lines per decode step.
        for port in (self.csr.write_if, self.csr.read_if):
            port.log.setLevel(logging.WARNING)
        self.axi = AxiMaster(AxiBus.from_prefix(dut, "s_axi"), dut.clk, dut.rst)
        self.resets = 0
        cocotb.start_soon(self._count_resets())

    async def _count_resets(self):
        while True:
            await ValueChange(self.dut.rst)
            self.resets += 1

    async def read32(self, offset):
        return int.from_bytes((await self.csr.read(offset, 4)).data, "little")

    async def write32(self, offset, value):
        """Write one register word; False where cocotbext-axi dropped the write in a reset. Raises
        :class:`~sw.runtime.chip.ChipError` where the chip refused it (SLVERR, DECERR)."""
        done = await self.csr.write(offset, int(value).to_bytes(4, "little"))
        if done is None:
            return False
        if done.resp != AxiResp.OKAY:
            raise ChipError(f"the chip refused the register write of {int(value):#x} at {offset:#x} "
                            f"({AxiResp(done.resp).name})")
        return True

    async def wait_for(self, event):
        """Return once ``event``'s line is high; raise ``TimeoutError`` after ``limit`` cycles (a stalled dataflow).

        ``event`` is one of the chip's done lines: ``kernel_done``, ``program_done``, ``copy_done``, ``seq_done``.
        """
        line = getattr(self.dut, event)
        # The command's pulse lands the cycle after its register write and
        # clears the line at the next edge; skip past that before looking.
        await ClockCycles(self.dut.clk, 2)
        if line.value:
            return
        # A simulator timer, not ClockCycles: that counts edges in Python, one wake-up a cycle.
        timeout = Timer(self.limit * self.period_ns, "ns")
        if await First(RisingEdge(line), timeout) is timeout:
            raise TimeoutError(f"{event} not raised within {self.limit} cycles")
