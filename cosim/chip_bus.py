"""The runtime's chip bus on the Verilator model: AXI4-Lite registers and done lines, through cocotb."""

from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotbext.axi import AxiBus, AxiMaster

from cosim.axil import AxiLiteHost


class CocotbChipBus:
    """``read32`` / ``write32`` over :class:`~cosim.axil.AxiLiteHost`; ``wait_for`` awaits a done line.

    Python waits on an edge of the done line rather than polling registers,
    so the simulator runs free while a kernel executes. ``resets`` counts the
    edges of the ``rst`` port (a simulator callback, nothing per cycle): the
    driver does not rewrite a register word with the value it wrote there
    since the count last changed. ``axi`` is cocotbext-axi's AXI4 master on
    the chip's data port.
    """

    def __init__(self, dut, *, limit=1_000_000, period_ns=10):
        self.dut = dut
        self.limit, self.period_ns = limit, period_ns
        self.csr = AxiLiteHost(dut, "s_axil", clock=dut.clk, reset=dut.rst)
        self.axi = AxiMaster(AxiBus.from_prefix(dut, "s_axi"), dut.clk, dut.rst)

    @property
    def resets(self):
        return self.csr.resets

    async def read32(self, offset):
        """The register word at ``offset``. Raises :class:`~sw.runtime.chip.ChipError` where the chip refused
        the read (SLVERR, DECERR: no register there), a reset dropped it or it was called in reset, an access
        cancelled in flight left the bus mid-transaction, or a response came with no access of its direction
        outstanding (:class:`~cosim.axil.AxiLiteHost`)."""
        return await self.csr.read32(offset)

    async def write32(self, offset, value):
        """Write one register word; False where a reset dropped the write (or it was called in reset). Raises
        :class:`~sw.runtime.chip.ChipError` where the chip refused it (SLVERR, DECERR), an access cancelled in
        flight left the bus mid-transaction, or a response came with no access of its direction outstanding."""
        return await self.csr.write32(offset, value)

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
