"""The device interface the runtime drives, and its fast-model backend.

One runtime, two backends: :class:`ModelDevice` here runs kernels on the
chip's fast model (:class:`sw.model.chip.ChipModel`); the co-simulation
backend (``cosim/device.py``) runs them on the Verilator chip through the
register driver. Both offer the same async calls, so the runtime's decode
loop is the same code on both:

- ``await write(tier, offset, words)`` / ``await read(tier, offset, nwords)``:
  bulk host access to a tier (uint32 words), the back door that stands for a
  DMA whose cost the runtime accounts at the host link's bandwidth;
- ``await load_program(program, tier, offset)``: Program Load of a built
  kernel whose bitstream lies in memory at ``offset``; returns loader cycles;
- ``await execute(reads, writes)``: Argument Load (AGCU index ->
  :class:`sw.runtime.chip.Pattern`) and Execute; returns the kernel's cycles;
- ``await copy(src_tier, src, dst_tier, dst, nbytes)``: a copy-engine
  transfer; returns its cycles.

Errors (a stalled kernel, a refused program, an access outside a tier) raise
:class:`sw.runtime.chip.ChipError` on both backends.
"""

import numpy as np

from sw.model import memory_units
from sw.model.chip import ChipModel
from sw.model.memory import MemoryRangeError
from sw.runtime.chip import ChipError


class ModelDevice:
    """The fast-model backend of a :class:`sw.target.Target`."""

    backend = "model"

    def __init__(self, target):
        self.target = target
        self.chip = ChipModel(target.array, target.memory, target.agcus)
        self.loaded = None

    async def write(self, tier, offset, words):
        try:
            self.chip.memory[tier].write(offset, np.ascontiguousarray(words, dtype="<u4"))
        except MemoryRangeError as e:
            raise ChipError(f"host write: {e}") from None

    async def read(self, tier, offset, nwords):
        try:
            return self.chip.memory[tier].read(offset, 4 * nwords).view("<u4").copy()
        except MemoryRangeError as e:
            raise ChipError(f"host read: {e}") from None

    async def load_program(self, program, tier, offset):
        words = self.chip.memory[tier].read(offset, 4 * len(program.words)).view("<u4")
        if not np.array_equal(words, np.asarray(program.words, dtype=np.uint32)):
            raise ChipError(f"program load: the bitstream at {tier}:{offset:#x} is not the program's")
        self.loaded = program
        return self.chip.load_program(program)

    async def execute(self, reads, writes):
        if self.loaded is None:
            raise ChipError("execute before any program load")
        try:
            cycles, _ = self.chip.execute(reads, writes)
        except MemoryRangeError as e:
            raise ChipError(f"kernel: an AGCU pattern leaves its tier: {e}") from None
        except ValueError as e:
            # A host port without a pattern (the RTL would stall on it) or a pattern it cannot hold.
            raise ChipError(f"kernel: {e}") from None
        return cycles

    async def copy(self, src_tier, src, dst_tier, dst, nbytes):
        m = self.target.memory
        if nbytes % m.word_bytes:
            raise ChipError(f"copy: {nbytes} bytes is not a whole number of {m.word_bytes}-byte memory words")
        try:
            data = self.chip.memory[src_tier].read(src, nbytes)
            self.chip.memory[dst_tier].write(dst, data)
        except MemoryRangeError as e:
            raise ChipError(f"copy: {e}") from None
        return memory_units.copy_cycles(nbytes, m.tiers[src_tier], m.tiers[dst_tier], word_bytes=m.word_bytes)

    async def close(self):
        pass
