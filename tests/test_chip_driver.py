"""The chip driver's register writes (sw/runtime/chip.py): which words reach the bus.

A fake bus records every 32-bit access; the register map is the chip's own
(``hw.chip.chip_registers``), so the offsets and access kinds are the RTL's.
"""

import asyncio

import pytest
from amaranth import Shape

from sw.layout import pack
from sw.loopnest import LoopNest
from sw.runtime.chip import ChipDriver, Pattern
from sw.target import CHIP


class FakeBus:
    """Records writes; ``resets`` (when given) as :class:`cosim.chip_bus.CocotbChipBus` counts reset edges.

    ``taken=False``: ``write32`` returns False, as for a write a reset drops (:class:`cosim.axil.AxiLiteHost`).
    ``reset_at``: the chip resets during the write numbered so (from 1).
    """

    def __init__(self, resets=None, *, taken=None, reset_at=None):
        self.writes = []
        self.taken, self.reset_at = taken, reset_at
        if resets is not None:
            self.resets = resets

    async def write32(self, offset, value):
        self.writes.append((offset, value))
        if len(self.writes) == self.reset_at:
            self.resets += 1
        return self.taken

    async def read32(self, offset):
        return 0

    async def wait_for(self, event):
        return None


def driver(bus):
    return ChipDriver(bus, CHIP.array, CHIP.memory, CHIP.agcus)


def written(bus, drv, *calls):
    bus.writes.clear()
    for name, value in calls:
        asyncio.run(drv.write(name, value))
    return list(bus.writes)


def test_rw_words_that_hold_their_value_are_not_written_again():
    bus = FakeBus(resets=0)
    drv = driver(bus)
    at = drv.map["agcu0_read"]
    words = drv.map.registers["agcu0_read"].words
    assert words > 1
    value = sum((i + 1) << (32 * i) for i in range(words))
    assert written(bus, drv, ("agcu0_read", value)) == [(at + 4 * i, i + 1) for i in range(words)]
    assert written(bus, drv, ("agcu0_read", value)) == []
    # Only the word that changes; then both registers keep their own words.
    assert written(bus, drv, ("agcu0_read", value + (5 << 32))) == [(at + 4, 7)]
    assert written(bus, drv, ("agcu1_read", value)) == [(drv.map["agcu1_read"] + 4 * i, i + 1) for i in range(words)]
    assert written(bus, drv, ("agcu0_read", value + (5 << 32)), ("agcu1_read", value)) == []


def test_pulse_registers_are_always_written():
    bus = FakeBus(resets=0)
    drv = driver(bus)
    assert drv.map.registers["kernel_start"].access == "w1p"
    expected = [(drv.map["kernel_start"], 1)] * 2
    assert written(bus, drv, ("kernel_start", 1), ("kernel_start", 1)) == expected


def test_a_reset_forgets_what_was_written():
    bus = FakeBus(resets=0)
    drv = driver(bus)
    at = drv.map["seq_token"]
    assert written(bus, drv, ("seq_token", 9), ("seq_token", 9)) == [(at, 9)]
    bus.resets += 1
    assert written(bus, drv, ("seq_token", 9), ("seq_token", 9)) == [(at, 9)]


def test_a_bus_that_cannot_say_when_the_chip_resets_gets_every_write():
    bus = FakeBus()
    drv = driver(bus)
    at = drv.map["seq_token"]
    assert written(bus, drv, ("seq_token", 9), ("seq_token", 9)) == [(at, 9), (at, 9)]


def test_a_launch_rewrites_only_the_moved_base():
    bus = FakeBus(resets=0)
    drv = driver(bus)
    wb = CHIP.memory.word_bytes
    reads = {0: Pattern.linear(0, 0x1000, 8)}
    writes = {1: Pattern.linear(0, 0x8000, 8)}
    bus.writes.clear()
    asyncio.run(drv.execute(reads, writes, statuses=False))
    first = list(bus.writes)
    bus.writes.clear()
    moved = {0: Pattern.linear(0, 0x1000 + 4 * wb, 8)}
    asyncio.run(drv.execute(moved, writes, statuses=False))
    again = list(bus.writes)
    kernel_start = drv.map["kernel_start"]
    assert first[-1] == again[-1] == (kernel_start, 1)
    read_words = range(drv.map["agcu0_read"], drv.map["agcu0_read"] + 4 * drv.map.registers["agcu0_read"].words, 4)
    # The second launch: the read pattern's changed word(s) and the start pulse, nothing of the write pattern.
    assert 1 <= len(again) - 1 <= 2
    assert all(offset in read_words for offset, _ in again[:-1])


def test_a_write_the_chip_did_not_take_is_sent_again():
    bus = FakeBus(resets=0, taken=False)
    drv = driver(bus)
    at = drv.map["seq_token"]
    assert written(bus, drv, ("seq_token", 9), ("seq_token", 9)) == [(at, 9), (at, 9)]


def test_a_write_during_a_reset_is_sent_again():
    bus = FakeBus(resets=0, reset_at=1)
    drv = driver(bus)
    at = drv.map["seq_pos"]
    assert written(bus, drv, ("seq_pos", 3), ("seq_pos", 3), ("seq_pos", 3)) == [(at, 3), (at, 3)]


def test_a_reset_within_a_register_s_words_sends_the_rest():
    bus = FakeBus(resets=0)
    drv = driver(bus)
    words = drv.map.registers["agcu0_read"].words
    at = drv.map["agcu0_read"]
    bus.reset_at = words + 1      # during the first word of the second write
    value = sum((i + 1) << (32 * i) for i in range(words))
    changed = value + 10
    # The reset cleared the words the first write set: the second write sends them all.
    assert written(bus, drv, ("agcu0_read", value), ("agcu0_read", changed)) == \
        [(at + 4 * i, i + 1) for i in range(words)] + [(at, 11)] + [(at + 4 * i, i + 1) for i in range(1, words)]


def test_packed_transfer_is_the_packed_fields_record():
    drv = driver(FakeBus())
    wb = CHIP.memory.word_bytes
    nests = [LoopNest.linear(7), LoopNest((3, 4), (5, -2), offset=9), LoopNest((2, 2, 3), (1, 0, 6), last_level=1),
             LoopNest((4,), (1,), last_level=None)]
    shapes = [dict(), dict(bf16=True), dict(after=2), dict(after=1, lag=1)]
    for nest in nests:
        for extra in shapes:
            for tier in (0, 1):
                for base in (0, wb, 37 * wb, 1 << 20):
                    pattern = Pattern(tier, base, nest, **extra)
                    for p in (pattern, pattern.moved(base + 3 * wb)):
                        assert drv.packed_transfer(p) == pack(drv.transfer, p.fields(wb)), (p, extra)
    # A field that does not fit is refused as pack refuses it: a base also once its shape is kept, a stride
    # every time (a shape that does not pack is not kept).
    top = 1 << Shape.cast(drv._base_field.shape).width
    for p in (Pattern(0, top, nests[0]), Pattern(0, -wb, nests[0]), Pattern(0, 0, LoopNest((2,), (1 << 40,)))):
        for _ in range(2):
            with pytest.raises(ValueError, match="does not fit"):
                drv.packed_transfer(p)
