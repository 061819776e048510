"""Where the router, the experts' shared regions and the expert slots live in HBM, and the CoE target.

HBM, from address 0::

    [router: its whole compiled memory map] [experts' shared regions: KV caches, tables, scratch,
    programs] [slot 0] [slot 1] ... [slot K-1] ([launch lists of slot 0] ... [of slot K-1])

One compiled model of the expert architecture exists per slot (:func:`slot_model`): the same
kernels, its weight regions packed at that slot's base, its other regions at the shared addresses,
so an expert runs from whichever slot it was copied into. DDR holds every expert's slot image,
expert ``i`` at ``i * slot_bytes`` (the standing state, written through the back door).

For the chip's sequencer (``orchestration="chip"``) each slot needs launch lists of its own: a
list holds its streams' absolute addresses, and a slot's weights lie elsewhere than another's. They
follow the slots (``lists_bytes`` per slot, every context bucket's list), written once with the
standing state; a switch copies only the weights. With host orchestration no list is read, so the
slot models carry none.
"""

from dataclasses import dataclass, replace
from fractions import Fraction

from hw.mem.params import HBM, TIER_NAMES
from sw.compiler.compile import launch_entries
from sw.compiler.launch import Launch
from sw.compiler.memory_map import MemoryMap, allocated_size
from sw.errors import CoEError
from sw.runtime import launch_list
from sw.target import CHIP, MiB

ORCHESTRATIONS = ("host", "chip")


# The host-to-accelerator links the paper's switching comparison uses, as fractions of the SN40L node's
# DDR -> HBM bandwidth: "over 1 TB/s, against 32 GB/s host-to-GPU on A100 and 64 GB/s on H100" (SN40L paper,
# Section VI-C; ../shared/spec/sn40l.md section 9).
HOST_LINKS = {"h100": Fraction(64, 1000), "a100": Fraction(32, 1000)}


def coe_target(ddr_mib=256, host_link="h100"):
    """The co-simulated chip's array and HBM (16 MiB) with ``ddr_mib`` MiB of DDR: 150 experts of the default
    model (1.5 MiB each) fit DDR, a handful fit HBM, as in the paper.

    The host link, over which the GPU-way baseline switches experts, runs at ``HOST_LINKS[host_link]`` of
    the DDR bandwidth: 64 GB/s against 1 TB/s for ``"h100"`` (the DGX H100 column of the paper's Table V),
    32 GB/s for ``"a100"``. The chip's own host traffic (arguments, the token read back) runs at that rate
    too. ValueError for another name. The RTL backend serves on ``sw.target.CHIP`` as built, whose host
    link is the spec's DDR / 15 (section 13.8)."""
    if host_link not in HOST_LINKS:
        raise ValueError(f"coe_target: host_link must be one of {sorted(HOST_LINKS)}, not {host_link!r}")
    m = CHIP.memory
    name = f"coe{ddr_mib}" if host_link == "h100" else f"coe{ddr_mib}-{host_link}"
    return replace(CHIP, name=name, memory=replace(m, ddr=replace(m.ddr, capacity=ddr_mib * MiB),
                                                   host_bytes_per_cycle=m.ddr.bytes_per_cycle * HOST_LINKS[host_link]))


def top(memory_map, tier=HBM):
    """Bytes of ``tier`` that ``memory_map`` occupies from address 0."""
    wb = memory_map.memory.word_bytes
    return max((r.offset + allocated_size(r.nbytes, wb) for r in memory_map.regions.values() if r.tier == tier),
               default=0)


@dataclass(frozen=True)
class Plan:
    """The HBM layout: ``router_bytes`` from 0, then ``shared_bytes``, then ``slots`` slots of ``slot_bytes``
    from ``base``, then ``lists_bytes`` of launch lists per slot (0 with host orchestration); ``ddr_bytes``
    of expert images in DDR from 0."""

    router_bytes: int
    shared_bytes: int
    base: int
    slot_bytes: int
    slots: int
    hbm_capacity: int
    ddr_bytes: int
    ddr_capacity: int
    lists_bytes: int = 0

    def slot_offset(self, slot):
        return self.base + slot * self.slot_bytes

    def lists_offset(self, slot):
        """Where slot ``slot``'s launch lists begin (after every slot)."""
        return self.base + self.slots * self.slot_bytes + slot * self.lists_bytes

    @property
    def max_slots(self):
        return (self.hbm_capacity - self.base) // (self.slot_bytes + self.lists_bytes)


def lists_bytes(arch):
    """Bytes of one slot's launch lists: every context bucket's list of ``arch``, in whole memory words."""
    mm, wb = arch.memory_map, arch.target.memory.word_bytes
    return sum(allocated_size(mm[name].nbytes, wb) for name in arch.launch_lists.values())


