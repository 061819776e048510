"""cocotb driver and monitor for one-in, one-out ``amaranth.lib.stream`` units.

:class:`StreamTester` offers a list of payloads on the unit's ``i`` port and
collects what appears on ``o``, inserting idle cycles on the input and
back-pressure on the output at the given rates. It also checks the stream
rule that a result held by back-pressure stays valid and unchanged.
"""

import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly


class StreamProtocolError(AssertionError):
    pass


class StallError(AssertionError):
    pass


class StreamTester:
    """Drive ``dut.i`` and monitor ``dut.o`` on ``dut.clk``.

    Inputs change on the falling edge and handshakes are read once the
    signals settle, so each cycle costs two triggers and no more.

    Parameters
    ----------
    dut : cocotb handle with ``clk``, ``i__valid``, ``i__ready``, ``i__payload``,
        ``o__valid``, ``o__ready``, ``o__payload``.
    idle, backpressure : float
        Probability of withholding ``i.valid`` / ``o.ready`` in a cycle.
    seed : int
        Seed of the stall pattern.
    prefix_in, prefix_out : str
        Port name prefixes, for designs whose streams are not called i and o.
    """

    def __init__(self, dut, *, idle=0.0, backpressure=0.0, seed=0, prefix_in="i", prefix_out="o"):
        for name, p in (("idle", idle), ("backpressure", backpressure)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), not {p}")
        self.dut = dut
        self.idle, self.backpressure = idle, backpressure
        self.rng = np.random.default_rng(seed)
        get = lambda prefix, name: getattr(dut, f"{prefix}__{name}")
        self.i_valid, self.i_ready, self.i_payload = (get(prefix_in, n) for n in ("valid", "ready", "payload"))
        self.o_valid, self.o_ready, self.o_payload = (get(prefix_out, n) for n in ("valid", "ready", "payload"))
        self.cycles = 0
        self.first_output_cycle = None
        self.output_cycles = []

    async def run(self, payloads, *, stall_limit=1000):
        """Send every payload and return the outputs in arrival order.

        Raises :class:`StallError` when no handshake happens on either side
        for ``stall_limit`` cycles while work is outstanding.
        """
        payloads = [int(p) for p in payloads]
        n = len(payloads)
        stride = 4096
        offer_draw = take_draw = None
        outputs = []
        sent = 0
        quiet = 0
        held = None
        clk = self.dut.clk
        while len(outputs) < n:
            if self.cycles % stride == 0:
                offer_draw = self.rng.random(stride) >= self.idle
                take_draw = self.rng.random(stride) >= self.backpressure
            slot = self.cycles % stride
            await FallingEdge(clk)
            offer = sent < n and bool(offer_draw[slot])
            take = bool(take_draw[slot])
            self.i_valid.value = int(offer)
            if offer:
                self.i_payload.value = payloads[sent]
            self.o_ready.value = int(take)
            await ReadOnly()
            self.cycles += 1
            progressed = False
            if offer and self.i_ready.value:
                sent += 1
                progressed = True
            if self.o_valid.value:
                value = int(self.o_payload.value)
                if held is not None and value != held:
                    raise StreamProtocolError(
                        f"o.payload changed from {held:#x} to {value:#x} while held by back-pressure "
                        f"(cycle {self.cycles}, output {len(outputs)})")
                if take:
                    if self.first_output_cycle is None:
                        self.first_output_cycle = self.cycles
                    outputs.append(value)
                    self.output_cycles.append(self.cycles)
                    held = None
                    progressed = True
                else:
                    held = value
            elif held is not None:
                raise StreamProtocolError(f"o.valid fell while a result was held (cycle {self.cycles})")
            quiet = 0 if progressed else quiet + 1
            if quiet > stall_limit:
                raise StallError(f"no handshake for {stall_limit} cycles: {sent}/{n} sent, "
                                 f"{len(outputs)}/{n} received")
        await FallingEdge(clk)
        self.i_valid.value = 0
        self.o_ready.value = 0
        return outputs


def _ports(dut, prefix):
    return (getattr(dut, f"{prefix}__{name}") for name in ("valid", "ready", "payload"))


async def drive(dut, prefix, payloads, *, idle=0.0, seed=0):
    """Offer ``payloads`` on stream ``prefix``, idling a cycle with probability ``idle``.

    For units with several inputs: start one ``drive`` per input with
    ``cocotb.start_soon`` and they run side by side.
    """
    valid, ready, payload = _ports(dut, prefix)
    rng = np.random.default_rng(seed)
    payloads = [int(p) for p in payloads]
    sent = 0
    while sent < len(payloads):
        await FallingEdge(dut.clk)
        offer = rng.random() >= idle
        valid.value = int(offer)
        if offer:
            payload.value = payloads[sent]
        await ReadOnly()
        if offer and ready.value:
            sent += 1
    await FallingEdge(dut.clk)
    valid.value = 0


async def collect(dut, prefix, count, *, backpressure=0.0, seed=0, cycle_limit=100_000):
    """Take ``count`` payloads from stream ``prefix`` with random back-pressure.

    Checks that a result held by back-pressure stays valid and unchanged, and
    raises :class:`StallError` past ``cycle_limit`` cycles.
    """
    valid, ready, payload = _ports(dut, prefix)
    rng = np.random.default_rng(seed)
    out = []
    held = None
    for cycle in range(cycle_limit):
        if len(out) == count:
            break
        await FallingEdge(dut.clk)
        take = rng.random() >= backpressure
        ready.value = int(take)
        await ReadOnly()
        if valid.value:
            value = int(payload.value)
            if held is not None and value != held:
                raise StreamProtocolError(f"{prefix}.payload changed from {held:#x} to {value:#x} while held")
            if take:
                out.append(value)
                held = None
            else:
                held = value
        elif held is not None:
            raise StreamProtocolError(f"{prefix}.valid fell while a result was held")
    else:
        raise StallError(f"{prefix}: {len(out)} of {count} results after {cycle_limit} cycles")
    await FallingEdge(dut.clk)
    ready.value = 0
    return out


def pack_vectors(data, last, lanes):
    """``VectorPayload`` integers from (n, lanes) words and n ``last`` flags."""
    rows = np.asarray(data).reshape(-1, lanes)
    return [sum(int(w) << (32 * l) for l, w in enumerate(row)) | int(f) << (32 * lanes) for row, f in zip(rows, last)]


def pack_scalars(data, last):
    """``ScalarPayload`` integers from n words and n ``last`` flags."""
    return [int(w) | int(f) << 32 for w, f in zip(np.asarray(data).reshape(-1), last)]


def unpack_vectors(payloads, lanes):
    """(words (n, lanes) uint32, last (n,) bool) from ``VectorPayload`` integers."""
    data = np.array([[(p >> (32 * l)) & 0xFFFF_FFFF for l in range(lanes)] for p in payloads],
                    dtype=np.uint32).reshape(len(payloads), lanes)
    return data, np.array([(p >> (32 * lanes)) & 1 for p in payloads], dtype=bool)


def unpack_scalars(payloads):
    """(words (n,) uint32, last (n,) bool) from ``ScalarPayload`` integers."""
    return (np.array([p & 0xFFFF_FFFF for p in payloads], dtype=np.uint32),
            np.array([(p >> 32) & 1 for p in payloads], dtype=bool))

