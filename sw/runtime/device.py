"""The device interface the runtime drives, and its fast-model backend.

One runtime, two backends: :class:`ModelDevice` here runs kernels on the
chip's fast model (:class:`sw.model.chip.ChipModel`); the co-simulation
backend (``cosim.device.CocotbDevice``) runs them on the Verilator chip
through the register driver. Both implement :class:`Device`, so the
runtime's decode loop (:mod:`sw.runtime.decode`) is the same code on both,
and the command line alone picks one (:mod:`sw.runtime.backends`).
"""

import abc

import numpy as np

from sw.errors import ChipError
from sw.model import memory_units
from sw.model.chip import ChipModel
from sw.model.memory import MemoryRangeError


class Device(abc.ABC):
    """A chip built from a :class:`sw.target.Target`, driven with the SN40L's commands.

    Every call is a coroutine. Tiers are the indices of
    ``hw.mem.params.TIER_NAMES`` (``HBM``, ``DDR``); offsets are bytes from the
    start of a tier; words are uint32. A mistake the chip would refuse (an
    access outside a tier, a program that is not where it is said to be, a
    kernel that stalls or whose AGCU pattern leaves its tier) raises
    :class:`sw.errors.ChipError` on every backend, with a message that names it.

    Attributes
    ----------
    backend : str
        ``"model"`` or ``"rtl"``: the name reports and the command line use.
    target : sw.target.Target
        What the chip was built from.
    """

    backend: str
    target: object

    async def start(self):
        """Make the chip ready for commands (the RTL releases reset); idempotent, and every other call does it."""

    @abc.abstractmethod
    async def write(self, tier, offset, words):
        """Store ``words`` (uint32 array, any shape, written flat) at byte ``offset`` of ``tier``.

        The host's back door to a tier: it stands for a DMA whose cost the
        runtime accounts itself, at the host link's bandwidth.
        """

    @abc.abstractmethod
    async def read(self, tier, offset, nwords):
        """The ``nwords`` uint32 words at byte ``offset`` of ``tier`` (array of shape (nwords,)), by the back door."""

    @abc.abstractmethod
    async def load_program(self, program, tier, offset):
        """Program Load of ``program`` (a built :class:`sw.tile.kernel.Program`) whose words lie at ``offset``.

        The words must be there already (the runtime writes them, zero-padded
        to whole memory words); a mismatch is refused. Returns the loader's
        cycles (int).
        """

    @abc.abstractmethod
    async def execute(self, reads, writes):
        """Argument Load and Execute of the loaded program.

        ``reads`` and ``writes`` map an AGCU index (into ``target.agcus``) to
        its :class:`sw.runtime.chip.Pattern`; every host port of the program
        needs one. Returns the kernel's cycles (int), from the start command
        to the last AGCU done.
        """

    @abc.abstractmethod
    async def copy(self, src_tier, src, dst_tier, dst, nbytes):
        """A copy-engine transfer of ``nbytes`` (whole memory words) between tiers; returns its cycles."""

    @abc.abstractmethod
    async def tier_stats(self):
        """Each tier's controller counters, by tier name (``"hbm"``, ``"ddr"``).

        Every backend gives ``reads``, ``writes`` (memory words performed by
        kernels' AGCUs and the copy engine, not the back door) and ``errors``
        (words refused for lying outside the tier); the RTL adds the rest of
        ``hw.mem.controller.stats_layout``.
        """

    async def close(self):
        """Release what the backend holds; the device is not used after this."""


class ModelDevice(Device):
    """The fast-model backend of a :class:`sw.target.Target`: results bit-identical to the RTL, cycles estimated."""

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
        self.chip.count(src_tier, "reads", nbytes // m.word_bytes)
        self.chip.count(dst_tier, "writes", nbytes // m.word_bytes)
        return memory_units.copy_cycles(nbytes, m.tiers[src_tier], m.tiers[dst_tier], word_bytes=m.word_bytes)

    async def tier_stats(self):
        return {name: dict(counts) for name, counts in self.chip.stats.items()}
