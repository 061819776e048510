"""Stall-together pipeline control shared by the arithmetic units, and a stream unit around a datapath."""

from amaranth import Module, Signal, Shape, Value, Mux
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out


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
        # Any stage holding a result: the unit has work in flight (a clock gate's enable reads it).
        self.stage_valid = tuple(valid)
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
        """Return a register that loads ``value`` whenever the pipeline advances.

        Data registers have no reset: only the valid chain needs one. A
        reset-less register with its enable as a multiplexer takes about 40%
        less Verilog than a resettable one inside an ``If``, which counts in
        the PCU's thousands of pipeline registers.
        """
        value = Value.cast(value)
        r = Signal(Shape.cast(value.shape()), name=name, reset_less=True)
        self._m.d.sync += r.eq(Mux(self.advance, value, r))
        return r


def unary_unit(name, datapath, in_width, out_width, latency, doc, *, module):
    """A stream component class around a one-operand datapath.

    The class takes ``in_width``-bit payloads on ``i`` and gives
    ``datapath(m, reg, x)`` on ``o`` ``latency`` cycles later, one operation
    per cycle; ``module`` is the defining module's ``__name__``.
    """
    def __init__(self):
        wiring.Component.__init__(self, {"i": In(stream.Signature(in_width)),
                                         "o": Out(stream.Signature(out_width))})

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.i, self.o, latency=latency)
        m.d.comb += self.o.payload.eq(datapath(m, pipe.reg, self.i.payload))
        return m

    return type(name, (wiring.Component,), {
        "__doc__": doc, "__init__": __init__, "elaborate": elaborate, "LATENCY": latency, "__module__": module})
