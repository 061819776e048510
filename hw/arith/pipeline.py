"""Stall-together pipeline control shared by the arithmetic units."""

from amaranth import Signal, Shape


class Pipeline:
    """Valid chain and hold logic for a unit with one input and one output stream.

    Every register stage moves together: when the output holds a result that
    is not taken, nothing moves and ``i.ready`` is low in that same cycle.
    Datapaths insert their stage registers with :meth:`reg`, and the caller
    guarantees that the number of register levels on every path equals
    ``latency``.

    Parameters
    ----------
    m : Module
        Module the control logic is added to.
    i, o : stream interfaces
        Input (flipped) and output stream of the unit.
    latency : int
        Register stages between ``i.payload`` and ``o.payload``.
    """

    def __init__(self, m, i, o, *, latency):
        if not isinstance(latency, int) or latency < 1:
            raise ValueError(f"latency must be a positive integer, not {latency!r}")
        self._m = m
        self.latency = latency
        self.advance = Signal()
        valid = [Signal(name=f"valid_s{k + 1}") for k in range(latency)]
        m.d.comb += [
            self.advance.eq(~o.valid | o.ready),
            i.ready.eq(self.advance),
            o.valid.eq(valid[-1]),
        ]
        with m.If(self.advance):
            m.d.sync += valid[0].eq(i.valid)
            for prev, nxt in zip(valid, valid[1:]):
                m.d.sync += nxt.eq(prev)

    def reg(self, value, *, name=None):
        """Return a register that loads ``value`` whenever the pipeline advances."""
        r = Signal(Shape.cast(value.shape()), name=name)
        with self._m.If(self.advance):
            self._m.d.sync += r.eq(value)
        return r
