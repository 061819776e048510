"""Testbench components for valid/ready streams, in the style of cocotbext: driver, monitor, scoreboard.

A :class:`StreamDriver` offers payloads on one stream, a :class:`StreamMonitor`
takes them from another and hands each to its :class:`Scoreboard` the cycle it
arrives. :func:`run` steps any number of them together, one clock cycle at a
time, until every driver has sent everything, every scoreboard has what it
expects and the DUT says it is done; it then watches ``settle`` cycles more,
so an extra output fails the test as surely as a missing or a wrong one.

Idle cycles on a driver and back-pressure on a monitor come from *pause
generators*: iterators of booleans, True meaning "withhold this cycle"
(:func:`pauses` draws them at random, seeded). Signals change once per cycle,
on the falling edge, and handshakes are read once the signals settle
(``ReadOnly``), so a cycle of any number of streams costs two triggers.

The stepping itself (:class:`CycleLoop`) knows nothing of cocotb: its parts
read and write ``.value`` on the handles they are given, so the same
components also run under ``amaranth.sim`` (see ``tests/test_tb_components.py``).
"""

import itertools

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

PERIOD_NS = 10


class StreamProtocolError(AssertionError):
    """A stream broke the valid/ready rule: a payload held by back-pressure changed or was withdrawn."""


class StallError(AssertionError):
    """No handshake for ``stall_limit`` cycles while work was outstanding."""


class ScoreboardError(AssertionError):
    """An output differs from the expected one, arrived in excess, or never arrived."""


def pauses(probability, seed=0):
    """Seeded iterator of booleans, each True with ``probability``: the cycles a component holds back.

    Parameters
    ----------
    probability : float in [0, 1)
    seed : int or sequence of int
        Seed of ``numpy.random.default_rng``; a sequence such as ``(seed, port)`` gives
        independent patterns to several ports.
    """
    if not 0.0 <= probability < 1.0:
        raise ValueError(f"pause probability must be in [0, 1), not {probability}")
    if probability == 0.0:
        return itertools.repeat(False)

    def draw():
        rng = np.random.default_rng(seed)
        while True:
            yield from (rng.random(4096) < probability).tolist()
    return draw()


def stream_ports(dut, prefix):
    """The ``(valid, ready, payload)`` handles of stream ``prefix`` (Amaranth's ``prefix__valid`` naming)."""
    return tuple(getattr(dut, f"{prefix}__{name}") for name in ("valid", "ready", "payload"))


class StreamDriver:
    """Offers ``payloads`` in order on stream ``prefix``; once raised, ``valid`` stays up until the transfer.

    Parameters
    ----------
    dut : handle with ``{prefix}__valid``, ``__ready`` and ``__payload``
    prefix : str
    payloads : sequence of int
    pauses : iterator of bool, optional
        Drawn once per cycle with nothing offered: True leaves the cycle idle. Default: never.

    Attributes
    ----------
    sent : int
        Payloads transferred so far.
    cycles : list of int
        Loop cycle of each transfer.
    """

    def __init__(self, dut, prefix, payloads=(), *, pauses=None):
        self.name = prefix
        self.valid, self.ready, self.payload = stream_ports(dut, prefix)
        self.queue = [int(p) for p in payloads]
        self.pauses = pauses if pauses is not None else itertools.repeat(False)
        self.sent = 0
        self.cycles = []
        self.offering = False
        self.raised = None

    @property
    def done(self):
        return self.sent == len(self.queue)

    def drive(self):
        if self.offering:
            return
        offer = self.sent < len(self.queue) and not next(self.pauses)
        if offer:
            self.offering = True
            self.payload.value = self.queue[self.sent]
        if offer != self.raised:
            self.valid.value = int(offer)
            self.raised = offer

    def sample(self, cycle):
        if self.offering and self.ready.value:
            self.cycles.append(cycle)
            self.sent += 1
            self.offering = False
            return True
        return False

    def stop(self):
        self.valid.value = 0
        self.offering = False
        self.raised = None

    def status(self):
        return f"{self.name}: {self.sent}/{len(self.queue)} sent"


