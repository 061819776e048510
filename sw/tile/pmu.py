"""Python description of a PMU configuration: address patterns, read mode, buffering.

A :class:`PmuConfig` is what kernels and the compiler produce for one PMU.
:meth:`PmuConfig.validate` refuses configurations the hardware would run
wrongly, naming the field and the problem, and :meth:`PmuConfig.pack` turns
one into the integer the hardware's ``cfg`` port sees, through the same
``pmu_config_layout`` the RTL uses.

Example: write a 16 x 4 matrix row by row and read it back transposed,
double-buffered::

    PmuConfig(
        write=AddressPattern(bounds=(16,), strides=(4,)),
        read=AddressPattern(bounds=(4, 4), strides=(1, 16)),
        read_mode=ReadMode.COLUMN, stripe=True, buffers=2, buffer_words=64)
"""

from dataclasses import dataclass

import numpy as np

from facts.loopnest import LAST_NEVER
from hw.tile.pmu import MAX_BUFFERS, PASS_BITS, READS_PER_FILL_BITS, PmuReadMode, addr_bits, pmu_config_layout
from sw.loopnest import LoopNest

ReadMode = PmuReadMode


@dataclass(frozen=True)
class AddressPattern(LoopNest):
    """One PMU side's pattern: a :class:`~sw.loopnest.LoopNest` in PMU words and where a pass's base comes from.

    The address of iteration ``(i0, i1, ...)`` is ``offset + runtime base +
    buffer base + sum(strides[k] * i[k])``. The write side ignores
    ``last_level``.

    Parameters
    ----------
    bounds, strides, offset, last_level
        As for :class:`~sw.loopnest.LoopNest`; every bound is at least 1.
    runtime_base : bool
        Take a base per pass from the side's scalar input (si0 for writes,
        si1 for reads).
    """

    runtime_base: bool = False

    def validate(self, params, name):
        """Check field ranges; ``name`` ("write" or "read") prefixes each message."""
        self.check(name, min_bound=1)
        limit = 1 << addr_bits(params)
        for k, stride in enumerate(self.strides):
            if not -limit <= stride < limit:
                raise ValueError(f"{name}.strides[{k}] is {stride!r}; strides must be integers in "
                                 f"[{-limit}, {limit - 1}]")
        if not 0 <= self.offset < params.pmu_words:
            raise ValueError(f"{name}.offset is {self.offset!r}; it must be in [0, {params.pmu_words - 1}]")

    def fields(self):
        """The record as a dict for ``pmu_pattern_layout(params).const``."""
        bounds, strides = self.padded()
        return {"bounds": list(bounds), "strides": list(strides), "offset": self.offset,
                "runtime_base": int(self.runtime_base),
                "last_level": LAST_NEVER if self.last_level is None else self.last_level}


