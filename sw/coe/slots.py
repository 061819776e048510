"""Where the router, the experts' shared regions and the expert slots live in HBM, and the CoE target.

HBM, from address 0::

    [router: its whole compiled memory map] [experts' shared regions: KV caches, tables, scratch,
    programs] [slot 0] [slot 1] ... [slot K-1]

One compiled model of the expert architecture exists per slot (:func:`slot_model`): the same
kernels, its weight regions packed at that slot's base, its other regions at the shared addresses,
so an expert runs from whichever slot it was copied into. DDR holds every expert's slot image,
expert ``i`` at ``i * slot_bytes`` (the standing state, written through the back door).
"""

from dataclasses import dataclass, replace

from hw.mem.params import HBM, TIER_NAMES
from sw.compiler.launch import Launch
from sw.compiler.memory_map import MemoryMap, allocated_size
from sw.errors import CoEError
from sw.target import CHIP, MiB


def coe_target(ddr_mib=256):
    """The co-simulated chip's array and HBM (16 MiB) with ``ddr_mib`` MiB of DDR: 150 experts of the default
    model (1.5 MiB each) fit DDR, a handful fit HBM, as in the paper."""
    m = CHIP.memory
    return replace(CHIP, name=f"coe{ddr_mib}", memory=replace(m, ddr=replace(m.ddr, capacity=ddr_mib * MiB)))


def top(memory_map, tier=HBM):
    """Bytes of ``tier`` that ``memory_map`` occupies from address 0."""
    wb = memory_map.memory.word_bytes
    return max((r.offset + allocated_size(r.nbytes, wb) for r in memory_map.regions.values() if r.tier == tier),
               default=0)


@dataclass(frozen=True)
class Plan:
    """The HBM layout: ``router_bytes`` from 0, then ``shared_bytes``, then ``slots`` slots of ``slot_bytes``
    from ``base``; ``ddr_bytes`` of expert images in DDR from 0."""

    router_bytes: int
    shared_bytes: int
    base: int
    slot_bytes: int
    slots: int
    hbm_capacity: int
    ddr_bytes: int
    ddr_capacity: int

    def slot_offset(self, slot):
        return self.base + slot * self.slot_bytes

    @property
    def max_slots(self):
        return (self.hbm_capacity - self.base) // self.slot_bytes


def plan(library, slots, *, experts_in_ddr=True):
    """The :class:`Plan` of ``library`` with ``slots`` HBM slots; CoEError when HBM or DDR cannot hold it."""
    arch, m = library.arch, library.target.memory
    router = top(library.router.memory_map)
    shared = top(shared_map(arch, router)) - router
    base = router + shared
    p = Plan(router, shared, base, library.slot_bytes, slots, m.hbm.capacity,
             len(library) * library.slot_bytes if experts_in_ddr else 0, m.ddr.capacity)
    if slots < 1:
        raise CoEError(f"the HBM expert region needs at least 1 slot, not {slots}")
    if base + slots * p.slot_bytes > m.hbm.capacity:
        raise CoEError(f"{slots} expert slots of {p.slot_bytes:,} bytes do not fit HBM: the router takes "
                       f"{router:,} bytes and the experts' KV caches, tables and programs {shared:,}, leaving room "
                       f"for {p.max_slots} slots of {m.hbm.capacity:,}")
    if p.ddr_bytes > m.ddr.capacity:
        raise CoEError(f"{len(library)} experts of {p.slot_bytes:,} bytes ({p.ddr_bytes / MiB:.1f} MiB) do not fit "
                       f"DDR ({m.ddr.capacity / MiB:.0f} MiB on {library.target.name})")
    return p


def shared_map(arch, reserved):
    """A memory map with ``reserved`` bytes at 0, then ``arch``'s regions other than weights, in address order."""
    mm = MemoryMap(arch.target.memory)
    if reserved:
        mm.add("coe.router", reserved, "reserved")
    for r in sorted(arch.memory_map.regions.values(), key=lambda r: (r.tier, r.offset)):
        if r.tier != HBM:
            raise CoEError(f"region {r.name} of the expert architecture lies in {TIER_NAMES[r.tier].upper()}; "
                           f"expert slots need every region in HBM")
        if r.what != "weight":
            mm.add(r.name, r.nbytes, r.what)
    return mm


def slot_model(arch, p, slot):
    """``arch`` relocated to slot ``slot`` of plan ``p``: weights at the slot, other regions shared.

    Every AGCU stream names its region, so moving a region moves its streams by the same bytes;
    programs hold no addresses. The model's image holds only the shared regions (tables, programs):
    the weights arrive by copy.
    """
    mm = shared_map(arch, p.router_bytes)
    below = p.slot_offset(slot) - top(mm)
    if below:
        mm.add("coe.slots_below", below, "reserved")
    weights = [r for r in sorted(arch.memory_map.regions.values(), key=lambda r: r.offset) if r.what == "weight"]
    for r in weights:
        mm.add(r.name, r.nbytes, r.what)
    if top(mm) - p.slot_offset(slot) != p.slot_bytes:
        raise CoEError(f"slot {slot}: the expert's weights take {top(mm) - p.slot_offset(slot):,} bytes, the slot "
                       f"{p.slot_bytes:,}")
    old = arch.memory_map
    delta = {name: mm[name].offset - old[name].offset for name in old.regions}
    buckets = {tp: [Launch(ln.name, ln.ops, ln.program,
                           [replace(s, offset=s.offset + delta[s.region]) for s in ln.streams], ln.program_region)
                    for ln in launches] for tp, launches in arch.buckets.items()}
    image = {name: words for name, words in arch.image.items() if old[name].what != "weight"}
    return replace(arch, memory_map=mm, buckets=buckets, image=image)
