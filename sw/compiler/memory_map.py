"""The memory map: named regions of each memory tier, bump-allocated and aligned to the TLN word."""

from dataclasses import dataclass

from hw.mem.params import HBM, TIER_NAMES, MemParams
from sw.errors import CompileError


@dataclass(frozen=True)
class Region:
    """A named block of one memory tier: ``offset`` and ``nbytes`` in bytes, ``what`` its kind."""

    name: str
    tier: int
    offset: int
    nbytes: int
    what: str


class MemoryMap:
    """Bump allocation of named regions per tier, aligned to the TLN word."""

    # The instance's fields (declarations only: a program file's MemoryMap is checked against them on load).
    memory: MemParams
    regions: dict[str, Region]
    _top: dict[int, int]

    def __init__(self, memory):
        self.memory = memory
        self.regions = {}
        self._top = {tier: 0 for tier in TIER_NAMES}

    def add(self, name, nbytes, what, tier=HBM):
        """Allocate ``name`` (once; again with the same size returns it); CompileError when the tier is full."""
        if name in self.regions:
            if (self.regions[name].nbytes, self.regions[name].tier) != (nbytes, tier):
                raise CompileError(f"memory map: region {name} is allocated twice with different sizes")
            return self.regions[name]
        size = allocated_size(nbytes, self.memory.word_bytes)
        capacity = self.memory.tiers[tier].capacity
        if self._top[tier] + size > capacity:
            raise CompileError(f"memory map: {name} ({nbytes} bytes) does not fit {TIER_NAMES[tier].upper()}: "
                               f"{self._top[tier] + size} bytes needed, {capacity} available")
        region = Region(name, tier, self._top[tier], nbytes, what)
        self._top[tier] += size
        self.regions[name] = region
        return region

    def copy(self):
        """A map with the same regions that allocates on its own from here on."""
        other = MemoryMap(self.memory)
        other.regions, other._top = dict(self.regions), dict(self._top)
        return other

    def __getitem__(self, name):
        return self.regions[name]

    def bytes_by(self, key):
        out = {}
        for r in self.regions.values():
            k = key(r)
            out[k] = out.get(k, 0) + r.nbytes
        return out

    def table(self):
        return "\n".join(f"  {TIER_NAMES[r.tier]} {r.offset:#010x} {r.nbytes:>9} B  {r.what:<9} {r.name}"
                         for r in sorted(self.regions.values(), key=lambda r: (r.tier, r.offset)))


def allocated_size(nbytes, word_bytes):
    """Bytes a region of ``nbytes`` takes: whole TLN words, at least one."""
    return -(-max(nbytes, word_bytes) // word_bytes) * word_bytes


def word_count(nbytes, word_bytes, where):
    """``nbytes`` in memory words; CompileError naming ``where`` when it is not a whole number of them."""
    if nbytes % word_bytes:
        raise CompileError(f"{where}: {nbytes} bytes is not a whole number of {word_bytes}-byte memory words")
    return nbytes // word_bytes
