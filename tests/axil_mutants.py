"""Wrong AXI4-Lite masters, each :class:`cosim.axil.AxiLiteHost` with one rule broken, for tests/test_axil.py.

Each reaches into the master's private handles and flags: that is what it breaks.
"""

from cosim.axil import AxiLiteHost


class _Constant:
    """Stands in for a signal handle that always reads ``value``."""

    def __init__(self, value):
        self.value = value


class _Sink:
    """Stands in for a signal handle whose writes go nowhere."""

    value = property(lambda self: None, lambda self, value: None)


class IgnoresResponses(AxiLiteHost):
    """Reads every B and R response as OKAY."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bresp = self._rresp = _Constant(0)


class IgnoresResets(AxiLiteHost):
    """Never sees the reset: neither a reset in flight nor a call in reset."""

    resets = property(lambda self: 0, lambda self, value: None)
    _in_reset = property(lambda self: False, lambda self, value: None)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reset = _Constant(0)

    async def _count_resets(self):
        """Counts nothing: ``resets`` stays 0."""


class TakesAwWithW(AxiLiteHost):
    """Reads ``wready`` as the AW handshake too: right whenever the slave takes AW and W together."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._awready = self._wready


class _Free:
    """Turns that never make anyone wait."""

    def take(self):
        """Always free."""
        return True

    def give(self):
        """Nothing to hand on."""


class Unserialized(AxiLiteHost):
    """Lets a write (or read) start while another is in flight, overwriting its signals."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._writes, self._reads = _Free(), _Free()


class SwallowsStrayResponses(AxiLiteHost):
    """Holds bready and rready high, as the master did before it checked: a response nobody asked for is taken
    on the bus, unseen."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bready.value = 1
        self._rready.value = 1
        self._bready = self._rready = _Sink()
