"""Fast model of a routed fabric: what each sink receives, and when.

Function: every sink of a net receives exactly the net's source sequence, in
order (switches neither reorder, drop nor duplicate).

Timing, as built in hw/tile/switch.py: each switch on a path holds a word in
its input FIFO for one cycle (the FIFO is the pipeline register, and its
``ready`` does not wait for the next hop), so a word offered by the source in
cycle t is offered to the sink in cycle ``t + switches`` with ``switches =
hops + 1``. Each channel carries one word per cycle, and nets never share a
channel, so with no back-pressure nets do not slow each other.
"""

import numpy as np

HOP_CYCLES = 1
"""Cycles a word spends in each switch on its path (FIFO write to FIFO head)."""


def latency(hops):
    """Cycles from a source handshake to the sink's offer, over ``hops`` switch-to-switch links."""
    if hops < 0:
        raise ValueError(f"hops must be non-negative, not {hops}")
    return (hops + 1) * HOP_CYCLES


def delivery_cycles(n, hops):
    """Cycles to deliver ``n`` words over ``hops`` links at full rate.

    Counted from the cycle the first word leaves the source to the cycle the
    last word reaches the sink, both included: ``n`` cycles of issue plus the
    latency.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    return n + latency(hops)


class FabricModel:
    """A :class:`sw.tile.route.Routing` executed on Python data.

    Parameters
    ----------
    routing : Routing
    """

    def __init__(self, routing):
        self.routing = routing

    def _route(self, net):
        if net not in self.routing.routes:
            raise ValueError(f"no routed net named {net!r}; nets: {', '.join(sorted(self.routing.routes))}")
        return self.routing.routes[net]

    def deliver(self, streams):
        """Map ``{net name: source sequence}`` to ``{sink (row, col, port): received array}``."""
        out = {}
        for name, words in streams.items():
            for sink in self._route(name).paths:
                out[sink] = np.array(words, copy=True)
        return out

    def latency(self, net, sink):
        return latency(self._route(net).hops(sink))

    def delivery_cycles(self, net, n):
        """``{sink: cycles}`` for ``n`` words of ``net`` at full rate (see :func:`delivery_cycles`)."""
        route = self._route(net)
        return {sink: delivery_cycles(n, route.hops(sink)) for sink in route.paths}

    def arrival_cycles(self, net, sink, offer_cycles):
        """Cycle in which each word reaches ``sink``, given the cycles the source offers them.

        Assumes the sinks take every word at once (no back-pressure); the
        channel then never fills, and each word keeps its own latency. A
        source offering faster than one word per cycle is slowed to that.
        """
        offers = np.asarray(offer_cycles, dtype=np.int64)
        if offers.ndim != 1:
            raise ValueError("offer_cycles must be one-dimensional")
        issued = np.maximum.accumulate(offers - np.arange(len(offers))) + np.arange(len(offers))
        return issued + self.latency(net, tuple(sink))
