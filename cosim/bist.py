"""Self-test collar: run a stream unit free in Verilator, with Python out of the loop.

:class:`BistCollar` wraps a one-in, one-out stream unit. With ``bist_start``
pulsed it feeds the unit ``bist_count`` pseudo-random operands made from a
counter hash, takes every result at once, folds the results into a 32-bit
signature, and raises ``bist_done``. Otherwise the unit's own ``i`` and ``o``
streams pass straight through for driven tests, so one Verilator build serves
both. :func:`reference_operands` and :func:`reference_signature` compute the
same operands and signature in numpy, so a run is checked against the golden
model with one comparison.
"""

import numpy as np
from amaranth import Module, Signal, Cat, Value
from amaranth.hdl import Shape
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

GOLDEN = 0x9E37_79B9


def _mix32_rtl(x):
    """Chris Wellons' lowbias32 integer hash, as Amaranth expressions."""
    x = (x ^ (x >> 16)) * 0x7FEB_352D
    x = (x[:32] ^ (x[:32] >> 15)) * 0x846C_A68B
    x = x[:32]
    return (x ^ (x >> 16))[:32]


def mix32(x):
    """lowbias32 on a numpy uint32 array (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint32)
    x = (x ^ (x >> np.uint32(16))) * np.uint32(0x7FEB_352D)
    x = (x ^ (x >> np.uint32(15))) * np.uint32(0x846C_A68B)
    return x ^ (x >> np.uint32(16))


def _words(width):
    return (width + 31) // 32


def _width(port):
    return Shape.cast(port.payload.shape()).width


class BistCollar(wiring.Component):
    """Pass-through or self-test around a stream unit.

    Parameters
    ----------
    unit : wiring.Component
        A component with ``i: In(stream.Signature(...))`` and
        ``o: Out(stream.Signature(...))``.
    """

    def __init__(self, unit):
        self.unit = unit
        self.in_width = _width(unit.i)
        self.out_width = _width(unit.o)
        super().__init__({
            "i": In(stream.Signature(self.in_width)),
            "o": Out(stream.Signature(self.out_width)),
            "bist_start": In(1),
            "bist_count": In(32),
            "bist_seed": In(32),
            "bist_done": Out(1),
            "bist_signature": Out(32),
            "bist_cycles": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self.unit
        active = Signal()
        issued = Signal(32)
        received = Signal(32)

        n_in = _words(self.in_width)
        words = [_mix32_rtl((self.bist_seed + issued * n_in + j)[:32]) for j in range(n_in)]
        operand = Cat(*words)[:self.in_width]

        n_out = _words(self.out_width)
        base = Signal(32)
        result = Value.cast(unit.o.payload)
        terms = [_mix32_rtl((result[32 * j:32 * (j + 1)] + base + j * GOLDEN)[:32]) for j in range(n_out)]
        fold = terms[0]
        for term in terms[1:]:
            fold = (fold + term)[:32]

        with m.If(active):
            m.d.comb += [
                unit.i.valid.eq(issued != self.bist_count),
                unit.i.payload.eq(operand),
                unit.o.ready.eq(1),
            ]
            with m.If(unit.i.valid & unit.i.ready):
                m.d.sync += issued.eq(issued + 1)
            with m.If(unit.o.valid):
                m.d.sync += [
                    received.eq(received + 1),
                    base.eq(base + n_out * GOLDEN),
                    self.bist_signature.eq(self.bist_signature + fold),
                ]
            m.d.sync += self.bist_cycles.eq(self.bist_cycles + 1)
            with m.If(received == self.bist_count):
                m.d.sync += [active.eq(0), self.bist_done.eq(1)]
        with m.Else():
            wiring.connect(m, wiring.flipped(self.i), unit.i)
            wiring.connect(m, unit.o, wiring.flipped(self.o))
            with m.If(self.bist_start):
                m.d.sync += [active.eq(1), self.bist_done.eq(0), issued.eq(0), received.eq(0),
                             base.eq(0), self.bist_signature.eq(0), self.bist_cycles.eq(0)]
        return m


def reference_operands(in_width, count, seed):
    """The operands a collar feeds its unit, as Python ints (one per operation)."""
    n_in = _words(in_width)
    index = (np.uint64(seed) + np.arange(count * n_in, dtype=np.uint64)) & np.uint64(0xFFFF_FFFF)
    words = mix32(index.astype(np.uint32)).reshape(count, n_in)
    mask = (1 << in_width) - 1
    return [sum(int(w) << (32 * j) for j, w in enumerate(row)) & mask for row in words]


def reference_signature(out_width, outputs):
    """The signature a collar computes over ``outputs`` (Python ints in order)."""
    n_out = _words(out_width)
    count = len(outputs)
    words = np.array([[(v >> (32 * j)) & 0xFFFF_FFFF for j in range(n_out)] for v in outputs],
                     dtype=np.uint64).reshape(count, n_out)
    position = np.arange(count * n_out, dtype=np.uint64).reshape(count, n_out)
    terms = mix32(((words + position * np.uint64(GOLDEN)) & np.uint64(0xFFFF_FFFF)).astype(np.uint32))
    return int(terms.astype(np.uint64).sum() & np.uint64(0xFFFF_FFFF))
