"""The co-simulation backend of the runtime's device interface: the Verilator chip.

:class:`CocotbDevice` implements :class:`sw.runtime.device.Device` (see it
for the contract of each call) on a chip built from a
:class:`sw.target.Target` and simulated under cocotb. Host writes and reads
go through the tiers' back door (:class:`cosim.store.TierStore`), standing
for DMA the runtime accounts for itself; Program Load, Argument Load,
Execute and copies go through the runtime's register driver
(:class:`sw.runtime.chip.ChipDriver`) over AXI4-Lite, and their cycle counts
are the RTL's own counters.
"""

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from cosim.chip_bus import CocotbChipBus
from cosim.store import TierStore
from hw.mem.params import TIER_NAMES
from sw.runtime.chip import ChipDriver, ChipError
from sw.runtime.device import Device

# Cycles one command may wait for its done line: a decode step's largest
# kernel streams a few hundred thousand words, so this only trips on a stall.
BUS_LIMIT = 5_000_000
RESET_CYCLES = 4


class CocotbDevice(Device):
    """The RTL backend of a :class:`sw.target.Target`, inside a running cocotb test.

    Construct it in the test with the toplevel built from ``target.chip()``;
    it starts the clock and holds reset, and the first call releases reset
    (:meth:`start` does so explicitly). The tiers' backing files are those of
    the running simulation (``$OPENRDU_STORE_DIR``).

    Parameters
    ----------
    dut : cocotb handle
        The chip's toplevel.
    target : sw.target.Target
        What the chip was built from: sizes, AGCU positions, register map.
    limit : int
        Cycles a command may wait for its done line before it is reported
        as stalled (:class:`~sw.runtime.chip.ChipError`).
    """

    backend = "rtl"

    def __init__(self, dut, target, *, limit=BUS_LIMIT):
        self.dut, self.target = dut, target
        self.word_bytes = target.memory.word_bytes
        # The clock toggles in the simulator's C layer: a Python clock task costs two wake-ups a cycle.
        Clock(dut.clk, 10, unit="ns", impl="gpi").start()
        dut.rst.value = 1
        self.bus = CocotbChipBus(dut, limit=limit)
        self.driver = ChipDriver(self.bus, target.array, target.memory, target.agcus)
        self.stores = {index: TierStore(index, target.memory.tiers[index].capacity) for index in TIER_NAMES}
        self.loaded = None
        self._started = False

    async def start(self):
        """Release reset (once); every other call does this first."""
        if self._started:
            return
        await ClockCycles(self.dut.clk, RESET_CYCLES)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)
        self._started = True

    async def write(self, tier, offset, words):
        await self.start()
        try:
            self.stores[tier].write(offset, np.ascontiguousarray(words, dtype="<u4"))
        except ValueError as e:
            raise ChipError(f"host write: {e}") from None

    async def read(self, tier, offset, nwords):
        await self.start()
        try:
            return self.stores[tier].read(offset, 4 * nwords).view("<u4")
        except ValueError as e:
            raise ChipError(f"host read: {e}") from None

    async def load_program(self, program, tier, offset):
        """Program Load of ``program``, whose words the caller wrote at ``offset``, zero-padded to whole TLN words.

        Returns the array loader's cycles.
        """
        await self.start()
        n = len(program.words)
        try:
            words = self.stores[tier].read(offset, 4 * n).view("<u4")
        except ValueError as e:
            raise ChipError(f"program load: {e}") from None
        # The model backend refuses a mismatch the same way; the array itself would only catch a corrupt one.
        if not np.array_equal(words, np.asarray(program.words, dtype=np.uint32)):
            raise ChipError(f"program load: the bitstream at {TIER_NAMES[tier]}:{offset:#x} is not the program's")
        self.loaded = None
        cycles = await self.driver.load_program(tier, offset, n + -n % (self.word_bytes // 4))
        self.loaded = program
        return cycles

    async def execute(self, reads, writes):
        """Argument Load and Execute; returns the kernel's cycles (the chip's ``kernel_cycles``)."""
        await self.start()
        if self.loaded is None:
            # The array would wait for a configuration until the bus limit; say why at once.
            raise ChipError("execute before load_program")
        cycles, _ = await self.driver.execute(reads, writes, statuses=False)
        return cycles

    async def copy(self, src_tier, src, dst_tier, dst, nbytes):
        """A copy-engine transfer of ``nbytes`` (whole TLN words); returns its cycles."""
        await self.start()
        if nbytes % self.word_bytes:
            raise ChipError(f"copy: the copy engine moves whole {self.word_bytes}-byte words, not {nbytes} bytes")
        await self.driver.start_copy(src_tier, src, dst_tier, dst, nbytes)
        return (await self.driver.wait_copy())["cycles"]

    async def tier_stats(self):
        """Each tier's controller counters (all of ``hw.mem.controller.stats_layout``), by tier name."""
        await self.start()
        return {name: await self.driver.tier_stats(name) for name in TIER_NAMES.values()}

    async def close(self):
        # The simulator owns the tiers' files and the clock task ends with the test: nothing to release.
        pass