@dataclass(frozen=True)
class PmuConfig:
    """Configuration of one PMU.

    Parameters
    ----------
    write, read : AddressPattern
        Write addresses (one row of ``lanes`` words per vi0 vector; must be
        multiples of ``lanes``) and read addresses.
    read_mode : ReadMode
        ROW: the ``lanes`` words at the address (aligned); COLUMN: the word at
        the address and the words ``lanes``, ``2 * lanes``, ... above it, one
        per lane (needs ``stripe``); BROADCAST: the word on every lane.
    stripe : bool
        Store row r rotated by r banks so COLUMN reads run at full rate.
    buffers : int
        Number of buffers, 1 to 4; pass p uses the buffer at ``(p mod
        buffers) * buffer_words``.
    buffer_words : int
        Word distance between buffers (a multiple of ``lanes``).
    reads_per_fill : int
        Read passes per written buffer before it may be written again.
    write_passes, read_passes : int
        Passes to run; 0 runs without end.

    The packed record has ``enable`` set; an all-zero record leaves the PMU
    idle with its pass and buffer state cleared.
    """

    write: AddressPattern
    read: AddressPattern
    read_mode: ReadMode = ReadMode.ROW
    stripe: bool = False
    buffers: int = 1
    buffer_words: int = 0
    reads_per_fill: int = 1
    write_passes: int = 0
    read_passes: int = 0

    def read_extent(self, params):
        """Words a read touches above its address."""
        return {ReadMode.ROW: params.lanes - 1, ReadMode.COLUMN: (params.lanes - 1) * params.lanes,
                ReadMode.BROADCAST: 0}[self.read_mode]

    def validate(self, params):
        """Raise ``ValueError`` naming the field and the problem; return self when the config is usable."""
        lanes, words = params.lanes, params.pmu_words
        if not isinstance(self.read_mode, ReadMode):
            raise ValueError(f"read_mode is {self.read_mode!r}; use a ReadMode")
        if not isinstance(self.stripe, (bool, np.bool_)):
            raise ValueError(f"stripe is {self.stripe!r}; it must be a bool")
        self.write.validate(params, "write")
        self.read.validate(params, "read")
        for name, value, hi in (("buffers", self.buffers, MAX_BUFFERS),
                                ("reads_per_fill", self.reads_per_fill, (1 << READS_PER_FILL_BITS) - 1),
                                ("write_passes", self.write_passes, (1 << PASS_BITS) - 1),
                                ("read_passes", self.read_passes, (1 << PASS_BITS) - 1)):
            lo = 0 if name.endswith("passes") else 1
            if not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
                raise ValueError(f"{name} is {value!r}; it must be an integer in [{lo}, {hi}]")
        if not 0 <= self.buffer_words < words:
            raise ValueError(f"buffer_words is {self.buffer_words}; it must be in [0, {words - 1}]")
        if self.read_mode == ReadMode.COLUMN and not self.stripe:
            raise ValueError("read_mode COLUMN needs stripe=True: in the plain layout a column lies in one "
                             "bank and cannot be read in one cycle")

        aligned = [("write", self.write)]
        if self.read_mode == ReadMode.ROW:
            aligned.append(("read", self.read))
        for name, pattern in aligned:
            what = "rows written" if name == "write" else "ROW reads"
            if pattern.offset % lanes:
                raise ValueError(f"{name}.offset {pattern.offset} is not a multiple of lanes ({lanes}), "
                                 f"which {what} need")
            for k, stride in enumerate(pattern.strides):
                if stride % lanes:
                    raise ValueError(f"{name}.strides[{k}] {stride} is not a multiple of lanes ({lanes}), "
                                     f"which {what} need")
        if self.buffers > 1 and self.buffer_words % lanes:
            raise ValueError(f"buffer_words {self.buffer_words} is not a multiple of lanes ({lanes}), "
                             f"which rows written need")

        if self.buffers > 1:
            if self.buffers * self.buffer_words > words:
                raise ValueError(f"buffers: {self.buffers} buffers of buffer_words {self.buffer_words} "
                                 f"need {self.buffers * self.buffer_words} words; the PMU has {words}")
        for name, pattern, extent in (("write", self.write, lanes - 1),
                                      ("read", self.read, self.read_extent(params))):
            lo, hi = pattern.span()
            hi += extent
            if self.buffers > 1 and (lo < 0 or hi >= self.buffer_words):
                raise ValueError(f"{name} pattern covers words {lo} to {hi} of its buffer, beyond "
                                 f"buffer_words {self.buffer_words}; the buffers would overlap")
            top = hi + (self.buffers - 1) * self.buffer_words
            if lo < 0 or top >= words:
                raise ValueError(f"{name} addresses run from {lo} to {top} over {self.buffers} buffer(s), "
                                 f"outside the PMU's capacity of {words} words (0 to {words - 1})")
        return self

    def fields(self, params):
        """The record as a dict for ``pmu_config_layout(params).const``."""
        return {
            "enable": 1, "write": self.write.fields(), "read": self.read.fields(),
            "read_mode": self.read_mode, "stripe": int(self.stripe), "buffers": self.buffers,
            "buffer_words": self.buffer_words, "reads_per_fill": self.reads_per_fill,
            "write_passes": self.write_passes, "read_passes": self.read_passes,
        }

    def pack(self, params):
        """Validate, then return the configuration as the integer on the ``cfg`` port."""
        self.validate(params)
        return pmu_config_layout(params).const(self.fields(params)).as_value().value
