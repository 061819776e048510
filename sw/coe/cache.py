"""The HBM expert cache: which expert each of K slots holds, eviction by a pluggable policy.

A policy is ``policy(entries) -> slot``: it picks the victim among ``entries``, the evictable
slots as dicts ``{"slot", "expert", "loaded", "used", "uses"}`` (``loaded`` / ``used``: the cache's
clock at the expert's copy and last use). Every allocation checks that the slot lies inside the
HBM expert region and inside HBM; a violation is counted and raised.
"""

from sw.errors import CoEError


def lru(entries):
    """Least recently used."""
    return min(entries, key=lambda e: e["used"])["slot"]


def fifo(entries):
    """First copied in, first out."""
    return min(entries, key=lambda e: e["loaded"])["slot"]


def lfu(entries):
    """Least frequently used, the least recently used among ties."""
    return min(entries, key=lambda e: (e["uses"], e["used"]))["slot"]


POLICIES = {"lru": lru, "fifo": fifo, "lfu": lfu}


class SlotCache:
    """``slots`` HBM slots of ``slot_bytes`` from byte ``base``, inside an HBM of ``capacity`` bytes.

    Attributes
    ----------
    entries : dict
        Slot -> its entry (see the module docstring); free slots have none.
    checks, violations : int
        Allocations checked, and those that left the region (raised as :class:`CoEError`).
    """

    def __init__(self, slots, slot_bytes, base, capacity, policy="lru"):
        if policy not in POLICIES:
            raise CoEError(f"unknown cache policy {policy!r} (policies: {', '.join(POLICIES)})")
        self.slots, self.slot_bytes, self.base, self.capacity = slots, slot_bytes, base, capacity
        self.policy = POLICIES[policy]
        self.entries, self.clock, self.checks, self.violations = {}, 0, 0, 0

    def where(self, expert):
        """The slot holding ``expert``, or None."""
        return next((s for s, e in self.entries.items() if e["expert"] == expert), None)

    def use(self, expert):
        """Mark a use of resident ``expert``; returns its slot."""
        slot = self.where(expert)
        self.clock += 1
        entry = self.entries[slot]
        entry["used"], entry["uses"] = self.clock, entry["uses"] + 1
        return slot

    def allocate(self, expert, pinned=()):
        """A slot for ``expert`` (not resident): a free one, else the policy's victim among slots whose
        experts are not in ``pinned``. Returns ``(slot, evicted expert or None)``."""
        free = [s for s in range(self.slots) if s not in self.entries]
        evicted = None
        if free:
            slot = free[0]
        else:
            candidates = [e for e in self.entries.values() if e["expert"] not in pinned]
            if not candidates:
                raise CoEError(f"all {self.slots} slots hold experts still needed; give more slots")
            slot = self.policy(candidates)
            evicted = self.entries[slot]["expert"]
        start = self.base + slot * self.slot_bytes
        self.checks += 1
        if not (0 <= slot < self.slots and start + self.slot_bytes <= min(self.base + self.slots * self.slot_bytes,
                                                                         self.capacity)
                and len(self.entries) - (evicted is not None) < self.slots):
            self.violations += 1
            raise CoEError(f"slot {slot} at {start:#x} leaves the HBM expert region")
        self.clock += 1
        self.entries[slot] = {"slot": slot, "expert": expert, "loaded": self.clock, "used": self.clock, "uses": 0}
        return slot, evicted
