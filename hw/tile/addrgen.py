"""Affine address generator of the PMU: four nested loops, level 0 innermost."""

from amaranth import Module, Signal, Array, Const, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .params import ArrayParams

LEVELS = 4
BOUND_BITS = 16
# Wide enough that no pattern with fields in range (a 32-bit runtime base, a
# capacity of up to 2**21 words, four levels of 2**16 iterations) overflows,
# so an out-of-range address is always seen as one and never wraps back in.
ADDR_BITS = 48
LAST_NEVER = 4


def addr_bits(params):
    """Bits of a word address inside one PMU."""
    return (params.pmu_words - 1).bit_length()


def address_pattern_layout(params):
    """Configuration record of one address generator.

    ``bounds[k]`` iterations (>= 1) of level k, which adds ``strides[k]`` per
    iteration; ``offset`` is added to every address; ``runtime_base`` takes a
    base per pass from the scalar input; ``last_level`` k marks the iteration
    where levels 0..k all finish, ``LAST_NEVER`` (4..7) marks none.
    """
    a = addr_bits(params)
    return data.StructLayout({
        "bounds": data.ArrayLayout(BOUND_BITS, LEVELS),
        "strides": data.ArrayLayout(signed(a + 1), LEVELS),
        "offset": a,
        "runtime_base": 1,
        "last_level": 3,
    })


class AddressGenerator(wiring.Component):
    """One pass of a 4-level affine loop nest, one address per step.

    The address of the current iteration is a register: each level keeps the
    address at the start of its current iteration, so a step is one add and
    no multiply.

    Attributes
    ----------
    cfg : In(address_pattern_layout(params))
    load : In(1)
        Start a pass at ``base``; takes priority over ``step``.
    base : In(signed(ADDR_BITS))
        First address of the pass (offset, buffer and runtime bases included).
    step : In(1)
        Move to the next iteration; after the final one the counters wrap.
    addr : Out(signed(ADDR_BITS))
        Address of the current iteration.
    final : Out(1)
        The current iteration is the last of the pass.
    last : Out(1)
        Levels ``0..cfg.last_level`` all finish at the current iteration.
    """

    def __init__(self, params):
        if not isinstance(params, ArrayParams):
            raise ValueError(f"params must be an ArrayParams, not {params!r}")
        super().__init__({
            "cfg": In(address_pattern_layout(params)),
            "load": In(1),
            "base": In(signed(ADDR_BITS)),
            "step": In(1),
            "addr": Out(signed(ADDR_BITS)),
            "final": Out(1),
            "last": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        count = [Signal(BOUND_BITS, name=f"i{k}") for k in range(LEVELS)]
        start = [Signal(signed(ADDR_BITS), name=f"a{k}") for k in range(LEVELS)]
        at_end = [count[k] + 1 == cfg.bounds[k] for k in range(LEVELS)]
        # carry[k]: every level below k finishes at this iteration.
        carry = [Const(1)]
        for k in range(LEVELS):
            carry.append(carry[k] & at_end[k])
        steps = [carry[k] & ~at_end[k] for k in range(LEVELS)]

        m.d.comb += [
            self.addr.eq(start[0]),
            self.final.eq(carry[LEVELS]),
            self.last.eq(Array(carry[1:] + [Const(0)] * LEVELS)[cfg.last_level]),
        ]
        with m.If(self.load):
            m.d.sync += [c.eq(0) for c in count]
            m.d.sync += [a.eq(self.base) for a in start]
        with m.Elif(self.step):
            for k in range(LEVELS):
                with m.If(carry[k]):
                    m.d.sync += count[k].eq(count[k] + 1)
                    with m.If(at_end[k]):
                        m.d.sync += count[k].eq(0)
            # At most one level steps; it and every level below restart at
            # that level's next address.
            for j in range(LEVELS):
                with m.If(steps[j]):
                    m.d.sync += start[j].eq(start[j] + cfg.strides[j])
                for k in range(j + 1, LEVELS):
                    with m.Elif(steps[k]):
                        m.d.sync += start[j].eq(start[k] + cfg.strides[k])
        return m
