"""A first-fit allocator per memory tier, for weights, KV caches and staging buffers."""

from dataclasses import dataclass

from sw.errors import OpenRDUError


class AllocationError(OpenRDUError, MemoryError):
    """An allocation that does not fit; the message gives the sizes."""


def human(size):
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size} B"


@dataclass(frozen=True)
class Allocation:
    tier: str
    offset: int
    size: int
    name: str

    @property
    def end(self):
        return self.offset + self.size


class TierAllocator:
    """Place named blocks in one tier of ``capacity`` bytes.

    Sizes are rounded up to ``alignment`` (a TLN word by default) and blocks
    start on it. Freed blocks merge with free neighbours.

    Parameters
    ----------
    tier : str
        Name used in messages (``"hbm"``, ``"ddr"``).
    capacity : int
    alignment : int
    """

    def __init__(self, tier, capacity, *, alignment=16):
        if not isinstance(capacity, int) or capacity <= 0:
            raise ValueError(f"{tier}: capacity must be a positive number of bytes, not {capacity!r}")
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"{tier}: alignment must be a power of two, not {alignment!r}")
        if capacity % alignment:
            raise ValueError(f"{tier}: capacity {capacity} is not a multiple of the alignment {alignment}")
        self.tier, self.capacity, self.alignment = tier, capacity, alignment
        self._free = [(0, capacity)]
        self.blocks = {}

    @property
    def free_bytes(self):
        return sum(size for _, size in self._free)

    @property
    def used_bytes(self):
        return self.capacity - self.free_bytes

    @property
    def largest_free(self):
        return max((size for _, size in self._free), default=0)

    def allocate(self, size, name):
        """Reserve ``size`` bytes for ``name``; raises :class:`AllocationError` when they do not fit."""
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"{self.tier}: allocation {name!r} must have a positive size, not {size!r}")
        if name in self.blocks:
            raise ValueError(f"{self.tier}: {name!r} is already allocated")
        rounded = -(-size // self.alignment) * self.alignment
        for i, (offset, free) in enumerate(self._free):
            if free >= rounded:
                if free == rounded:
                    del self._free[i]
                else:
                    self._free[i] = (offset + rounded, free - rounded)
                block = Allocation(self.tier, offset, rounded, name)
                self.blocks[name] = block
                return block
        raise AllocationError(
            f"{self.tier}: cannot allocate {human(size)} ({size} bytes) for {name!r}: "
            f"{human(self.free_bytes)} free of {human(self.capacity)}, largest free block {human(self.largest_free)}")

    def free(self, name):
        """Return ``name``'s block to the free list."""
        if name not in self.blocks:
            raise KeyError(f"{self.tier}: nothing allocated under {name!r}")
        block = self.blocks.pop(name)
        self._free.append((block.offset, block.size))
        self._free.sort()
        merged = []
        for offset, size in self._free:
            if merged and merged[-1][0] + merged[-1][1] == offset:
                merged[-1] = (merged[-1][0], merged[-1][1] + size)
            else:
                merged.append((offset, size))
        self._free = merged

    def __contains__(self, name):
        return name in self.blocks

    def __getitem__(self, name):
        return self.blocks[name]
