"""Host-side driver of the chip's registers (hw/chip.py): program load, argument load, execute, copies.

The driver is async and talks to the chip through a small bus object, so the
same code drives the Verilator co-simulation (AXI4-Lite through
cocotbext-axi, waiting on the chip's done lines) and any other backend that
offers the same three calls:

- ``await bus.read32(offset)`` and ``await bus.write32(offset, value)``;
- ``await bus.wait_for(event)`` with ``event`` one of ``"kernel_done"``,
  ``"program_done"``, ``"copy_done"``: return once that line is high, or
  raise ``TimeoutError`` when it stays low past the bus's cycle limit.
"""

from dataclasses import dataclass

import numpy as np

from hw.chip import chip_registers
from hw.mem.agcu import direction_status_layout, transfer_layout
from hw.mem.controller import stats_layout
from hw.mem.copy import copy_config_layout, copy_status_layout
from hw.mem.csr import RegisterMap
from hw.tile.config import Status
from sw.layout import pack, unpack
from sw.loopnest import LoopNest, agcu_last_every


KERNEL_ERROR = 0b100        # kernel_status: busy, done, error


from sw.errors import ChipError  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Pattern:
    """One AGCU transfer: the words of a :class:`~sw.loopnest.LoopNest` in TLN words from byte ``base`` of ``tier``.

    The transfer visits ``base + a * word_bytes`` for each address ``a`` of
    ``nest``, in order; a read marks ``last`` on the vectors the nest's
    ``last_level`` marks and always on the final one. ``bf16`` (reads) widens
    each word's bf16 values to fp32 lanes: two words of vectors per memory word.
    """

    tier: int
    base: int
    nest: LoopNest
    bf16: bool = False

    def __post_init__(self):
        if not isinstance(self.nest, LoopNest):
            raise ValueError(f"pattern.nest must be a LoopNest, not {self.nest!r}")
        self.nest.check("pattern")

    @classmethod
    def linear(cls, tier, base, words, **kwargs):
        """``words`` consecutive words from ``base``."""
        return cls(tier, base, LoopNest.linear(words), **kwargs)

    @property
    def words(self):
        return self.nest.count

    def fields(self, word_bytes):
        """The AGCU's ``transfer_layout`` record as a dict."""
        bounds, strides = self.nest.padded()
        return dict(tier=self.tier, base=self.base + self.nest.offset * word_bytes,
                    last_every=agcu_last_every(self.nest.last_level), bf16=int(self.bf16),
                    counts=list(bounds), strides=list(strides))