def plan(library, slots, *, experts_in_ddr=True, orchestration="host"):
    """The :class:`Plan` of ``library`` with ``slots`` HBM slots; CoEError when HBM or DDR cannot hold it.

    ``orchestration="chip"`` gives every slot its launch lists (:func:`slot_model`)."""
    if orchestration not in ORCHESTRATIONS:
        raise CoEError(f"unknown orchestration {orchestration!r} (orchestrations: {', '.join(ORCHESTRATIONS)})")
    arch, m = library.arch, library.target.memory
    if orchestration == "chip" and not arch.launch_lists:
        raise CoEError("the experts' compiled model has no launch lists for the chip's sequencer; compile it again")
    router = top(library.router.memory_map)
    shared = top(shared_map(arch, router)) - router
    base = router + shared
    p = Plan(router, shared, base, library.slot_bytes, slots, m.hbm.capacity,
             len(library) * library.slot_bytes if experts_in_ddr else 0, m.ddr.capacity,
             lists_bytes(arch) if orchestration == "chip" else 0)
    if slots < 1:
        raise CoEError(f"the HBM expert region needs at least 1 slot, not {slots}")
    if base + slots * (p.slot_bytes + p.lists_bytes) > m.hbm.capacity:
        lists = f" and {p.lists_bytes:,} bytes of launch lists each" if p.lists_bytes else ""
        raise CoEError(f"{slots} expert slots of {p.slot_bytes:,} bytes{lists} do not fit HBM: the router takes "
                       f"{router:,} bytes and the experts' KV caches, tables and programs {shared:,}, leaving room "
                       f"for {p.max_slots} slots in {m.hbm.capacity:,} bytes of HBM")
    if p.ddr_bytes > m.ddr.capacity:
        raise CoEError(f"{len(library)} experts of {p.slot_bytes:,} bytes ({p.ddr_bytes / MiB:.1f} MiB) do not fit "
                       f"DDR ({m.ddr.capacity / MiB:.0f} MiB on {library.target.name})")
    return p


def shared_map(arch, reserved):
    """A memory map with ``reserved`` bytes at 0, then ``arch``'s regions other than weights and launch lists
    (a slot's own, see :func:`slot_model`), in address order."""
    mm = MemoryMap(arch.target.memory)
    if reserved:
        mm.add("coe.router", reserved, "reserved")
    for r in sorted(arch.memory_map.regions.values(), key=lambda r: (r.tier, r.offset)):
        if r.tier != HBM:
            raise CoEError(f"region {r.name} of the expert architecture lies in {TIER_NAMES[r.tier].upper()}; "
                           f"expert slots need every region in HBM")
        if r.what not in ("weight", "launches"):
            mm.add(r.name, r.nbytes, r.what)
    return mm


def slot_model(arch, p, slot):
    """``arch`` relocated to slot ``slot`` of plan ``p``: weights at the slot, other regions shared.

    Every AGCU stream names its region, so moving a region moves its streams by the same bytes;
    programs hold no addresses. The model's image holds the shared regions (tables, programs) and,
    when ``p.lists_bytes``, the slot's launch lists, encoded again from the moved streams (as the
    compiler encodes them); the weights arrive by copy.
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
    delta = {name: mm[name].offset - old[name].offset for name in old.regions if name in mm.regions}
    buckets = {tp: [Launch(ln.name, ln.ops, ln.program,
                           [replace(s, offset=s.offset + delta[s.region]) for s in ln.streams], ln.program_region)
                    for ln in launches] for tp, launches in arch.buckets.items()}
    image = {name: words for name, words in arch.image.items() if old[name].what not in ("weight", "launches")}
    lists = {}
    if p.lists_bytes:
        gap = p.lists_offset(slot) - top(mm)
        if gap:
            mm.add("coe.lists_below", gap, "reserved")
        t = arch.target
        for tp in sorted(arch.launch_lists):
            name = arch.launch_lists[tp]
            words = launch_list.encode(launch_entries(buckets[tp], mm, t), t.memory, len(t.agcus))
            if words.nbytes != old[name].nbytes:
                raise CoEError(f"slot {slot}: the launch list of bucket {tp} takes {words.nbytes:,} bytes, the "
                               f"compiled one {old[name].nbytes:,}")
            mm.add(name, words.nbytes, "launches")
            image[name], lists[tp] = words, name
        if top(mm) - p.lists_offset(slot) != p.lists_bytes:
            raise CoEError(f"slot {slot}: its launch lists take {top(mm) - p.lists_offset(slot):,} bytes, the plan "
                           f"{p.lists_bytes:,}")
    return replace(arch, memory_map=mm, buckets=buckets, image=image, launch_lists=lists)
