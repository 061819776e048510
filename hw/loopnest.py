"""Address counter of an affine loop nest, shared by the PMU's and the AGCUs' address generators."""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from facts.loopnest import COUNT_BITS, LEVELS


def _check_width(name, value, lo):
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{name} must be an integer of at least {lo}, not {value!r}")


class LoopNestCounter(wiring.Component):
    """Addresses of a ``levels``-deep affine loop nest, level 0 innermost, one per step.

    Iteration ``(i_0, ..., i_{levels-1})`` has address ``base + sum_k i_k *
    strides[k]``, level 0 fastest. Each level keeps the address at the start of
    its current iteration, so a step is one add and no multiply.

    Parameters
    ----------
    levels : int
        Loop levels, at least 1.
    count_bits : int
        Width of each level's iteration count.
    stride_bits : int
        Signed width of each stride.
    addr_bits : int
        Signed width of ``base`` and ``addr``; wide enough that the nests the
        user can configure never overflow, so an address out of range stays
        out of range instead of wrapping back in.

    Attributes
    ----------
    counts : In(ArrayLayout(count_bits, levels))
        Iterations of each level, each at least 1; held for the whole pass.
    strides : In(ArrayLayout(signed(stride_bits), levels))
        Added per iteration of each level; held for the whole pass.
    load : In(1)
        Start a pass at ``base``; takes priority over ``step``.
    base : In(signed(addr_bits))
        First address of the pass.
    step : In(1)
        Move to the next iteration; after the final one the counters wrap.
    addr : Out(signed(addr_bits))
        Address of the current iteration.
    final : Out(1)
        The current iteration is the last of the pass.
    ends : Out(levels)
        Bit k: levels 0..k all finish at the current iteration (bit
        ``levels - 1`` is ``final``).
    """

    def __init__(self, *, levels=LEVELS, count_bits=COUNT_BITS, stride_bits, addr_bits):
        _check_width("levels", levels, 1)
        _check_width("count_bits", count_bits, 1)
        _check_width("stride_bits", stride_bits, 2)
        _check_width("addr_bits", addr_bits, 2)
        self.levels, self.count_bits, self.addr_bits = levels, count_bits, addr_bits
        super().__init__({
            "counts": In(data.ArrayLayout(count_bits, levels)),
            "strides": In(data.ArrayLayout(signed(stride_bits), levels)),
            "load": In(1),
            "base": In(signed(addr_bits)),
            "step": In(1),
            "addr": Out(signed(addr_bits)),
            "final": Out(1),
            "ends": Out(levels),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.levels
        count = [Signal(self.count_bits, name=f"i{k}") for k in range(n)]
        start = [Signal(signed(self.addr_bits), name=f"a{k}") for k in range(n)]
        at_end = [count[k] + 1 == self.counts[k] for k in range(n)]
        # carry[k]: every level below k finishes at this iteration.
        carry = [Const(1)]
        for k in range(n):
            carry.append(carry[k] & at_end[k])
        steps = [carry[k] & ~at_end[k] for k in range(n)]
        m.d.comb += [self.addr.eq(start[0]), self.final.eq(carry[n]), self.ends.eq(Cat(*carry[1:]))]
        with m.If(self.load):
            m.d.sync += [c.eq(0) for c in count]
            m.d.sync += [a.eq(self.base) for a in start]
        with m.Elif(self.step):
            for k in range(n):
                with m.If(carry[k]):
                    m.d.sync += count[k].eq(Mux(at_end[k], 0, count[k] + 1))
            # At most one level steps; it and every level below restart at that level's next address.
            for j in range(n):
                with m.If(steps[j]):
                    m.d.sync += start[j].eq(start[j] + self.strides[j])
                for k in range(j + 1, n):
                    with m.Elif(steps[k]):
                        m.d.sync += start[j].eq(start[k] + self.strides[k])
        return m