class Scoreboard:
    """Compares outputs with expected payloads as they arrive.

    Parameters
    ----------
    expected : sequence of int, or dict of sequences
        Payloads in arrival order (None: any value, when only the count is known); a
        dict holds one ordered queue per key, for outputs whose order is fixed only
        within a class (``key`` names the class).
    name : str
        Used in messages.
    key : callable, optional
        Payload -> key of ``expected``, required with a dict.
    last_bit : int, optional
        Bit position of the ``last`` flag, so a payload that differs only there is
        reported as a ``last`` flag in the wrong place.
    show : callable, optional
        Payload -> text for messages (default: hex).
    describe : callable, optional
        ``(key, index)`` -> text naming the stimulus of that output (operands, a source).

    Raises
    ------
    ScoreboardError
        From :meth:`check` on a mismatch or an output beyond the expected ones, from
        :meth:`offered` when an output is offered with none expected, from :meth:`finish`
        when some never arrived.
    """

    def __init__(self, expected, *, name, key=None, last_bit=None, show=None, describe=None):
        if isinstance(expected, dict):
            if key is None:
                raise ValueError("a Scoreboard with one queue per key needs the key function")
            self.queues = {k: [None if v is None else int(v) for v in q] for k, q in expected.items()}
        else:
            self.queues = {None: [None if v is None else int(v) for v in expected]}
        self.name = name
        self.key = key or (lambda value: None)
        self.last_bit = last_bit
        self.show = show or (lambda value: f"{value:#x}")
        self.describe = describe or (lambda key, index: "")
        self.matched = {k: 0 for k in self.queues}
        self.expected = self.outstanding = sum(len(q) for q in self.queues.values())

    @property
    def complete(self):
        return self.outstanding == 0

    def _where(self, k, index):
        what = self.describe(k, index)
        return f"{self.name}{'' if k is None else f' [{k}]'} output {index}" + (f" ({what})" if what else "")

    def offered(self, value, cycle):
        """An output is valid: fail at once if none is expected of its class."""
        k = self.key(value)
        if self.matched.get(k, 0) >= len(self.queues.get(k, ())):
            raise ScoreboardError(f"{self.name}: extra output {self.show(value)} offered in cycle {cycle}, after "
                                  f"all {len(self.queues.get(k, ()))} expected" + ("" if k is None else f" of {k}"))

    def check(self, value, cycle):
        """Compare one transferred output with the next expected one of its class."""
        k = self.key(value)
        queue, index = self.queues.get(k, ()), self.matched.get(k, 0)
        if index >= len(queue):
            self.offered(value, cycle)
        want = queue[index]
        if value != want and want is not None:
            if self.last_bit is not None and value ^ want == 1 << self.last_bit:
                raise ScoreboardError(f"{self._where(k, index)}: last flag {value >> self.last_bit & 1} in cycle "
                                      f"{cycle}, expected {want >> self.last_bit & 1} (data equal)")
            raise ScoreboardError(f"{self._where(k, index)} in cycle {cycle}: got {self.show(value)}, "
                                  f"expected {self.show(want)}")
        self.matched[k] = index + 1
        self.outstanding -= 1

    def finish(self):
        """Fail unless every expected output arrived."""
        if not self.complete:
            raise ScoreboardError(f"{self.name}: missing outputs: " + ", ".join(
                f"{'' if k is None else f'{k}: '}{self.matched[k]} of {len(q)} arrived"
                for k, q in self.queues.items() if self.matched[k] < len(q)))

    def status(self):
        return f"{self.name}: {sum(self.matched.values())}/{self.expected} received"


class StreamMonitor:
    """Takes outputs from stream ``prefix`` under back-pressure and passes each to ``scoreboard``.

    Checks the stream rule once for every testbench: while ``valid`` is high and
    ``ready`` low the payload stays unchanged, and ``valid`` stays high until the
    transfer. Any output offered when the scoreboard expects none fails at once,
    also in the cycles after the last expected one.

    Parameters
    ----------
    dut : handle with ``{prefix}__valid``, ``__ready`` and ``__payload``
    prefix : str
    scoreboard : Scoreboard, optional
        Default: one that expects nothing, for a port that must stay silent.
    pauses : iterator of bool, optional
        Drawn every cycle: True holds ``ready`` low (back-pressure). Default: never.

    Attributes
    ----------
    items, cycles : list of int
        Transferred payloads and their loop cycles.
    """

    def __init__(self, dut, prefix, scoreboard=None, *, pauses=None):
        self.name = prefix
        self.valid, self.ready, self.payload = stream_ports(dut, prefix)
        self.scoreboard = scoreboard if scoreboard is not None else Scoreboard([], name=prefix)
        self.pauses = pauses if pauses is not None else itertools.repeat(False)
        self.items, self.cycles = [], []
        self.take = None
        self.held = None

    @property
    def done(self):
        return self.scoreboard.complete

    def drive(self):
        take = not next(self.pauses)
        if take != self.take:
            self.ready.value = int(take)
            self.take = take

    def sample(self, cycle):
        if not self.valid.value:
            if self.held is not None:
                raise StreamProtocolError(f"{self.name}.valid fell in cycle {cycle} while {self.held:#x} was held "
                                          f"by back-pressure (output {len(self.items)})")
            return False
        value = int(self.payload.value)
        if self.held is not None and value != self.held:
            raise StreamProtocolError(f"{self.name}.payload changed from {self.held:#x} to {value:#x} in cycle "
                                      f"{cycle} while held by back-pressure (output {len(self.items)})")
        if not self.take:
            if self.held is None:
                self.scoreboard.offered(value, cycle)
            self.held = value
            return False
        self.held = None
        self.scoreboard.check(value, cycle)
        self.items.append(value)
        self.cycles.append(cycle)
        return True

    def stop(self):
        self.ready.value = 0
        self.take = None

    def status(self):
        return self.scoreboard.status()