def stream_pattern(tier, base, last, *, lanes, word_bytes):
    """A contiguous pattern that delivers ``len(last)`` vectors with ``last`` set where ``last`` says.

    The flags must be periodic (a group of ``p`` vectors, ``last`` on each
    group's final vector) or set on the final vector only: what one nest's
    ``last_level`` can express.
    """
    last = np.asarray(last, dtype=bool)
    n = last.size
    if n == 0 or not last[-1]:
        raise ValueError("a stream's final vector must carry last")
    vector_words = 4 * lanes / word_bytes
    words = int(np.ceil(n * vector_words))
    if last.sum() == 1:
        return Pattern.linear(tier, base, words)
    period = int(np.flatnonzero(last)[0]) + 1
    if n % period or not np.array_equal(last, np.tile(np.arange(period) == period - 1, n // period)):
        raise ValueError(f"last flags at vectors {np.flatnonzero(last)[:8].tolist()} are not one group size; "
                         f"an AGCU marks groups of equal size")
    group_words = period * vector_words
    if group_words != int(group_words):
        raise ValueError(f"a group of {period} vectors is not a whole number of {word_bytes}-byte words")
    return Pattern(tier, base, LoopNest((int(group_words), n // period), (1, int(group_words)), last_level=0))


class ChipDriver:
    """Register-level commands of a :class:`hw.chip.Chip` built with the same parameters.

    Parameters
    ----------
    bus : object with ``read32``, ``write32``, ``wait_for`` (see the module docstring)
    array_params, mem_params, agcus
        As given to the Chip.
    """

    def __init__(self, bus, array_params, mem_params, agcus):
        self.bus = bus
        self.mem_params = mem_params
        self.agcus = tuple(agcus)
        self.map = RegisterMap(chip_registers(array_params, mem_params, self.agcus))
        self.transfer = transfer_layout(mem_params)
        self.direction_status = direction_status_layout()

    def agcu_at(self, side, col):
        try:
            return self.agcus.index((side, col))
        except ValueError:
            raise ChipError(f"no AGCU at I/O position {side}{col}; AGCUs sit at "
                            f"{', '.join(f'{s}{c}' for s, c in self.agcus)}") from None

    async def write(self, name, value):
        reg = self.map.registers[name]
        offset = self.map[name]
        for i in range(reg.words):
            await self.bus.write32(offset + 4 * i, (value >> (32 * i)) & 0xFFFF_FFFF)

    async def read(self, name):
        reg = self.map.registers[name]
        offset = self.map[name]
        value = 0
        for i in range(reg.words):
            value |= await self.bus.read32(offset + 4 * i) << (32 * i)
        return value

    async def load_program(self, tier, base, words):
        """Program Load: stream ``words`` 32-bit configuration words from memory into the array.

        Returns the array loader's cycle count; raises :class:`ChipError` if
        the array refuses the bitstream.
        """
        tln_words = -(-4 * words // self.mem_params.word_bytes)
        if tln_words * self.mem_params.word_bytes != 4 * words:
            raise ChipError(f"a program of {words} words does not fill whole {self.mem_params.word_bytes}-byte "
                            f"memory words; pad it with words after the bitstream's end")
        transfer = Pattern.linear(tier, base, tln_words).fields(self.mem_params.word_bytes)
        await self.write("program", pack(self.transfer, transfer))
        await self.write("program_start", 1)
        try:
            await self.bus.wait_for("program_done")
        except TimeoutError:
            loader = unpack(self.direction_status, await self.read("program_status"))
            raise ChipError(f"program load stalled after {loader['words']} of {tln_words} memory words "
                            f"(array loader status {Status(await self.read('config_status')).name})") from None
        status = Status(await self.read("config_status"))
        loader = unpack(self.direction_status, await self.read("program_status"))
        if loader["error"]:
            raise ChipError(f"program load: memory refused word {loader['error_word']} of the program at "
                            f"{base:#x}")
        if status != Status.OK:
            raise ChipError(f"program load: the array refused the bitstream ({status.name})")
        return await self.read("config_load_cycles")

    async def execute(self, reads, writes, *, statuses=True):
        """Argument Load then Execute: ``reads`` / ``writes`` map an AGCU index to its :class:`Pattern`.

        Returns ``(kernel cycles, per-AGCU statuses)``; raises :class:`ChipError` on an error response.
        With ``statuses=False`` the per-AGCU statuses are read only when ``kernel_status`` reports an
        error (fewer register reads per launch) and ``{}`` is returned in their place.
        """
        enable = 0
        for k, pattern in reads.items():
            await self.write(f"agcu{k}_read", pack(self.transfer, pattern.fields(self.mem_params.word_bytes)))
            enable |= 1 << (2 * k)
        for k, pattern in writes.items():
            await self.write(f"agcu{k}_write", pack(self.transfer, pattern.fields(self.mem_params.word_bytes)))
            enable |= 1 << (2 * k + 1)
        await self.write("kernel_enable", enable)
        await self.write("kernel_start", 1)
        try:
            await self.bus.wait_for("kernel_done")
        except TimeoutError:
            raise ChipError(f"kernel stalled: {await self._progress(reads, writes)}") from None
        cycles = await self.read("kernel_cycles")
        if not statuses and not (await self.read("kernel_status")) & KERNEL_ERROR:
            return cycles, {}
        statuses = {}
        for direction, patterns in (("read", reads), ("write", writes)):
            for k in patterns:
                s = unpack(self.direction_status, await self.read(f"agcu{k}_{direction}_status"))
                statuses[(k, direction)] = s
                if s["error"]:
                    raise ChipError(f"AGCU {k} ({self.agcus[k][0]}{self.agcus[k][1]}) {direction}: memory refused "
                                    f"word {s['error_word']} of its pattern (outside the tier?)")
        return cycles, statuses

    async def _progress(self, reads, writes):
        """Where each enabled AGCU direction stands: for a stall report."""
        parts = []
        for direction, patterns in (("read", reads), ("write", writes)):
            for k, pattern in patterns.items():
                s = unpack(self.direction_status, await self.read(f"agcu{k}_{direction}_status"))
                side, col = self.agcus[k]
                state = "done" if s["done"] else f"{s['words']}/{pattern.words} words"
                parts.append(f"AGCU {k} ({side}{col}) {direction} {state}")
        return "; ".join(parts)

    async def start_copy(self, src_tier, src_addr, dst_tier, dst_addr, length):
        """Start a copy-engine transfer; it runs beside kernels. :meth:`wait_copy` collects it."""
        layout = copy_config_layout(self.mem_params)
        await self.write("copy", pack(layout, dict(src_tier=src_tier, src_addr=src_addr, dst_tier=dst_tier,
                                                   dst_addr=dst_addr, length=length)))
        await self.write("copy_start", 1)

    async def wait_copy(self):
        try:
            await self.bus.wait_for("copy_done")
        except TimeoutError:
            status = unpack(copy_status_layout(), await self.read("copy_status"))
            raise ChipError(f"copy stalled after {status['bytes']} bytes") from None
        status = unpack(copy_status_layout(), await self.read("copy_status"))
        if status["error"]:
            raise ChipError(f"copy engine: memory refused address {status['error_addr']:#x}")
        return status

    async def tier_stats(self, name):
        return unpack(stats_layout(self.mem_params.addr_bits), await self.read(f"{name}_stats"))