class CycleLoop:
    """Steps drivers and monitors together, one clock cycle per :meth:`drive` / :meth:`sample` pair.

    Parameters
    ----------
    parts : sequence of StreamDriver and StreamMonitor
    done : callable, optional
        Read after the handshakes of a cycle; the loop does not finish before it returns True
        (a DUT's own done flag).
    settle : int
        Cycles watched after the last driver, scoreboard and ``done`` are finished; an output
        offered in them fails.
    stall_limit : int
        Cycles without any handshake before :class:`StallError` (or, when only outputs are
        outstanding, the scoreboard's missing-output error).
    """

    def __init__(self, parts, *, done=None, settle=16, stall_limit=1000):
        self.parts = list(parts)
        self.monitors = [p for p in self.parts if isinstance(p, StreamMonitor)]
        self.done = done
        self.settle, self.stall_limit = settle, stall_limit
        self.cycle = 0
        self.quiet = 0
        self.settled = None
        self.parts_done = False

    def drive(self):
        for p in self.parts:
            p.drive()

    def sample(self):
        """Read the handshakes of the current cycle; True once the loop is finished."""
        progressed = False
        for p in self.parts:
            progressed |= p.sample(self.cycle)
        # Only a handshake can finish a part.
        if progressed or self.cycle == 0:
            self.parts_done = all(p.done for p in self.parts)
        self.cycle += 1
        if self.settled is None:
            if self.parts_done and (self.done is None or self.done()):
                self.settled = 0
            else:
                self.quiet = 0 if progressed else self.quiet + 1
                if self.quiet > self.stall_limit:
                    state = "; ".join(p.status() for p in self.parts)
                    if all(p.done for p in self.parts if p not in self.monitors):
                        for m in self.monitors:
                            if not m.scoreboard.complete:
                                m.scoreboard.finish()
                    raise StallError(f"no handshake for {self.stall_limit} cycles ({state})")
                return False
        self.settled += 1
        return self.settled > self.settle

    def stop(self):
        for p in self.parts:
            p.stop()
        for m in self.monitors:
            m.scoreboard.finish()


async def run(dut, parts, *, start=None, clock=None, **loop):
    """Run a :class:`CycleLoop` of ``parts`` on the falling edges of ``dut.clk``; returns the loop.

    Cycle 0 is the first falling edge after the call; ``start`` (optional) is called on it before
    the parts drive (to enable a configuration in the same cycle). Ends on the falling edge after
    the last cycle watched, with every ``valid`` and ``ready`` the parts drive low.
    """
    clk = clock if clock is not None else dut.clk
    steps = CycleLoop(parts, **loop)
    falling, settled = FallingEdge(clk), ReadOnly()
    while True:
        await falling
        if start is not None and steps.cycle == 0:
            start()
        steps.drive()
        await settled
        if steps.sample():
            break
    await falling
    steps.stop()
    return steps


def start_clock(dut, *, period_ns=PERIOD_NS):
    """Start ``dut.clk`` running with period ``period_ns``."""
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())


async def reset(dut, *, zero=(), cycles=2):
    """Set each signal named in ``zero`` to 0, hold ``dut.rst`` for ``cycles`` rising edges, release it,
    and return on the next falling edge."""
    for name in zero:
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0
    await FallingEdge(dut.clk)


async def start_clock_and_reset(dut, *, zero=(), cycles=2, period_ns=PERIOD_NS):
    """:func:`start_clock` and :func:`reset`: the start of every testbench."""
    start_clock(dut, period_ns=period_ns)
    await reset(dut, zero=zero, cycles=cycles)
